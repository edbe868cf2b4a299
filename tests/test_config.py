import re

import pytest

from multimae.config import FinetuneConfig, RunConfig, load_config, to_yaml
from multimae.configs import preset_names, preset_path
from multimae.config.fourm import FourMRunConfig
from multimae.tokenizers.config import TokenizerRunConfig, VectorRunConfig


def test_presets_load_and_validate():
    assert {"cpu", "paper-vitb"} <= set(preset_names())
    cpu = load_config(RunConfig, preset_path("cpu"))
    assert cpu.data.source == "world" and cpu.train.precision == "auto" and cpu.train.threads == "auto"
    for name in preset_names():
        if name == "tok-feature":  # a vector tokenizer run (tests/vector_tokenizers)
            feature = load_config(VectorRunConfig, preset_path(name), ["source=/data/x"])
            feature.validate()
            assert feature.spec().kind == "vector" and feature.tokenizer.tokens == 4, name
            continue
        if name.startswith("4m-"):  # 4M runs (family: 4m)
            fourm = load_config(FourMRunConfig, preset_path(name), ["data.root=/data/x"])
            fourm.validate()
            assert fourm.family == "4m" and fourm.model.build().modality_specs(), name
            continue
        if name.startswith("tok-"):  # tokenizer runs (tests/map_tokenizers/test_training.py)
            modality = load_config(TokenizerRunConfig, preset_path(name)).spec().name
            assert name in ("tok-world", f"tok-world-{modality}"), name
            continue
        assert load_config(RunConfig if "finetune" not in name else FinetuneConfig, preset_path(name),
                           ["data.root=/data/x"] if name.endswith("-vitb") else []).train.precision == "auto", name
    cpu = load_config(FourMRunConfig, preset_path("4m-cpu"))
    # the CPU default draws its token tables from the tokenizers' codes at std 1; 4M's own recipe keeps 0.02
    assert cpu.model.encoder_token_init == "codebook" and cpu.model.build().encoder_token_std == 1.0
    assert "boxes" in cpu.model.build().outputs  # the 4M default reads and predicts boxes
    paper = load_config(FourMRunConfig, preset_path("4m-b"), ["data.root=/data/x"])
    assert paper.model.encoder_token_init == "normal" and paper.model.build().encoder_token_std == 0.02
    from multimae.tasks.fourm import build_masking

    capped = load_config(FourMRunConfig, preset_path("4m-cpu"), ["masking.min_tokens.tok_depth=4",
                                                                 "masking.max_tokens.tok_rgb=10"])
    capped.validate()
    from types import SimpleNamespace

    metadata = SimpleNamespace(coord_ids=frozenset({40, 41}), eos_id=3)  # what chunking reads of a sequence tokenizer
    masking = build_masking(capped.masking, capped.model.build().modality_specs(), tokenizers={"metadata": metadata})
    assert masking.budgets.min_tokens == {"tok_depth": 4} and masking.grid_max_tokens == {"tok_rgb": 10}
    assert masking.sequences["caption"].max_tokens == 32 and masking.sequences["caption"].chunk_values is None
    assert masking.sequences["metadata"].chunk_values == {40, 41} and masking.sequences["metadata"].eos_id == 3
    with pytest.raises(ValueError, match=r"masking.min_tokens: \['heat'\] are not modalities of the model"):
        load_config(FourMRunConfig, preset_path("4m-cpu"), ["masking.min_tokens.heat=4"]).validate()
    paper = load_config(RunConfig, preset_path("paper-vitb"), ["data.root=/data/x"])
    assert (paper.model.size, paper.data.batch_size, paper.masking.num_visible, paper.masking.alpha) == ("base", 2048, 98, 1.0)
    assert paper.optim.betas == (0.9, 0.95) and paper.optim.weight_decay == 0.05
    assert paper.optim.peak_lr(paper.data.batch_size) == pytest.approx(1e-4 * 2048 / 256)
    assert paper.model.build().encoder.dim == 768
    m3ae = load_config(RunConfig, preset_path("m3ae-vitb"), ["data.root=/data/pairs.jsonl"])
    enc, dec = m3ae.model.build().encoder, m3ae.model.build().decoder
    assert (enc.dim, enc.patch_size, enc.image_size, dec.dim, dec.depth, dec.num_heads, dec.kind) == \
        (768, 16, 256, 512, 8, 16, "joint")
    assert m3ae.masking.ratios == {"rgb": 0.75, "caption": 0.75} and m3ae.loss.weights == {"caption": 0.5}
    assert m3ae.optim.peak_lr(m3ae.data.batch_size) == pytest.approx(1.5e-4 * 4096 / 256)
    assert m3ae.model.build().modality_specs()["caption"].max_length == 64 and m3ae.data.tokenizer == "bert-base-uncased"


def test_overrides_are_typed():
    cfg = load_config(RunConfig, preset_path("cpu"), ["optim.lr=5e-4", "train.steps=7", "data.augment=false",
                                                      "model.encoder.depth=2", "masking.alpha=.inf", "optim.betas=[0.9, 0.99]"])
    assert cfg.optim.lr == 5e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.train.steps == 7 and cfg.data.augment is False
    assert cfg.model.build().encoder.depth == 2 and cfg.masking.alpha == float("inf")
    assert cfg.optim.betas == (0.9, 0.99)


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", r"unknown config key\(s\) \['optim.lrr'\]"),
        ("train.steps=many", "train.steps: expected an integer"),
        ("train.precision=fp8", "must be one of"),
        ("train.threads=many", "fits none of"),
        ("model.encoder.width=3", "unknown encoder config key"),
        ("model.inputs=[thermal]", "unknown modality 'thermal'"),
        ("data.source=folder", "data.root is required"),
        ("steps", "not of the form key=value"),
        ("data.world_class_colors=2", r"data.world_class_colors must be in \[0, 1\]"),
    ],
)
def test_bad_configs_fail_before_any_work(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(RunConfig, preset_path("cpu"), [override])


def test_files_can_extend_a_base_and_round_trip(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(to_yaml(load_config(RunConfig, preset_path("cpu"))))
    child = tmp_path / "child.yaml"
    child.write_text("base: base.yaml\ntrain:\n  steps: 3\n")
    cfg = load_config(RunConfig, child)
    assert cfg.train.steps == 3 and cfg.model.size == "tiny"
    again = tmp_path / "again.yaml"
    again.write_text(to_yaml(cfg))
    assert load_config(RunConfig, again) == cfg


def test_per_modality_alpha_from_the_config_reaches_the_sampler():
    import torch

    from multimae.model import MultiMAE
    from multimae.tasks.pretrain import PretrainTask

    tiny = ["model.encoder={dim: 32, depth: 1, num_heads: 2, image_size: 32, patch_size: 8}", "data.image_size=32",
            "model.decoder={dim: 16, depth: 1, num_heads: 2}", "masking.num_visible=12"]
    cfg = load_config(RunConfig, preset_path("cpu"), [*tiny, "masking.alpha={semseg: 0.001, rgb: 1000, depth: 0.001}"])
    model = MultiMAE(cfg.model.build())
    assert cfg.masking.concentrations(list(model.input_specs)) == [1000, 0.001, 0.001]  # the model's input order
    task = PretrainTask(model, cfg.masking, cfg.loss)
    inputs = {"rgb": torch.zeros(64, 3, 32, 32), "depth": torch.zeros(64, 1, 32, 32), "semseg": torch.zeros(64, 8, 8, dtype=torch.long)}
    masks = task.masks(inputs, 64, slice(0, 64), 0)
    visible = {k: int((~m).sum()) for k, m in masks.items()}
    assert visible["rgb"] >= 0.98 * 64 * 12  # nearly every sample keeps its 12 tokens in rgb
    for bad, words in [("{rgb: 1, depth: 1}", "missing: ['semseg']"), ("{rgb: 1, depth: 1, semseg: 1, dpth: 1}", "dpth"),
                       ("{rgb: 1, depth: 0, semseg: 1}", "masking.alpha.depth")]:
        with pytest.raises(ValueError, match=re.escape(words)):
            load_config(RunConfig, preset_path("cpu"), [*tiny, f"masking.alpha={bad}"])


def test_mask_sampler_from_the_config():
    from multimae.masking import (
        BudgetDirichlet, DirichletInputMasking, DirichletInputTargetMasking, FixedRatioMasking, build_mask_sampler,
    )

    inputs = ("rgb", "depth", "semseg")
    default = load_config(RunConfig, preset_path("cpu"), ["masking.alpha={semseg: 0.5, rgb: 2, depth: 1}"])
    assert default.masking.sampler == "dirichlet"
    assert build_mask_sampler(default.masking, inputs) == DirichletInputMasking(default.masking.num_visible, [2, 1, 0.5])
    fixed = load_config(RunConfig, preset_path("cpu"), ["masking.sampler=fixed_ratio", "masking.ratios={rgb: 0.75, depth: 0.5}"])
    assert build_mask_sampler(fixed.masking, inputs) == FixedRatioMasking({"rgb": 0.75, "depth": 0.5})
    mixture = ("masking.mixture=[{alpha: {rgb: 1000, depth: 0, semseg: 0}, target_alpha: 0.5},"
               " {alpha: 0.5, target_alpha: {rgb: 0, depth: 1, semseg: 1}, weight: 3}]")
    four = load_config(RunConfig, preset_path("cpu"), ["masking.sampler=input_target", "masking.input_budget=[24, 40]",
                                                       "masking.target_budget=32", "masking.min_tokens=2", mixture])
    assert four.masking.input_budget == (24, 40) and four.masking.target_budget == 32
    assert build_mask_sampler(four.masking, inputs) == DirichletInputTargetMasking(
        (24, 40), 32, [BudgetDirichlet({"rgb": 1000, "depth": 0, "semseg": 0}, 0.5),
                       BudgetDirichlet(0.5, {"rgb": 0, "depth": 1, "semseg": 1})], [1.0, 3.0], min_tokens=2)
    single = load_config(RunConfig, preset_path("cpu"), ["masking.sampler=input_target", "masking.target_alpha=0.2"])
    assert build_mask_sampler(single.masking, inputs) == DirichletInputTargetMasking(
        single.masking.num_visible, None, [BudgetDirichlet(single.masking.alpha, 0.2)], None)


def test_mask_sampler_configs_round_trip(tmp_path):
    for overrides in (["masking.sampler=fixed_ratio", "masking.ratios={rgb: 0.75}"],
                      ["masking.sampler=input_target", "masking.input_budget=[8, 16]", "masking.target_budget=[4, 8]",
                       "masking.mixture=[{alpha: 0.5, target_alpha: {rgb: 0, depth: 1, semseg: 1}, weight: 2}]"]):
        cfg = load_config(RunConfig, preset_path("cpu"), overrides)
        path = tmp_path / "again.yaml"
        path.write_text(to_yaml(cfg))
        assert load_config(RunConfig, path) == cfg


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["masking.sampler=random"], "masking.sampler: must be one of"),
        (["masking.sampler=fixed_ratio"], "masking.ratios must name at least one input"),
        (["masking.sampler=fixed_ratio", "masking.ratios={rgb: 1.5}"], r"masking.ratios.rgb must be in \[0, 1\]"),
        (["masking.sampler=fixed_ratio", "masking.ratios={rbg: 0.5}"], r"masking.ratios names \['rbg'\], which are not inputs"),
        (["masking.ratios={rgb: 0.5}"], "masking.ratios is only used by masking.sampler=fixed_ratio"),
        (["masking.target_budget=4"], "masking.target_budget is only used by masking.sampler=input_target"),
        (["masking.sampler=input_target", "masking.input_budget=[40, 24]"], r"masking.input_budget must be n >= 0 or \[min, max\]"),
        (["masking.sampler=input_target", "masking.target_alpha={rgb: -1}"], "masking.target_alpha.rgb must be a finite number >= 0"),
        (["masking.sampler=input_target", "masking.mixture=[{alpha: 1, weight: -1}]"], r"masking.mixture\[0\].weight must be"),
        (["masking.sampler=input_target", "masking.mixture=[{alpha: 1, weight: 0}]"], "every component's weight is 0"),
        (["masking.alpha=0"], "masking.alpha must be > 0"),
        (["masking.min_tokens=2"], "masking.min_tokens is only used by masking.sampler=input_target"),
        (["masking.sampler=input_target", "masking.min_tokens=-1"], "masking.min_tokens must be >= 0"),
    ],
)
def test_bad_mask_sampler_configs(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(RunConfig, preset_path("cpu"), overrides)


def test_input_target_allows_zero_alpha():
    cfg = load_config(RunConfig, preset_path("cpu"), ["masking.sampler=input_target", "masking.alpha={rgb: 1, depth: 0, semseg: 0}"])
    assert cfg.masking.alpha == {"rgb": 1.0, "depth": 0.0, "semseg": 0.0}
