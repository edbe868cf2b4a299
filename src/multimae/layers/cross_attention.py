"""Multi-head cross-attention (queries attend to a separate context sequence).

Shapes: B batch, N queries, M context tokens, D width. Parameter names (``q``, ``kv``, ``proj``)
and the ``[k | v]`` head-major layout of ``kv`` match the official MultiMAE and 4M decoders
(4M's QK-norm variants add ``q_norm`` / ``k_norm``, a norm over each head's channels).

Masked keys get the most negative finite score rather than -inf (as 4M does), so a query with no
key to attend to averages the values uniformly instead of producing NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def additive_mask(keep: Tensor, dtype: torch.dtype) -> Tensor:
    """Boolean ``keep`` (True = may attend) as an additive float mask: 0 or the most negative finite value."""
    return torch.zeros((), dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)


class CrossAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, proj_drop: float = 0.0,
                 proj_bias: bool = True, qk_norm: bool = False, norm_layer: type[nn.Module] = nn.LayerNorm) -> None:
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
        self.q_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
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
        q, k = self.q_norm(q), self.k_norm(k)
        attn_mask = None if context_mask is None else additive_mask(context_mask[:, None, None, :], q.dtype)
        if self.fused_attn:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        else:
            scores = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)  # (B, heads, N, M)
            if attn_mask is not None:
                scores = scores + attn_mask
            out = scores.softmax(dim=-1) @ v
        out = out.transpose(1, 2).reshape(B, N, D)
        return self.proj_drop(self.proj(out))
