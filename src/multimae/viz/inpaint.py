"""The in-paint picture: per in-painted modality, the original, the regenerated tokens marked on it, the
original's tokens decoded (what the kept part can look like at best) and the result
(`multimae generate --inpaint`).

Shapes: H W pixels, h w token grid, N = h * w tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from torch import Tensor

from multimae.losses.masked import token_mask_to_pixels
from multimae.viz.grid import image_grid

MARK = np.array([255, 0, 200], dtype=np.float32)  # tint of the regenerated tokens' cells
MARK_ALPHA = 0.55


def regenerated_overlay(picture: np.ndarray, keep: Tensor, grid: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) ``picture`` with the cells of the tokens not kept (``keep`` (N,) bool False) tinted;
    H and W are multiples of the grid ``(h, w)``."""
    H, W = picture.shape[:2]
    h, w = grid
    if H % h or W % w or H // h != W // w:
        raise ValueError(f"a {H}x{W} picture does not tile the {h}x{w} token grid in square cells")
    marked = token_mask_to_pixels((~keep.cpu())[None], grid, H // h)[0].numpy()[..., None] > 0  # (H, W, 1)
    tinted = (1 - MARK_ALPHA) * picture.astype(np.float32) + MARK_ALPHA * MARK
    return np.where(marked, tinted, picture).round().astype(np.uint8)


@dataclass
class InPainted:
    """One in-painted modality: per sample the ``original``, its tokens ``decoded`` and the ``result``
    pictures (uint8 (H, W, 3)), ``keep`` (B, N) bool its kept tokens, on the token ``grid`` (h, w)."""

    original: Sequence[np.ndarray]
    decoded: Sequence[np.ndarray]
    result: Sequence[np.ndarray]
    keep: Tensor
    grid: tuple[int, int]


def inpaint_figure(inpainted: Mapping[str, InPainted], notes: Sequence[str] | None = None) -> Image.Image:
    """Columns original / regenerated (marked) / tokens decoded / in-painted per modality, one row per sample."""
    titles = [t for name in inpainted for t in (f"{name} original", f"{name} regenerated", f"{name} tokens",
                                                 f"{name} in-painted")]
    samples = len(next(iter(inpainted.values())).result)
    rows, counts = [], []
    for b in range(samples):
        row, parts = [], []
        for name, p in inpainted.items():
            row += [p.original[b], regenerated_overlay(p.original[b], p.keep[b], p.grid), p.decoded[b], p.result[b]]
            parts.append(f"{name}: {int((~p.keep[b]).sum())} of {p.keep.shape[1]} tokens regenerated")
        rows.append(row)
        counts.append("; ".join(parts))
    notes = [f"{c}\n{n}" if n else c for c, n in zip(counts, notes or [""] * samples)]
    return image_grid(rows, titles, notes)

