"""`MapScores`: predicted raw maps against the raw truth, accumulated over batches (what
`score_from_image` and experiments/generation.py score with)."""

from __future__ import annotations

import math

import pytest
import torch

from multimae.inference.fourm import MapScores


def _maps(B: int = 2, H: int = 8, W: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    normals = torch.nn.functional.normalize(torch.randn(B, 3, H, W, generator=g), dim=1)
    depth = torch.rand(B, 1, H, W, generator=g) + 1.0
    return {"semseg": torch.randint(0, 9, (B, H, W), generator=g), "depth": depth, "normals": normals}


def test_the_truth_scores_perfectly():
    truth = _maps()
    scores = MapScores({"semseg": 9}, object_classes=[3, 4, 5], angular=("normals",))
    scores.update(truth, truth)
    out = scores.result()
    assert out["semseg_miou"] == pytest.approx(1.0) and out["semseg_acc"] == pytest.approx(1.0)
    assert out["semseg_object_iou"] == pytest.approx(1.0)
    assert out["depth_l1"] == pytest.approx(0.0, abs=1e-6)
    assert out["normals_angle"] == pytest.approx(0.0, abs=0.1)  # acos near 1 is coarse in float32
    assert "normals_l1" not in out  # normals are not scored by l1 (their spec: metric none)


def test_scores_accumulate_over_batches_and_read_angles_in_degrees():
    truth = _maps()
    flipped = {**truth, "normals": -truth["normals"], "semseg": (truth["semseg"] + 1) % 9}
    scores = MapScores({"semseg": 9}, angular=("normals",))
    scores.update({"normals": truth["normals"], "semseg": truth["semseg"]}, truth)
    scores.update({"normals": flipped["normals"], "semseg": flipped["semseg"]}, truth)
    out = scores.result()
    assert out["normals_angle"] == pytest.approx(90.0, abs=0.1)  # 0 deg on one batch, 180 on the other
    assert out["semseg_acc"] == pytest.approx(0.5)
    assert "semseg_object_iou" not in out  # no object classes named


def test_invalid_normals_are_left_out_and_depth_is_compared_in_the_truths_units():
    truth = _maps(B=1)
    truth["normals"][..., :4] = float("nan")  # half the pixels invalid
    pred = {"normals": -torch.nan_to_num(truth["normals"]), "depth": truth["depth"] * 2}
    scores = MapScores(angular=("normals",))
    scores.update(pred, truth)
    out = scores.result()
    assert out["normals_angle"] == pytest.approx(180.0, abs=0.1) and not math.isnan(out["normals_angle"])
    assert out["depth_l1"] > 0
