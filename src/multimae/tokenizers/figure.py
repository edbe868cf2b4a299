"""``reconstructions.png``: per sample, the input, the tokenizer's round trip, its error, and the
baseline's round trip at the same number of symbols.

Shapes: B samples, C channels, H W pixels. Errors are drawn bright where large (`pixel_error`:
class mismatch, angle, or absolute error), invalid pixels dark grey; a colour-mapped map (depth)
shares one value range across its input and reconstructions.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from multimae.tokenizers.metrics import pixel_error
from multimae.tokenizers.raw import MapFormat
from multimae.viz.colormaps import distinct_colors, draw
from multimae.viz.grid import image_grid


def _palette(num_classes: int) -> np.ndarray:
    from multimae.data.world import PALETTE

    return np.asarray(PALETTE, np.uint8) if num_classes <= len(PALETTE) else distinct_colors(num_classes)


def _value_range(fmt: MapFormat, raw: Tensor) -> tuple[float, float] | None:
    if fmt.spec.drawn_as != "colormap":
        return None
    first = raw[:, 0][fmt.valid(raw)]
    if not first.numel():
        return None
    return float(torch.quantile(first.float(), 0.02)), float(torch.quantile(first.float(), 0.98))


def reconstruction_figure(fmt: MapFormat, raw: Tensor, recon: Tensor, baseline: Tensor | None = None,
                          title: str = "tokenizer", tile: int = 128) -> Image.Image:
    """A grid with one row per sample of raw (B, ...) maps and their reconstructions (same shape)."""
    display = fmt.spec.drawn_as
    palette = _palette(fmt.spec.num_channels) if not fmt.dense else None
    vrange = _value_range(fmt, raw)
    err = pixel_error(fmt, raw, recon)
    top = float(torch.nan_to_num(err, nan=0.0).amax()) or 1.0
    titles = ["input", title, "error (bright = large)"] + (["baseline"] if baseline is not None else [])
    rows, notes = [], []
    for b in range(raw.shape[0]):
        row = [draw(display, raw[b], palette, vrange), draw(display, recon[b], palette, vrange),
               draw("colormap", -err[b], value_range=(-top, 0.0))]
        if baseline is not None:
            row.append(draw(display, baseline[b], palette, vrange))
        rows.append(row)
        notes.append(f"mean error {float(err[b].nanmean()):.4g}")
    return image_grid(rows, titles, notes, tile=tile)
