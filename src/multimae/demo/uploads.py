"""Uploaded bytes -> one raw input, with the checks a web page needs: size limits before
decoding, the encoding the modality is stored in (16-bit depth, single-channel class ids below
the model's class count), and messages that say what to upload instead.

Only bytes are read: no name or path given by the client is ever opened (the file name is quoted
in messages and nothing else). Shapes: C channels, H W pixels of the upload.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from multimae.data.codecs import DEPTH_SCALE, decode_problem, read_image
from multimae.inference.inputs import RawInput, read_input
from multimae.modalities.spec import ModalitySpec

# Encodings an upload can be given in, and what the page says to upload for each.
UPLOADABLE = {
    "rgb8": "any picture (PNG, JPEG, ...)",
    "depth16": f"a 16-bit single-channel PNG of depth in millimetres (value / {DEPTH_SCALE:g}), 0 = invalid",
    "class_ids": "a single-channel PNG of class ids (8 or 16 bit, or a palette PNG: its indices)",
    "unit_vectors8": "an 8-bit RGB PNG of (n + 1) / 2",
}


class UploadError(ValueError):
    """An upload refused; ``status`` is the HTTP status that says why (413 too large, 415 not an
    image, 422 an image that does not fit the modality or the model)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 16 * 2**20  # a larger file is refused before it is decoded
    max_side: int = 4096  # pixels per side; a larger image is refused from its header


def _header_size(data: bytes, label: str, limits: UploadLimits) -> tuple[int, int]:
    """(H, W) from the image header, before any pixel is decoded."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            W, H = im.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise UploadError(f"{label}: not an image ({decode_problem(err, len(data))})", 415) from None
    if max(H, W) > limits.max_side:
        raise UploadError(f"{label}: {W}×{H} pixels, more than {limits.max_side} on a side")
    return H, W


def _check_encoding(spec: ModalitySpec, a: np.ndarray, label: str) -> None:
    stored = spec.stored_as
    if stored == "depth16":
        if a.ndim != 2 or a.dtype != np.uint16:
            bits = "8-bit" if a.dtype == np.uint8 else f"{a.dtype} {a.shape}"
            raise UploadError(f"{label}: {spec.name} must be {UPLOADABLE[stored]}; this is a {bits} image")
    elif stored == "class_ids":
        if a.ndim != 2 or a.dtype.kind not in "ui":
            raise UploadError(f"{label}: {spec.name} must be {UPLOADABLE[stored]}, got {a.dtype} {a.shape} (a "
                              "colour-coded picture cannot be read back into ids)")
        top = int(a.max())
        if top >= spec.num_channels:
            raise UploadError(f"{label}: class id {top} is beyond the model's {spec.num_channels} classes "
                              f"(0 to {spec.num_channels - 1})")
    elif stored == "unit_vectors8" and (a.ndim != 3 or a.dtype != np.uint8):
        raise UploadError(f"{label}: {spec.name} must be {UPLOADABLE[stored]}, got {a.dtype} {a.shape}")


def read_upload(spec: ModalitySpec, data: bytes, filename: str, limits: UploadLimits, min_side: int) -> RawInput:
    """Read uploaded ``data`` for the modality ``spec``: (C, H, W) or (H, W) raw values (see
    `multimae.inference.inputs`). ``min_side``: the smallest side accepted (the patch size)."""
    label = f"{spec.name} upload {filename!r}" if filename else f"{spec.name} upload"
    if spec.stored_as not in UPLOADABLE:
        raise UploadError(f"{spec.name}: uploads are not supported for {spec.stored_as} data", 422)
    if len(data) > limits.max_bytes:
        raise UploadError(f"{label}: larger than the upload limit of {limits.max_bytes} bytes", 413)
    if not data:
        raise UploadError(f"{label}: the file is empty", 415)
    H, W = _header_size(data, label, limits)
    if min(H, W) < min_side:
        raise UploadError(f"{label}: {W}×{H} pixels, smaller than one {min_side}×{min_side} patch")
    try:
        array, conversions = read_image(data, label, rgb=spec.stored_as == "rgb8")
    except ValueError as err:
        raise UploadError(str(err), 415) from None
    _check_encoding(spec, array, label)
    try:
        raw = read_input(spec, array)
    except ValueError as err:
        raise UploadError(str(err)) from None
    how = "; ".join([*conversions, raw.how])
    return RawInput(raw.value, filename or "upload", how)
