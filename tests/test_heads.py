"""Fine-tuning heads: official key names and shapes, output shapes for every input subset,
configs read back from weights, gradients reaching every parameter."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import SHARED, make_inputs, tiny_config

from multimae.model import FineTuneModel
from multimae.model.heads import (
    DPT_KEY_ALIASES,
    ConvNeXtHead,
    ConvNeXtHeadConfig,
    DPTHead,
    DPTHeadConfig,
    LinearHead,
    LinearHeadConfig,
    build_head,
    default_hooks,
    head_config_from_state_dict,
)

KEYS = SHARED / "reference" / "official_keys"
needs_keys = pytest.mark.skipif(not KEYS.exists(), reason="shared/reference/official_keys is not beside the checkout")
INPUTS = ("rgb", "depth", "semseg")
SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(INPUTS, r)]


def official_head(table: str, name: str) -> dict[str, tuple[int, ...]]:
    """{key relative to the head: shape} from an official key table."""
    prefix = f"output_adapters.{name}."
    out = {}
    for line in (KEYS / table).read_text().splitlines():
        key, shape = line.split("\t")
        if key.startswith(prefix):
            out[key[len(prefix):]] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return out


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@needs_keys
def test_convnext_head_has_the_official_keys_and_shapes():
    official = official_head("finetune_semseg_convnext_rgb-depth_nyu.tsv", "semseg")
    head = ConvNeXtHead(ConvNeXtHeadConfig(dim=768, num_classes=40, modalities=("rgb",)))
    assert shapes(head) == official
    assert not any("gamma" in k for k in official)  # no layer scale


@needs_keys
def test_linear_head_has_the_official_keys_and_shapes():
    official = official_head("finetune_cls_linear_rgb_in1k.tsv", "cls")
    assert shapes(LinearHead(LinearHeadConfig(dim=768, num_classes=1000))) == official


@needs_keys
def test_dpt_head_has_the_official_keys_once_and_loads_the_aliases():
    official = official_head("finetune_depth_dpt_rgb_nyu.tsv", "depth")
    head = DPTHead(DPTHeadConfig(dim=768, num_channels=1))
    ours = shapes(head)
    aliases = {k for k in official if k.startswith(tuple(DPT_KEY_ALIASES))}
    assert len(aliases) == 18  # 14 reassemble tensors and 4 projections are stored twice officially
    assert ours == {k: v for k, v in official.items() if k not in aliases}
    # An official state dict (aliases holding the same tensors) loads strictly.
    torch.manual_seed(0)
    state = {k: torch.randn(s) for k, s in ours.items()}
    for alias, canonical in DPT_KEY_ALIASES.items():
        for k in [k for k in state if k.startswith(canonical)]:
            state[alias + k[len(canonical):]] = state[k]
    assert set(state) == set(official)
    head.load_state_dict(state, strict=True)
    torch.testing.assert_close(head.act_4_postprocess[1].weight, state["act_postprocess.3.1.weight"])
    # Only the alias names (as a converter might keep) load too, and inside a model under a prefix.
    only_alias = {k: v for k, v in state.items() if not k.startswith(("act_1", "act_2", "act_3", "act_4"))}
    DPTHead(DPTHeadConfig(dim=768)).load_state_dict(only_alias, strict=True)
    wrapper = torch.nn.ModuleDict({"depth": DPTHead(DPTHeadConfig(dim=768))})
    wrapper.load_state_dict({f"depth.{k}": v for k, v in state.items()}, strict=True)
    state["scratch.layer_rn.0.weight"] = state["scratch.layer_rn.0.weight"] + 1
    with pytest.raises(ValueError, match="same tensor"):
        DPTHead(DPTHeadConfig(dim=768)).load_state_dict(state)


@needs_keys
def test_full_classification_model_matches_the_official_key_table():
    lines = (KEYS / "finetune_cls_linear_rgb_in1k.tsv").read_text().splitlines()
    official = {k: tuple(int(s) for s in v.strip("()").split(",") if s.strip()) for k, v in (l.split("\t") for l in lines)}
    cfg = tiny_config(encoder={"dim": 768, "depth": 12, "num_heads": 12, "image_size": 224, "patch_size": 16}, inputs=("rgb",),
                      outputs=(), modality_overrides={})
    model = FineTuneModel(cfg.encoder, {"rgb": cfg.modality_specs()["rgb"]},
                          LinearHeadConfig(dim=768, num_classes=1000), "cls")
    assert shapes(model) == official


def test_default_hooks():
    assert default_hooks(12) == (2, 5, 8, 11)
    assert default_hooks(6) == (0, 2, 3, 5)
    with pytest.raises(ValueError):
        default_hooks(3)


# --------------------------------------------------------------------- tiny models, every subset
def tiny_model(head_cfg, name: str = "head") -> FineTuneModel:
    torch.manual_seed(0)
    cfg = tiny_config(encoder={"dim": 32, "depth": 4, "num_heads": 2, "image_size": 32, "patch_size": 8})
    specs = cfg.modality_specs()
    return FineTuneModel(cfg.encoder, {n: specs[n] for n in INPUTS}, head_cfg, name)


def dense_heads(read: tuple[str, ...]):
    return [
        ConvNeXtHeadConfig(dim=32, num_classes=7, modalities=read, embed_dim=64, preds_per_patch=4, depth=2),
        DPTHeadConfig(dim=32, num_channels=3, modalities=read, hooks=(0, 1, 2, 3), layer_dims=(8, 8, 16, 16),
                      feature_dim=16),
    ]


@pytest.mark.parametrize("subset", SUBSETS, ids="+".join)
def test_linear_head_shapes_for_every_subset(subset):
    model = tiny_model(LinearHeadConfig(dim=32, num_classes=6))
    inputs = {k: v for k, v in make_inputs(batch=3).items() if k in subset}
    assert model(inputs).shape == (3, 6)


@pytest.mark.parametrize("subset", SUBSETS, ids="+".join)
@pytest.mark.parametrize("selection", ["one", "concatenate"])
def test_dense_head_shapes_for_every_subset(subset, selection):
    read = subset[:1] if selection == "one" else subset
    inputs = {k: v for k, v in make_inputs(batch=2).items() if k in subset}
    for head_cfg in dense_heads(read):
        out = tiny_model(head_cfg)(inputs)
        channels = 7 if isinstance(head_cfg, ConvNeXtHeadConfig) else 3
        assert out.shape == (2, channels, 32, 32)


def test_head_reading_a_missing_modality_is_an_error():
    model = tiny_model(dense_heads(("rgb",))[0])
    with pytest.raises(ValueError, match="were not given to the encoder"):
        model({"depth": make_inputs()["depth"]})
    with pytest.raises(ValueError, match="not inputs of the model"):
        tiny_model(ConvNeXtHeadConfig(dim=32, num_classes=3, modalities=("normals",), embed_dim=64, preds_per_patch=4))


def test_every_parameter_gets_a_gradient():
    for head_cfg in [LinearHeadConfig(dim=32, num_classes=6), *dense_heads(("rgb", "depth"))]:
        model = tiny_model(head_cfg)
        model(make_inputs()).square().mean().backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
        assert missing == [], type(head_cfg).__name__


def test_convnext_reshape_places_sub_tokens_as_the_official_layout():
    """Feature (sh * S + sw) * C + c of token (i, j) lands at pixel (i * S + sh, j * S + sw), channel c."""
    cfg = ConvNeXtHeadConfig(dim=4, num_classes=2, modalities=("rgb",), embed_dim=8, preds_per_patch=4, depth=0)
    head = ConvNeXtHead(cfg)
    captured = {}
    head.final_layer.register_forward_hook(lambda m, i, o: captured.setdefault("x", i[0]))
    with torch.no_grad():
        head.proj_dec.weight.copy_(torch.eye(8, 4).repeat(1, 1))
        head.proj_dec.weight.zero_()
        head.proj_dec.bias.copy_(torch.arange(8.0))
    from multimae.model.encoder import EncoderOutput, TokenLayout

    enc = EncoderOutput(torch.zeros(1, 2 * 3 + 1, 4), torch.arange(6)[None], None, TokenLayout(("rgb",), (6,), ((2, 3),)), 1)
    assert head(enc, (4, 6)).shape == (1, 2, 4, 6)
    x = captured["x"][0]  # (C=2, 4, 6)
    for sh, sw, c in itertools.product(range(2), range(2), range(2)):
        assert torch.all(x[c, sh::2, sw::2] == (sh * 2 + sw) * 2 + c)


@pytest.mark.parametrize("head_cfg", [
    LinearHeadConfig(dim=32, num_classes=6, pooling="global"),
    *dense_heads(("rgb", "depth")),
], ids=["linear", "convnext", "dpt"])
def test_config_is_read_back_from_weights(head_cfg):
    state = build_head(head_cfg).state_dict()
    prefixed = {f"output_adapters.x.{k}": v for k, v in state.items()}
    kwargs = {} if isinstance(head_cfg, LinearHeadConfig) else {"modalities": ("rgb", "depth")}
    if isinstance(head_cfg, DPTHeadConfig):
        kwargs["hooks"] = head_cfg.hooks
    got = head_config_from_state_dict(prefixed, "output_adapters.x.", **kwargs)
    if isinstance(head_cfg, LinearHeadConfig):
        got = LinearHeadConfig.from_state_dict(prefixed, "output_adapters.x.", pooling="global")
    assert got == head_cfg


def test_bad_head_configs_are_rejected():
    with pytest.raises(ValueError, match="square"):
        ConvNeXtHeadConfig(dim=8, num_classes=2, preds_per_patch=8, embed_dim=64)
    with pytest.raises(ValueError, match="non-decreasing"):
        DPTHeadConfig(dim=8, hooks=(3, 2, 1, 0))
    with pytest.raises(ValueError, match="reach past"):
        tiny_model(DPTHeadConfig(dim=32, hooks=(1, 2, 3, 4), layer_dims=(8, 8, 8, 8), feature_dim=8))
    with pytest.raises(ValueError, match="wide"):
        tiny_model(LinearHeadConfig(dim=16, num_classes=2))


@pytest.mark.parametrize("patch,size", [(16, 64), (8, 40), (4, 16)])
def test_dpt_output_is_at_image_size_for_any_patch_size(patch, size):
    torch.manual_seed(0)
    cfg = tiny_config(encoder={"dim": 32, "depth": 4, "num_heads": 2, "image_size": size, "patch_size": patch}, inputs=("rgb",),
                      outputs=(), modality_overrides={})
    head = DPTHeadConfig(dim=32, num_channels=1, hooks=(0, 1, 2, 3), layer_dims=(8, 8, 8, 8), feature_dim=8)
    model = FineTuneModel(cfg.encoder, cfg.modality_specs(), head, "depth")
    assert model({"rgb": torch.randn(1, 3, size, size)}).shape == (1, 1, size, size)


def test_dpt_accepts_repeated_hooks_as_the_official_adapter_does():
    """(0, 1, 2, 2) on a 3-block encoder: block 2 feeds the last two levels; each block is kept once."""
    torch.manual_seed(0)
    cfg = tiny_config(encoder={"dim": 32, "depth": 3, "num_heads": 2, "image_size": 32, "patch_size": 8},
                      inputs=("rgb",), outputs=(), modality_overrides={})
    head = DPTHeadConfig(dim=32, num_channels=1, hooks=(0, 1, 2, 2), layer_dims=(8, 8, 8, 8), feature_dim=8)
    model = FineTuneModel(cfg.encoder, cfg.modality_specs(), head, "depth")
    assert model.head.return_layers == (0, 1, 2)
    x = torch.randn(2, 3, 32, 32)
    out = model({"rgb": x})
    assert out.shape == (2, 1, 32, 32) and torch.isfinite(out).all()
    out.sum().backward()
    assert model.head.act_4_postprocess[0].weight.grad is not None
