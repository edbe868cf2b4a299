"""Input adapters: one per input modality, turning prepared data into tokens.

Shapes: B batch, C channels, H W pixels of the modality's own map, P patch side on that map,
h w token grid (h = H / P), N tokens (h * w for a grid, L for a sequence, G global tokens),
D token width, K classes or vocabulary size.

A modality's adapters own both of its sides, chosen here by its kind and nowhere else:

* the encoder side, an `InputAdapter` module: ``num_tokens(data)``, ``token_grid(data)`` (the
  (h, w) grid, or None off a grid), ``frame(data)`` (the full-resolution image size a grid lies
  on), ``default_valid(data)`` (padding of a sequence) and ``forward(data, encoded)``;
* the decoder side, an `OutputSide`: where the modality's queries sit (``query_shape(layout)``),
  how many values a decoder predicts per query (``values_per_token``) and how those become the
  prediction (``assemble``: unpatchify a map, or keep per-token logits). It holds no parameters,
  so decoders keep their official state-dict keys.

Grid adapters add the fixed 2-D sin-cos positional table (stored for the configured image size as
a frozen parameter ``pos_emb`` of shape (1, D, h0, w0), as in official checkpoints, and resized to
the modality's grid: a coarser grid samples the table at its cells' centres, so every grid's
positions lie on the image's common frame). No modality embedding is added to maps: the
projection bias acts as one. Sequences add a 1-D sin-cos table and a learned modality embedding;
global tokens add learned positions.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from timm.layers import trunc_normal_
from typing import Protocol

from multimae.layers.pos_embed import build_1d_sincos_pos_embed, build_2d_sincos_pos_embed, resize_pos_embed
from multimae.modalities.spec import ModalitySpec


class TokenLayoutLike(Protocol):
    """What an output side reads of `multimae.model.encoder.TokenLayout`."""

    names: tuple[str, ...]
    counts: tuple[int, ...]
    grids: tuple[tuple[int, int] | None, ...]
    frame: tuple[int, int] | None


class InputAdapter(nn.Module):
    """The encoder side of a modality: prepared data -> (B, N, D) tokens."""

    spec: ModalitySpec

    def num_tokens(self, data: Tensor) -> int:
        """N for ``data``."""
        raise NotImplementedError

    def token_grid(self, data: Tensor) -> tuple[int, int] | None:
        """(h, w) for a grid modality, None otherwise."""
        return None

    def frame(self, data: Tensor) -> tuple[int, int] | None:
        """(H, W) full-resolution image size the grid lies on; None off a grid."""
        return None

    def default_valid(self, data: Tensor) -> Tensor | None:
        """(B, N) bool, the tokens that exist judging by the data alone (None: all of them)."""
        return None


class _PatchAdapter(InputAdapter):
    """Shared machinery of maps: grid checks and positional embeddings."""

    pos_mode = "bicubic"

    def __init__(self, spec: ModalitySpec, dim: int, patch_size: int, image_size: int) -> None:
        super().__init__()
        self.spec = spec
        self.patch = spec.patch_size(patch_size)  # P on this modality's map
        # Cell size in units of the model's patch grid (1 unless the spec sets a coarser patch).
        self.scale = self.patch * spec.stride / patch_size
        grid = round(image_size / (patch_size * self.scale))
        self.pos_emb = nn.Parameter(build_2d_sincos_pos_embed(dim, grid, grid, scale=self.scale), requires_grad=False)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Token grid (h, w) for a map of ``height`` x ``width`` pixels, checking divisibility."""
        P = self.patch
        if height % P or width % P:
            raise ValueError(
                f"{self.spec.name}: map size {height}x{width} is not divisible by its patch size {P} "
                f"(image size must be a multiple of the model patch size)"
            )
        return height // P, width // P

    def token_grid(self, data: Tensor) -> tuple[int, int]:
        return self.grid(*data.shape[-2:])

    def num_tokens(self, data: Tensor) -> int:
        h, w = self.token_grid(data)
        return h * w

    def frame(self, data: Tensor) -> tuple[int, int]:
        H, W = data.shape[-2:]
        return H * self.spec.stride, W * self.spec.stride

    def add_pos(self, tokens: Tensor) -> Tensor:
        """(B, D, h, w) projected map -> (B, h*w, D) tokens with positions added."""
        h, w = tokens.shape[-2:]
        if self.scale == 1:
            pos = resize_pos_embed(self.pos_emb, h, w, self.pos_mode).to(tokens.dtype)
        else:  # exact positions on the common frame at any size
            pos = build_2d_sincos_pos_embed(self.pos_emb.shape[1], h, w, scale=self.scale)
            pos = pos.to(device=tokens.device, dtype=tokens.dtype)
        return (tokens + pos).flatten(2).transpose(1, 2)


class DenseInputAdapter(_PatchAdapter):
    """(B, C, H, W) real-valued map -> (B, N, D) tokens (a strided convolution per patch)."""

    def __init__(self, spec: ModalitySpec, dim: int, patch_size: int, image_size: int) -> None:
        super().__init__(spec, dim, patch_size, image_size)
        self.proj = nn.Conv2d(spec.num_channels, dim, kernel_size=self.patch, stride=self.patch)

    def forward(self, x: Tensor, encoded: Tensor | None = None) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.spec.num_channels:
            raise ValueError(
                f"{self.spec.name}: expected a (B, {self.spec.num_channels}, H, W) tensor, "
                f"got shape {tuple(x.shape)}"
            )
        if x.is_floating_point() is False:
            raise ValueError(f"{self.spec.name}: expected a floating-point tensor, got {x.dtype}")
        self.grid(*x.shape[-2:])
        return self.add_pos(self.proj(x.to(self.proj.weight.dtype)))


class CategoricalInputAdapter(_PatchAdapter):
    """(B, H, W) class ids -> learned class embeddings -> (B, N, D) tokens.

    With ``spec.ignore_index`` set, unlabelled pixels use an extra embedding row (index K).
    """

    pos_mode = "bilinear"

    def __init__(self, spec: ModalitySpec, dim: int, patch_size: int, image_size: int) -> None:
        super().__init__(spec, dim, patch_size, image_size)
        K = spec.num_channels
        self.class_emb = nn.Embedding(K + (spec.ignore_index is not None), spec.class_emb_dim)
        self.proj = nn.Conv2d(spec.class_emb_dim, dim, kernel_size=self.patch, stride=self.patch)

    def forward(self, x: Tensor, encoded: Tensor | None = None) -> Tensor:
        spec = self.spec
        if x.dim() != 3:
            raise ValueError(f"{spec.name}: expected a (B, H, W) map of class ids, got shape {tuple(x.shape)}")
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise ValueError(f"{spec.name}: class ids must be an integer tensor, got {x.dtype}")
        self.grid(*x.shape[-2:])
        ids = x.long()
        if spec.ignore_index is not None:
            ids = torch.where(ids == spec.ignore_index, torch.full_like(ids, spec.num_channels), ids)
            upper = spec.num_channels + 1
        else:
            upper = spec.num_channels
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= upper:
            raise ValueError(
                f"{spec.name}: class id out of range: found ids in [{lo}, {hi}], the modality has "
                f"{spec.num_channels} classes"
                + (f" (ignore index {spec.ignore_index})" if spec.ignore_index is not None else "")
            )
        emb = self.class_emb(ids).permute(0, 3, 1, 2)  # (B, E, H, W)
        return self.add_pos(self.proj(emb.to(self.proj.weight.dtype)))


class SequenceInputAdapter(InputAdapter):
    """(B, L) token ids -> (B, L, D): a learned token embedding, the 1-D sin-cos position and a
    learned modality embedding. Tokens equal to ``spec.pad_id`` are padding (see `default_valid`).

    With ``spec.positions == "visible"`` the position of a token is the number of tokens given to
    the encoder before it (4M), else its index in the sequence.
    """

    def __init__(self, spec: ModalitySpec, dim: int) -> None:
        super().__init__()
        self.spec = spec
        self.token_emb = nn.Embedding(spec.num_channels, dim)
        self.pos_emb = nn.Parameter(build_1d_sincos_pos_embed(dim, spec.max_length), requires_grad=False)
        self.mod_emb = nn.Parameter(torch.zeros(1, 1, dim))
        trunc_normal_(self.mod_emb, std=0.02)

    def _check_shape(self, x: Tensor) -> None:
        spec = self.spec
        if x.dim() != 2 or x.is_floating_point() or x.dtype == torch.bool:
            raise ValueError(f"{spec.name}: expected a (B, L) integer tensor of token ids, got {x.dtype} {tuple(x.shape)}")
        if x.shape[1] > spec.max_length:
            raise ValueError(f"{spec.name}: sequence of {x.shape[1]} tokens, longer than max_length {spec.max_length}")

    def _check(self, x: Tensor) -> None:
        """Shape and every id in range (the forward pass: values are read once, there)."""
        spec = self.spec
        self._check_shape(x)
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= spec.num_channels):
            raise ValueError(f"{spec.name}: token id out of range: found ids in [{int(x.min())}, {int(x.max())}], "
                             f"the vocabulary has {spec.num_channels}")

    def num_tokens(self, data: Tensor) -> int:
        self._check_shape(data)
        return data.shape[1]

    def default_valid(self, data: Tensor) -> Tensor:
        return data != self.spec.pad_id

    def forward(self, x: Tensor, encoded: Tensor | None = None) -> Tensor:
        self._check(x)
        B, L = x.shape
        pos = self.pos_emb[0]  # (max_length, D)
        if self.spec.positions == "visible" and encoded is not None:
            ids = (encoded.long().cumsum(dim=1) - 1).clamp_min(0)  # (B, L) running count of visible tokens
            p = pos[ids]  # (B, L, D)
        else:
            p = pos[:L].unsqueeze(0)
        return self.token_emb(x) + (p + self.mod_emb).to(self.token_emb.weight.dtype)


class GlobalInputAdapter(InputAdapter):
    """(B, G, C) feature vectors -> (B, G, D): a linear projection plus learned positions."""

    def __init__(self, spec: ModalitySpec, dim: int) -> None:
        super().__init__()
        self.spec = spec
        self.proj = nn.Linear(spec.num_channels, dim)
        self.pos_emb = nn.Parameter(torch.zeros(1, spec.max_length, dim))
        trunc_normal_(self.pos_emb, std=0.02)

    def num_tokens(self, data: Tensor) -> int:
        spec = self.spec
        if data.dim() != 3 or data.shape[2] != spec.num_channels or not data.is_floating_point():
            raise ValueError(f"{spec.name}: expected a (B, G, {spec.num_channels}) float tensor, got {data.dtype} "
                             f"{tuple(data.shape)}")
        if data.shape[1] > spec.max_length:
            raise ValueError(f"{spec.name}: {data.shape[1]} vectors, more than max_length {spec.max_length}")
        return data.shape[1]

    def forward(self, x: Tensor, encoded: Tensor | None = None) -> Tensor:
        G = self.num_tokens(x)
        return self.proj(x.to(self.proj.weight.dtype)) + self.pos_emb[:, :G]


class OutputSide:
    """The decoder side of a modality (see the module docstring). Shapes: N queries, K values each."""

    def __init__(self, spec: ModalitySpec, model_patch: int, image_size: int | None = None) -> None:
        self.spec = spec
        self.model_patch = model_patch
        self.patch = spec.patch_size(model_patch)  # P on the modality's own map (1 off a grid)
        self.image_size = image_size  # the frame of a map predicted when no map is given (None: refused)

    @property
    def values_per_token(self) -> int:
        """K: what a decoder predicts per query (C * P * P for a map, C for a token or a vector)."""
        return self.spec.num_channels * self.patch * self.patch

    def query_shape(self, layout: TokenLayoutLike) -> tuple[tuple[int, int] | None, int]:
        """(grid, N) of the modality's queries: its source's tokens when that was given, else the
        full set (a map's grid on the image frame, a sequence's max_length)."""
        source = self.spec.source_name
        if source in layout.names:
            i = layout.names.index(source)
            return layout.grids[i], layout.counts[i]
        return self.default_shape(layout)

    def default_shape(self, layout: TokenLayoutLike) -> tuple[tuple[int, int] | None, int]:
        return None, self.spec.max_length

    def assemble(self, y: Tensor, grid: tuple[int, int] | None) -> Tensor:
        """(B, N, K) per-query values -> the prediction: (B, N, C) off a grid."""
        return y


class MapOutputSide(OutputSide):
    """A map's queries are its patch grid; per-patch values are unpatchified to (B, C, h*P, w*P)."""

    def default_shape(self, layout: TokenLayoutLike) -> tuple[tuple[int, int] | None, int]:
        if layout.frame is None and self.image_size is None:
            raise ValueError(f"{self.spec.name}: cannot decode a map when no map was given as input")
        H, W = layout.frame or (self.image_size, self.image_size)
        P = self.patch * self.spec.stride  # patch side at full resolution
        return (H // P, W // P), (H // P) * (W // P)

    def assemble(self, y: Tensor, grid: tuple[int, int] | None) -> Tensor:
        """(B, h*w, C*P*P) with per-token values ordered (c, ph, pw) -> (B, C, h*P, w*P)."""
        assert grid is not None
        (h, w), B = grid, y.shape[0]
        P, C = self.patch, self.spec.num_channels
        x = y.reshape(B, h, w, C, P, P).permute(0, 3, 1, 4, 2, 5)  # (B, C, h, P, w, P)
        return x.reshape(B, C, h * P, w * P)


def build_output_side(spec: ModalitySpec, model_patch: int, image_size: int | None = None) -> OutputSide:
    """The decoder side for ``spec``'s placement; a map is predicted at ``image_size`` when the
    inputs hold no map (a caption alone, M3AE), refused without it."""
    side = MapOutputSide if spec.placement == "grid" else OutputSide
    return side(spec, model_patch, image_size)


def build_input_adapter(spec: ModalitySpec, dim: int, patch_size: int, image_size: int) -> InputAdapter:
    """The adapter for ``spec``'s kind."""
    if spec.kind == "dense":
        return DenseInputAdapter(spec, dim, patch_size, image_size)
    if spec.kind == "categorical":
        return CategoricalInputAdapter(spec, dim, patch_size, image_size)
    if spec.kind == "tokens":
        return SequenceInputAdapter(spec, dim)
    if spec.kind == "vector":
        return GlobalInputAdapter(spec, dim)
    raise ValueError(f"{spec.name}: no input adapter for modality kind {spec.kind!r}")
