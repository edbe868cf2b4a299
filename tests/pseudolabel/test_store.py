"""Label files decode, through the data pipeline's codecs, to what the labelers produced."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multimae.data.codecs import decode_modality
from multimae.modalities.normalize import robust_standardize
from multimae.pseudolabel.store import RELATIVE_DEPTH_SCALE, encode_class_map, encode_relative_depth


def test_class_maps_above_256_classes_are_lossless():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 300, size=(17, 23))
    ids[0, 0] = 299
    decoded = decode_modality("semseg", encode_class_map(ids, 300), "x.png", num_classes=300)
    assert decoded.dtype == torch.int64 and torch.equal(decoded, torch.from_numpy(ids))
    small = decode_modality("semseg", encode_class_map(ids % 133, 133), "y.png", num_classes=133)
    assert torch.equal(small, torch.from_numpy(ids % 133))
    with pytest.raises(ValueError, match="outside"):
        encode_class_map(ids, 200)


def test_relative_depth_keeps_order_and_standardises_like_the_prediction():
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.5, 40.0, size=(20, 30)).astype(np.float32)
    depth[3, 4] = np.nan  # invalid
    decoded = decode_modality("depth", encode_relative_depth(depth), "d.png", depth_scale=RELATIVE_DEPTH_SCALE)
    assert torch.isnan(decoded[0, 3, 4]) and torch.isfinite(decoded).sum() == depth.size - 1
    assert decoded[torch.isfinite(decoded)].max() == 1.0
    # After the pipeline's per-image standardisation, the stored map equals the prediction (16-bit steps).
    a = robust_standardize(torch.from_numpy(depth)[None, None])
    b = robust_standardize(decoded[None])
    valid = torch.isfinite(a)
    assert (a[valid] - b[valid]).abs().max() < 1e-3
    assert torch.isnan(decode_modality("depth", encode_relative_depth(np.full((2, 2), np.nan)), "e.png")).all()
