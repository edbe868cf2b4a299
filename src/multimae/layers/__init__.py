"""Layers timm does not provide: 2-D sin-cos tables with a named axis order, cross-attention."""

from multimae.layers.cross_attention import CrossAttention
from multimae.layers.pos_embed import build_2d_sincos_pos_embed, resize_pos_embed

__all__ = ["CrossAttention", "build_2d_sincos_pos_embed", "resize_pos_embed"]
