"""Joint augmentation: one set of random parameters applied to every modality of a sample.

A transform is a callable ``(sample, generator) -> sample``: every reader passes a
`torch.Generator` seeded per sample, so augmentations are reproducible whatever the worker.

Per-modality rules, chosen from the values: integer maps ``(H, W)`` (semseg, instance) are resized
with nearest neighbour; float maps ``(C, H, W)`` bilinearly with anti-aliasing, NaN-aware when
they hold NaN (invalid depth stays invalid and never bleeds into valid pixels); vector maps
(``normals``) are renormalised and their x component changes sign on a horizontal flip. Text
(captions) passes through a crop, and a horizontal flip swaps the words left and right in it
(`multimae.text.flip.mirror_caption`), so the caption stays true of the mirrored picture; other
non-tensor values (label, key) pass through. A transform applies to whichever maps a
sample has (a sample may lack modalities); a sample without any map is returned unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torchvision.transforms.v2.functional as F

from multimae.modalities.registry import BUILTIN_MODALITIES, stored_modalities
from multimae.text.flip import mirror_caption

Sample = dict[str, object]
Transform = Callable[[Sample, torch.Generator], Sample]
# Camera-frame unit vectors (normals): their x component flips sign under a horizontal flip.
VECTOR_MODALITIES = tuple(n for n, s in BUILTIN_MODALITIES.items() if s.stored_as == "unit_vectors8")
# Text stored with a sample (captions): its words left / right swap under a horizontal flip.
TEXT_MODALITIES = tuple(n for n, e in stored_modalities().items() if e == "text")


def crop_params(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                generator: torch.Generator) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (top, left, h, w): an area fraction in ``scale`` and an aspect ratio
    (w / h) log-uniform in ``ratio``; after 10 failed draws, the central crop clamped to ``ratio``."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(u[2] * (height - h + 1)), int(u[3] * (width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def central_square(height: int, width: int) -> tuple[int, int, int, int]:
    """The box (top, left, h, w) of the largest central square of an (H, W) picture."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def resample_nan_aware(resample: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``resample(x)`` for a float map holding NaN at invalid pixels (the one NaN-aware rule of the
    augmentations, per sample here and per batch in `multimae.data.batch_augment`).

    Valid values are averaged with the resampler's own weights, NaN pixels are left out of the
    average, and an output pixel is invalid (NaN) when less than half of its weight falls on valid
    pixels, so invalid depth stays invalid and never bleeds into valid pixels. A map without NaN
    is resampled as is.
    """
    invalid = torch.isnan(x)
    if not bool(invalid.any()):
        return resample(x)
    num = resample(torch.where(invalid, 0.0, x))
    den = resample((~invalid).to(x.dtype))
    return torch.where(den > 0.5, num / den.clamp_min(1e-6), torch.full_like(num, float("nan")))


def unit_vectors(x: torch.Tensor) -> torch.Tensor:
    """Vector maps ``(..., C, H, W)`` renormalised to unit length along C (after resampling)."""
    return x / x.norm(dim=-3, keepdim=True).clamp_min(1e-6)


def mirror_vectors(x: torch.Tensor, flipped: torch.Tensor | None = None) -> torch.Tensor:
    """Vector maps ``(..., C, H, W)`` whose pixels were mirrored left-right: the x component
    changes sign, for every map (``flipped`` None) or for the maps of a batch ``(B, C, H, W)``
    where ``flipped`` (B,) bool is True."""
    x_part = x[..., :1, :, :]
    negated = -x_part if flipped is None else torch.where(flipped[:, None, None, None], -x_part, x_part)
    return torch.cat([negated, x[..., 1:, :, :]], dim=-3)


def resized_crop(sample: Mapping[str, object], box: tuple[int, int, int, int], size: int | tuple[int, int]
                 ) -> Sample:
    """Every map of ``sample`` cropped to ``box`` = (top, left, h, w) and resized to ``size``."""
    out_size = [size, size] if isinstance(size, int) else list(size)
    out: Sample = {}
    for name, value in sample.items():
        if not isinstance(value, torch.Tensor) or value.ndim < 2:
            out[name] = value
        elif not value.is_floating_point():
            out[name] = F.resized_crop(value[None], *box, out_size, interpolation=F.InterpolationMode.NEAREST)[0]
        else:
            resized = resample_nan_aware(lambda v: F.resized_crop(v, *box, out_size, antialias=True), value)
            out[name] = unit_vectors(resized) if name in VECTOR_MODALITIES else resized
    return out


CaptionFlip = Literal["mirror", "skip", "keep"]
CAPTION_FLIPS: tuple[str, ...] = ("mirror", "skip", "keep")
"""What a horizontal flip does to a captioned sample: ``mirror`` flips it and swaps left / right in
its caption (`mirror_caption`), ``skip`` leaves captioned samples unflipped, ``keep`` flips the
maps and leaves the caption as it was (then false wherever it says left or right: a control)."""


def has_caption(sample: Mapping[str, object]) -> bool:
    """The sample carries the text of a text modality."""
    return any(isinstance(sample.get(name), str) for name in TEXT_MODALITIES)


def hflip(sample: Mapping[str, object], caption_flip: CaptionFlip = "mirror") -> Sample:
    """Mirror every map left-right; vector maps also negate their x component and captions swap
    left / right (`mirror_caption`; not with ``caption_flip="keep"``). Its own inverse."""
    out: Sample = {}
    for name, value in sample.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 2:
            value = value.flip(-1)
            if name in VECTOR_MODALITIES:
                value = mirror_vectors(value)
        elif isinstance(value, str) and name in TEXT_MODALITIES and caption_flip != "keep":
            value = mirror_caption(value)
        out[name] = value
    return out


def _map_size(sample: Mapping[str, object]) -> tuple[int, int] | None:
    """The one (H, W) of the sample's maps; None when it has no map (a text-only sample)."""
    sizes = {tuple(v.shape[-2:]) for v in sample.values() if isinstance(v, torch.Tensor) and v.ndim >= 2}
    if not sizes:
        return None
    if len(sizes) != 1:
        raise ValueError(f"sample maps must share one size to be transformed jointly, got {sorted(sizes)}")
    return sizes.pop()  # type: ignore[return-value]


@dataclass(frozen=True)
class RandomResizedCropFlip:
    """The paper's augmentation: RandomResizedCrop (``scale``, ``ratio``) to ``size`` then a
    horizontal flip with probability ``flip_p``, with the same parameters for every modality;
    ``caption_flip`` says what a flip does to a captioned sample (`CaptionFlip`)."""

    size: int | tuple[int, int]
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    caption_flip: CaptionFlip = "mirror"

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        size = _map_size(sample)
        if size is None:
            return dict(sample)
        height, width = size
        out = resized_crop(sample, crop_params(height, width, self.scale, self.ratio, generator), self.size)
        flip = torch.rand(1, generator=generator).item() < self.flip_p
        if flip and not (self.caption_flip == "skip" and has_caption(out)):
            out = hflip(out, self.caption_flip)
        return out


@dataclass(frozen=True)
class Resize:
    """Deterministic evaluation transform: resize every map to ``size`` (no crop, no flip)."""

    size: int | tuple[int, int]

    def __call__(self, sample: Sample, generator: torch.Generator | None = None) -> Sample:
        size = _map_size(sample)
        return dict(sample) if size is None else resized_crop(sample, (0, 0, *size), self.size)
