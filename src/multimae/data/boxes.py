"""2-D boxes as 4M serialises them into a sequence modality, and back.

A box is ``(xmin, ymin, xmax, ymax)`` in coordinate bins ``[0, bins)`` (one bin per pixel at the
tokenizer's image size; xmax / ymax inclusive) and a class name. Serialised: per box
``v0=xmin v1=ymin v2=xmax v3=ymax <class>``, boxes ordered by the distance of (xmin, ymin) to the
origin (the top-left corner), as 4M orders its detection sequences; the coordinate tokens are those of
`multimae.tokenizers.sequence`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

_BOX = re.compile(r"v0=(\d+) v1=(\d+) v2=(\d+) v3=(\d+) (\S+)")


@dataclass(frozen=True)
class Box:
    xmin: int
    ymin: int
    xmax: int
    ymax: int
    name: str

    def area(self) -> int:
        return (self.xmax - self.xmin + 1) * (self.ymax - self.ymin + 1)


def ordered(boxes: Iterable[Box]) -> list[Box]:
    """Boxes by distance of (xmin, ymin) to the origin, then by the rest (a total order)."""
    return sorted(boxes, key=lambda b: (math.hypot(b.xmin, b.ymin), b.ymin, b.xmin, b.xmax, b.ymax, b.name))


def serialize_boxes(boxes: Iterable[Box]) -> str:
    """Boxes -> ``"v0=.. v1=.. v2=.. v3=.. name ..."`` in `ordered` order ('' for none)."""
    return " ".join(f"v0={b.xmin} v1={b.ymin} v2={b.xmax} v3={b.ymax} {b.name}" for b in ordered(boxes))


def parse_boxes(text: str) -> list[Box]:
    """The boxes of a serialised text; anything that is not a whole box (a generated sequence cut
    short, stray words) is skipped."""
    return [Box(int(a), int(b), int(c), int(d), name) for a, b, c, d, name in _BOX.findall(text)]


def boxes_of_instances(instance: np.ndarray, names: dict[int, str], bins: int) -> list[Box]:
    """The box of each instance id of ``names`` in an (H, W) instance map, in bins of ``bins`` per
    side (pixel ``x`` is bin ``floor(x * bins / W)``); ids absent from the map give no box."""
    h, w = instance.shape
    out = []
    for k, name in names.items():
        ys, xs = np.nonzero(instance == k)
        if len(xs):
            out.append(Box(int(xs.min()) * bins // w, int(ys.min()) * bins // h, int(xs.max()) * bins // w,
                           int(ys.max()) * bins // h, name))
    return ordered(out)


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (inclusive bins)."""
    ix = min(a.xmax, b.xmax) - max(a.xmin, b.xmin) + 1
    iy = min(a.ymax, b.ymax) - max(a.ymin, b.ymin) + 1
    inter = max(ix, 0) * max(iy, 0)
    return inter / (a.area() + b.area() - inter)
