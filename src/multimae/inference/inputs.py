"""Your own files -> raw model inputs of the right size.

Shapes: C channels, H W pixels, P the model's patch size.

What each modality accepts (file, numpy array or tensor) and how it is read; the result follows
the raw conventions of `multimae.modalities.spec`:

=========  ===============================================  ====================================
modality   accepted                                         raw value
=========  ===============================================  ====================================
rgb        any picture PIL opens (grey, 16-bit grey,        float (3, H, W) in [0, 1]
           palette, CMYK, alpha are converted and named
           in the notes; EXIF orientation applied);
           uint8 (H, W, 3) / (3, H, W) arrays, or float
           ones in [0, 1]
depth      16- or 8-bit PNG (value / 1000, 0 = invalid);    float (1, H, W), NaN = invalid
           float array (H, W) / (1, H, W), <= 0 or
           non-finite = invalid
semseg     single-channel PNG of class ids (palette PNGs:   int64 (H, W) class ids
           their indices); integer array (H, W)
normals    8-bit RGB PNG ((n + 1) / 2); float array         float (3, H, W), unit vectors
           (3, H, W) in [-1, 1]
other      array (C, H, W) or (H, W) in the model's units   float (C, H, W)
=========  ===============================================  ====================================

Depth scale does not matter to the model (it standardises each map); the predicted depth is
given back in the units of the input depth when there is one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from multimae.data.codecs import DEPTH_SCALE, decode_problem, read_image, to_rgb8
from multimae.data.transforms import resized_crop
from multimae.modalities.spec import ModalitySpec

Fit = Literal["resize", "crop", "native"]
FITS: tuple[str, ...] = ("resize", "crop", "native")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")


@dataclass
class RawInput:
    """One input as read: ``value`` in raw conventions, ``source`` (a file name or ``"array"``) and
    ``how`` (a sentence on how it was decoded)."""

    value: Tensor
    source: str
    how: str


MAX_DEPTH = 1e12  # larger depth values overflow the float32 statistics of standardisation


def _array(data: Any, name: str, rgb: bool) -> tuple[np.ndarray, str, str, list[str]]:
    """(array, source, file kind, conversions) from a path, PIL image, numpy array or tensor;
    ``rgb``: a picture is converted to 8-bit RGB (a modality stored as ``rgb8``).

    Files are opened by `multimae.data.codecs.read_image`, the rule every reader follows (EXIF
    orientation applied; rgb of any mode, 16-bit grey included, to 8-bit RGB)."""
    if isinstance(data, (str, Path)):
        path = Path(data)
        if not path.is_file():
            raise ValueError(f"{name}: {path}: no such file")
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False), path.name, "npy", []
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"{name}: {path}: expected an image ({', '.join(IMAGE_SUFFIXES)}) or a .npy array")
        array, conversions = read_image(path.read_bytes(), path.name, rgb=rgb)
        return array, path.name, "image", conversions
    if isinstance(data, Image.Image):
        if rgb:
            conversions: list[str] = []
            return to_rgb8(data, conversions), "PIL image", "image", conversions
        return np.asarray(data), "PIL image", "image", []
    if isinstance(data, Tensor):
        return data.detach().cpu().numpy(), "tensor", "array", []
    if isinstance(data, np.ndarray):
        return data, "array", "array", []
    raise ValueError(f"{name}: expected a file path, a PIL image, a numpy array or a tensor, "
                     f"got {type(data).__name__}")


def _channels_first(a: np.ndarray, channels: int, name: str, source: str) -> np.ndarray:
    if a.ndim == 2 and channels == 1:
        return a[None]
    if a.ndim == 3 and a.shape[0] == channels:
        return a
    if a.ndim == 3 and a.shape[2] == channels:
        return a.transpose(2, 0, 1)
    raise ValueError(f"{name}: {source}: expected ({channels}, H, W) or (H, W, {channels}), got shape {a.shape}")


def _rgb(a: np.ndarray, name: str, source: str) -> RawInput:
    a = _channels_first(a, 3, name, source)
    if a.dtype == np.uint8:
        return RawInput(torch.from_numpy(a.astype(np.float32) / 255.0), source, "8-bit RGB / 255 -> [0, 1]")
    if a.dtype.kind != "f":
        raise ValueError(f"{name}: {source}: expected uint8 or float values, got {a.dtype}")
    bad = int((~np.isfinite(a)).sum())
    if bad:
        raise ValueError(f"{name}: {source}: {bad} of {a.size} values are NaN or infinite")
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"{name}: {source}: float images must lie in [0, 1], found values in [{lo:.3g}, {hi:.3g}]")
    return RawInput(torch.from_numpy(a.astype(np.float32)), source, "float RGB in [0, 1]")


def _depth(a: np.ndarray, name: str, source: str, kind: str) -> RawInput:
    a = _channels_first(a, 1, name, source)
    if a.dtype.kind in "ui":
        if a.dtype.kind == "i" and (a < 0).any():
            raise ValueError(f"{name}: {source}: {int((a < 0).sum())} negative values (down to {int(a.min())}): "
                             "integer depth is unsigned millimetres, 0 = invalid")
        d = a.astype(np.float32) / np.float32(DEPTH_SCALE)
        d[a == 0] = np.nan
        how = f"{a.dtype.itemsize * 8}-bit values / {DEPTH_SCALE:g} (millimetres -> metres), 0 = invalid"
    elif a.dtype.kind == "f":
        d = a.astype(np.float32)
        d[~np.isfinite(d) | (d <= 0)] = np.nan
        how = "float depth, values <= 0 or non-finite = invalid"
    else:
        raise ValueError(f"{name}: {source}: expected integer or float values, got {a.dtype}")
    if not np.isfinite(d).any():
        raise ValueError(f"{name}: {source}: no valid pixel (all zero or invalid)")
    if np.nanmax(d) > MAX_DEPTH:
        raise ValueError(f"{name}: {source}: values up to {np.nanmax(d):.3g}, above {MAX_DEPTH:g}: rescale the depth "
                         "(its statistics would overflow)")
    if kind == "image" and a.dtype == np.uint8:
        how += " (an 8-bit picture: only its relative values matter)"
    return RawInput(torch.from_numpy(d), source, how)


def _class_map(a: np.ndarray, spec: ModalitySpec, source: str) -> RawInput:
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2 or a.dtype.kind not in "ui":
        raise ValueError(f"{spec.name}: {source}: expected a single-channel map of integer class ids, got "
                         f"{a.dtype} {a.shape} (a colour-coded picture cannot be read back into ids)")
    return RawInput(torch.from_numpy(a.astype(np.int64)), source, f"class ids ({spec.num_channels} classes)")


def read_input(spec: ModalitySpec, data: Any) -> RawInput:
    """Read one input (a path, PIL image, array or tensor) for the modality ``spec``."""
    a, source, kind, conversions = _array(data, spec.name, spec.stored_as == "rgb8")
    if spec.is_categorical:
        return _class_map(a, spec, source)
    if spec.stored_as == "rgb8" or spec.normalization == "imagenet":
        raw = _rgb(a, spec.name, source)
        if conversions:
            raw.how = f"{'; '.join(conversions)}; {raw.how}"
        return raw
    if spec.stored_as == "depth16":
        return _depth(a, spec.name, source, kind)
    if spec.stored_as == "unit_vectors8" and a.dtype == np.uint8:
        n = _channels_first(a, 3, spec.name, source).astype(np.float32) / np.float32(127.5) - np.float32(1.0)
        n /= np.maximum(np.linalg.norm(n, axis=0, keepdims=True), np.float32(1e-6))
        return RawInput(torch.from_numpy(n), source, "8-bit (n + 1) / 2 -> unit vectors")
    if a.dtype.kind not in "uif":
        raise ValueError(f"{spec.name}: {source}: expected numeric values, got {a.dtype}")
    value = torch.from_numpy(_channels_first(a, spec.num_channels, spec.name, source).astype(np.float32))
    return RawInput(value, source, f"{spec.num_channels}-channel array as given")


def _wxh(size: tuple[int, int]) -> str:
    """(H, W) -> ``"W×H"``, the way image viewers give sizes."""
    return f"{size[1]}×{size[0]}"


def _round_to_patch(value: Tensor, H: int, W: int, patch: int) -> Tensor:
    """Centre-crop or pad ``value`` (..., H, W) to the nearest multiples of ``patch`` (at least one
    patch): edge pixels are repeated into the padding, NaN (invalid) for float one-channel maps."""
    out_h, out_w = (max(patch, (n + patch // 2) // patch * patch) for n in (H, W))
    a = value.numpy()
    top, left = max(0, (H - out_h) // 2), max(0, (W - out_w) // 2)
    a = a[..., top:top + out_h, left:left + out_w]
    pads = [(0, 0)] * (a.ndim - 2) + [((out_h - a.shape[-2]) // 2, out_h - a.shape[-2] - (out_h - a.shape[-2]) // 2),
                                      ((out_w - a.shape[-1]) // 2, out_w - a.shape[-1] - (out_w - a.shape[-1]) // 2)]
    if any(p != (0, 0) for p in pads):
        if a.dtype.kind == "f" and a.ndim == 3 and a.shape[0] == 1:
            a = np.pad(a, pads, mode="constant", constant_values=np.nan)
        else:
            a = np.pad(a, pads, mode="edge")
    return torch.from_numpy(np.ascontiguousarray(a))


def native_plan(H: int, W: int, patch: int) -> str:
    """What `fit_size` does at native size to an ``H x W`` input, as a sentence (W×H)."""
    out_h, out_w = (max(patch, (n + patch // 2) // patch * patch) for n in (H, W))
    if (out_h, out_w) == (H, W):
        return f"kept at their own size {_wxh((H, W))} (W×H)"
    parts = []
    for axis, n, m in (("width", W, out_w), ("height", H, out_h)):
        if m < n:
            parts.append(f"{axis} centre-cropped by {n - m} px")
        elif m > n:
            parts.append(f"{axis} padded by {m - n} px (edges repeated; depth: invalid)")
    return (f"rounded from {_wxh((H, W))} to {_wxh((out_h, out_w))} (W×H), the nearest multiples of the patch size "
            f"{patch}: {', '.join(parts)}")


def check_aspect(sizes: Mapping[str, tuple[int, int]], tolerance: float = 0.01) -> None:
    """Refuse inputs whose aspect ratios differ: stretching them to one size would put each
    modality's pixels on different places of the scene (labels no longer on their objects)."""
    ratios = {n: w / h for n, (h, w) in sizes.items()}
    lo, hi = min(ratios.values()), max(ratios.values())
    if hi > lo * (1 + tolerance):
        listed = ", ".join(f"{n} {_wxh(s)}" for n, s in sizes.items())
        raise ValueError(f"inputs have different aspect ratios ({listed}, W×H): resizing them together would "
                         "misalign them; crop them to the same framing first")


def peek_sizes(inputs: Mapping[str, Any], fit: Fit = "resize") -> dict[str, tuple[int, int]]:
    """``{modality: (H, W)}`` of file inputs as they will be read (EXIF orientation applied), from
    the headers only: cheap checks before a (possibly large) checkpoint is loaded. Raises
    ValueError for a missing or unreadable file, and for inputs that `fit_size` would refuse
    whatever the model (different aspect ratios; different sizes at native size)."""
    sizes: dict[str, tuple[int, int]] = {}
    for name, data in inputs.items():
        if not isinstance(data, (str, Path)):
            continue
        path = Path(data)
        if not path.is_file():
            raise ValueError(f"{name}: {path}: no such file")
        try:
            if path.suffix.lower() == ".npy":
                shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
                sizes[name] = tuple(int(n) for n in (shape[-2:] if len(shape) == 2 or shape[0] <= 4 else shape[:2]))
                continue
            with Image.open(path) as im:
                W, H = im.size
                rotated = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)
        except (OSError, ValueError, SyntaxError) as err:
            raise ValueError(f"{name}: {path}: cannot decode ({decode_problem(err, path.stat().st_size)})") from None
        sizes[name] = (W, H) if rotated else (H, W)
    if len(set(sizes.values())) > 1 and fit == "native":
        listed = ", ".join(f"{n} {_wxh(s)}" for n, s in sizes.items())
        raise ValueError(f"inputs have different sizes ({listed}, W×H); they must be aligned (same size) at native size")
    if len(sizes) > 1:
        check_aspect(sizes)
    return sizes


def fit_size(raw: Mapping[str, Tensor], size: int, patch: int, fit: Fit) -> tuple[dict[str, Tensor], str]:
    """Bring aligned raw maps to the model: ``resize`` (stretch to size x size), ``crop`` (central
    square, then resize) or ``native`` (keep their size, rounded to the nearest multiple of
    ``patch`` per side: centre-cropped when rounding down, padded when rounding up).

    Inputs of different sizes must have the same aspect ratio (within 1 %; else ValueError) and,
    at native size, the same size. Float maps are resized with anti-aliasing, invalid (NaN)
    pixels left out; class maps nearest. Returns the maps and a sentence saying what was done.
    Sizes are given as W×H, as image viewers do.
    """
    if fit not in FITS:
        raise ValueError(f"unknown fit {fit!r}; choose one of {FITS}")
    sizes = {n: (int(v.shape[-2]), int(v.shape[-1])) for n, v in raw.items()}
    if len(set(sizes.values())) > 1 and fit == "native":
        listed = ", ".join(f"{n} {_wxh(s)}" for n, s in sizes.items())
        raise ValueError(f"inputs have different sizes ({listed}, W×H); they must be aligned (same size) at native size")
    check_aspect(sizes)
    H, W = next(iter(sizes.values()))
    if fit == "native":
        how = native_plan(H, W, patch)
        out_n = {n: _round_to_patch(v, H, W, patch) for n, v in raw.items()}
        h, w = next(iter(out_n.values())).shape[-2:]
        return out_n, f"{how} (positional tables interpolated to a {w // patch}×{h // patch} token grid)"
    out: dict[str, Tensor] = {}
    for name, value in raw.items():
        h, w = value.shape[-2:]
        if (h, w) == (size, size):
            out[name] = value
            continue
        box = (0, 0, h, w)
        if fit == "crop":
            s = min(h, w)
            box = ((h - s) // 2, (w - s) // 2, s, s)
        out.update(resized_crop({name: value}, box, size))
    how = "resized" if fit == "resize" else "centre-cropped to a square and resized"
    sizes_text = ", ".join(sorted({_wxh(s) for s in sizes.values()}))
    return out, f"{how} from {sizes_text} to {size}×{size} (W×H)"
