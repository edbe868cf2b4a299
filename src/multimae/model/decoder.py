"""The MultiMAE decoder (paper Sec. 3.2, App. A, Fig. 7): one per output modality.

Shapes: B batch, V visible token slots, G global tokens, D encoder width, E decoder width,
N_all tokens of all given modalities, h w token grid, P patch side on the output's map,
C output channels (classes for a categorical output).

Pipeline: linear projection of encoder tokens to E; sin-cos positional + learned modality
embeddings added; queries = this modality's full grid (mask tokens, with the modality's own
visible tokens at their positions); one cross-attention from the queries to all encoded tokens
(no residual around it: official architecture); an MLP; ``depth`` Transformer blocks; a linear
layer to C * P * P values per token; unpatchify to (B, C, h * P, w * P).
Parameter names follow the official ``SpatialOutputAdapter``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import Mlp, trunc_normal_
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from multimae.layers.cross_attention import CrossAttention
from multimae.layers.pos_embed import build_2d_sincos_pos_embed, resize_pos_embed
from multimae.model.config import DecoderConfig
from multimae.model.encoder import EncoderOutput
from multimae.modalities.spec import ModalitySpec


class SpatialDecoder(nn.Module):
    """Predicts one output modality's full map from the encoder's visible tokens."""

    def __init__(
        self,
        spec: ModalitySpec,
        config: DecoderConfig,
        encoder_dim: int,
        context_modalities: Sequence[str],
        patch_size: int,
        image_size: int,
    ) -> None:
        super().__init__()
        E = config.dim
        if E % 4:
            raise ValueError(f"decoder width must be divisible by 4 (sin-cos table), got {E}")
        self.spec = spec
        self.patch = spec.patch_size(patch_size)
        self.task_embeddings = nn.ParameterDict(
            {name: nn.Parameter(torch.zeros(1, 1, E)) for name in context_modalities}
        )
        for p in self.task_embeddings.values():
            trunc_normal_(p, std=0.02)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, E))
        grid = image_size // patch_size
        self.pos_emb = nn.Parameter(build_2d_sincos_pos_embed(E, grid, grid), requires_grad=False)
        self.decoder = CrossAttention(E, config.num_heads, qkv_bias=config.qkv_bias)
        self.context_norm = nn.LayerNorm(E, eps=1e-6)
        self.query_norm = nn.LayerNorm(E, eps=1e-6)
        self.out_norm = nn.LayerNorm(E, eps=1e-6)
        self.mlp = Mlp(E, int(E * config.mlp_ratio))
        self.decoder_transformer = nn.Sequential(
            *[Block(E, config.num_heads, config.mlp_ratio, qkv_bias=config.qkv_bias) for _ in range(config.depth)]
        )
        self.out_proj = nn.Linear(E, spec.num_channels * self.patch * self.patch)
        self.proj_context = nn.Linear(encoder_dim, E)

    def _embedding(self, name: str, pos: Tensor) -> Tensor:
        """(1, h*w, E) positional table plus ``name``'s modality embedding (if it has one)."""
        if name in self.task_embeddings:
            return pos + self.task_embeddings[name]
        return pos

    def forward(self, enc: EncoderOutput) -> Tensor:
        """Encoder output -> (B, C, h * P, w * P) prediction (logits for categorical outputs)."""
        layout = enc.layout
        h, w = layout.grid
        x = self.proj_context(enc.tokens)  # (B, V + G, E)
        B, _, E = x.shape
        V = enc.visible_ids.shape[1]
        visible, global_ = x[:, :V], x[:, V:]
        pos = resize_pos_embed(self.pos_emb, h, w, "bilinear").flatten(2).transpose(1, 2).to(x.dtype)
        table = torch.cat([self._embedding(n, pos) for n in layout.names], dim=1)[0]  # (N_all, E)
        context = torch.cat([visible + table[enc.visible_ids], global_], dim=1)  # (B, V + G, E)
        context_keep = None
        if enc.padding is not None:
            context_keep = torch.cat([~enc.padding, enc.padding.new_ones(B, enc.num_global_tokens)], dim=1)

        source = self.spec.source_name
        queries = self.mask_token.to(x.dtype).expand(B, h * w, E)
        if source in layout.names:
            # Put this modality's own visible tokens at their grid positions; every other slot
            # keeps the mask token. Tokens of other modalities go to a spare slot that is dropped.
            start, end = layout.span(source)
            ids = enc.visible_ids - start
            own = (ids >= 0) & (ids < end - start)
            if enc.padding is not None:
                own &= ~enc.padding
            slot = torch.where(own, ids, torch.full_like(ids, h * w))
            spare = torch.cat([queries, queries.new_zeros(B, 1, E)], dim=1)
            queries = spare.scatter(1, slot.unsqueeze(-1).expand(B, V, E), visible)[:, : h * w]
        queries = queries + self._embedding(source, pos)

        y = self.decoder(self.query_norm(queries), self.context_norm(context), context_keep)
        y = y + self.mlp(self.out_norm(y))
        y = self.decoder_transformer(y)
        return self.unpatchify(self.out_proj(y), h, w)

    def unpatchify(self, x: Tensor, h: int, w: int) -> Tensor:
        """(B, h*w, C*P*P) with per-token values ordered (c, ph, pw) -> (B, C, h*P, w*P)."""
        B = x.shape[0]
        P, C = self.patch, self.spec.num_channels
        x = x.reshape(B, h, w, C, P, P).permute(0, 3, 1, 4, 2, 5)  # (B, C, h, P, w, P)
        return x.reshape(B, C, h * P, w * P)
