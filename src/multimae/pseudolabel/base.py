"""The `Labeler` interface and the geometry every labeler shares:
resizing images to what a model needs, running fixed-size micro-batches, resizing outputs back.

Shapes: B batch, C channels, K classes, H W image pixels, h w model-input pixels.

A labeler turns a list of RGB images (each ``(H, W, 3)`` uint8, any size) into one array per
image at that image's own size:

==========  ====================================================================
modality    output per image
==========  ====================================================================
depth       float32 ``(H, W)``, depth-like ordering (larger = farther), > 0 where
            valid, NaN where invalid; its scale is free (stored per image)
semseg      int64 ``(H, W)`` class ids in ``[0, num_classes)``
normals     float32 ``(H, W, 3)`` unit vectors, camera frame (x right, y down,
            z forward)
feature     float32 ``(1, C)``: one global vector (`multimae.pseudolabel.features`)
==========  ====================================================================

Determinism: every forward pass runs exactly ``batch_size`` images (a short micro-batch is padded
with black images that are thrown away), so an image's label depends only on the image, the
model, ``batch_size`` and the machine -- not on which other images share its batch. A resumed run
therefore writes the same bytes as an uninterrupted one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from multimae.modalities.registry import (
    BUILTIN_MODALITIES,
    DEFAULT_IMAGE_MODALITY,
    stored_modalities,
)
from multimae.modalities.spec import TEXT_ENCODINGS

# What a labeller may produce from the image: every built-in map or vector stored in files but the
# image itself (texts and serialised sequences are not labelled).
LABELED_MODALITIES = tuple(m for m, encoding in stored_modalities().items()
                           if m in BUILTIN_MODALITIES and m != DEFAULT_IMAGE_MODALITY
                           and encoding not in TEXT_ENCODINGS)
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# --------------------------------------------------------------------------- input geometry

@dataclass(frozen=True)
class InputSize:
    """How images are resized for a model.

    Either ``fixed = (h, w)``, or the aspect ratio is kept with the shorter side at ``short``
    (the longer side at most ``long_max``, when given); both sides are then rounded to a multiple
    of ``multiple`` (at least one multiple).
    """

    fixed: tuple[int, int] | None = None
    short: int | None = None
    long_max: int | None = None
    multiple: int = 1

    def __post_init__(self) -> None:
        if (self.fixed is None) == (self.short is None):
            raise ValueError(f"InputSize needs exactly one of fixed=(h, w) or short=N, got {self}")
        if self.multiple < 1:
            raise ValueError(f"InputSize.multiple must be >= 1, got {self.multiple}")
        if self.fixed is not None and any(s < 1 or s % self.multiple for s in self.fixed):
            raise ValueError(f"fixed input size {self.fixed} is not a positive multiple of {self.multiple}")

    def target(self, height: int, width: int) -> tuple[int, int]:
        """Model input ``(h, w)`` for an image of ``(height, width)`` pixels."""
        if self.fixed is not None:
            return self.fixed
        assert self.short is not None
        scale = self.short / min(height, width)
        if self.long_max is not None:
            scale = min(scale, self.long_max / max(height, width))
        m = self.multiple
        return max(m, round(height * scale / m) * m), max(m, round(width * scale / m) * m)


def interpolation_mode(resample: Any) -> str:
    """A PIL resampling code or torchvision mode -> ``F.interpolate`` mode (bicubic by default)."""
    value = getattr(resample, "value", resample)
    if isinstance(value, str):
        return value if value in ("nearest", "bilinear", "bicubic") else "bicubic"
    return {0: "nearest", 2: "bilinear", 3: "bicubic"}.get(int(value) if value is not None else 3, "bicubic")


def resize_images(images: Sequence[Tensor], size: InputSize, mode: str = "bicubic") -> list[Tensor]:
    """uint8 ``(3, H, W)`` images -> uint8 ``(3, h, w)`` at ``size.target(H, W)`` (antialiased).

    The result is rounded back to 8 bits, as an image library's resize would give.
    """
    out = []
    for im in images:
        h, w = size.target(*im.shape[-2:])
        if (h, w) == tuple(im.shape[-2:]):
            out.append(im)
            continue
        x = F.interpolate(im[None].float(), size=(h, w), mode=mode, antialias=mode != "nearest",
                          align_corners=None if mode == "nearest" else False)
        out.append(x[0].round().clamp(0, 255).to(torch.uint8))
    return out


def run_fixed_batches(inputs: Sequence[Tensor], forward: Callable[[Tensor], Tensor | tuple[Tensor, ...]],
                      batch_size: int) -> list[Any]:
    """``forward`` over ``inputs`` (each ``(C, h, w)``) grouped by shape, ``batch_size`` at a time.

    Every call of ``forward`` gets exactly ``batch_size`` rows: short groups are padded with zeros
    and the padding's outputs dropped. ``forward`` returns a tensor or a tuple of tensors with a
    leading batch dimension; the result holds, per input and in input order, its row (or tuple of
    rows).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, x in enumerate(inputs):
        groups.setdefault(tuple(x.shape), []).append(i)
    out: list[Any] = [None] * len(inputs)
    for shape, indices in groups.items():
        for start in range(0, len(indices), batch_size):
            part = indices[start:start + batch_size]
            batch = torch.stack([inputs[i] for i in part])
            if len(part) < batch_size:
                batch = torch.cat([batch, batch.new_zeros((batch_size - len(part), *shape))])
            result = forward(batch)
            for row, i in enumerate(part):
                out[i] = tuple(r[row] for r in result) if isinstance(result, tuple) else result[row]
    return out


# --------------------------------------------------------------------------- output geometry

def resize_map(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Float maps ``(C, h, w)`` -> ``(C, H, W)``: bilinear, antialiased when shrinking."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def _resize_matrix(n_in: int, n_out: int, device: torch.device) -> Tensor:
    """``(n_out, n_in)`` matrix applying 1-D antialiased bilinear resizing (as `resize_map` does)."""
    # Two identical columns: the antialiased kernel mishandles 1-pixel-wide images.
    basis = torch.eye(n_in, device=device).reshape(n_in, 1, n_in, 1).expand(n_in, 1, n_in, 2)
    rows = F.interpolate(basis, size=(n_out, 2), mode="bilinear", align_corners=False, antialias=True)
    return rows[:, 0, :, 0].T.contiguous()


def resize_argmax(scores: Tensor, size: tuple[int, int], max_elements: int = 1 << 26) -> Tensor:
    """Class scores ``(K, h, w)`` -> int64 ids ``(H, W)``: argmax of the bilinearly resized scores.

    The resize is separable, so it is applied as two matrix products over strips of output rows
    holding at most ``max_elements`` values at a time: a 12-megapixel photo with 133 classes needs
    no 6 GB tensor.
    """
    K, h, w = scores.shape
    H, W = size
    if K * H * W <= max_elements:
        return resize_map(scores, size).argmax(0)
    scores = scores.float()
    a_h = _resize_matrix(h, H, scores.device)  # (H, h)
    a_w = _resize_matrix(w, W, scores.device)  # (W, w)
    rows = max(1, max_elements // (K * W))
    out = torch.empty(H, W, dtype=torch.int64, device=scores.device)
    for r0 in range(0, H, rows):
        strip = torch.einsum("rh,khw->krw", a_h[r0:r0 + rows], scores)  # (K, r, w)
        out[r0:r0 + rows] = torch.einsum("krw,Ww->krW", strip, a_w).argmax(0)
    return out


def as_uint8_chw(image: np.ndarray | Image.Image | Tensor) -> Tensor:
    """An RGB image (``(H, W, 3)`` uint8 array, PIL image or ``(3, H, W)`` uint8 tensor) -> ``(3, H, W)``."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"images must be (H, W, 3) uint8 arrays, got {image.dtype} {image.shape}")
        writable = image.flags.writeable and image.flags.c_contiguous
        return torch.from_numpy(image if writable else image.copy()).permute(2, 0, 1)
    if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
        raise ValueError(f"image tensors must be (3, H, W) uint8, got {image.dtype} {tuple(image.shape)}")
    return image


# --------------------------------------------------------------------------- the interface

class Labeler(ABC):
    """A named network that pseudo-labels one modality.

    Subclasses set ``name`` (the registry name), ``modality`` and usually ``default_model`` (a
    Hugging Face hub name), implement `load` and `predict`, and are registered with
    `multimae.pseudolabel.register_labeler`. ``model`` may be a hub name (downloaded on first use) or a local
    directory. Settings (keyword arguments) are recorded in the manifest.
    """

    name: ClassVar[str] = ""
    modality: ClassVar[str] = ""
    default_model: ClassVar[str | None] = None
    description: ClassVar[str] = ""
    per_pixel: ClassVar[bool] = True  # outputs are maps at the image's size (False: global vectors)

    def __init__(self, model: str | None = None, revision: str | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 8, precision: str = "fp32", **settings: Any) -> None:
        if self.modality not in LABELED_MODALITIES:
            raise ValueError(f"{type(self).__name__}.modality must be one of {LABELED_MODALITIES}, got {self.modality!r}")
        model = model or self.default_model
        if not model:
            raise ValueError(f"labeler {self.name!r} has no default model: give a hub name or a local directory")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_name, self.revision = str(model), revision
        self.device, self.batch_size, self.precision = torch.device(device), batch_size, precision
        self.settings = self.check_settings(dict(settings))
        self.loaded = False

    def check_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Validate and complete the settings (default: none are accepted)."""
        if settings:
            raise ValueError(f"labeler {self.name!r} takes no settings, got {sorted(settings)}")
        return settings

    @abstractmethod
    def load(self) -> None:
        """Load the network onto ``self.device`` (called once, before the first images)."""

    @abstractmethod
    def predict(self, images: list[Tensor]) -> list[np.ndarray]:
        """uint8 ``(3, H, W)`` images on ``self.device`` -> one array per image (see module docs)."""

    def ensure_loaded(self) -> None:
        if not self.loaded:
            self.load()
            self.loaded = True

    def __call__(self, images: Sequence[np.ndarray | Image.Image | Tensor]) -> list[np.ndarray]:
        """Label RGB images (``(H, W, 3)`` uint8 arrays, PIL images or ``(3, H, W)`` uint8 tensors)."""
        self.ensure_loaded()
        if not images:
            return []
        tensors = [as_uint8_chw(im).to(self.device) for im in images]
        with torch.inference_mode(), self.autocast():
            outputs = self.predict(tensors)
        for im, out in zip(tensors, outputs):
            if self.per_pixel and tuple(out.shape[:2]) != tuple(im.shape[-2:]):
                raise ValueError(f"labeler {self.name!r} returned shape {out.shape} for a {tuple(im.shape[-2:])} image")
        return outputs

    def autocast(self) -> Any:
        dtype = PRECISIONS[self.precision]
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32)

    @property
    def num_classes(self) -> int | None:
        """semseg: the number of classes (known after `load`)."""
        return None

    @property
    def class_names(self) -> tuple[str, ...]:
        """semseg: the class names, index = id (known after `load`)."""
        return ()

    @property
    def feature_dim(self) -> int | None:
        """A feature labeler: the channels C of its vectors (known after `load`)."""
        return None

    def info(self) -> dict[str, Any]:
        """What produced the labels, for the manifest."""
        return {"labeler": self.name, "class": f"{type(self).__module__}.{type(self).__qualname__}",
                "model": self.model_name, "revision": self.revision, "settings": dict(self.settings),
                "batch_size": self.batch_size, "precision": self.precision}
