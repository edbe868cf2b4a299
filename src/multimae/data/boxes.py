"""2-D boxes as 4M serialises them into a sequence modality, and back.

A box is ``(xmin, ymin, xmax, ymax)`` in coordinate bins ``[0, bins)`` (one bin per pixel at the
tokenizer's image size; xmax / ymax inclusive) and a class name. Serialised: per box
``v0=xmin v1=ymin v2=xmax v3=ymax <class>``, boxes ordered by the distance of (xmin, ymin) to the
origin (the top-left corner), as 4M orders its detection sequences; the coordinate tokens are those of
`multimae.tokenizers.sequence`.

Stored with a sample (the ``box_text`` encoding), the bins are the pixels of the sample's maps (x in
columns, y in rows). `transform_boxes` moves them through a crop, its resize and a flip, as 4M's
detection transform does: each box clipped to the crop and dropped when nothing of it is left
(4M's ``min_visibility`` 0), its pixel edges scaled, mirrored, ordered again.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
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


def check_boxes_text(text: str, where: str, size: tuple[int, int] | None = None) -> list[Box]:
    """The boxes of a stored ``text``; a ValueError naming ``where`` when it holds anything but whole
    boxes (``v0=.. v1=.. v2=.. v3=.. name``, xmin <= xmax, ymin <= ymax) or, given the maps' ``size``
    (H, W), a box outside them."""
    boxes = parse_boxes(text)
    if len(text.split()) != 5 * len(boxes):
        raise ValueError(f"{where}: not a list of boxes 'v0=xmin v1=ymin v2=xmax v3=ymax name ...' "
                         f"(starts {text[:60]!r})")
    for b in boxes:
        if b.xmin > b.xmax or b.ymin > b.ymax:
            raise ValueError(f"{where}: box {b} has its min after its max")
        if size is not None and (b.xmax >= size[1] or b.ymax >= size[0]):
            raise ValueError(f"{where}: box {b} reaches outside the {size[1]}x{size[0]} (WxH) maps; stored boxes are "
                             "in pixels of the sample's maps")
    return boxes


def _edges(low: int, high: int, start: int, extent: int, bins: int) -> tuple[int, int] | None:
    """Inclusive pixels [low, high] seen through the window [start, start + extent) resized to ``bins``:
    the inclusive bins that the clipped pixel span [max(low, start), min(high, start + extent - 1)] covers
    (its edges scaled by bins / extent, the far one rounded up); None when the window misses it."""
    low, high = max(low, start) - start, min(high, start + extent - 1) - start
    if low > high:
        return None
    first = low * bins // extent
    last = -(-(high + 1) * bins // extent) - 1
    return first, min(max(last, first), bins - 1)


def transform_boxes(boxes: Iterable[Box], crop: tuple[int, int, int, int], bins: int, flipped: bool = False
                    ) -> list[Box]:
    """Boxes in pixels of a map seen through ``crop`` = (top, left, height, width) resized to ``bins``
    x ``bins`` and mirrored left-right when ``flipped`` (see the module docstring), in `ordered` order."""
    top, left, height, width = crop
    if height < 1 or width < 1 or bins < 1:
        raise ValueError(f"crop {crop} and bins {bins} must be positive")
    out = []
    for b in boxes:
        xs, ys = _edges(b.xmin, b.xmax, left, width, bins), _edges(b.ymin, b.ymax, top, height, bins)
        if xs is None or ys is None:
            continue
        x0, x1 = (bins - 1 - xs[1], bins - 1 - xs[0]) if flipped else xs
        out.append(Box(x0, ys[0], x1, ys[1], b.name))
    return ordered(out)


def box_scores(predicted: Sequence[Sequence[Box]], truth: Sequence[Sequence[Box]]) -> dict[str, float]:
    """How well predicted boxes match the true boxes of the same scenes (in the same bins):
    ``recall_iou`` each true box's best IoU with a predicted box of its class (0 without one), averaged
    over all true boxes; ``recall_50`` the share of true boxes so matched at IoU >= 0.5;
    ``precision_iou`` each predicted box's best IoU with a true box of its class, averaged over all
    predicted boxes (0 when none is predicted); ``count_acc`` the share of scenes with as many boxes
    as the truth."""
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predicted scenes for {len(truth)} true ones")

    def best(box: Box, others: Sequence[Box]) -> float:
        return max((box_iou(box, o) for o in others if o.name == box.name), default=0.0)

    recall = [best(t, p) for p, ts in zip(predicted, truth) for t in ts]
    precision = [best(q, ts) for ps, ts in zip(predicted, truth) for q in ps]
    return {"recall_iou": float(np.mean(recall)) if recall else 0.0,
            "recall_50": float(np.mean([r >= 0.5 for r in recall])) if recall else 0.0,
            "precision_iou": float(np.mean(precision)) if precision else 0.0,
            "count_acc": float(np.mean([len(p) == len(t) for p, t in zip(predicted, truth)])),
            "boxes_predicted": float(sum(map(len, predicted))), "boxes_true": float(len(recall))}
