"""The paper's augmentation applied to a whole batch at once (one `grid_sample` per map).

Same parameters for every modality of a sample: RandomResizedCrop (``scale``, ``ratio``; boxes
drawn by `multimae.data.transforms.crop_params`) then a horizontal flip with probability 1/2.
Class maps are sampled with nearest neighbour; float maps bilinearly, NaN-aware (an output pixel
is invalid when less than half of its bilinear weight falls on valid pixels); ``normals`` are
renormalised and their x component changes sign under a flip; captions (lists of str, as collated)
swap left and right in the flipped samples (`multimae.text.flip.mirror_caption`), so tokenize
captions after this augmentation, not before (``caption_flip``: or captioned samples are not
flipped, or keep their caption; `multimae.data.transforms.CaptionFlip`). It runs on whatever device the
batch is on. Missing modalities (`multimae.data.collate.PRESENT_KEY`) need nothing: their NaN
placeholders stay NaN, their integer ones 0, and the presence record passes through. Shapes: B batch, C channels, H W input pixels, S output size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from multimae.data.collate import rows_with_any
from multimae.data.transforms import (
    TEXT_MODALITIES,
    CaptionFlip,
    VECTOR_MODALITIES,
    crop_params,
    mirror_vectors,
    resample_nan_aware,
    unit_vectors,
)
from multimae.text.flip import mirror_caption


def crop_grids(
    boxes: Tensor, flips: Tensor, in_size: tuple[int, int], out_size: tuple[int, int]
) -> Tensor:
    """Sampling grids (B, S_h, S_w, 2) in `grid_sample`'s normalised coordinates (align_corners=False).

    ``boxes`` (B, 4) float (top, left, h, w) in input pixels; ``flips`` (B,) bool.
    """
    H, W = in_size
    Sh, Sw = out_size
    dev = boxes.device
    top, left, h, w = boxes.unbind(1)
    ys = (torch.arange(Sh, device=dev) + 0.5) / Sh  # (S_h,) fractions of the box
    xs = (torch.arange(Sw, device=dev) + 0.5) / Sw
    xs = torch.where(flips[:, None], 1 - xs[None], xs[None])  # (B, S_w)
    y_pix = top[:, None] + ys[None] * h[:, None]  # (B, S_h) continuous pixel coordinates
    x_pix = left[:, None] + xs * w[:, None]
    gy = 2 * y_pix / H - 1
    gx = 2 * x_pix / W - 1
    return torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)


def mirror_captions(captions: list[str | None], flips: Tensor) -> list[str | None]:
    """A batch's captions (None = missing) with left / right swapped where ``flips`` (B,) is True."""
    if len(captions) != len(flips):
        raise ValueError(f"{len(captions)} captions for a batch of {len(flips)} samples")
    return [mirror_caption(c) if f and isinstance(c, str) else c for c, f in zip(captions, flips.tolist())]


def _has_map(batch: Mapping[str, object], batch_size: int) -> Tensor:
    """(B,) bool: the sample has at least one real map (a text-only sample of a mixed batch has only
    placeholders, and nothing to mirror its caption with)."""
    return rows_with_any(batch, [k for k, v in batch.items() if isinstance(v, Tensor) and v.dim() >= 3], batch_size)


def _captioned(batch: Mapping[str, object], batch_size: int) -> Tensor:
    """(B,) bool: the sample carries a caption of some text modality."""
    out = torch.zeros(batch_size, dtype=torch.bool)
    for name in TEXT_MODALITIES:
        captions = batch.get(name)
        if isinstance(captions, list):
            out |= torch.tensor([isinstance(c, str) for c in captions], dtype=torch.bool)
    return out


def _bilinear(grid: Tensor) -> Callable[[Tensor], Tensor]:
    return lambda x: F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class BatchRandomResizedCropFlip:
    """``(batch, generator) -> batch``: crop boxes and flips drawn per sample from ``generator``."""

    def __init__(self, size: int, scale: tuple[float, float] = (0.2, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), flip_p: float = 0.5,
                 caption_flip: CaptionFlip = "mirror") -> None:
        self.size, self.scale, self.ratio, self.flip_p = size, scale, ratio, flip_p
        self.caption_flip = caption_flip

    def params(self, batch_size: int, in_size: tuple[int, int], generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(boxes (B, 4) float, flips (B,) bool), drawn in sample order."""
        boxes = [crop_params(*in_size, self.scale, self.ratio, generator) for _ in range(batch_size)]
        flips = torch.rand(batch_size, generator=generator) < self.flip_p
        return torch.tensor(boxes, dtype=torch.float32), flips

    def apply(self, batch: Mapping[str, Tensor], boxes: Tensor, flips: Tensor) -> dict[str, Tensor]:
        sizes = {tuple(v.shape[-2:]) for v in batch.values() if isinstance(v, Tensor) and v.dim() >= 3}
        if len(sizes) != 1:
            raise ValueError(f"maps of a batch must share one size to be augmented jointly, got {sorted(sizes)}")
        in_size = sizes.pop()
        if self.caption_flip == "skip":
            flips = flips & ~_captioned(batch, len(flips))
        out: dict[str, Tensor] = {}
        for name, x in batch.items():
            if name in TEXT_MODALITIES and isinstance(x, list):
                mirrored = flips & _has_map(batch, len(flips)) if self.caption_flip == "mirror" else torch.zeros_like(flips)
                out[name] = mirror_captions(x, mirrored)
                continue
            if not isinstance(x, Tensor) or x.dim() < 3:
                out[name] = x
                continue
            grid = crop_grids(boxes.to(x.device), flips.to(x.device), in_size, (self.size, self.size))
            if x.is_floating_point():
                y = resample_nan_aware(_bilinear(grid), x.float())
                out[name] = unit_vectors(mirror_vectors(y, flips.to(x.device))) if name in VECTOR_MODALITIES else y
            else:
                y = F.grid_sample(x[:, None].float(), grid, mode="nearest", padding_mode="border", align_corners=False)
                out[name] = y[:, 0].to(x.dtype)
        return out

    def __call__(self, batch: Mapping[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        B = next(v for v in batch.values() if isinstance(v, Tensor)).shape[0]
        in_size = next(tuple(v.shape[-2:]) for v in batch.values() if isinstance(v, Tensor) and v.dim() >= 3)
        boxes, flips = self.params(B, in_size, generator)  # type: ignore[arg-type]
        return self.apply(batch, boxes, flips)
