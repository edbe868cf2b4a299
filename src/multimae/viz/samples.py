"""A figure of samples with every modality side by side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from multimae.data.codecs import MAPS, TEXT
from multimae.modalities.registry import display_of
from multimae.viz.colormaps import draw
from multimae.viz.grid import image_grid

ORDER = MAPS  # column order: every stored map (dense ones, then class maps)


def modality_picture(name: str, value: object, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """uint8 ``(H, W, 3)`` picture of one modality of a sample (layout of `multimae.data`), drawn
    as its spec says (`multimae.modalities.display_of`)."""
    display = display_of(name)
    if display is None:
        raise ValueError(f"no picture for modality {name!r}; known: {ORDER}")
    return draw(display, value, palette)  # type: ignore[arg-type]


def samples_figure(samples: Sequence[Mapping[str, object]], class_names: Sequence[str],
                   palette: Sequence[Sequence[int]], tile: int = 160) -> Image.Image:
    """One row per sample, one column per modality present, the caption (and label) under each
    row and the semseg palette as a legend."""
    names = [m for m in ORDER if m in samples[0]]
    rows = [[modality_picture(m, s[m], palette) for m in names] for s in samples]
    notes = ["; ".join(str(s[m]) for m in TEXT if m in s) for s in samples]
    legend = list(zip(class_names, palette)) if any(display_of(m) == "palette" for m in names) else None
    return image_grid(rows, names, notes, legend, tile=tile)
