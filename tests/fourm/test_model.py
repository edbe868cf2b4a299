"""Our 4M from scratch: what the encoder may see, what each decoder slot may see, errors that name the
problem, and that training signal reaches every parameter."""

from __future__ import annotations

import pytest
import torch

from multimae.modalities.batch import ModalityBatch
from multimae.model.fourm import FourM, fourm_config

B, L = 2, 12


def tiny(**kw) -> FourM:
    torch.manual_seed(0)
    cfg = fourm_config("tiny", dim=32, num_heads=2, encoder_depth=1, decoder_depth=2, image_size=32, patch_size=8,
                       inputs=("rgb", "tok_depth", "caption"), outputs=("tok_depth", "caption"),
                       num_encoder_tokens=24, num_decoder_tokens=24,
                       modality_overrides={"tok_depth": {"num_channels": 16}, "caption": {"num_channels": 20}}, **kw)
    return FourM(cfg).eval()


def batch(seed: int = 0) -> dict[str, ModalityBatch]:
    g = torch.Generator().manual_seed(seed)
    rgb = torch.randn(B, 3, 32, 32, generator=g)
    depth = torch.randint(0, 16, (B, 16), generator=g)  # a 4 x 4 map: 8 px per token on 32 px
    caption = torch.randint(4, 20, (B, L), generator=g)
    ones = lambda n: torch.ones(B, n, dtype=torch.bool)  # noqa: E731
    given_rgb = torch.zeros(B, 16, dtype=torch.bool)
    given_rgb[:, :6] = True
    depth_given = torch.zeros(B, 16, dtype=torch.bool)
    depth_given[:, 10:] = True
    cap_given = torch.zeros(B, L, dtype=torch.bool)
    cap_given[:, :3] = True
    cap_target = torch.zeros(B, L, dtype=torch.bool)
    cap_target[:, 4:10] = True
    return {"rgb": ModalityBatch(rgb, ones(16), ~given_rgb, None),
            "tok_depth": ModalityBatch(depth, ones(16), ~depth_given, ~depth_given),
            "caption": ModalityBatch(caption, ones(L), ~cap_given, cap_target)}


def test_forward_shapes_and_gradients_reach_every_parameter():
    model = tiny().train()
    out = model(batch())
    assert out.logits["tok_depth"].shape == (B * 10, 16)  # the 10 depth tokens not given are the targets
    assert out.logits["caption"].shape == (B * 5, 20)  # 6 target tokens -> 5 teacher-forced slots each
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    # the decoder's caption token embedding is tied to its logits; the depth one is only a head (a map's queries
    # are mask tokens): both get gradients through the tie
    assert no_grad == [], no_grad


def test_tokens_not_given_do_not_change_the_encoder():
    model = tiny()
    a, b = batch(), batch()
    pixels = b["rgb"].data.clone()
    pixels[:, :, 24:, 24:] += 1.0  # the last patch, not given
    b["rgb"] = ModalityBatch(pixels, b["rgb"].valid, b["rgb"].hidden, None)
    data = b["tok_depth"].data.clone()
    data[b["tok_depth"].hidden] = (data[b["tok_depth"].hidden] + 1) % 16  # change only tokens not given
    caption = b["caption"].data.clone()
    caption[:, 10:] = 4  # neither given nor a target
    b["tok_depth"] = ModalityBatch(data, b["tok_depth"].valid, b["tok_depth"].hidden, None)
    b["caption"] = ModalityBatch(caption, b["caption"].valid, b["caption"].hidden, None)
    a["tok_depth"] = ModalityBatch(a["tok_depth"].data, a["tok_depth"].valid, a["tok_depth"].hidden, None)
    a["caption"] = ModalityBatch(a["caption"].data, a["caption"].valid, a["caption"].hidden, None)
    with torch.no_grad():
        ea = model.encode(model_slots(model, a))
        eb = model.encode(model_slots(model, b))
    torch.testing.assert_close(ea, eb)
    pixels = pixels.clone()
    pixels[:, :, :8, :8] += 1.0  # the first patch, given: the control
    b["rgb"] = ModalityBatch(pixels, b["rgb"].valid, b["rgb"].hidden, None)
    with torch.no_grad():
        assert not torch.allclose(ea, model.encode(model_slots(model, b)))


def model_slots(model: FourM, records):
    from multimae.model.fourm import select_slots

    return select_slots(model.embed_inputs(records), model.config.num_encoder_tokens, "encoder")


def test_a_sequence_slot_sees_only_earlier_target_tokens():
    """Changing the caption's last target token changes no logit before its own slot (causal decoding), and
    changes no depth logit (decoder attention stays within a modality)."""
    model = tiny()
    a = batch()
    caption = a["caption"].data.clone()
    caption[:, 9] = (caption[:, 9] + 1 - 4) % 16 + 4  # the last target token: only the last slot reads it
    b = dict(a, caption=ModalityBatch(caption, a["caption"].valid, a["caption"].hidden, a["caption"].target))
    with torch.no_grad():
        oa, ob = model(a), model(b)
    torch.testing.assert_close(oa.logits["tok_depth"], ob.logits["tok_depth"])
    la, lb = oa.logits["caption"].view(B, 5, -1), ob.logits["caption"].view(B, 5, -1)
    torch.testing.assert_close(la, lb)  # slot 9 is the last target: no slot reads it as input...
    assert not torch.equal(oa.labels["caption"], ob.labels["caption"])  # ...it is only a label
    caption[:, 5] = (caption[:, 5] + 1 - 4) % 16 + 4  # a middle target token
    c = dict(a, caption=ModalityBatch(caption, a["caption"].valid, a["caption"].hidden, a["caption"].target))
    with torch.no_grad():
        lc = model(c).logits["caption"].view(B, 5, -1)
    torch.testing.assert_close(la[:, :1], lc[:, :1])  # slot 4 reads token 4 only
    assert not torch.allclose(la[:, 1:], lc[:, 1:])  # slot 5 on reads the changed token


def test_errors_name_the_problem():
    model = tiny()
    records = batch()
    bad = dict(records, tok_depth=ModalityBatch(records["tok_depth"].data + 16, records["tok_depth"].valid,
                                                records["tok_depth"].hidden, records["tok_depth"].target))
    with pytest.raises(ValueError, match="tok_depth: token id out of range"):
        model(bad)
    with pytest.raises(ValueError, match="encoder: a sample has 15 tokens for 10 slots"):
        model(records, num_encoder_tokens=10)
    with pytest.raises(ValueError, match="no output modality"):
        model({"rgb": records["rgb"]})
    with pytest.raises(ValueError, match="4M predicts tokens"):
        fourm_config("tiny", inputs=("rgb",), outputs=("depth",)).modality_specs()
    with pytest.raises(ValueError, match="rgb: expected a float"):
        model(dict(records, rgb=ModalityBatch(records["rgb"].data[:, :, :16], records["rgb"].valid)))


def test_variants_build_and_agree_on_shapes():
    for kw in ({"mlp": "gelu", "bias": True}, {"qk_norm": True}, {"num_register_tokens": 2}):
        model = tiny(**kw)
        out = model(batch())
        assert out.logits["caption"].shape == (B * 5, 20) and torch.isfinite(out.loss)


def test_encoder_token_std_sets_only_the_encoders_token_embeddings():
    def stds(model: FourM) -> dict[str, float]:
        return {n: p.std().item() for n, p in model.named_parameters() if n.endswith("token_emb.weight")}

    default, wide = stds(tiny()), stds(tiny(encoder_token_std=1.0))
    assert set(default) == {f"{side}_embeddings.{m}.token_emb.weight" for side in ("encoder", "decoder")
                            for m in ("tok_depth", "caption")}
    for name, std in wide.items():
        if name.startswith("encoder_"):
            assert 0.7 < std < 1.3 and abs(default[name] - 0.02) < 0.01
        else:  # the decoder's (tied with the output projection: xavier) are untouched
            assert std == pytest.approx(default[name])
    with pytest.raises(ValueError, match="encoder_token_std must be > 0"):
        tiny(encoder_token_std=0.0)


def test_condition_use_compares_own_and_another_samples_input():
    from multimae.config.fourm import FourMMaskingConfig
    from multimae.tasks.fourm import FourMTask, build_masking, condition_use

    model = tiny()
    task = FourMTask(model, build_masking(FourMMaskingConfig(input_budget=8, target_budget=8),
                                          {**model.input_specs, **model.output_specs}))
    g = torch.Generator().manual_seed(1)
    depth = torch.randint(0, 16, (4, 16), generator=g)
    caption = torch.randint(4, 20, (4, 6), generator=g)
    raw = {"ids": {"depth": depth, "caption": caption},
           "valid": {"depth": torch.ones(4, 16, dtype=torch.bool), "caption": torch.ones(4, 6, dtype=torch.bool)}}
    found = condition_use(task, [raw], [("tok_depth", "caption")])["tok_depth->caption"]
    assert found["ce"] > 0 and abs(found["ce"] - found["ce_other"]) > 1e-4  # random weights read their input
    same = {"ids": {"depth": depth[:1].repeat(4, 1), "caption": caption}, "valid": raw["valid"]}
    found = condition_use(task, [same], [("tok_depth", "caption")])["tok_depth->caption"]
    assert found["ce"] == pytest.approx(found["ce_other"], abs=1e-6)  # every row's input alike: nothing moved


def test_a_batch_without_any_target_gives_a_zero_loss_that_backpropagates():
    model = tiny().train()
    b = batch()
    none = {n: ModalityBatch(r.data, r.valid, r.hidden, torch.zeros_like(r.valid) if r.target is not None else None)
            for n, r in b.items()}
    out = model(none)
    assert out.loss.item() == 0.0 and out.loss.requires_grad
    out.loss.backward()  # no "does not require grad": an optimiser step on such a batch changes nothing
