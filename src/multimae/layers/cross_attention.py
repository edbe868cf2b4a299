"""Multi-head cross-attention (queries attend to a separate context sequence).

Shapes: B batch, N queries, M context tokens, D width. Parameter names (``q``, ``kv``, ``proj``)
and the ``[k | v]`` head-major layout of ``kv`` match the official MultiMAE decoder.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class CrossAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"cross-attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        # Same switch as timm's Attention: False uses explicit matmuls (faster than the fused CPU
        # kernels under bf16 autocast, see `multimae.engine.precision`).
        self.fused_attn = True
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, context: Tensor, context_mask: Tensor | None = None) -> Tensor:
        """``x`` (B, N, D) attends to ``context`` (B, M, D) -> (B, N, D).

        ``context_mask`` (B, M) bool, True where a context token may be attended to (padding
        slots are False); None attends to every context token.
        """
        B, N, D = x.shape
        M = context.shape[1]
        q = self.q(x).reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # (B, heads, N, hd)
        kv = self.kv(context).reshape(B, M, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)  # each (B, heads, M, hd)
        attn_mask = None if context_mask is None else context_mask[:, None, None, :]
        if self.fused_attn:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        else:
            scores = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)  # (B, heads, N, M)
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            out = scores.softmax(dim=-1) @ v
        out = out.transpose(1, 2).reshape(B, N, D)
        return self.proj_drop(self.proj(out))
