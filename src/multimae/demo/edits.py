"""Edits of an input on the page: which pixels (a token's patch, a brush's disc) and what value
(a class id, a colour, a depth), checked against what the input can hold.

Shapes: C channels, H W pixels (the model's square image, H = W = S), P patch size, K classes.
Raw values follow `multimae.inference.inputs`: (C, H, W) float maps, (H, W) int64 class ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from multimae.inference.inputs import read_input
from multimae.modalities.spec import ModalitySpec


def editor_of(spec: ModalitySpec) -> str | None:
    """How the page edits an input: ``class`` (paint a class id), ``color`` (an RGB colour in [0, 1]),
    ``value`` (one number in the map's units); None: not editable on the page."""
    if spec.is_categorical:
        return "class"
    if spec.stored_as == "rgb8":  # a colour picture
        return "color"
    if spec.drawn_as == "colormap" and spec.num_channels == 1:
        return "value"
    return None


def patch_region(row: int, col: int, size: int, patch: int) -> Tensor:
    """(S, S) bool: the P x P pixels of token (``row``, ``col``)."""
    n = size // patch
    if not (0 <= row < n and 0 <= col < n):
        raise ValueError(f"patch ({row}, {col}) is outside the {n}×{n} token grid")
    where = torch.zeros(size, size, dtype=torch.bool)
    where[row * patch:(row + 1) * patch, col * patch:(col + 1) * patch] = True
    return where


def brush_region(x: float, y: float, radius: float, size: int, max_radius: float) -> Tensor:
    """(S, S) bool: the pixels whose centres lie within ``radius`` of (``x``, ``y``)."""
    if not (0 <= x < size and 0 <= y < size) or not 0 < radius <= max_radius:
        raise ValueError(f"brush at ({x}, {y}) radius {radius}: the centre must lie in the {size}×{size} image and "
                         f"the radius in (0, {max_radius}]")
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    return (xs - x) ** 2 + (ys - y) ** 2 <= radius ** 2


def apply_edit(spec: ModalitySpec, old: Tensor, value: Sequence[float], where: Tensor) -> Tensor:
    """``old`` with ``value`` (C numbers; one class id for a class map) written at ``where`` (H, W);
    a ValueError when the value is not one the input can hold (an id beyond K, rgb outside [0, 1])."""
    channels = 1 if spec.is_categorical else int(old.shape[0])
    if len(value) != channels or not all(np.isfinite(v) for v in value):
        raise ValueError(f"an edit of {spec.name} needs {channels} finite number(s), got {list(value)}")
    if spec.is_categorical:
        if value[0] != int(value[0]) or not 0 <= value[0] < spec.num_channels:
            raise ValueError(f"class id must be an integer in [0, {spec.num_channels}), got {value[0]}")
        return torch.where(where, torch.tensor(int(value[0])), old)
    new = torch.where(where[None], torch.tensor(value, dtype=old.dtype)[:, None, None], old)
    try:
        read_input(spec, new)  # the checks of any input of this modality (rgb in [0, 1], ...)
    except ValueError as err:
        raise ValueError(f"edit of {spec.name}: {err}") from None
    return new
