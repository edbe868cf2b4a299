"""M3AE's decoder: one self-attention Transformer over every position of several modalities.

Shapes: B batch, V visible token slots, G global tokens, D encoder width, E decoder width,
N_s query positions of source modality s (its grid's h * w, or a sequence's L), T = G + sum N_s,
K values per query (patch pixels, or the vocabulary for a token sequence).

The encoder's output (normalised: our encoder has no final norm, M3AE's has) is projected to E.
Each source modality of the served outputs gets its full set of positions: its own encoded tokens
where the encoder saw them, its learned mask token elsewhere, plus a fixed sin-cos position (2-D
on the image's common frame for a grid, 1-D for a sequence) and a learned type embedding. The
global tokens come first, then each source in turn; tokens that do not exist (a caption's padding,
a sample without the modality) are masked out of attention as keys. After ``depth`` pre-norm
blocks and a final norm, each output reads its source's positions through its own linear head.
A source the encoder was not given is predicted from mask tokens alone (cross-modal prediction,
e.g. a caption from the image).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from multimae.layers.pos_embed import build_1d_sincos_pos_embed, build_2d_sincos_pos_embed
from multimae.model.adapters import OutputSide, build_output_side
from multimae.model.config import DecoderConfig, activation
from multimae.model.decoder import Decoder, place_visible
from multimae.model.encoder import EncoderOutput
from multimae.modalities.spec import ModalitySpec


class JointDecoder(Decoder):
    """One decoder serving every output in ``specs`` (M3AE: image patches and text tokens)."""

    def __init__(self, specs: Mapping[str, ModalitySpec], config: DecoderConfig, encoder_dim: int,
                 patch_size: int, image_size: int | None = None) -> None:
        super().__init__()
        if not specs:
            raise ValueError("a joint decoder needs at least one output modality")
        E = config.dim
        if E % 4:
            raise ValueError(f"decoder width must be divisible by 4 (sin-cos table), got {E}")
        if E % config.num_heads:
            raise ValueError(f"decoder width {E} is not divisible by num_heads {config.num_heads}")
        self.modalities = tuple(specs)
        self.model_patch = patch_size
        self.columns_first = config.pos_2d == "columns_first"
        self.sides: dict[str, OutputSide] = {n: build_output_side(s, patch_size, image_size) for n, s in specs.items()}
        self.source_of = {n: s.source_name for n, s in specs.items()}
        self.sources = tuple(dict.fromkeys(self.source_of.values()))  # each source's positions once
        self.context_norm = nn.LayerNorm(encoder_dim, eps=1e-6)
        self.proj_context = nn.Linear(encoder_dim, E)
        self.mask_tokens = nn.ParameterDict({s: nn.Parameter(torch.zeros(1, 1, E)) for s in self.sources})
        self.type_embeddings = nn.ParameterDict({s: nn.Parameter(torch.zeros(1, 1, E)) for s in self.sources})
        for p in [*self.mask_tokens.values(), *self.type_embeddings.values()]:
            trunc_normal_(p, std=0.02)
        self.blocks = nn.ModuleList(
            [Block(E, config.num_heads, config.mlp_ratio, qkv_bias=config.qkv_bias, act_layer=activation(config.act))
             for _ in range(config.depth)])
        self.norm = nn.LayerNorm(E, eps=1e-6)
        self.heads = nn.ModuleDict({n: nn.Linear(E, side.values_per_token) for n, side in self.sides.items()})

    def _positions(self, grid: tuple[int, int] | None, count: int, frame: tuple[int, int] | None,
                   like: Tensor) -> Tensor:
        """(1, N, E) sin-cos positions of a source's queries."""
        E = like.shape[-1]
        if grid is None:
            pos = build_1d_sincos_pos_embed(E, count)
        else:
            scale = 1.0 if frame is None else frame[0] / (grid[0] * self.model_patch)
            pos = build_2d_sincos_pos_embed(E, grid[0], grid[1], scale=scale, columns_first=self.columns_first)
            pos = pos.flatten(2).transpose(1, 2)
        return pos.to(device=like.device, dtype=like.dtype)

    def decode(self, enc: EncoderOutput) -> dict[str, Tensor]:
        """Encoder output -> ``{output: prediction}``: a map (B, C, H, W) or a sequence's logits (B, L, C)."""
        layout = enc.layout
        x = self.proj_context(self.context_norm(enc.tokens))  # (B, V + G, E)
        B, _, E = x.shape
        V = enc.visible_ids.shape[1]
        visible, global_ = x[:, :V], x[:, V:]
        parts, keep, shapes = [global_], [torch.ones(B, global_.shape[1], dtype=torch.bool, device=x.device)], {}
        for source in self.sources:
            side = next(self.sides[o] for o in self.modalities if self.source_of[o] == source)
            grid, n = side.query_shape(layout)
            queries = place_visible(self.mask_tokens[source].to(x.dtype).expand(B, n, E), visible, enc, source)
            parts.append(queries + self._positions(grid, n, layout.frame, x) + self.type_embeddings[source].to(x.dtype))
            valid = enc.valid.get(source)
            keep.append(valid.to(x.device) if valid is not None else keep[0].new_ones(B, n))
            shapes[source] = (grid, n)
        seq = torch.cat(parts, dim=1)  # (B, T, E)
        keys = torch.cat(keep, dim=1)
        attn_mask = None if bool(keys.all()) else keys[:, None, None, :]  # (B, 1, 1, T), True = attend
        for block in self.blocks:
            seq = block(seq, attn_mask=attn_mask)
        seq = self.norm(seq)
        spans, start = {}, global_.shape[1]
        for source in self.sources:
            n = shapes[source][1]
            spans[source] = seq[:, start : start + n]
            start += n
        return {o: self.sides[o].assemble(self.heads[o](spans[self.source_of[o]]), shapes[self.source_of[o]][0])
                for o in self.modalities}
