"""Initial weights for fine-tuning: a timm ViT's encoder reproduced exactly, positional tables
resized, the tasks' losses."""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch
from safetensors.torch import save_file

from multimae.config import FinetuneConfig, load_config
from multimae.modalities import get_modality
from multimae.model import FineTuneModel
from multimae.model.heads import LinearHeadConfig
from multimae.tasks.finetune import dense_loss
from multimae.tasks.finetune_arch import build_model
from multimae.tasks.finetune_model import load_encoder_weights, resolve
from multimae.convert.timm_vit import timm_to_multimae


def tiny_timm():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
                             depth=2, num_heads=2, num_classes=0).eval()


def test_timm_vit_weights_reproduce_the_timm_encoder():
    vit = tiny_timm()
    state = vit.state_dict()
    vit_ours, _ = timm_to_multimae(state, num_heads=2)
    enc = vit_ours.backbone.config
    assert (enc.dim, enc.depth, enc.patch_size, enc.image_size, enc.num_global_tokens) == (32, 2, 8, 32, 1)
    model = FineTuneModel(enc, {"rgb": get_modality("rgb")}, LinearHeadConfig(dim=32, num_classes=3), "cls").eval()
    assert load_encoder_weights(model, vit_ours.state_dict()) == []
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = model.backbone.forward_encoder({"rgb": x}).tokens  # patch tokens, then the global token
        t = vit.patch_embed(x)
        t = vit._pos_embed(t)  # class token first
        t = vit.blocks(t)
    torch.testing.assert_close(ours[:, :-1], t[:, 1:], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours[:, -1], t[:, 0], atol=1e-5, rtol=1e-4)


def test_finetuning_config_resolves_a_timm_weights_file(tmp_path):
    vit = tiny_timm()
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path))
    cfg = load_config(FinetuneConfig, None, [f"init.checkpoint={path}", "data.image_size=48",
                                             "model.encoder={dim: 32, num_heads: 2}",
                                             "task.num_classes=6"])
    resolved, state, notes = resolve(cfg)
    assert resolved.model.encoder["dim"] == 32 and resolved.model.encoder["image_size"] == 48
    assert resolved.model.encoder["num_heads"] == 2 and resolved.model.encoder["depth"] == 2
    model = build_model(resolved)
    load_encoder_weights(model, state)  # 4x4 timm grid resized to 6x6
    assert model.backbone.input_adapters.rgb.pos_emb.shape == (1, 32, 6, 6)
    assert any("timm ViT" in n for n in notes)


def test_dense_losses_skip_invalid_pixels():
    pred = torch.tensor([1.0, 2.0, 5.0, 0.0]).view(1, 1, 2, 2)
    target = torch.tensor([1.0, 0.0, 1.0, float("nan")]).view(1, 1, 2, 2)
    assert float(dense_loss(pred, target, "l1")) == pytest.approx((0 + 2 + 4) / 3)
    assert float(dense_loss(pred, target, "mse")) == pytest.approx((0 + 4 + 16) / 3)
    # berHu: c = 0.2 * 4 = 0.8; |d| = 0, 2, 4 -> 0, (4 + 0.64) / 1.6, (16 + 0.64) / 1.6
    assert float(dense_loss(pred, target, "berhu")) == pytest.approx((0 + 4.64 / 1.6 + 16.64 / 1.6) / 3)


def test_resolving_without_a_checkpoint_fills_in_the_class_count():
    cfg = load_config(FinetuneConfig, None, ["task.kind=segmentation", "model.modality_overrides={semseg: {num_channels: 9}}"])
    resolved, state, _ = resolve(cfg)
    assert state is None and resolved.task.num_classes == 9
    cls = dataclasses.replace(cfg, task=dataclasses.replace(cfg.task, kind="classification"))
    assert resolve(cls)[0].task.num_classes == 6  # the world's scene labels


def test_dense_regression_heads_start_at_the_mean_training_target():
    from multimae.tasks.finetune import FinetuneTask

    cfg = load_config(FinetuneConfig, None, [
        "task.kind=depth", "model.encoder={dim: 32, depth: 4, num_heads: 2, patch_size: 8}", "data.image_size=32",
        "head.feature_dim=8", "head.layer_dims=[4,4,8,8]"])
    model = build_model(resolve(cfg)[0])
    task = FinetuneTask(model, cfg.task)
    depth = torch.tensor([2.0, 4.0, float("nan"), 6.0]).repeat_interleave(256).view(1, 1, 32, 32)
    batches = [{"rgb": torch.rand(1, 3, 32, 32), "depth": depth}, {"rgb": torch.rand(1, 3, 32, 32), "depth": depth * 2}]
    assert float(task.init_output_bias(batches)) == pytest.approx(6.0)  # mean of 2, 4, 6, 4, 8, 12
    assert float(model.head.head[4].bias.detach()) == pytest.approx(6.0)


def test_timm_model_names_go_through_timm(monkeypatch):
    created = {}
    vit = tiny_timm()

    def fake_create(name, pretrained, num_classes):  # no downloads in tests: a random tiny ViT
        created.update(name=name, pretrained=pretrained)
        return vit

    monkeypatch.setattr(timm, "create_model", fake_create)
    cfg = load_config(FinetuneConfig, None, ["init.checkpoint=timm:vit_tiny_patch16_224.augreg_in21k",
                                             "data.image_size=32", "task.num_classes=6"])
    resolved, state, _ = resolve(cfg)
    assert created == {"name": "vit_tiny_patch16_224.augreg_in21k", "pretrained": True}
    assert resolved.model.encoder["num_heads"] == 2  # read from the timm model
    assert load_encoder_weights(build_model(resolved), state) == []
