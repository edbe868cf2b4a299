"""The baseline a map tokenizer is compared with, at the same number of symbols.

Shapes: B samples, C channels, H W pixels, P pixels per token side, h w token grid, V symbols.

`PooledKMeans`: each P x P cell is averaged (over its valid pixels, in the tokenizer's normalised
units; class maps as class frequencies), the averages of training maps are clustered by k-means
into V centres, and a map is coded as the nearest centre of each cell, then decoded by nearest
upsampling (a class map: the centre's most frequent class). Same grid, same vocabulary as the
tokenizer: what a learned encoder / decoder adds over "a palette of V cell averages".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from multimae.tokenizers.raw import MapFormat


def pooled_cells(fmt: MapFormat, raw: Tensor, patch: int) -> tuple[Tensor, Tensor]:
    """(cells (B, h, w, C) mean normalised value / class frequency of each cell's valid pixels,
    valid (B, h, w): cells with at least one valid pixel)."""
    values, valid = fmt.normalize(raw)  # (B, C, H, W), (B, H, W)
    w = valid[:, None].float()
    total = F.avg_pool2d(values * w, patch)
    frac = F.avg_pool2d(w, patch)
    cells = total / frac.clamp_min(1e-12)
    return cells.permute(0, 2, 3, 1), frac[:, 0] > 0


def kmeans(points: Tensor, k: int, iterations: int, generator: torch.Generator) -> Tensor:
    """(k, C) centres of ``points`` (M, C) by Lloyd's iterations from k distinct random points (fewer
    centres when there are fewer distinct points); an emptied centre keeps its place."""
    unique = torch.unique(points, dim=0)
    k = min(k, len(unique))
    centres = unique[torch.randperm(len(unique), generator=generator)[:k]].clone()
    for _ in range(iterations):
        assign = torch.cdist(points, centres).argmin(dim=1)
        sums = torch.zeros_like(centres).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=k).to(points.dtype)[:, None]
        centres = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
    return centres


class PooledKMeans:
    """Cell averages coded by a k-means palette of V entries (see the module docstring)."""

    def __init__(self, fmt: MapFormat, patch: int, centres: Tensor) -> None:
        self.format, self.patch, self.centres = fmt, patch, centres

    @classmethod
    def fit(cls, fmt: MapFormat, raw: Tensor, patch: int, vocab_size: int, max_points: int = 20_000,
            iterations: int = 25, seed: int = 0) -> PooledKMeans:
        """Fit on training maps ``raw``: k-means of at most ``max_points`` valid cell averages."""
        g = torch.Generator().manual_seed(seed)
        cells, valid = pooled_cells(fmt, raw, patch)
        points = cells[valid].double()
        if len(points) > max_points:
            points = points[torch.randperm(len(points), generator=g)[:max_points]]
        return cls(fmt, patch, kmeans(points, vocab_size, iterations, g).float())

    @property
    def vocab_size(self) -> int:
        return len(self.centres)

    def encode(self, raw: Tensor) -> tuple[Tensor, Tensor]:
        """raw maps -> (ids (B, h, w) int64, valid (B, h, w))."""
        cells, valid = pooled_cells(self.format, raw, self.patch)
        b, h, w, c = cells.shape
        ids = torch.cdist(cells.reshape(b, h * w, c), self.centres[None].expand(b, -1, -1)).argmin(dim=2)
        return ids.reshape(b, h, w), valid

    def decode(self, ids: Tensor) -> Tensor:
        """ids (B, h, w) -> raw maps at P times the resolution."""
        cells = self.centres[ids].permute(0, 3, 1, 2)  # (B, C, h, w)
        up = F.interpolate(cells, scale_factor=self.patch, mode="nearest")
        return self.format.denormalize(self.format.finish(up))
