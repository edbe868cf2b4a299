"""The composed models hold the encoder (``backbone``) beside their decoders or head, and keep the
official flat state-dict keys."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from multimae.engine.optim import param_groups
from multimae.model import FineTuneModel, MultiMAE
from multimae.model.encoder import MultiModalViT, encoder_of
from multimae.model.heads import LinearHeadConfig
from multimae.model.state_keys import checkpoint_names, lift_child_keys, named_checkpoint_parameters

from conftest import make_inputs, tiny_config


def finetune_model() -> FineTuneModel:
    cfg = tiny_config()
    specs = cfg.modality_specs()
    head = LinearHeadConfig(dim=32, num_classes=5)
    return FineTuneModel(cfg.encoder, {n: specs[n] for n in cfg.inputs}, head, "cls")


@pytest.mark.parametrize("build", [lambda: MultiMAE(tiny_config()), finetune_model], ids=["multimae", "finetune"])
def test_models_hold_the_encoder_instead_of_being_one(build):
    model = build()
    assert not isinstance(model, MultiModalViT) and isinstance(model.backbone, MultiModalViT)
    assert encoder_of(model) is model.backbone and encoder_of(model.backbone) is model.backbone
    keys = list(model.state_dict())
    assert keys[0] == "global_tokens" and "encoder.0.attn.qkv.weight" in keys  # the official layout
    assert not any(k.startswith("backbone.") for k in keys)
    assert {k for k in keys if not k.startswith("output_adapters.")} == set(model.backbone.state_dict())
    # every parameter once, named by its checkpoint key
    named = named_checkpoint_parameters(model)
    assert len(named) == len(list(model.parameters())) and set(named) <= set(keys)
    assert named["encoder.1.mlp.fc2.weight"] is model.backbone.encoder[1].mlp.fc2.weight


def test_official_keys_load_strictly_and_missing_ones_are_reported_by_official_name():
    source, target = MultiMAE(tiny_config()), MultiMAE(tiny_config())
    state = source.state_dict()
    target.load_state_dict(state, strict=True)
    assert all(torch.equal(a, b) for a, b in zip(source.parameters(), target.parameters()))
    partial = {k: v for k, v in state.items() if not k.startswith("input_adapters.depth.")}
    result = target.load_state_dict({**partial, "extra.weight": torch.zeros(1)}, strict=False)
    assert sorted(result.missing_keys) == sorted(k for k in state if k.startswith("input_adapters.depth."))
    assert result.unexpected_keys == ["extra.weight"]
    with pytest.raises(RuntimeError, match="input_adapters.depth.proj.weight"):
        target.load_state_dict(partial, strict=True)
    # the module paths are accepted too (what named_parameters() calls them)
    target.load_state_dict({("backbone." + k if not k.startswith("output_") else k): v for k, v in state.items()})


def test_assign_loading_keeps_the_encoder_and_the_model_on_the_same_tensors():
    source, target = MultiMAE(tiny_config()), MultiMAE(tiny_config())
    target.load_state_dict(source.state_dict(), strict=True, assign=True)
    assert target.backbone.global_tokens is named_checkpoint_parameters(target)["global_tokens"]
    inputs = make_inputs(2)
    with torch.no_grad():
        torch.testing.assert_close(target(inputs).preds["depth"], source(inputs).preds["depth"], rtol=0, atol=0)


def test_a_wrapped_model_keeps_the_flat_keys_under_its_own_prefix():
    model = MultiMAE(tiny_config())
    wrapper = nn.ModuleDict({"module": model})  # as DistributedDataParallel nests it
    keys = list(wrapper.state_dict())
    assert "module.encoder.0.attn.qkv.weight" in keys and not any(".backbone." in k for k in keys)
    result = wrapper.load_state_dict({k: v for k, v in wrapper.state_dict().items() if "semseg" not in k}, strict=False)
    assert result.missing_keys and all(k.startswith("module.") and "backbone" not in k for k in result.missing_keys)


def test_optimizer_groups_use_checkpoint_names():
    model = MultiMAE(tiny_config())
    names = checkpoint_names(model)
    groups = param_groups(model, 0.05, model.no_weight_decay(), layer_decay=0.5)
    by_layer = {g["layer"]: {names[id(p)] for p in g["params"]} for g in groups}
    assert "global_tokens" in by_layer[0] and "encoder.1.norm1.weight" in by_layer[2]
    assert any(n.startswith("output_adapters.") for n in by_layer[3])  # 2 blocks: decoders are layer 3


def test_a_child_whose_names_collide_with_the_parents_is_refused():
    class Clash(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Module()
            self.inner.weight = nn.Parameter(torch.zeros(1))
            self.weight = nn.Parameter(torch.zeros(1))

    with pytest.raises(ValueError, match="collide"):
        lift_child_keys(Clash(), "inner")
