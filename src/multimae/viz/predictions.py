"""Pictures of a fine-tuned dense model: its inputs, its prediction and the ground truth."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from multimae.modalities.registry import display_of
from multimae.modalities.spec import default_display
from multimae.viz.colormaps import draw
from multimae.viz.grid import image_grid
from multimae.viz.samples import modality_picture


def _target_picture(name: str, value: Tensor, palette: Sequence[Sequence[int]], depth_range: tuple[float, float]
                    ) -> np.ndarray:
    """A prediction or ground truth of the target: class ids with the palette, other maps as the
    target's spec says (by its shape when the name is not a known modality); colour-mapped maps
    over ``depth_range``, predicted vectors renormalised first."""
    if value.dim() == 2:  # class ids
        return draw("palette", value, palette)
    display = display_of(name) or default_display(False, value.shape[0])
    if display == "normals":
        value = value / value.norm(dim=0, keepdim=True).clamp_min(1e-6)
    return draw(display, value, palette, depth_range)


def prediction_figure(raw: Mapping[str, Tensor], inputs: Sequence[str], target: str, prediction: Tensor,
                      palette: Sequence[Sequence[int]], class_names: Sequence[str] | None = None,
                      max_samples: int = 4, tile: int = 128) -> Image.Image:
    """One row per sample: each input modality (raw), the prediction, the ground truth.

    ``raw``: a raw batch (sample conventions of `multimae.data`) holding ``inputs`` and ``target``;
    ``prediction``: (B, H, W) class ids or (B, C, H, W) values in the target's raw units. Depth
    prediction and truth share the truth's colour range.
    """
    n = min(max_samples, prediction.shape[0])
    rows = []
    for i in range(n):
        truth = raw[target][i].detach().cpu()
        pred = prediction[i].detach().cpu().float() if prediction.is_floating_point() else prediction[i].detach().cpu()
        valid = truth[torch.isfinite(truth)] if truth.is_floating_point() else truth.float()
        lo, hi = (float(valid.quantile(0.02)), float(valid.quantile(0.98))) if valid.numel() else (0.0, 1.0)
        row = [modality_picture(m, raw[m][i].detach().cpu(), palette) for m in inputs]
        row += [_target_picture(target, pred, palette, (lo, hi)), _target_picture(target, truth, palette, (lo, hi))]
        rows.append(row)
    titles = [*inputs, f"{target} predicted", f"{target} truth"]
    legend = list(zip(class_names, palette)) if class_names is not None and prediction.dim() == 3 else None
    return image_grid(rows, titles, None, legend, tile=tile)
