import math

import pytest
import torch

from multimae.data.generated import WorldDataset
from multimae.data.transforms import RandomResizedCropFlip, Resize, crop_params, hflip, resized_crop


def _world(index=0, size=32):
    return WorldDataset("train", size=size, length=index + 1)[index]


def _equal(a, b):
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k].nan_to_num(-7), b[k].nan_to_num(-7)), k
        else:
            assert a[k] == b[k], k


def test_flip_then_unflip_is_the_identity():
    s = _world()
    s["depth"][0, :3, :5] = torch.nan
    _equal(hflip(hflip(s)), s)


def test_flip_mirrors_maps_and_negates_normals_x():
    s = _world()
    f = hflip(s)
    assert torch.equal(f["semseg"], s["semseg"].flip(-1))
    assert torch.equal(f["normals"][0], -s["normals"][0].flip(-1))
    assert torch.equal(f["normals"][1:], s["normals"][1:].flip(-1))


def test_crop_params_follow_the_paper_ranges():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        top, left, h, w = crop_params(60, 80, (0.2, 1.0), (3 / 4, 4 / 3), g)
        assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 80
        assert 0.2 * 4800 * 0.9 <= h * w <= 4800
        assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05


def test_every_modality_gets_the_same_crop():
    # rgb channel 0 and semseg both encode the column index: after the crop they must agree
    size = 40
    cols = torch.arange(size).expand(size, size)
    s = {"rgb": (cols / (size - 1)).expand(3, size, size).clone(), "semseg": cols.clone(), "caption": "x"}
    t = RandomResizedCropFlip(20, flip_p=0.5)
    for seed in range(10):
        out = t(s, torch.Generator().manual_seed(seed))
        from_rgb = out["rgb"][0] * (size - 1)
        assert out["semseg"].shape == (20, 20) and out["semseg"].dtype == torch.int64
        assert (from_rgb - out["semseg"]).abs().max() <= 2.5
        assert out["caption"] == "x"


def test_class_maps_use_nearest_and_normals_stay_unit():
    s = _world(1)
    out = RandomResizedCropFlip(24)(s, torch.Generator().manual_seed(3))
    assert set(out["semseg"].unique().tolist()) <= set(s["semseg"].unique().tolist())
    assert torch.equal(out["semseg"] >= 3, out["instance"] > 0)
    torch.testing.assert_close(out["normals"].norm(dim=0), torch.ones(24, 24), atol=1e-4, rtol=0)


def test_depth_resizing_ignores_invalid_pixels():
    depth = torch.full((1, 16, 16), 2.0)
    depth[:, :, :8] = torch.nan  # left half invalid
    out = resized_crop({"depth": depth}, (0, 0, 16, 16), 8)["depth"]
    valid = out[torch.isfinite(out)]
    assert torch.isnan(out[:, :, :3]).all() and torch.isfinite(out[:, :, 5:]).all()
    torch.testing.assert_close(valid, torch.full_like(valid, 2.0))


def test_augmentation_is_reproducible_from_the_generator():
    s = _world(2)
    t = RandomResizedCropFlip(16)
    a = t(s, torch.Generator().manual_seed(5))
    b = t(s, torch.Generator().manual_seed(5))
    c = t(s, torch.Generator().manual_seed(6))
    _equal(a, b)
    assert not torch.equal(a["rgb"], c["rgb"])


def test_resize_and_mismatched_sizes():
    s = _world(0, 32)
    assert Resize(16)(s)["rgb"].shape == (3, 16, 16)
    s["semseg"] = s["semseg"][:16]
    with pytest.raises(ValueError, match="one size"):
        RandomResizedCropFlip(16)(s, torch.Generator())


def test_crop_fallback_is_central():
    g = torch.Generator().manual_seed(0)
    top, left, h, w = crop_params(10, 100, (0.99, 1.0), (1.0, 1.0), g)  # impossible: falls back
    assert (h, w) == (10, 10) and left == 45 and math.isclose(w / h, 1.0)


def test_one_nan_aware_rule_and_one_vector_mirror_for_samples_and_batches():
    from multimae.data.transforms import mirror_vectors, resample_nan_aware

    nan = float("nan")
    x = torch.tensor([[[1.0, 3.0, 5.0, nan, 7.0, nan, nan, 9.0]]])
    means_of_4 = lambda v: v.reshape(1, 1, 2, 4).mean(-1)  # noqa: E731  (a resampler: means of 4 pixels)
    out = resample_nan_aware(means_of_4, x)
    assert out[0, 0, 0] == 3.0 and torch.isnan(out[0, 0, 1])  # NaN left out; half the weight valid is too little
    assert torch.equal(resample_nan_aware(means_of_4, x.nan_to_num()), means_of_4(x.nan_to_num()))
    n = torch.randn(2, 3, 4, 4)
    assert torch.equal(mirror_vectors(n[0]), torch.cat([-n[0, :1], n[0, 1:]]))
    batch = mirror_vectors(n, torch.tensor([True, False]))
    assert torch.equal(batch[0], mirror_vectors(n[0])) and torch.equal(batch[1], n[1])
