"""How pseudo labels are stored: the codecs of `multimae.data.codecs` plus the choices that are
specific to predicted labels, and the manifest entries that describe them.

- depth: a 16-bit PNG of *relative* depth, per image ``value = round(depth / max(depth) * 65535)``
  (the farthest pixel is 65535, valid pixels at least 1, 0 = invalid), decoded with
  ``depth.scale = 65535`` to (0, 1]. The predictions of monocular networks are only defined up
  to scale (and, for disparity, shift); the pipeline's robust per-image standardisation removes
  the scale, so only the ordering (larger = farther) and the shape of the map matter.
- semseg: an 8-bit PNG of class ids, 16-bit when there are more than 256 classes (lossless).
- normals: an 8-bit RGB PNG, ``(n + 1) / 2``, camera frame.
- feature: a float32 ``.npy`` of shape (1, C), as predicted.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from multimae.data.codecs import class_map_dtype, encode_npy, encode_png, quantize_normals
from multimae.modalities.registry import stored_modalities

RELATIVE_DEPTH_SCALE = 65535.0


def encode_relative_depth(depth: np.ndarray) -> bytes:
    """float ``(H, W)`` depth-like map (NaN / <= 0 = invalid) -> 16-bit PNG, per-image max = 65535."""
    if depth.ndim != 2:
        raise ValueError(f"depth labels must be (H, W), got shape {depth.shape}")
    valid = np.isfinite(depth) & (depth > 0)
    stored = np.zeros(depth.shape, dtype=np.uint16)
    if valid.any():
        top = float(depth[valid].max())
        scaled = np.round(depth[valid] / top * RELATIVE_DEPTH_SCALE)
        stored[valid] = np.clip(scaled, 1, RELATIVE_DEPTH_SCALE).astype(np.uint16)
    return encode_png(stored)


def encode_class_map(ids: np.ndarray, num_classes: int) -> bytes:
    """int ``(H, W)`` ids in ``[0, num_classes)`` -> 8-bit PNG (16-bit above 256 classes)."""
    if ids.ndim != 2:
        raise ValueError(f"semseg labels must be (H, W), got shape {ids.shape}")
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= num_classes):
        raise ValueError(f"semseg label ids span [{int(ids.min())}, {int(ids.max())}], outside [0, {num_classes})")
    if num_classes > 65536:
        raise ValueError(f"{num_classes} classes do not fit a 16-bit PNG")
    return encode_png(ids.astype(class_map_dtype(num_classes)))


def encode_normal_map(normals: np.ndarray) -> bytes:
    """float ``(H, W, 3)`` unit vectors -> 8-bit RGB PNG."""
    if normals.ndim != 3 or normals.shape[2] != 3:
        raise ValueError(f"normals labels must be (H, W, 3), got shape {normals.shape}")
    return encode_png(quantize_normals(np.nan_to_num(normals)))


def encode_feature(vectors: np.ndarray) -> bytes:
    """float ``(G, C)`` finite vectors -> ``.npy`` bytes (float32)."""
    if vectors.ndim != 2 or not np.isfinite(vectors).all():
        raise ValueError(f"feature labels must be finite (G, C) arrays, got shape {vectors.shape}")
    return encode_npy(vectors.astype(np.float32))


def _encoding(modality: str) -> str | None:
    """How the readers store ``modality`` (`multimae.modalities.registry.stored_modalities`)."""
    return stored_modalities().get(modality)


def encode_label(modality: str, label: np.ndarray, num_classes: int | None = None) -> bytes:
    """A labeller's output -> the file bytes, as the modality's encoding says."""
    encoding = _encoding(modality)
    if encoding == "depth16":
        return encode_relative_depth(label)
    if encoding == "class_ids":
        if num_classes is None:
            raise ValueError(f"{modality} labels need the labeler's number of classes")
        return encode_class_map(label, num_classes)
    if encoding == "unit_vectors8":
        return encode_normal_map(label)
    if encoding == "vectors":
        return encode_feature(label)
    raise ValueError(f"no encoding for labelled modality {modality!r}")


def encoding_entries(modality: str, num_classes: int | None = None) -> dict[str, Any]:
    """The manifest fields that tell the readers how ``modality`` is stored."""
    encoding = _encoding(modality)
    if encoding == "depth16":
        return {modality: {"encoding": "png16", "scale": RELATIVE_DEPTH_SCALE, "invalid": 0,
                           "units": "relative: per image, value = depth / max(depth) * 65535"}}
    if encoding == "class_ids":
        assert num_classes is not None
        return {modality: {"encoding": "png8" if num_classes <= 256 else "png16"}}
    if encoding == "unit_vectors8":
        return {modality: {"encoding": "png8", "decode": "value / 127.5 - 1, renormalised",
                           "frame": "camera: x right, y down, z forward"}}
    if encoding == "vectors":
        return {modality: {"encoding": "npy", "dtype": "float32", "shape": "(G, C)"}}
    raise ValueError(f"no encoding for labelled modality {modality!r}")
