"""M3AE as a configuration of the core: image patches and text tokens in one encoder, one joint
self-attention decoder over all positions of both (`JointDecoder`), fixed mask ratios per modality."""

from __future__ import annotations

import pytest
import torch
from conftest import make_inputs, tiny_config

from multimae.losses import MultiMAELoss
from multimae.masking.samplers import FixedRatioMasking
from multimae.modalities.spec import ModalitySpec
from multimae.model import MultiMAE
from multimae.model.config import DecoderConfig
from multimae.model.joint_decoder import JointDecoder

VOCAB, LENGTH, PAD = 13, 8, 0
CAPTION = ModalitySpec(name="caption", kind="tokens", num_channels=VOCAB, loss="cross_entropy", max_length=LENGTH,
                       pad_id=PAD)


def m3ae(outputs=("rgb", "caption")) -> MultiMAE:
    torch.manual_seed(0)
    cfg = tiny_config(inputs=("rgb", "caption"), outputs=outputs, custom_modalities={"caption": CAPTION},
                      modality_overrides={}, decoder=dict(dim=16, depth=2, num_heads=2, kind="joint"))
    return MultiMAE(cfg)


def captions() -> torch.Tensor:
    """(2, 8) ids: 6 real tokens in the first caption, 3 in the second."""
    return torch.tensor([[3, 4, 5, 6, 7, 8, PAD, PAD], [9, 10, 11, PAD, PAD, PAD, PAD, PAD]])


def draw(ids: torch.Tensor, seed: int = 0, rgb_ratio: float = 0.75, text_ratio: float = 0.75):
    sampler = FixedRatioMasking({"rgb": rgb_ratio, "caption": text_ratio})
    return sampler({"rgb": 16, "caption": LENGTH}, ids.shape[0], torch.Generator().manual_seed(seed),
                   {"caption": ids != PAD})


def test_one_joint_decoder_serves_image_and_text():
    model = m3ae().eval()
    decoders = list(model.output_adapters.items())
    assert len(decoders) == 1 and decoders[0][0] == "rgb+caption" and isinstance(decoders[0][1], JointDecoder)
    assert "output_adapters.rgb+caption.mask_tokens.caption" in model.state_dict()
    assert {"output_adapters.rgb+caption.mask_tokens.rgb", "output_adapters.rgb+caption.type_embeddings.caption"} \
        <= model.no_weight_decay()
    ids = captions()
    d = draw(ids)
    out = model({"rgb": make_inputs()["rgb"], "caption": ids}, d.hidden, targets=d.target)
    assert out.preds["rgb"].shape == (2, 3, 32, 32) and out.preds["caption"].shape == (2, LENGTH, VOCAB)
    # Counted: exactly the hidden real tokens, round(0.75 * n) of them per sample.
    assert out.masks["caption"].sum(dim=1).tolist() == [round(0.75 * 6), round(0.75 * 3)]
    assert not out.masks["caption"][ids == PAD].any()
    assert out.masks["rgb"].sum(dim=1).tolist() == [12, 12]


def test_text_padding_is_never_attended_to_by_encoder_or_decoder_nor_in_the_loss():
    model = m3ae().eval()
    rgb, ids = make_inputs()["rgb"], captions()
    d = draw(ids, seed=1)
    valid = {"caption": ids != PAD}
    out = model({"rgb": rgb, "caption": ids}, d.hidden, targets=d.target, valid=valid)
    real = ids != PAD
    other = ids.clone()
    other[~real] = 5  # what sits at padding positions must not matter anywhere
    again = model({"rgb": rgb, "caption": other}, d.hidden, targets=d.target, valid=valid)
    torch.testing.assert_close(again.preds["rgb"], out.preds["rgb"], atol=0, rtol=0)
    torch.testing.assert_close(again.preds["caption"][real], out.preds["caption"][real], atol=0, rtol=0)
    # Nor how much padding there is: the same captions with two padding columns fewer (the decoder
    # then has two query positions fewer) give the same predictions at every real position.
    short = {k: v[:, :6] for k, v in d.hidden.items() if k == "caption"}
    fewer = model({"rgb": rgb, "caption": ids[:, :6]}, {**d.hidden, **short},
                  targets={**d.target, "caption": d.target["caption"][:, :6]})
    torch.testing.assert_close(fewer.preds["rgb"], out.preds["rgb"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(fewer.preds["caption"][real[:, :6]], out.preds["caption"][real], atol=1e-6, rtol=1e-5)
    loss_fn = MultiMAELoss(model.output_specs, 8)
    targets = {"rgb": rgb, "caption": ids}
    loss = loss_fn(out.preds, targets, out.masks, out.valid)
    noisy = out.preds["caption"].detach().clone()
    noisy[~real] = 50.0 * torch.randn_like(noisy[~real])
    same = loss_fn({**out.preds, "caption": noisy}, targets, out.masks, out.valid)
    assert torch.equal(same.per_task["caption"], loss.per_task["caption"].detach())


@pytest.mark.parametrize("present", ["text-only", "image-only"])
def test_a_text_only_and_an_image_only_batch_train(present):
    model = m3ae()
    rgb, ids = make_inputs()["rgb"], captions()
    has_image = present == "image-only"
    presence = {"rgb": torch.full((2,), has_image), "caption": torch.full((2,), not has_image)}
    d = draw(ids, seed=2)
    out = model({"rgb": rgb, "caption": ids}, d.hidden, targets=d.target, valid=presence)
    absent = "caption" if has_image else "rgb"
    kept = "rgb" if has_image else "caption"
    assert not out.masks[absent].any() and out.masks[kept].any()
    loss = MultiMAELoss(model.output_specs, 8)(out.preds, {"rgb": rgb, "caption": ids}, out.masks, out.valid)
    assert torch.isfinite(loss.total) and loss.total > 0
    loss.total.backward()
    adapters = model.backbone.input_adapters
    grad_of = {"rgb": adapters["rgb"].proj.weight.grad, "caption": adapters["caption"].token_emb.weight.grad}
    assert grad_of[kept] is not None and grad_of[kept].abs().sum() > 0
    # The absent modality is never encoded: its adapter gets no gradient at all.
    assert grad_of[absent] is None or grad_of[absent].abs().sum() == 0


def test_a_caption_is_predicted_from_the_image_alone():
    model = m3ae().eval()
    out = model({"rgb": make_inputs()["rgb"]}, outputs=["caption"])
    assert out.preds["caption"].shape == (2, LENGTH, VOCAB) and out.masks["caption"].all()


def test_joint_decoder_settings_are_checked():
    with pytest.raises(ValueError, match="decoder kind"):
        DecoderConfig(kind="jointt")
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        JointDecoder({"caption": CAPTION}, DecoderConfig(dim=12, num_heads=8), 32, 8)
