import itertools

import pytest
import torch

from multimae.losses import MultiMAELoss
from multimae.modalities import ModalitySpec
from multimae.model import MultiMAE, model_config

from conftest import NUM_CLASSES, make_inputs, make_targets, tiny_config

INPUTS = ("rgb", "depth", "semseg")
SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(INPUTS, r)]


@pytest.mark.parametrize("subset", SUBSETS, ids="+".join)
def test_shapes_for_every_subset_of_inputs(tiny_model, subset):
    inputs = {k: v for k, v in make_inputs().items() if k in subset}
    masks = tiny_model.backbone.sample_masks(inputs, num_visible=4, generator=torch.Generator().manual_seed(0))
    out = tiny_model(inputs, masks)
    assert out.preds["rgb"].shape == (2, 3, 32, 32) and out.preds["norm_rgb"].shape == (2, 3, 32, 32)
    assert out.preds["depth"].shape == (2, 1, 32, 32)
    assert out.preds["semseg"].shape == (2, NUM_CLASSES, 8, 8)
    assert out.encoder.tokens.shape == (2, 4 + 1, 32)
    for name in ("rgb", "depth", "semseg"):
        assert out.masks[name].shape == (2, 16)
        if name not in subset:  # not given: everything is predicted
            assert out.masks[name].all()
    assert torch.equal(out.masks["norm_rgb"], out.masks["rgb"])
    unmasked = tiny_model.backbone.forward_encoder(inputs)
    assert {k: v.shape for k, v in unmasked.modality_tokens().items()} == {k: (2, 16, 32) for k in subset}


def test_unmasked_path_equals_masked_path_with_everything_visible(tiny_model):
    inputs = make_inputs()
    none_masked = {k: torch.zeros(2, 16, dtype=torch.bool) for k in INPUTS}
    a, b = tiny_model(inputs), tiny_model(inputs, none_masked)
    for k in a.preds:
        torch.testing.assert_close(a.preds[k], b.preds[k])
    torch.testing.assert_close(a.encoder.tokens, b.encoder.tokens)


def test_only_visible_tokens_are_encoded_and_masked_ones_do_not_leak(tiny_model):
    inputs = make_inputs()
    masks = tiny_model.backbone.sample_masks(inputs, num_visible=6, generator=torch.Generator().manual_seed(1))
    out = tiny_model(inputs, masks)
    changed = {k: v.clone() for k, v in inputs.items()}
    changed["rgb"][:, :, :8, :8] += 10  # patch 0 of rgb
    masks["rgb"][:, 0] = True  # ... which is masked
    out = tiny_model(inputs, masks)
    out2 = tiny_model(changed, masks)
    torch.testing.assert_close(out.preds["depth"], out2.preds["depth"])
    torch.testing.assert_close(out.encoder.tokens, out2.encoder.tokens)


def test_samples_may_keep_different_numbers_of_tokens(tiny_model):
    """Explicit masks with per-sample visible counts (the official code is wrong for B > 1)."""
    inputs = make_inputs(batch=3)
    g = torch.Generator().manual_seed(2)
    per_sample = [tiny_model.backbone.sample_masks({k: v[i : i + 1] for k, v in inputs.items()}, n, generator=g) for i, n in enumerate((3, 9, 5))]
    batch_masks = {k: torch.cat([m[k] for m in per_sample]) for k in INPUTS}
    out = tiny_model(inputs, batch_masks)
    assert out.encoder.padding is not None and out.encoder.padding.sum(dim=1).tolist() == [6, 0, 4]
    for i, masks in enumerate(per_sample):
        single = tiny_model({k: v[i : i + 1] for k, v in inputs.items()}, masks)
        for k in single.preds:
            torch.testing.assert_close(out.preds[k][i : i + 1], single.preds[k], atol=1e-5, rtol=1e-4)


def test_every_trainable_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = MultiMAE(tiny_config())
    inputs = make_inputs()
    masks = model.backbone.sample_masks(inputs, num_visible=8, generator=torch.Generator().manual_seed(3))
    out = model(inputs, masks)
    loss = MultiMAELoss(model.output_specs, 8)(out.preds, make_targets(inputs), out.masks).total
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
            assert torch.isfinite(p.grad).all(), name
        else:
            assert name.endswith("pos_emb") and p.grad is None


def test_other_input_sizes_interpolate_the_positional_tables(tiny_model):
    inputs = make_inputs(size=48)  # stored tables are 4x4, this is a 6x6 grid
    out = tiny_model(inputs, tiny_model.backbone.sample_masks(inputs, 10, generator=torch.Generator().manual_seed(4)))
    assert out.preds["rgb"].shape == (2, 3, 48, 48) and out.preds["semseg"].shape == (2, NUM_CLASSES, 12, 12)
    rect = {"rgb": torch.randn(1, 3, 32, 48)}
    assert tiny_model(rect).preds["depth"].shape == (1, 1, 32, 48)


def test_seeded_construction_and_forward_are_deterministic():
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        model = MultiMAE(tiny_config())
        inputs = make_inputs(seed=1)
        masks = model.backbone.sample_masks(inputs, 8, generator=torch.Generator().manual_seed(6))
        outs.append(model(inputs, masks).preds["semseg"])
    assert torch.equal(outs[0], outs[1])


def test_a_user_added_modality_trains_without_library_changes():
    thermal = ModalitySpec(name="thermal", num_channels=1, normalization="robust_standardize", loss="l1")
    edges = ModalitySpec(name="edges", num_channels=1, loss="mse", is_input=False)
    cfg = tiny_config(inputs=("rgb", "thermal"), outputs=("thermal", "edges"), custom_modalities={"thermal": thermal, "edges": edges}, modality_overrides={})
    model = MultiMAE(cfg)
    inputs = {"rgb": torch.randn(2, 3, 32, 32), "thermal": torch.randn(2, 1, 32, 32)}
    out = model(inputs, model.backbone.sample_masks(inputs, 6, generator=torch.Generator().manual_seed(7)))
    assert out.preds["thermal"].shape == (2, 1, 32, 32) and out.preds["edges"].shape == (2, 1, 32, 32)
    assert out.masks["edges"].all()  # no edges input: everything is predicted
    assert "input_adapters.thermal.proj.weight" in model.state_dict()
    losses = MultiMAELoss(model.output_specs, 8)(out.preds, {"thermal": inputs["thermal"], "edges": torch.rand(2, 1, 32, 32)}, out.masks)
    assert set(losses.per_task) == {"thermal", "edges"}


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({}, "no input modality given"),
        ({"thermal": torch.randn(1, 1, 32, 32)}, "unknown input modality"),
        ({"rgb": torch.randn(1, 4, 32, 32)}, r"rgb: expected a \(B, 3, H, W\) tensor"),
        ({"rgb": torch.randn(1, 3, 30, 32)}, "not divisible by its patch size 8"),
        ({"semseg": torch.full((1, 8, 8), NUM_CLASSES)}, "class id out of range"),
        ({"semseg": torch.rand(1, 8, 8)}, "class ids must be an integer tensor"),
        ({"rgb": torch.randn(1, 3, 32, 32), "depth": torch.randn(1, 1, 64, 64)}, "do not lie on one image"),
    ],
)
def test_bad_inputs_give_clear_errors(tiny_model, inputs, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(inputs)


def test_bad_masks_and_configs_give_clear_errors(tiny_model):
    inputs = make_inputs()
    with pytest.raises(ValueError, match="but not for input 'semseg'"):
        tiny_model(inputs, {"rgb": torch.zeros(2, 16, dtype=torch.bool), "depth": torch.zeros(2, 16, dtype=torch.bool)})
    with pytest.raises(ValueError, match="every token is masked"):
        tiny_model(inputs, {k: torch.ones(2, 16, dtype=torch.bool) for k in INPUTS})
    with pytest.raises(ValueError, match="must have shape"):
        tiny_model(inputs, {k: torch.zeros(2, 15, dtype=torch.bool) for k in INPUTS})
    with pytest.raises(ValueError, match="cannot be an input"):
        MultiMAE(tiny_config(inputs=("norm_rgb",)))
    with pytest.raises(ValueError, match="unknown model size"):
        model_config("huge")
    with pytest.raises(ValueError, match="unknown encoder config key"):
        model_config("tiny", encoder={"width": 3})
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        MultiMAE(tiny_config(encoder=dict(image_size=30, patch_size=8)))


def test_named_sizes_match_the_paper():
    base = MultiMAE(model_config("base"))
    n_params = sum(p.numel() for p in base.parameters())
    # The official ViT-B pre-training model (rgb/depth/semseg in, 4 decoders) has 98,569,360.
    assert n_params == 98_569_360
    assert (base.backbone.config.dim, base.backbone.config.depth, base.backbone.config.num_heads) == (768, 12, 12)
    assert base.model_config.decoder.dim == 256 and base.model_config.decoder.depth == 2
