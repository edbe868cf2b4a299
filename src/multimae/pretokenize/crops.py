"""The crops a sample is tokenised at: K views, the same geometry for every modality of the sample.

Shapes: K crops, H W pixels of the source sample, P the image size a modality's crops are resized to.

Crop 0 is the plain view: the largest central square, unflipped (a square source: the whole
picture), so every sample has one view without augmentation, as 4M's ``save_vq_tokens`` keeps its
first crop a centre crop. Crops 1 .. K-1 are RandomResizedCrop boxes (area fraction in ``scale``,
aspect ratio in ``ratio``, `multimae.data.transforms.crop_params`) each flipped left-right with
probability ``flip_p``, drawn from a generator seeded by (seed, sample index) only: a sample's crops
do not depend on the run, its shard, its rank or the batch it was encoded in.

A global feature vector (a ``vectors`` modality, 4M's DINOv2 / ImageBind embedding) is not a map: it
describes the whole picture and is stored as it is at every crop (it is neither cropped nor mirrored;
the source holds no feature of a crop).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from multimae.data.boxes import parse_boxes, serialize_boxes, transform_boxes
from multimae.data.codecs import BOXES, VECTORS
from multimae.data.collate import sample_generator
from multimae.data.transforms import central_square, crop_params, hflip, resized_crop

Sample = dict[str, object]


@dataclass(frozen=True)
class CropConfig:
    num_crops: int = 1  # K views per sample; 1: only the central square
    scale: tuple[float, float] = (0.8, 1.0)  # area fraction of the random crops (4M's save_vq_tokens: 0.8 to 1)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # their aspect ratio (w / h), log-uniform
    flip_p: float = 0.5  # chance that a random crop is also mirrored

    def __post_init__(self) -> None:
        if self.num_crops < 1:
            raise ValueError(f"num_crops must be >= 1, got {self.num_crops}")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < low <= high, got {self.ratio}")
        if not 0 <= self.flip_p <= 1:
            raise ValueError(f"flip_p must be in [0, 1], got {self.flip_p}")

    def record(self) -> dict[str, Any]:
        """Plain data for the manifest."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def map_size(sample: Mapping[str, object], modalities: Sequence[str]) -> tuple[int, int] | None:
    """The one (H, W) of the maps among ``modalities`` of ``sample``; None when none is a map (feature
    vectors are not maps)."""
    sizes = {tuple(v.shape[-2:]) for m in modalities
             if m not in VECTORS and isinstance(v := sample[m], torch.Tensor) and v.ndim >= 2}
    if len(sizes) > 1:
        raise ValueError(f"sample {sample.get('key')}: maps of different sizes {sorted(sizes)} cannot share crops")
    return sizes.pop() if sizes else None  # type: ignore[return-value]


def plan_crops(size: tuple[int, int] | None, config: CropConfig, seed: int, index: int) -> np.ndarray:
    """(K, 5) int64 crops (top, left, height, width, flipped) of sample ``index`` whose maps are
    ``size`` = (H, W) pixels; a sample without maps (``size`` None) gets zero boxes, flips drawn
    alike."""
    g = sample_generator(seed, 0, index)
    height, width = size if size is not None else (0, 0)
    rows = [(*central_square(height, width), 0)]
    for _ in range(1, config.num_crops):
        box = crop_params(height, width, config.scale, config.ratio, g) if size is not None else (0, 0, 0, 0)
        flipped = int(torch.rand(1, generator=g).item() < config.flip_p)
        rows.append((*box, flipped))
    return np.asarray(rows, dtype=np.int64)


def crop_view(sample: Mapping[str, object], crop: np.ndarray, sizes: Mapping[str, int | None]) -> Sample:
    """The modalities ``sizes`` names of ``sample`` seen through one crop (top, left, height, width,
    flipped): maps cropped and resized to their size P (P x P), mirrored when flipped (vector maps
    and captions as `multimae.data.transforms.hflip` mirrors them); boxes (in pixels of the maps)
    moved through the same crop into P bins (`multimae.data.boxes.transform_boxes`); a modality of
    size None (a caption, metadata, a palette) is only mirrored (a caption's left / right swapped);
    a feature vector is kept as it is."""
    top, left, height, width, flipped = (int(v) for v in crop)
    out: Sample = {}
    for modality, size in sizes.items():
        if modality in BOXES:
            if size is None or height < 1:
                raise ValueError(f"sample {sample.get('key')}: {modality} are in pixels of the sample's maps; "
                                 "tokenize them together with a map modality (e.g. rgb)")
            boxes = transform_boxes(parse_boxes(str(sample[modality])), (top, left, height, width), size,
                                    bool(flipped))
            out[modality] = serialize_boxes(boxes)
            continue
        one = {modality: sample[modality]}
        if modality in VECTORS:
            out[modality] = one[modality]
            continue
        if size is not None:
            one = resized_crop(one, (top, left, height, width), size)
        out[modality] = (hflip(one) if flipped else one)[modality]
    return out
