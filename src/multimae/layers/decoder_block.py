"""A pre-norm Transformer decoder block: self-attention, cross-attention to a context, MLP (4M's).

Shapes: B batch, N queries, M context tokens, D width.

    x = x + SelfAttn(norm1(x), mask)
    x = x + CrossAttn(query_norm(x), context_norm(context), context mask)
    x = x + MLP(norm2(x))

Parameter names (``norm1``, ``self_attn.{qkv,proj}``, ``query_norm``, ``context_norm``,
``cross_attn.{q,kv,proj}``, ``norm2``, ``mlp.*``) are the official 4M decoder block's; the
attention layers are timm's ``Attention`` and our `CrossAttention`.
"""

from __future__ import annotations

from timm.layers import Mlp
from timm.layers.attention import Attention
from torch import Tensor, nn

from multimae.layers.cross_attention import CrossAttention


class DecoderBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, bias: bool = True, qk_norm: bool = False,
                 act_layer: type[nn.Module] = nn.GELU, norm_layer: type[nn.Module] = nn.LayerNorm,
                 mlp_layer: type[nn.Module] = Mlp) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.self_attn = Attention(dim, num_heads, qkv_bias=bias, qk_norm=qk_norm, proj_bias=bias,
                                   norm_layer=norm_layer)
        self.query_norm = norm_layer(dim)
        self.context_norm = norm_layer(dim)
        self.cross_attn = CrossAttention(dim, num_heads, qkv_bias=bias, proj_bias=bias, qk_norm=qk_norm,
                                         norm_layer=norm_layer)
        self.norm2 = norm_layer(dim)
        self.mlp = mlp_layer(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, bias=bias)

    def forward(self, x: Tensor, context: Tensor, self_mask: Tensor | None = None,
                context_keep: Tensor | None = None) -> Tensor:
        """``x`` (B, N, D) queries, ``context`` (B, M, D); ``self_mask`` (B, 1, N, N) additive float
        (`additive_mask`), ``context_keep`` (B, M) bool, True = a context token that may be attended to."""
        x = x + self.self_attn(self.norm1(x), attn_mask=self_mask)
        x = x + self.cross_attn(self.query_norm(x), self.context_norm(context), context_keep)
        return x + self.mlp(self.norm2(x))
