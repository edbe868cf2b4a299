"""An image's few dominant colours, as 4M-21's colour-palette modality (not `classes.PALETTE`,
the display colours of the semantic classes).

The colours are a deterministic clustering of the pixels: a variance-based median cut into at most
``colors`` boxes, refined by a few k-means (Lloyd) steps from those box means; an image with fewer
distinct colours gets fewer. Ordered by pixel share (largest first), each colour is written
``v1=r v2=g v3=b`` with r, g, b quantised into ``[0, bins)`` (``floor(c * bins / 256)``).

Shapes: ``H, W`` image size, ``N`` pixels, ``K`` colours.
"""

from __future__ import annotations

import re

import numpy as np

_LLOYD_STEPS = 10
_COLOR = re.compile(r"v1=(\d+) v2=(\d+) v3=(\d+)")


def _median_cut(pixels: np.ndarray, colors: int) -> list[np.ndarray]:
    """(N, 3) float64 -> at most ``colors`` disjoint groups of pixels, each (n_k, 3).

    The group with the largest squared error about its mean is split at the median of its widest
    channel (values below the median vs the rest) until there are ``colors`` groups or none can split.
    """
    groups = [pixels]
    while len(groups) < colors:
        errors = [((g - g.mean(0)) ** 2).sum() for g in groups]
        i = int(np.argmax(errors))
        if errors[i] == 0:
            break
        g = groups.pop(i)
        channel = int(np.argmax(g.max(0) - g.min(0)))
        values = g[:, channel]
        cut = np.median(values)
        if cut == values.min():  # at least two distinct values: put the minimum alone below the cut
            cut = values[values > cut].min()
        groups[i:i] = [g[values < cut], g[values >= cut]]
    return groups


def dominant_colors(rgb: np.ndarray, colors: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 -> colours (K, 3) float64 in [0, 255] and their pixel shares (K,), largest first."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.size == 0:
        raise ValueError(f"rgb must be a non-empty uint8 (H, W, 3) array, got {rgb.dtype} {rgb.shape}")
    if colors < 1:
        raise ValueError(f"colors must be >= 1, got {colors}")
    pixels = rgb.reshape(-1, 3).astype(np.float64)
    centres = np.stack([g.mean(0) for g in _median_cut(pixels, colors)])
    for _ in range(_LLOYD_STEPS):
        nearest = ((pixels[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)  # (N,)
        counts = np.bincount(nearest, minlength=len(centres))
        centres = np.stack([pixels[nearest == k].mean(0) for k in np.flatnonzero(counts)])
    nearest = ((pixels[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    shares = np.bincount(nearest, minlength=len(centres)) / len(pixels)
    order = np.lexsort((*centres.T[::-1], -shares))  # by share, then by (r, g, b)
    return centres[order], shares[order]


def quantize_color(color: np.ndarray, bins: int) -> tuple[int, int, int]:
    """A colour (3,) in [0, 255] -> its (r, g, b) bins in ``[0, bins)``."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    r, g, b = (int(v) for v in np.clip(np.floor(np.asarray(color) * bins / 256), 0, bins - 1))
    return r, g, b


def palette_text(rgb: np.ndarray, colors: int = 4, bins: int = 64) -> str:
    """``"v1=r v2=g v3=b ..."``: the dominant colours of ``rgb`` (H, W, 3) uint8, largest share first."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    centres, _ = dominant_colors(rgb, colors)
    return " ".join("v1={} v2={} v3={}".format(*quantize_color(c, bins)) for c in centres)


def parse_palette(text: str) -> list[tuple[int, int, int]]:
    """The quantised (r, g, b) of each whole colour in ``text`` (anything else is skipped)."""
    return [(int(r), int(g), int(b)) for r, g, b in _COLOR.findall(text)]
