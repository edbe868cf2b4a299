"""Image, semantic and geometric metadata of a rendered scene, as 4M-21's metadata modality.

Every value is measured on the exact ground truth of a `Rendering` and quantised into a bin of
``[0, bins)``; the text is ``"<field> v0=<bin> ..."`` with the fields in `METADATA_FIELDS` order,
e.g. ``"objects v0=3 classes v0=5 ... entropy v0=50"``. Field names are single lowercase words, so
a sequence tokenizer can hold each as one whole-word token.

Shapes: ``H, W`` image size.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from multimae.data.world.captions import visible_objects
from multimae.data.world.classes import BACKGROUND_CLASSES, CLASS_NAMES
from multimae.data.world.render import Rendering
from multimae.data.world.scenes import Scene

_FLOOR = CLASS_NAMES.index("floor")
_FIRST_OBJECT_CLASS = len(BACKGROUND_CLASSES)
_PAIR = re.compile(r"([a-z]+) v0=(\d+)")


@dataclass(frozen=True)
class MetadataField:
    """One metadata value: its word, how it is measured, and how it is binned.

    ``count`` fields are integers written as themselves (clipped to ``bins - 1``); the others are
    real values mapped linearly from ``[low, high]`` onto ``[0, bins)`` (``floor((v - low) /
    (high - low) * bins)``, clipped), so ``high`` and above is the last bin.
    """

    name: str
    description: str
    low: float = 0.0
    high: float = 1.0
    count: bool = False


# In the order of the text. The 4M-21 counterpart is in brackets where the name differs. The ranges
# span the values of the first 200 train scenes at 64 px (benchmarks/bench_world_sequences.py).
METADATA_FIELDS: tuple[MetadataField, ...] = (
    MetadataField("objects", "visible objects (`visible_objects`) [crowdedness]", count=True),
    MetadataField("classes", "distinct semseg classes in the image, background included [semantic diversity]",
                  count=True),
    MetadataField("shapes", "distinct shapes among the visible objects [instance diversity]", count=True),
    MetadataField("objectness", "fraction of pixels on an object", 0.0, 0.6),
    MetadataField("walkability", "fraction of pixels on the floor", 0.2, 1.0),
    MetadataField("occlusion", "fraction of object outline pixels (an object pixel with a 4-neighbour of another "
                  "instance) whose neighbour is a nearer object", 0.0, 0.25),
    MetadataField("complexity", "spherical variance of the normals, 1 - |mean unit normal| [geometric complexity]",
                  0.0, 0.6),
    MetadataField("brightness", "mean grey level (Rec. 601 luma of the sRGB values, 0-255)", 40.0, 220.0),
    MetadataField("contrast", "standard deviation of the grey level", 0.0, 80.0),
    MetadataField("saturation", "mean HSV saturation, (max - min) / max per pixel", 0.0, 0.8),
    MetadataField("colorfulness", "Hasler-Suesstrunk colourfulness of the sRGB values", 0.0, 125.0),
    MetadataField("entropy", "Shannon entropy (bits) of the 256-level grey histogram", 4.0, 8.0),
)
METADATA_NAMES: tuple[str, ...] = tuple(f.name for f in METADATA_FIELDS)


def _grey(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) float64 luma in [0, 255]."""
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _occlusion(instance: np.ndarray, depth: np.ndarray) -> float:
    """Fraction of object outline pixels next to a nearer object (0 for an image without objects)."""
    outline = np.zeros(instance.shape, dtype=bool)
    occluded = np.zeros(instance.shape, dtype=bool)
    for axis in (0, 1):
        for step in (1, -1):  # each pixel against its next / previous neighbour along the axis
            nid, nd = np.roll(instance, step, axis), np.roll(depth, step, axis)
            differs = (nid != instance) & (instance > 0)
            edge = [slice(None)] * 2
            edge[axis] = 0 if step == 1 else -1
            differs[tuple(edge)] = False  # np.roll wraps around: the image border has no neighbour
            outline |= differs
            occluded |= differs & (nid > 0) & (nd < depth)
    return float(occluded.sum() / outline.sum()) if outline.any() else 0.0


def _complexity(normals: np.ndarray) -> float:
    return float(1.0 - np.linalg.norm(normals.reshape(-1, 3).astype(np.float64).mean(0)))


def _saturation(rgb: np.ndarray) -> float:
    c = rgb.astype(np.float64)
    hi, lo = c.max(-1), c.min(-1)
    return float(np.where(hi > 0, (hi - lo) / np.maximum(hi, 1e-12), 0.0).mean())


def _colorfulness(rgb: np.ndarray) -> float:
    r, g, b = np.moveaxis(rgb.astype(np.float64), -1, 0)
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def _entropy(rgb: np.ndarray) -> float:
    hist = np.bincount(np.clip(np.round(_grey(rgb)), 0, 255).astype(np.int64).ravel(), minlength=256)
    p = hist[hist > 0] / hist.sum()
    return float(-(p * np.log2(p)).sum())


_MEASURES: dict[str, Callable[[Scene, Rendering], float]] = {
    "objects": lambda s, r: len(visible_objects(s, r)),
    "classes": lambda s, r: len(np.unique(r.semseg)),
    "shapes": lambda s, r: len({v.obj.shape for v in visible_objects(s, r)}),
    "objectness": lambda s, r: float((r.semseg >= _FIRST_OBJECT_CLASS).mean()),
    "walkability": lambda s, r: float((r.semseg == _FLOOR).mean()),
    "occlusion": lambda s, r: _occlusion(r.instance, r.depth),
    "complexity": lambda s, r: _complexity(r.normals),
    "brightness": lambda s, r: float(_grey(r.rgb).mean()),
    "contrast": lambda s, r: float(_grey(r.rgb).std()),
    "saturation": lambda s, r: _saturation(r.rgb),
    "colorfulness": lambda s, r: _colorfulness(r.rgb),
    "entropy": lambda s, r: _entropy(r.rgb),
}


def metadata_values(scene: Scene, rendering: Rendering) -> dict[str, float]:
    """``{field: value}`` before binning, in `METADATA_FIELDS` order."""
    return {f.name: float(_MEASURES[f.name](scene, rendering)) for f in METADATA_FIELDS}


def quantize(field: MetadataField, value: float, bins: int) -> int:
    """The bin in ``[0, bins)`` of ``value`` for ``field`` (see `MetadataField`)."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    b = value if field.count else (value - field.low) / (field.high - field.low) * bins
    return int(np.clip(np.floor(b), 0, bins - 1))


def metadata_text(scene: Scene, rendering: Rendering, bins: int) -> str:
    """``"objects v0=<bin> classes v0=<bin> ..."``: every field of `METADATA_FIELDS`, in order."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    values = metadata_values(scene, rendering)
    return " ".join(f"{f.name} v0={quantize(f, values[f.name], bins)}" for f in METADATA_FIELDS)


def parse_metadata(text: str) -> dict[str, int]:
    """``{field: bin}`` of the `METADATA_FIELDS` pairs found in ``text`` (other words are skipped)."""
    return {name: int(b) for name, b in _PAIR.findall(text) if name in METADATA_NAMES}
