"""Boxes drawn on a picture: each box's outline and class name, one colour per class name.

Shapes: H, W picture pixels; boxes in ``bins`` per side (`multimae.data.boxes`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import numpy as np
from PIL import Image, ImageDraw

from multimae.data.boxes import Box, parse_boxes
from multimae.viz.colormaps import distinct_colors
from multimae.viz.grid import _font

_COLORS = 24  # class names hash onto this many distinct colours


def box_color(name: str) -> tuple[int, int, int]:
    """The colour of class ``name``: the same in every picture and run."""
    r, g, b = distinct_colors(_COLORS)[zlib.crc32(name.encode()) % _COLORS]
    return int(r), int(g), int(b)


def draw_boxes(picture: np.ndarray, boxes: Iterable[Box], bins: int, scale: int = 3) -> np.ndarray:
    """uint8 (H, W, 3) ``picture`` enlarged ``scale`` times (nearest) with ``boxes`` (in ``bins`` per
    side, inclusive) outlined and labelled -> uint8 (scale H, scale W, 3)."""
    if picture.dtype != np.uint8 or picture.ndim != 3 or picture.shape[-1] != 3:
        raise ValueError(f"picture must be uint8 (H, W, 3), got {picture.dtype} {picture.shape}")
    h, w = picture.shape[:2]
    image = Image.fromarray(picture).resize((w * scale, h * scale), Image.Resampling.NEAREST)
    draw, font = ImageDraw.Draw(image), _font(max(9, 4 * scale))
    sx, sy = w * scale / bins, h * scale / bins
    for b in boxes:
        color = box_color(b.name)
        x0, y0, x1, y1 = b.xmin * sx, b.ymin * sy, (b.xmax + 1) * sx - 1, (b.ymax + 1) * sy - 1
        draw.rectangle([x0, y0, x1, y1], outline=color, width=max(1, scale // 2))
        draw.text((x0 + 2, y0 + 1), b.name, fill=color, font=font)
    return np.asarray(image)


def draw_box_text(picture: np.ndarray | None, text: str, bins: int, size: int, scale: int = 3) -> np.ndarray:
    """The boxes of a serialised ``text`` drawn on ``picture`` (uint8 (H, W, 3); None: a grey
    ``size`` x ``size`` canvas), as `draw_boxes`."""
    base = picture if picture is not None else np.full((size, size, 3), 128, dtype=np.uint8)
    return draw_boxes(base, parse_boxes(text), bins, scale)
