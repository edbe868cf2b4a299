import re

import pytest

from multimae.config import FinetuneConfig, RunConfig, load_config, to_yaml
from multimae.configs import preset_names, preset_path


def test_presets_load_and_validate():
    assert {"cpu", "paper-vitb"} <= set(preset_names())
    cpu = load_config(RunConfig, preset_path("cpu"))
    assert cpu.data.source == "world" and cpu.train.precision == "auto" and cpu.train.threads == "auto"
    for name in preset_names():
        assert load_config(RunConfig if "finetune" not in name else FinetuneConfig, preset_path(name),
                           ["data.root=/data/x"] if name == "paper-vitb" else []).train.precision == "auto", name
    paper = load_config(RunConfig, preset_path("paper-vitb"), ["data.root=/data/x"])
    assert (paper.model.size, paper.data.batch_size, paper.masking.num_visible, paper.masking.alpha) == ("base", 2048, 98, 1.0)
    assert paper.optim.betas == (0.9, 0.95) and paper.optim.weight_decay == 0.05
    assert paper.optim.peak_lr(paper.data.batch_size) == pytest.approx(1e-4 * 2048 / 256)
    assert paper.model.build().encoder.dim == 768


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
