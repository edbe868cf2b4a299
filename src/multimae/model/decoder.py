"""Decoders: the prediction side of modalities, behind one small interface (`Decoder`).

A decoder reads the encoder's output and returns predictions for the output modalities it serves
(``decoder.modalities``): ``decode(enc) -> {modality: prediction}``. MultiMAE has one
`CrossAttentionDecoder` per output (below); a joint decoder over several modalities (M3AE) or one
shared decoder for all targets (4M) fits the same interface.

Shapes: B batch, V visible token slots, G global tokens, D encoder width, E decoder width,
N_all tokens of all given modalities, h w token grid, P patch side on the output's map,
C output channels (classes for a categorical output, vocabulary for a token sequence), L length.

The MultiMAE decoder (paper Sec. 3.2, App. A, Fig. 7): linear projection of encoder tokens to
E; positional (2-D sin-cos of each grid, 1-D sin-cos of sequences and global tokens) + learned
modality embeddings added; queries = this modality's full set of tokens (mask tokens, with the
modality's own visible tokens at their positions); one cross-attention from the queries to all
encoded tokens (no residual around it: official architecture); an MLP; ``depth`` Transformer
blocks; a linear layer to C * P * P values per token; for a map, unpatchify to
(B, C, h * P, w * P); for a sequence, (B, L, C) logits.
Parameter names follow the official ``SpatialOutputAdapter``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import Mlp, trunc_normal_
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from multimae.layers.cross_attention import CrossAttention
from multimae.layers.pos_embed import build_1d_sincos_pos_embed, build_2d_sincos_pos_embed, resize_pos_embed
from multimae.model.adapters import build_output_side
from multimae.model.config import DecoderConfig, activation
from multimae.model.encoder import EncoderOutput, TokenLayout
from multimae.modalities.spec import ModalitySpec


class Decoder(nn.Module):
    """The prediction side of one or more output modalities."""

    modalities: tuple[str, ...]

    def decode(self, enc: EncoderOutput) -> dict[str, Tensor]:
        """``{modality: prediction}`` for each modality in ``self.modalities``."""
        raise NotImplementedError


def place_visible(queries: Tensor, visible: Tensor, enc: EncoderOutput, source: str) -> Tensor:
    """``queries`` (B, N, E) with ``source``'s own encoded tokens put at their positions.

    ``visible`` (B, V, E) are the encoder's visible token slots (projected to E); every query of
    ``source`` that was not encoded keeps its value (the mask token). Slots of other modalities
    and padding slots go to a spare row that is dropped. ``source`` absent from the encoder's
    inputs: ``queries`` unchanged.
    """
    layout = enc.layout
    if source not in layout.names:
        return queries
    B, n, E = queries.shape
    V = visible.shape[1]
    start, end = layout.span(source)
    ids = enc.visible_ids - start
    own = (ids >= 0) & (ids < end - start)
    if enc.padding is not None:
        own &= ~enc.padding
    slot = torch.where(own, ids, torch.full_like(ids, n))
    spare = torch.cat([queries, queries.new_zeros(B, 1, E)], dim=1)
    return spare.scatter(1, slot.unsqueeze(-1).expand(B, V, E), visible)[:, :n]


class CrossAttentionDecoder(Decoder):
    """MultiMAE's per-task decoder: predicts one output modality's every token from the encoder's
    visible tokens."""

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
        self.modalities = (spec.name,)
        self.model_patch = patch_size
        self.side = build_output_side(spec, patch_size)  # the modality's decoder side: queries, assembly
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
            *[Block(E, config.num_heads, config.mlp_ratio, qkv_bias=config.qkv_bias, act_layer=activation(config.act))
              for _ in range(config.depth)]
        )
        self.out_proj = nn.Linear(E, self.side.values_per_token)
        self.proj_context = nn.Linear(encoder_dim, E)

    def _embedding(self, name: str, pos: Tensor) -> Tensor:
        """(1, N, E) positional table plus ``name``'s modality embedding (if it has one)."""
        if name in self.task_embeddings:
            return pos + self.task_embeddings[name]
        return pos

    def _positions(self, grid: tuple[int, int] | None, count: int, dtype: torch.dtype, cache: dict,
                   frame: tuple[int, int] | None = None) -> Tensor:
        """(1, N, E) positions of a modality's tokens: the 2-D table resized to its grid (on the
        image's common frame when the grid is coarser than the model's patch grid), or the 1-D
        table of its length."""
        key = grid or count
        if key not in cache:
            scale = 1.0 if grid is None or frame is None else frame[0] / (grid[0] * self.model_patch)
            if grid is not None and scale != 1.0:
                pos = build_2d_sincos_pos_embed(self.pos_emb.shape[1], grid[0], grid[1], scale=scale)
                pos = pos.to(self.pos_emb.device).flatten(2).transpose(1, 2)
            elif grid is not None:
                pos = resize_pos_embed(self.pos_emb, grid[0], grid[1], "bilinear").flatten(2).transpose(1, 2)
            else:
                pos = build_1d_sincos_pos_embed(self.pos_emb.shape[1], count).to(self.pos_emb.device)
            cache[key] = pos.to(dtype)
        return cache[key]

    def query_shape(self, layout: TokenLayout) -> tuple[tuple[int, int] | None, int]:
        """(grid, N) of this decoder's queries (see `OutputSide.query_shape`)."""
        return self.side.query_shape(layout)

    def decode(self, enc: EncoderOutput) -> dict[str, Tensor]:
        return {self.spec.name: self(enc)}

    def forward(self, enc: EncoderOutput) -> Tensor:
        """Encoder output -> (B, C, h * P, w * P) map prediction or (B, L, C) sequence prediction
        (logits for categorical and token outputs)."""
        layout = enc.layout
        x = self.proj_context(enc.tokens)  # (B, V + G, E)
        B, _, E = x.shape
        V = enc.visible_ids.shape[1]
        visible, global_ = x[:, :V], x[:, V:]
        cache: dict = {}
        table = torch.cat([self._embedding(n, self._positions(g, c, x.dtype, cache, layout.frame))
                           for n, g, c in zip(layout.names, layout.grids, layout.counts)], dim=1)[0]  # (N_all, E)
        context = torch.cat([visible + table[enc.visible_ids], global_], dim=1)  # (B, V + G, E)
        context_keep = None
        if enc.padding is not None:
            context_keep = torch.cat([~enc.padding, enc.padding.new_ones(B, enc.num_global_tokens)], dim=1)

        source = self.spec.source_name
        grid, n = self.query_shape(layout)
        queries = place_visible(self.mask_token.to(x.dtype).expand(B, n, E), visible, enc, source)
        queries = queries + self._embedding(source, self._positions(grid, n, x.dtype, cache, layout.frame))

        y = self.decoder(self.query_norm(queries), self.context_norm(context), context_keep)
        y = y + self.mlp(self.out_norm(y))
        y = self.decoder_transformer(y)
        return self.side.assemble(self.out_proj(y), grid)
