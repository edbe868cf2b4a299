"""Modalities of every placement in one encoder, separate input and target masks, missing modalities.

A caption-like token sequence (padded), a coarse map on its own grid and a few global vectors sit
beside image patches; records (`ModalityBatch`) carry validity, hidden and target masks.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_inputs, tiny_config

from multimae.losses import MultiMAELoss
from multimae.modalities.batch import ModalityBatch
from multimae.modalities.prepare import prepare_tokens
from multimae.modalities.spec import ModalitySpec
from multimae.model import MultiMAE

VOCAB, LENGTH, PAD = 11, 6, 0
CAPTION = ModalitySpec(name="caption", kind="tokens", num_channels=VOCAB, loss="cross_entropy", max_length=LENGTH,
                       pad_id=PAD)
EMBED = ModalitySpec(name="embed", kind="vector", num_channels=5, loss="mse", max_length=2, is_output=False)
COARSE = ModalitySpec(name="coarse", kind="dense", num_channels=1, loss="l1", patch=16)  # 2x2 grid on 32 px


def caption_model(inputs=("rgb", "caption"), outputs=("rgb", "caption"), **custom) -> MultiMAE:
    torch.manual_seed(0)
    specs = {"caption": CAPTION, "embed": EMBED, "coarse": COARSE, **custom}
    cfg = tiny_config(inputs=inputs, outputs=outputs, custom_modalities=specs, modality_overrides={})
    return MultiMAE(cfg).eval()


def captions() -> torch.Tensor:
    """(2, 6) ids: the first caption has 4 tokens, the second 2 (the rest is padding)."""
    return torch.tensor([[3, 4, 5, 6, PAD, PAD], [7, 8, PAD, PAD, PAD, PAD]])


def test_sequence_padding_is_never_encoded_nor_attended_to():
    model = caption_model()
    rgb = make_inputs()["rgb"]
    out = model.backbone.forward_encoder({"rgb": rgb, "caption": captions()})
    layout = out.layout
    assert layout.counts == (16, LENGTH) and layout.grids == ((4, 4), None)
    # Visible: 16 patches + 4 tokens for sample 0, 16 + 2 for sample 1 (padded row).
    assert out.visible_ids.shape == (2, 20)
    assert out.padding is not None and out.padding.sum(dim=1).tolist() == [0, 2]
    start = layout.span("caption")[0]
    kept = out.visible_ids[1][~out.padding[1]]
    assert (kept < start + 2).all(), "padding tokens of the caption were encoded"
    # Padding tokens can be anything: changing the ids at padding positions (through `valid`) does
    # not change a single encoded value.
    other = captions()
    other[1, 2:] = 9
    valid = {"caption": captions() != PAD}
    again = model.backbone.forward_encoder({"rgb": rgb, "caption": other}, valid=valid)
    keep = ~out.padding
    torch.testing.assert_close(again.patch_tokens[keep], out.patch_tokens[keep], atol=0, rtol=0)


def test_sequence_positions_by_index_or_over_visible_tokens():
    model = caption_model()
    adapter = model.backbone.input_adapters["caption"]
    ids = torch.tensor([[3, 4, 5, 6]])
    hidden_second = torch.tensor([[True, False, True, True]])
    by_index = adapter(ids, hidden_second)
    pos = adapter.pos_emb[0]
    torch.testing.assert_close(by_index[0, 2] - adapter.token_emb.weight[5] - adapter.mod_emb[0, 0], pos[2])
    visible = caption_model(caption=CAPTION.replace(positions="visible")).backbone.input_adapters["caption"]
    tokens = visible(ids, hidden_second)
    # The third token is the second one given to the encoder: position 1.
    torch.testing.assert_close(tokens[0, 2] - visible.token_emb.weight[5] - visible.mod_emb[0, 0], pos[1])


def test_sequence_output_padding_never_in_the_loss():
    model = caption_model(outputs=("caption",))
    rgb, ids = make_inputs()["rgb"], captions()
    out = model({"rgb": rgb}, outputs=["caption"], valid={"caption": ids != PAD})
    logits = out.preds["caption"]
    assert logits.shape == (2, LENGTH, VOCAB)
    assert out.masks["caption"].tolist() == (ids != PAD).tolist()  # not given: every valid token is a target
    loss_fn = MultiMAELoss(model.output_specs, 8)
    loss = loss_fn(out.preds, {"caption": ids}, out.masks, out.valid).total
    changed = logits.clone()
    changed[ids == PAD] = 100.0 * torch.randn_like(changed[ids == PAD])
    assert torch.equal(loss_fn({"caption": changed}, {"caption": ids}, out.masks, out.valid).total, loss)
    # The same loss computed by hand: per-sample mean cross-entropy over real tokens, then the mean.
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids, reduction="none")
    manual = torch.stack([ce[0, :4].mean(), ce[1, :2].mean()]).mean()
    torch.testing.assert_close(loss, manual)


def test_targets_distinct_from_inputs_and_positions_in_neither():
    model = caption_model(inputs=("rgb",), outputs=("rgb",))
    rgb = make_inputs()["rgb"]
    hidden = torch.zeros(2, 16, dtype=torch.bool)
    hidden[:, 8:] = True  # the lower half is not given
    target = torch.zeros(2, 16, dtype=torch.bool)
    target[:, 12:] = True  # only the last row is predicted; rows 2 (hidden) and 0-1 (given) are neither
    out = model.forward_batch({"rgb": ModalityBatch(rgb, torch.ones(2, 16, dtype=torch.bool), hidden, target)})
    assert out.masks["rgb"].tolist() == target.tolist()
    assert out.encoder.visible_ids.shape == (2, 8)
    loss_fn = MultiMAELoss(model.output_specs, 8)
    loss = loss_fn(out.preds, {"rgb": rgb}, out.masks).total
    # Predictions at tokens that are not targets do not move the loss: change rows 0-2 of the map.
    changed = out.preds["rgb"].clone()
    changed[:, :, :24] = 5.0
    assert torch.equal(loss_fn({"rgb": changed}, {"rgb": rgb}, out.masks).total, loss)
    # ... and the loss is the MSE over the last row of patches.
    torch.testing.assert_close(loss, ((out.preds["rgb"] - rgb)[:, :, 24:] ** 2).mean())


def test_records_and_plain_dicts_give_the_same_output():
    model = caption_model()
    rgb, ids = make_inputs()["rgb"], captions()
    g = torch.Generator().manual_seed(1)
    hidden = {"rgb": torch.rand(2, 16, generator=g) > 0.5, "caption": torch.zeros(2, LENGTH, dtype=torch.bool)}
    plain = model({"rgb": rgb, "caption": ids}, hidden)
    records = model.forward_batch({
        "rgb": ModalityBatch(rgb, torch.ones(2, 16, dtype=torch.bool), hidden["rgb"]),
        "caption": ModalityBatch(ids, ids != PAD, hidden["caption"]),
    })
    for k in plain.preds:
        torch.testing.assert_close(records.preds[k], plain.preds[k], atol=0, rtol=0)
        assert torch.equal(records.masks[k], plain.masks[k])


def test_batch_where_some_samples_lack_depth_trains_and_the_loss_ignores_them():
    torch.manual_seed(0)
    model = MultiMAE(tiny_config())
    inputs = make_inputs(batch=3)
    present = torch.tensor([True, False, True])
    valid = {"depth": present[:, None].expand(3, 16)}
    targets = dict(inputs)
    targets["norm_rgb"] = inputs["rgb"]
    targets["depth"] = torch.where(present[:, None, None, None], inputs["depth"], torch.nan)
    masks = model.backbone.sample_masks(inputs, num_visible=12, generator=torch.Generator().manual_seed(0))
    loss_fn = MultiMAELoss(model.output_specs, 8)
    out = model(inputs, masks, valid=valid)
    assert not out.masks["depth"][1].any()
    assert not bool(((out.encoder.visible_ids[1] >= 16) & (out.encoder.visible_ids[1] < 32)).any())
    loss = loss_fn(out.preds, targets, out.masks, out.valid)
    loss.total.backward()
    assert torch.isfinite(loss.total)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # Sample 1's depth data has no effect on anything: not encoded, not counted.
    model.zero_grad()
    other = dict(inputs, depth=inputs["depth"].clone())
    other["depth"][1] = 1e3
    again = model(other, masks, valid=valid)
    torch.testing.assert_close(loss_fn(again.preds, targets, again.masks, again.valid).total, loss.total)
    # The depth loss is the mean over the two samples that have depth.
    per = [loss_fn.task_loss(model.output_specs["depth"], out.preds["depth"][i:i + 1], targets["depth"][i:i + 1],
                             out.masks["depth"][i:i + 1]) for i in (0, 2)]
    torch.testing.assert_close(loss.per_task["depth"], (per[0] + per[1]) / 2)


def test_text_only_sample_beside_image_samples():
    model = caption_model()
    rgb, ids = make_inputs()["rgb"], captions()
    valid = {"rgb": torch.tensor([True, False])[:, None].expand(2, 16), "caption": ids != PAD}
    out = model({"rgb": rgb, "caption": ids}, valid=valid)
    # Sample 1 encodes its 2 caption tokens only; its image is predicted everywhere but counted nowhere.
    assert (~out.encoder.padding[1]).sum() == 2
    assert not out.masks["rgb"][1].any()
    blank = rgb.clone()
    blank[1] = 0.0
    again = model({"rgb": blank, "caption": ids}, valid=valid)
    torch.testing.assert_close(again.preds["caption"][1], out.preds["caption"][1], atol=0, rtol=0)


def test_a_coarse_grid_and_global_tokens_beside_patches():
    model = caption_model(inputs=("rgb", "coarse", "embed"), outputs=("rgb", "coarse"))
    rgb = make_inputs()["rgb"]
    coarse = torch.randn(2, 1, 32, 32)
    embed = torch.randn(2, 2, 5)
    out = model({"rgb": rgb, "coarse": coarse, "embed": embed})
    assert out.encoder.layout.counts == (16, 4, 2)
    assert out.encoder.layout.grids == ((4, 4), (2, 2), None)
    assert out.preds["coarse"].shape == (2, 1, 32, 32) and out.preds["rgb"].shape == (2, 3, 32, 32)
    # Common frame: each cell of the 2x2 grid sits at the centre of a 2x2 block of the 4x4 grid,
    # i.e. at frame coordinates (0.5, 0.5), (0.5, 2.5), ...: the sin-cos of those coordinates.
    coarse_pos = model.backbone.input_adapters["coarse"].pos_emb  # (1, D, 2, 2)
    D = coarse_pos.shape[1]
    omega = 1.0 / 10000 ** (torch.arange(D // 4, dtype=torch.float64) / (D // 4))
    r, c = 0.5, 2.5
    expected = torch.cat([(r * omega).sin(), (r * omega).cos(), (c * omega).sin(), (c * omega).cos()]).float()
    torch.testing.assert_close(coarse_pos[0, :, 0, 1], expected)
    # The 4x4 image table at integer coordinates: cell (0, 2) of the coarse grid lies between
    # image cells (0, 2), (0, 3), (1, 2), (1, 3).
    rgb_pos = model.backbone.input_adapters["rgb"].pos_emb
    assert torch.allclose(rgb_pos[0, :, :2, 2:].mean(dim=(1, 2)), coarse_pos[0, :, 0, 1], atol=0.2)
    # The coarse map can be predicted when it is not given (its grid comes from the image frame).
    only_rgb = model({"rgb": rgb}, outputs=["coarse"])
    assert only_rgb.preds["coarse"].shape == (2, 1, 32, 32) and only_rgb.masks["coarse"].all()


def test_prepare_tokens_pads_and_checks():
    ids = prepare_tokens(CAPTION, torch.tensor([[3, 4]]))
    assert ids.tolist() == [[3, 4, PAD, PAD, PAD, PAD]]
    with pytest.raises(ValueError, match="longer than max_length 6"):
        prepare_tokens(CAPTION, torch.ones(1, 7, dtype=torch.long))
    with pytest.raises(ValueError, match="vocabulary has 11"):
        caption_model().backbone.input_adapters["caption"](torch.tensor([[3, 11]]))
    with pytest.raises(ValueError, match="needs max_length"):
        ModalitySpec(name="t", kind="tokens", num_channels=4, loss="cross_entropy")


def test_record_masks_mean_what_they_say():
    valid = torch.tensor([[True, True, False]])
    r = ModalityBatch(torch.zeros(1, 3), valid, hidden=torch.tensor([[True, False, False]]),
                      target=torch.tensor([[True, False, True]]))
    assert r.encoded.tolist() == [[False, True, False]]  # invalid tokens are never given
    assert r.counted.tolist() == [[True, False, False]]  # ... nor counted
    with pytest.raises(ValueError, match="hidden must be a"):
        ModalityBatch(torch.zeros(1, 3), valid, hidden=torch.zeros(1, 4, dtype=torch.bool))


def test_checkpoint_round_trip_rebuilds_a_model_with_a_sequence_and_a_coarse_grid(tmp_path):
    from multimae.engine.checkpoint import build_model_from_checkpoint, export_safetensors

    model = caption_model(inputs=("rgb", "caption", "coarse"), outputs=("rgb", "caption"))
    export_safetensors(model, tmp_path / "m.safetensors")
    again = build_model_from_checkpoint(tmp_path / "m.safetensors")
    assert again.input_specs["caption"] == CAPTION and again.input_specs["coarse"] == COARSE
    state, other = model.state_dict(), again.state_dict()
    assert state.keys() == other.keys() and all(torch.equal(state[k], other[k]) for k in state)
    inputs = {"rgb": make_inputs()["rgb"], "caption": captions(), "coarse": torch.randn(2, 1, 32, 32)}
    a, b = model(inputs), again(inputs)
    for k in a.preds:
        torch.testing.assert_close(b.preds[k], a.preds[k], atol=0, rtol=0)


def test_pretrain_task_with_4m_input_and_target_budgets():
    from multimae.config.schema import LossConfig, MaskingConfig
    from multimae.tasks.pretrain import PretrainTask

    torch.manual_seed(0)
    model = MultiMAE(tiny_config(outputs=("rgb", "depth", "semseg")))
    task = PretrainTask(model, MaskingConfig(sampler="input_target", input_budget=10, target_budget=12), LossConfig())
    inputs = make_inputs(batch=4)
    draw = task.draw(inputs, 4, slice(0, 4), 0, 2)
    out = task._forward(model, inputs, draw)
    for name in ("rgb", "depth", "semseg"):
        given = ~draw.hidden[name]
        assert not (given & out.masks[name]).any(), f"{name}: a given token is a target"
    assert all(int((~draw.hidden[n]).sum(1).max()) <= 10 for n in draw.hidden)
    assert [int(sum(out.masks[n][i].sum() for n in out.masks)) for i in range(4)] == [12] * 4
    assert sum(int((~(draw.hidden[n] | out.masks[n])).sum()) for n in draw.hidden) > 0  # positions in neither set
    raw = {"rgb": torch.rand(4, 3, 32, 32), "depth": torch.rand(4, 1, 32, 32) + 1,
           "semseg": torch.randint(0, 5, (4, 32, 32))}
    loss = task(model, raw, step=0, global_batch=4, rows=slice(0, 4))
    assert torch.isfinite(loss.total) and set(loss.per_task) == {"rgb", "depth", "semseg"}


def test_collated_batch_lacking_depth_in_one_sample_through_the_pretrain_task():
    from multimae.config.schema import LossConfig, MaskingConfig
    from multimae.data.collate import collate
    from multimae.modalities import prepare_batch
    from multimae.tasks.pretrain import PretrainTask

    torch.manual_seed(0)
    model = MultiMAE(tiny_config())
    g = torch.Generator().manual_seed(0)
    samples = [{"rgb": torch.rand(3, 32, 32, generator=g), "depth": torch.rand(1, 32, 32, generator=g) + 1,
                "semseg": torch.randint(0, 5, (32, 32), generator=g)} for _ in range(3)]
    del samples[1]["depth"]
    raw = collate(samples)
    task = PretrainTask(model, MaskingConfig(num_visible=10), LossConfig())
    batch = prepare_batch(raw, model.input_specs, model.output_specs)
    assert batch.present["depth"].tolist() == [True, False, True]
    draw = task.draw(batch.inputs, 3, slice(0, 3), 0, 2, present=batch.present)
    assert draw.hidden["depth"][1].all()  # no budget on the missing depth
    assert [int(sum((~draw.hidden[n][i]).sum() for n in draw.hidden)) for i in range(3)] == [10, 10, 10]
    out = task._forward(model, batch.inputs, draw, batch.present)
    assert not out.masks["depth"][1].any() and out.masks["depth"][0].any()
    loss = task(model, raw, step=0, global_batch=3, rows=slice(0, 3))
    loss.total.backward()
    assert torch.isfinite(loss.total)
    # The placeholder's values never matter: the same loss with a different fill.
    raw2 = dict(raw, depth=raw["depth"].clone())
    raw2["depth"][1] = 7.0
    torch.testing.assert_close(task(model, raw2, step=0, global_batch=3, rows=slice(0, 3)).total, loss.total)


def test_output_sides_own_query_shapes_and_assembly():
    model = caption_model(inputs=("rgb",), outputs=("rgb", "caption", "coarse"))
    layout = model.backbone.layout({"rgb": torch.zeros(1, 3, 32, 32)})
    rgb, cap, coarse = (model.output_sides[n] for n in ("rgb", "caption", "coarse"))
    assert rgb.query_shape(layout) == ((4, 4), 16) and rgb.values_per_token == 3 * 8 * 8
    assert cap.query_shape(layout) == (None, LENGTH) and cap.values_per_token == VOCAB
    assert coarse.query_shape(layout) == ((2, 2), 4) and coarse.values_per_token == 16 * 16
    y = torch.arange(16 * 192, dtype=torch.float).reshape(1, 16, 192)
    img = rgb.assemble(y, (4, 4))
    # Token 5 is row 1, column 1; its value c * 64 + ph * 8 + pw lands at pixel (c, 8 + ph, 8 + pw).
    assert img.shape == (1, 3, 32, 32) and img[0, 2, 8 + 3, 8 + 4] == y[0, 5, 2 * 64 + 3 * 8 + 4]
    assert cap.assemble(y[:, :LENGTH, :VOCAB], None).shape == (1, LENGTH, VOCAB)
