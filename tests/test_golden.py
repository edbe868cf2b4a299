"""Reproduce the official MultiMAE's outputs, losses and gradients on a stored tiny fixture."""

import json

import pytest
import torch
from safetensors.torch import load_file

from multimae.losses import MultiMAELoss
from multimae.model import MultiMAE, model_config
from multimae.model.state_keys import named_checkpoint_parameters

from conftest import GOLDEN

pytestmark = pytest.mark.skipif(not GOLDEN.exists(), reason="shared/reference/golden is not beside the checkout")
MODALITIES = ("rgb", "depth", "semseg")


@pytest.fixture(scope="module")
def golden():
    spec = json.loads((GOLDEN / "SPEC.json").read_text())["config"]
    cfg = model_config(
        "tiny",
        encoder=dict(dim=spec["dim_tokens"], depth=spec["depth"], num_heads=spec["num_heads"],
                     image_size=spec["image_size"], patch_size=spec["patch_size"]),
        decoder=dict(dim=spec["decoder_dim"], depth=spec["decoder_depth"], num_heads=spec["decoder_num_heads"]),
        modality_overrides={"semseg": {"num_channels": spec["semseg_num_classes"]}},
    )
    model = MultiMAE(cfg)
    model.load_state_dict(load_file(GOLDEN / "weights.safetensors"), strict=True)
    data = load_file(GOLDEN / "inputs.safetensors")
    inputs = {k: data[k] for k in MODALITIES}
    targets = {**inputs, "norm_rgb": inputs["rgb"]}
    loss = MultiMAELoss(model.output_specs, spec["patch_size"])
    return model, data, inputs, targets, loss, load_file(GOLDEN / "fixture_masked.safetensors")


def test_state_dict_keys_are_the_official_ones(golden):
    model = golden[0]
    assert set(model.state_dict()) == set(load_file(GOLDEN / "weights.safetensors"))


def test_outputs_losses_and_gradients_match_the_official_model(golden):
    model, data, inputs, targets, loss, ref = golden
    model.zero_grad()
    masks = {k: data[f"mask_main_{k}"] for k in MODALITIES}
    out = model(inputs, masks)
    for k, pred in out.preds.items():
        torch.testing.assert_close(pred, ref[f"pred_{k}"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.encoder.tokens, ref["encoder_visible_sorted"], atol=1e-5, rtol=1e-4)
    losses = loss(out.preds, targets, out.masks)
    for k, v in losses.per_task.items():
        torch.testing.assert_close(v, ref[f"loss_{k}"], atol=0, rtol=1e-5)
    torch.testing.assert_close(losses.total, ref["loss_total"], atol=0, rtol=1e-5)
    losses.total.backward()
    params = named_checkpoint_parameters(model)  # official names
    for key in (k for k in ref if k.startswith("grad.")):
        torch.testing.assert_close(params[key[5:]].grad, ref[key], atol=1e-6, rtol=1e-4)
    norms = json.loads((GOLDEN / "grad_norms.json").read_text())
    for name, norm in norms.items():
        assert abs(params[name].grad.norm().item() - norm) <= 1e-5 + 1e-4 * norm, name


def test_unmasked_encoder_matches_every_official_layer(golden):
    model, data, inputs = golden[:3]
    ref = load_file(GOLDEN / "fixture_unmasked.safetensors")
    with torch.no_grad():
        enc = model.backbone.forward_encoder(inputs, return_layers=range(len(model.backbone.encoder)))
        tokens = {k: model.backbone.input_adapters[k](inputs[k]) for k in MODALITIES}
    for k in MODALITIES:
        torch.testing.assert_close(tokens[k], ref[f"tokens_{k}"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.stack(enc.intermediates), ref["encoder_all_layers"], atol=1e-5, rtol=1e-4)


def test_edge_case_losses_match_and_gradients_stay_finite(golden):
    """A sample with no masked depth token: official losses, but no NaN gradients."""
    model, data, inputs, targets, loss, ref = golden
    model.zero_grad()
    out = model(inputs, {k: data[f"mask_edge_{k}"] for k in MODALITIES})
    losses = loss(out.preds, targets, out.masks)
    for k, v in losses.per_task.items():
        torch.testing.assert_close(v, ref[f"edge_loss_{k}"], atol=0, rtol=1e-5)
    losses.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
