"""Round-trip metrics, code usage and the pooled k-means baseline, on maps whose answers are known."""

from __future__ import annotations

import math

import pytest
import torch

from multimae.modalities.registry import BUILTIN_MODALITIES
from multimae.tokenizers import MapFormat, fit_statistics
from multimae.tokenizers.baseline import PooledKMeans
from multimae.tokenizers.metrics import CodeUsage, RoundTrip, pixel_error, primary_metric

SPECS = {s.name: s for s in BUILTIN_MODALITIES.values()}


def test_class_map_metrics():
    fmt = MapFormat(SPECS["semseg"].replace(num_channels=3))
    truth = torch.tensor([[[0, 0, 1, 1], [2, 2, 2, 2]]])  # (1, 2, 4)
    rt = RoundTrip(fmt)
    rt.update(truth, truth)
    assert rt.result() == {"miou": 1.0, "pixel_accuracy": 1.0}
    wrong = truth.clone()
    wrong[0, 0, 0] = 1  # one pixel of class 0 called 1
    rt = RoundTrip(fmt)
    rt.update(truth, wrong)
    # IoU: class 0 1/2, class 1 2/3, class 2 1
    assert rt.result()["miou"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert rt.result()["pixel_accuracy"] == pytest.approx(7 / 8)
    assert primary_metric(fmt) == "miou"


def test_dense_metrics_count_valid_pixels_only():
    depth = fit_statistics(SPECS["depth"], torch.rand(2, 1, 4, 4) + 1)
    truth = torch.full((1, 1, 2, 2), 2.0)
    truth[0, 0, 0, 0] = float("nan")
    recon = torch.tensor([[[[100.0, 2.5], [1.5, 2.0]]]])  # the invalid pixel's value does not count
    rt = RoundTrip(depth)
    rt.update(truth, recon)
    res = rt.result()
    assert res["l1"] == pytest.approx(1 / 3) and res["mse"] == pytest.approx(0.5 / 3)
    assert res["abs_rel"] == pytest.approx((0.25 + 0.25) / 3)
    assert math.isnan(pixel_error(depth, truth, recon)[0, 0, 0])

    normals = MapFormat.for_spec(SPECS["normals"])
    x = torch.zeros(1, 3, 1, 2)
    x[0, 2] = 1  # facing the camera
    y = x.clone()
    y[0, :, 0, 1] = torch.tensor([1.0, 0.0, 0.0])  # one pixel turned by 90 degrees
    rt = RoundTrip(normals)
    rt.update(x, y)
    assert rt.result()["angular_error_deg"] == pytest.approx(45.0, abs=1e-3)

    rgb = MapFormat.for_spec(SPECS["rgb"])
    rt = RoundTrip(rgb)
    rt.update(torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.1))
    assert rt.result()["mse"] == pytest.approx(0.01) and rt.result()["psnr"] == pytest.approx(20.0)


def test_code_usage():
    usage = CodeUsage(8)
    usage.update(torch.tensor([[0, 1, 2, 3]]))
    res = usage.result()
    assert (res["codes_used"], res["dead_codes"], res["usage"]) == (4, 4, 0.5)
    assert res["perplexity"] == pytest.approx(4.0)
    usage.update(torch.tensor([[7, 7]]), torch.tensor([[True, False]]))  # an invalid token is not counted
    assert usage.result()["tokens"] == 5 and usage.result()["codes_used"] == 5


def test_the_baseline_is_exact_on_maps_of_few_constant_cells():
    fmt = MapFormat(SPECS["semseg"].replace(num_channels=4))
    cells = torch.randint(0, 4, (6, 2, 2), generator=torch.Generator().manual_seed(0))
    maps = cells.repeat_interleave(4, 1).repeat_interleave(4, 2)  # (6, 8, 8), one class per 4x4 cell
    base = PooledKMeans.fit(fmt, maps, patch=4, vocab_size=16)
    assert base.vocab_size == len(torch.unique(cells))  # no more centres than distinct cells
    ids, valid = base.encode(maps)
    assert ids.shape == (6, 2, 2) and valid.all()
    assert torch.equal(base.decode(ids), maps)

    rgb = MapFormat.for_spec(SPECS["rgb"])
    colours = torch.rand(3, 3, 2, 2).repeat_interleave(4, 2).repeat_interleave(4, 3)
    base = PooledKMeans.fit(rgb, colours, patch=4, vocab_size=12)
    torch.testing.assert_close(base.decode(base.encode(colours)[0]), colours)
