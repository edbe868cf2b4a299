"""Input adapters: one per input modality, turning a prepared map into tokens.

Shapes: B batch, C channels, H W pixels of the modality's own map, P patch side on that map,
h w token grid (h = H / P), N = h * w tokens, D token width, K classes.

Every adapter adds the fixed 2-D sin-cos positional table (stored for the configured image size
as a frozen parameter ``pos_emb`` of shape (1, D, h0, w0), as in official checkpoints, and
resized for other sizes). No modality embedding is added: the projection bias acts as one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from multimae.layers.pos_embed import build_2d_sincos_pos_embed, resize_pos_embed
from multimae.modalities.spec import ModalitySpec


class _PatchAdapter(nn.Module):
    """Shared machinery: grid checks and positional embeddings."""

    pos_mode = "bicubic"

    def __init__(self, spec: ModalitySpec, dim: int, patch_size: int, image_size: int) -> None:
        super().__init__()
        self.spec = spec
        self.patch = spec.patch_size(patch_size)  # P on this modality's map
        grid = image_size // patch_size
        self.pos_emb = nn.Parameter(build_2d_sincos_pos_embed(dim, grid, grid), requires_grad=False)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Token grid (h, w) for a map of ``height`` x ``width`` pixels, checking divisibility."""
        P = self.patch
        if height % P or width % P:
            raise ValueError(
                f"{self.spec.name}: map size {height}x{width} is not divisible by its patch size {P} "
                f"(image size must be a multiple of the model patch size)"
            )
        return height // P, width // P

    def add_pos(self, tokens: Tensor) -> Tensor:
        """(B, D, h, w) projected map -> (B, h*w, D) tokens with positions added."""
        h, w = tokens.shape[-2:]
        pos = resize_pos_embed(self.pos_emb, h, w, self.pos_mode).to(tokens.dtype)
        return (tokens + pos).flatten(2).transpose(1, 2)


class DenseInputAdapter(_PatchAdapter):
    """(B, C, H, W) real-valued map -> (B, N, D) tokens (a strided convolution per patch)."""

    def __init__(self, spec: ModalitySpec, dim: int, patch_size: int, image_size: int) -> None:
        super().__init__(spec, dim, patch_size, image_size)
        self.proj = nn.Conv2d(spec.num_channels, dim, kernel_size=self.patch, stride=self.patch)

    def forward(self, x: Tensor) -> Tensor:
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

    def forward(self, x: Tensor) -> Tensor:
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


def build_input_adapter(spec: ModalitySpec, dim: int, patch_size: int, image_size: int) -> _PatchAdapter:
    """The adapter for ``spec``'s kind."""
    if spec.kind == "dense":
        return DenseInputAdapter(spec, dim, patch_size, image_size)
    if spec.kind == "categorical":
        return CategoricalInputAdapter(spec, dim, patch_size, image_size)
    raise ValueError(f"{spec.name}: no input adapter for modality kind {spec.kind!r}")
