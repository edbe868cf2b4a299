"""The 4M converter maps the official key tables completely: the fixture's tiny variants and the
full-size 4M-7 B and 4M-21 B training models (built on the meta device: shapes, no values), with the
official parameter counts, buffers and tied tensors."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import SHARED
from multimae.convert.fourm import fourm_to_ours, our_name

KEYS = SHARED / "reference" / "fourm" / "keys"
pytestmark = pytest.mark.skipif(not (KEYS / "summary.json").exists(), reason="4M key tables not present")
TABLES = ["tiny_swiglu_nobias", "tiny_gelu", "tiny_swiglu_qknorm_nobias", "4m-7_b_swiglu_nobias",
          "4m-21_b_swiglu_nobias"]


def _meta_state(name: str) -> dict[str, torch.Tensor]:
    state = {}
    for line in (KEYS / f"{name}.tsv").read_text().splitlines():
        key, shape = line.split("\t")
        state[key] = torch.empty(json.loads(shape.replace("(", "[").replace(")", "]").replace(",]", "]")),
                                 device="meta")
    return state


@pytest.mark.parametrize("name", TABLES)
def test_every_official_key_has_its_place(name):
    summary = {e["name"]: e for e in json.loads((KEYS / "summary.json").read_text())}[name]
    state = _meta_state(name)
    heads = 4 if name.startswith("tiny") else None  # the fixture's tiny models have 16-wide heads
    model, report = fourm_to_ours(state, num_heads=heads)
    assert set(report.mapped) | set(report.dropped) == set(state)
    assert not report.missing
    # dropped: exactly the no-bias norms' zero bias buffers (none in the gelu variant, whose norms have biases)
    norm_biases = {k for k in state if k.endswith(".bias") and "norm" in k.split(".")[-2]}
    assert set(report.dropped) == (set() if "gelu" in name else norm_biases)
    assert sum(p.numel() for p in model.parameters()) == summary["n_params"]
    ours = dict(model.named_parameters(remove_duplicate=False))
    for group in summary["shared_groups"]:  # one tensor under several official names: one parameter here too
        assert len({id(ours[report.mapped[k]]) for k in group}) == 1, group
    buffers = {n for n, _ in model.named_buffers()}  # the fixed position tables (the summary lists some)
    assert len(buffers) == summary["n_buffers"] - len(report.dropped)
    listed = [b for b in summary["buffers"] if not b.startswith("...") and not b.endswith(".bias")]
    assert {report.mapped[b] for b in listed} <= buffers


def test_full_size_architectures():
    model, report = fourm_to_ours(_meta_state("4m-21_b_swiglu_nobias"))
    cfg = model.config
    assert (cfg.dim, cfg.encoder_depth, cfg.decoder_depth, cfg.num_heads) == (768, 12, 12, 12)
    assert (cfg.mlp, cfg.bias, cfg.image_size, cfg.patch_size) == ("swiglu", False, 224, 16)
    specs = model.input_specs
    assert specs["tok_feature"].positions == "learned" and specs["tok_depth"].positions == "index"  # tok_dinov2_global
    assert specs["tok_feature"].source_name == "feature" and specs["tok_imagebind_global"].positions == "learned"
    assert specs["t5_caption"].kind == "vector" and specs["t5_caption"].num_channels == 4096
    assert specs["boxes"].kind == "tokens" and specs["tok_normals"].stride == 16
    assert our_name("det") == "boxes" and our_name("tok_normal@224") == "tok_normals"
    assert "num_heads" in report.inferred and "assumed" in report.inferred["num_heads"]


def test_not_a_4m_state_dict_is_refused():
    with pytest.raises(ValueError, match="not a 4M state dict"):
        fourm_to_ours({"encoder.0.attn.qkv.weight": torch.zeros(3, 1)})


@pytest.mark.parametrize("family", ["4m-7", "4m-21"])
@pytest.mark.parametrize("size", ["l", "xl"])
def test_our_large_sizes_have_the_official_parameter_counts(family, size):
    """Our named sizes with the B model's modalities (read off its key table) count what 4M's L / XL do."""
    import dataclasses

    from multimae.model.fourm import FourM, fourm_config

    summary = {e["name"]: e for e in json.loads((KEYS / "summary.json").read_text())}
    base, _ = fourm_to_ours(_meta_state(f"{family}_b_swiglu_nobias"))
    named = fourm_config({"l": "large", "xl": "xl"}[size])
    config = dataclasses.replace(base.config, dim=named.dim, encoder_depth=named.encoder_depth,
                                 decoder_depth=named.decoder_depth, num_heads=named.num_heads)
    with torch.device("meta"):
        model = FourM(config)
    assert sum(p.numel() for p in model.parameters()) == summary[f"{family}_{size}_swiglu_nobias"]["n_params"]
