"""A figure of samples with every modality side by side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from multimae.viz.colormaps import classes_to_rgb, depth_to_rgb, instances_to_rgb, normals_to_rgb, rgb_to_uint8
from multimae.viz.grid import image_grid

ORDER = ("rgb", "depth", "normals", "semseg", "instance")


def modality_picture(name: str, value: object, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """uint8 ``(H, W, 3)`` picture of one modality of a sample (layout of `multimae.data`)."""
    if name == "rgb":
        return rgb_to_uint8(value)  # type: ignore[arg-type]
    if name == "depth":
        return depth_to_rgb(value)  # type: ignore[arg-type]
    if name == "normals":
        return normals_to_rgb(value)  # type: ignore[arg-type]
    if name == "semseg":
        return classes_to_rgb(value, palette)  # type: ignore[arg-type]
    if name == "instance":
        return instances_to_rgb(value)  # type: ignore[arg-type]
    raise ValueError(f"no picture for modality {name!r}; known: {ORDER}")


def samples_figure(samples: Sequence[Mapping[str, object]], class_names: Sequence[str],
                   palette: Sequence[Sequence[int]], tile: int = 160) -> Image.Image:
    """One row per sample, one column per modality present, the caption (and label) under each
    row and the semseg palette as a legend."""
    names = [m for m in ORDER if m in samples[0]]
    rows = [[modality_picture(m, s[m], palette) for m in names] for s in samples]
    notes = [str(s.get("caption", "")) for s in samples]
    legend = list(zip(class_names, palette)) if "semseg" in names else None
    return image_grid(rows, names, notes, legend, tile=tile)
