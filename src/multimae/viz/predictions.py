"""Pictures of a fine-tuned dense model: its inputs, its prediction and the ground truth."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from multimae.viz.colormaps import classes_to_rgb, depth_to_rgb, normals_to_rgb
from multimae.viz.grid import image_grid
from multimae.viz.samples import modality_picture


def _target_picture(name: str, value: Tensor, palette: Sequence[Sequence[int]], depth_range: tuple[float, float]
                    ) -> np.ndarray:
    if value.dim() == 2:  # class ids
        return classes_to_rgb(value, palette)
    if name == "depth" or value.shape[0] == 1:
        return depth_to_rgb(value, *depth_range)
    if name == "normals":
        return normals_to_rgb(value / value.norm(dim=0, keepdim=True).clamp_min(1e-6))
    return modality_picture("rgb", value.clamp(0, 1), palette)


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
