"""Turning modality maps into uint8 RGB pictures ``(H, W, 3)``.

Maps are numpy arrays or tensors in the sample layout: dense ``(C, H, W)`` or ``(H, W)``, class
maps ``(H, W)``.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
import torch

from multimae.modalities.spec import DISPLAYS, ModalitySpec

# Anchors of a dark-to-bright sequential map (near = bright), interpolated linearly.
_DEPTH_ANCHORS = np.array([
    [0.05, 0.03, 0.15], [0.30, 0.07, 0.45], [0.62, 0.15, 0.45], [0.90, 0.35, 0.25], [0.99, 0.70, 0.20],
    [0.99, 0.95, 0.60],
])
INVALID_COLOR = (40, 40, 40)


def _numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _squeeze_channel(x: np.ndarray) -> np.ndarray:
    return x[0] if x.ndim == 3 and x.shape[0] == 1 else x


def rgb_to_uint8(rgb: np.ndarray | torch.Tensor) -> np.ndarray:
    """float ``(3, H, W)`` in [0, 1] (or uint8 ``(H, W, 3)``) -> uint8 ``(H, W, 3)``."""
    x = _numpy(rgb)
    if x.dtype == np.uint8:
        return x
    return np.round(np.clip(x.transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)


def depth_to_rgb(depth: np.ndarray | torch.Tensor, lo: float | None = None, hi: float | None = None
                 ) -> np.ndarray:
    """Depth ``(1, H, W)`` or ``(H, W)`` -> colours, near bright, far dark; NaN -> dark grey.

    ``lo`` / ``hi`` default to the 2nd / 98th percentiles of the valid values.
    """
    d = _squeeze_channel(_numpy(depth)).astype(np.float64)
    valid = np.isfinite(d)
    out = np.empty(d.shape + (3,), dtype=np.uint8)
    out[:] = INVALID_COLOR
    if not valid.any():
        return out
    lo = float(np.percentile(d[valid], 2)) if lo is None else lo
    hi = float(np.percentile(d[valid], 98)) if hi is None else hi
    s = 1.0 - np.clip((d[valid] - lo) / max(hi - lo, 1e-6), 0, 1)  # 1 = near
    pos = s * (len(_DEPTH_ANCHORS) - 1)
    i = np.minimum(pos.astype(int), len(_DEPTH_ANCHORS) - 2)
    f = (pos - i)[:, None]
    out[valid] = np.round(((1 - f) * _DEPTH_ANCHORS[i] + f * _DEPTH_ANCHORS[i + 1]) * 255).astype(np.uint8)
    return out


def normals_to_rgb(normals: np.ndarray | torch.Tensor) -> np.ndarray:
    """Unit normals ``(3, H, W)`` -> colours ``(n + 1) / 2``; non-finite -> dark grey."""
    n = _numpy(normals).transpose(1, 2, 0)
    out = np.round((np.clip(np.nan_to_num(n), -1, 1) + 1) * 127.5).astype(np.uint8)
    out[~np.isfinite(n).all(-1)] = INVALID_COLOR
    return out


def distinct_colors(count: int, seed: int = 0) -> np.ndarray:
    """``count`` well separated uint8 colours (golden-ratio hues), ``(count, 3)``."""
    hues = (seed * 0.1 + np.arange(count) * 0.618033988749895) % 1.0
    return np.array([[round(255 * c) for c in colorsys.hsv_to_rgb(h, 0.65, 0.95)] for h in hues], dtype=np.uint8)


def draw_spec(spec: ModalitySpec, value: np.ndarray | torch.Tensor) -> np.ndarray:
    """One raw map of the modality ``spec`` describes, drawn as its spec says (`ModalitySpec.drawn_as`;
    class ids with `distinct_colors` of its classes) -> uint8 (H, W, 3)."""
    palette = distinct_colors(spec.num_channels) if spec.drawn_as == "palette" else None
    return draw(spec.drawn_as, np.asarray(value), palette)


def classes_to_rgb(ids: np.ndarray | torch.Tensor, palette: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
    """Class map ``(H, W)`` -> colours from ``palette`` (K, 3); ids outside it are grey."""
    x = _numpy(ids).astype(np.int64)
    table = np.asarray(palette, dtype=np.uint8)
    out = np.full(x.shape + (3,), INVALID_COLOR, dtype=np.uint8)
    ok = (x >= 0) & (x < len(table))
    out[ok] = table[x[ok]]
    return out


def instances_to_rgb(ids: np.ndarray | torch.Tensor) -> np.ndarray:
    """Instance map ``(H, W)`` -> colours; 0 (no instance) is black."""
    x = _numpy(ids).astype(np.int64)
    table = np.concatenate([np.zeros((1, 3), np.uint8), distinct_colors(max(int(x.max()), 0) + 1, seed=3)[1:]])
    return table[np.clip(x, 0, len(table) - 1)]


def draw(display: str, value: np.ndarray | torch.Tensor, palette: Sequence[Sequence[int]] | np.ndarray | None = None,
         value_range: tuple[float, float] | None = None) -> np.ndarray:
    """The one switch from a modality's map to a uint8 ``(H, W, 3)`` picture, by how its spec
    says it is drawn (`multimae.modalities.ModalitySpec.drawn_as`).

    ``rgb``: ``(3, H, W)`` in [0, 1] (clipped); ``colormap``: the first channel of ``(C, H, W)`` (or
    ``(H, W)``) by `depth_to_rgb` over ``value_range`` (default: the map's own 2nd-98th
    percentiles); ``normals``: `normals_to_rgb`; ``palette``: class ids ``(H, W)`` coloured from
    ``palette``; ``instances``: instance ids by `instances_to_rgb`.
    """
    if display == "rgb":
        return rgb_to_uint8(value)
    if display == "colormap":
        first = value[0] if value.ndim == 3 else value
        return depth_to_rgb(first, *(value_range or (None, None)))
    if display == "normals":
        return normals_to_rgb(value)
    if display == "palette":
        if palette is None:
            raise ValueError("drawing class ids needs a palette")
        return classes_to_rgb(value, palette)
    if display == "instances":
        return instances_to_rgb(value)
    raise ValueError(f"unknown display {display!r}; known: {DISPLAYS}")
