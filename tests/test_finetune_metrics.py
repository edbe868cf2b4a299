"""Fine-tuning metrics on hand-made predictions, and layer-wise lr decay rates."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_config

from multimae.engine.optim import layer_id, layer_scale, param_groups, set_lr
from multimae.model import FineTuneModel
from multimae.model.heads import LinearHeadConfig
from multimae.model.state_keys import named_checkpoint_parameters
from multimae.tasks.metrics import (
    ConfusionMatrix,
    DepthMetrics,
    MeanAbsoluteError,
    TopKAccuracy,
)


def test_miou_with_an_ignore_index_matches_hand_computed_values():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 1]])
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(pred, target)
    # class 0: tp 1 (pixel 0), fp 1 (row 1 col 1), fn 1 (pixel 1) -> 1/3
    # class 1: tp 2, fp 1 (pixel 1), fn 0 -> 2/3 ; class 2: tp 1, fn 1 -> 1/2 ; ignored pixels do not count
    assert cm.iou().tolist() == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert cm.mean_iou() == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert cm.accuracy() == pytest.approx(4 / 6)


def test_miou_skips_classes_absent_from_truth_and_prediction():
    cm = ConfusionMatrix(4)
    cm.update(torch.tensor([0, 0, 1]), torch.tensor([0, 0, 1]))
    assert cm.mean_iou() == pytest.approx(1.0)  # classes 2 and 3 are NaN, left out


def test_depth_metrics_match_hand_computed_values():
    gt = torch.tensor([1.0, 2.0, 4.0, float("nan"), 0.0, 2.0]).view(1, 1, 2, 3)
    pred = torch.tensor([1.2, 3.0, 4.0, 5.0, 1.0, -1.0]).view(1, 1, 2, 3)
    m = DepthMetrics()
    m.update(pred, gt)
    # valid: gt 1, 2, 4, 2 (NaN and 0 ignored); ratios 1.2, 1.5, 1.0, huge -> delta1 = 2/4
    out = m.compute()
    assert out["delta1"] == pytest.approx(0.5)
    assert out["abs_rel"] == pytest.approx((0.2 / 1 + 1 / 2 + 0 + 3 / 2) / 4)
    assert out["rmse"] == pytest.approx(math.sqrt((0.04 + 1 + 0 + 9) / 4))


def test_depth_metrics_accumulate_over_pixels_not_images():
    m = DepthMetrics()
    m.update(torch.tensor([[1.0]]), torch.tensor([[1.0]]))
    m.update(torch.tensor([[2.0, 2.0, 2.0]]), torch.tensor([[1.0, 1.0, 1.0]]))
    assert m.compute()["delta1"] == pytest.approx(1 / 4)


def test_top1_top5_match_hand_computed_values():
    logits = torch.tensor([
        [9.0, 1, 2, 3, 4, 5, 6],  # label 0: top-1 hit
        [0.0, 9, 8, 7, 6, 5, 4],  # label 5: 5th best -> top-5 hit only
        [0.0, 9, 8, 7, 6, 5, 4],  # label 6: 6th best -> miss
    ])
    acc = TopKAccuracy()
    acc.update(logits, torch.tensor([0, 5, 6]))
    assert acc.compute() == pytest.approx({"top1": 1 / 3, "top5": 2 / 3})


def test_mean_absolute_error_skips_invalid_values():
    m = MeanAbsoluteError()
    m.update(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, float("nan"), 1.0]))
    assert m.compute()["l1"] == pytest.approx(1.5)


# ------------------------------------------------------------------------- layer-wise lr decay
def test_layer_ids_follow_the_documented_convention():
    L = 6
    assert layer_id("input_adapters.rgb.proj.weight", L) == 0
    assert layer_id("global_tokens", L) == 0
    assert layer_id("encoder.0.attn.qkv.weight", L) == 1
    assert layer_id("encoder.5.mlp.fc2.bias", L) == 6
    assert layer_id("output_adapters.cls.head.weight", L) == 7
    assert layer_scale(7, L, 0.65) == 1.0
    assert layer_scale(6, L, 0.65) == pytest.approx(0.65)
    assert layer_scale(0, L, 0.65) == pytest.approx(0.65**7)


def test_layer_decay_assigns_the_documented_rates_to_every_parameter():
    cfg = tiny_config(encoder={"dim": 32, "depth": 4, "num_heads": 2, "image_size": 32, "patch_size": 8}, inputs=("rgb", "depth"),
                      outputs=(), modality_overrides={})
    specs = cfg.modality_specs()
    model = FineTuneModel(cfg.encoder, specs, LinearHeadConfig(dim=32, num_classes=3), "cls")
    groups = param_groups(model, 0.05, model.no_weight_decay(), layer_decay=0.65)
    opt = torch.optim.AdamW(groups, lr=0.0)
    set_lr(opt, 1e-3)
    rate = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    wd = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    expected = {
        "input_adapters.rgb.proj.weight": 0.65**5,
        "input_adapters.depth.proj.bias": 0.65**5,
        "global_tokens": 0.65**5,
        "encoder.0.attn.qkv.weight": 0.65**4,
        "encoder.3.norm2.weight": 0.65**1,
        "output_adapters.cls.head.weight": 1.0,
        "output_adapters.cls.norm.bias": 1.0,
    }
    params = named_checkpoint_parameters(model)  # official names
    for name, scale in expected.items():
        assert rate[id(params[name])] == pytest.approx(1e-3 * scale), name
    assert wd[id(params["encoder.0.attn.qkv.weight"])] == 0.05
    assert wd[id(params["global_tokens"])] == 0.0 and wd[id(params["encoder.3.norm2.weight"])] == 0.0
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(rate) == trainable  # every trainable parameter exactly once, frozen tables left out
    assert sum(len(g["params"]) for g in opt.param_groups) == len(trainable)


def test_no_layer_decay_keeps_the_two_pretraining_groups():
    cfg = tiny_config(inputs=("rgb",), outputs=(), modality_overrides={})
    model = FineTuneModel(cfg.encoder, cfg.modality_specs(), LinearHeadConfig(dim=32, num_classes=3), "cls")
    groups = param_groups(model, 0.05, layer_decay=1.0)
    assert len(groups) == 2 and all("lr_scale" not in g for g in groups)
    with pytest.raises(ValueError, match="layer_decay"):
        param_groups(model, 0.05, layer_decay=1.5)
