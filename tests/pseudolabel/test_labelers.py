"""The built-in labelers, loaded by path from tiny random-weight checkpoints of their real classes."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from multimae.pseudolabel import InputSize, build_labeler, get_labeler, list_labelers
from multimae.pseudolabel.base import resize_argmax, run_fixed_batches
from multimae.pseudolabel.hf import disparity_to_depth

from .conftest import TINY, tiny_segformer, world_photo

torch.set_num_threads(1)


def _images():
    odd = world_photo(4, 64)[:37, :50].copy()  # 37 x 50: not a multiple of anything
    tall = world_photo(5, 64)[:, :20].copy()  # 64 x 20: extreme aspect ratio
    return [world_photo(0), odd, tall, world_photo(1)]


@pytest.mark.parametrize("name", list(TINY))
def test_labelers_give_one_map_per_image_at_its_own_size(name, tiny_models):
    labeler = build_labeler(get_labeler(name).modality, name, str(tiny_models[name]), batch_size=3)
    images = _images()
    out = labeler(images)
    assert [o.shape[:2] for o in out] == [im.shape[:2] for im in images]
    if labeler.modality == "depth":
        for o in out:
            assert o.dtype == np.float32 and (np.isnan(o) | (o > 0)).all() and np.isfinite(o).any()
    else:
        assert labeler.num_classes == (133 if name.startswith("mask2former") else 150)
        assert len(labeler.class_names) == labeler.num_classes
        for o in out:
            assert o.dtype == np.int64 and o.min() >= 0 and o.max() < labeler.num_classes
    info = labeler.info()
    assert info["model"] == str(tiny_models[name].resolve()) and info["labeler"] == name
    assert info["model_class"] and info["transformers_version"]
    # Every forward pass has batch_size rows, so an image's label does not depend on its batch.
    alone = [labeler([im])[0] for im in images]
    for a, b in zip(alone, out):
        np.testing.assert_array_equal(a, b)


def test_model_input_sizes_follow_each_architecture(tiny_models):
    dpt = build_labeler("depth", "dpt-hybrid", str(tiny_models["dpt-hybrid"]))
    dpt.ensure_loaded()
    assert dpt.input_size == InputSize(fixed=(64, 64), multiple=32)  # the hybrid takes exactly its size
    da = build_labeler("depth", "depth-anything-small", str(tiny_models["depth-anything-small"]))
    da.ensure_loaded()
    assert da.input_size.target(37, 50) == (56, 70)  # shorter side 56, multiples of 14
    assert da.input_size.target(64, 20) == (182, 56)
    m2f = build_labeler("semseg", "mask2former-coco-panoptic", str(tiny_models["mask2former-coco-panoptic"]))
    m2f.ensure_loaded()
    assert m2f.input_size.target(37, 50) == (64, 96) and m2f.input_size.target(20, 90) == (32, 128)
    with pytest.raises(ValueError, match="DPT-Hybrid takes exactly 64 px"):
        bad = build_labeler("depth", "dpt-hybrid", str(tiny_models["dpt-hybrid"]), resolution=96)
        bad.ensure_loaded()


def test_more_than_256_classes_are_labelled(tmp_path):
    torch.manual_seed(0)
    path = tiny_segformer(tmp_path / "seg300", num_labels=300)
    labeler = build_labeler("semseg", "segformer-ade20k", str(path))
    out = labeler([world_photo(0)])
    assert labeler.num_classes == 300 and out[0].max() < 300


def test_disparity_becomes_depth_ordering_with_a_far_cap():
    disparity = torch.tensor([[4.0, 2.0, 1.0, 0.0, -1.0, float("nan")]])
    depth = disparity_to_depth(disparity, max_ratio=10.0)
    assert depth[0, :3].tolist() == [0.25, 0.5, 1.0]  # nearer (larger disparity) -> smaller depth
    assert depth[0, 3].item() == depth[0, 4].item() == pytest.approx(2.5)  # capped at 10 x the nearest
    assert torch.isnan(depth[0, 5])
    assert torch.isnan(disparity_to_depth(torch.zeros(2, 2), 10.0)).all()


def test_resize_argmax_in_strips_equals_the_direct_resize():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(7, 9, 13, generator=g)
    for size in [(40, 50), (5, 6)]:
        direct = F.interpolate(scores[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
        strips = resize_argmax(scores, size, max_elements=7 * 3 * size[1])  # 3 rows at a time
        agree = (strips == direct.argmax(0)).float().mean().item()
        assert agree == 1.0


def test_fixed_batches_pad_short_groups_and_keep_order():
    calls = []

    def forward(batch):
        calls.append(tuple(batch.shape))
        return batch.sum(dim=(1, 2, 3)), batch.mean(dim=(1, 2, 3))

    inputs = [torch.full((1, 2, 2), float(i)) for i in range(3)] + [torch.ones(1, 3, 3)]
    out = run_fixed_batches(inputs, forward, batch_size=2)
    assert calls == [(2, 1, 2, 2), (2, 1, 2, 2), (2, 1, 3, 3)]
    assert [o[0].item() for o in out] == [0.0, 4.0, 8.0, 9.0]


def test_registry_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown labeler 'nope'; known: .*dpt-hybrid"):
        get_labeler("nope")
    with pytest.raises(ValueError, match="no built-in normals labeler"):
        build_labeler("normals")
    with pytest.raises(ValueError, match="produces 'depth', not 'semseg'"):
        build_labeler("semseg", "dpt-hybrid")
    with pytest.raises(ValueError, match="no default model"):
        build_labeler("depth", "hf-depth")
    with pytest.raises(ValueError, match="unknown settings"):
        build_labeler("depth", "dpt-hybrid", colour="blue")
    assert {"dpt-hybrid", "depth-anything-small", "mask2former-coco-panoptic", "segformer-ade20k",
            "upernet-ade20k"} <= set(list_labelers())


def test_without_transformers_the_error_names_the_extra(monkeypatch, tiny_models):
    monkeypatch.setitem(sys.modules, "transformers", None)
    labeler = build_labeler("depth", "dpt-hybrid", str(tiny_models["dpt-hybrid"]))
    with pytest.raises(ImportError, match=r"multimae\[pseudolabel\]"):
        labeler.ensure_loaded()
