"""End-to-end: `multimae finetune` and `multimae evaluate` on tiny world runs (CPU, seconds),
initial weights from a multimae run or a timm ViT, resuming."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from multimae.cli.main import main
from multimae.config import RunConfig, load_config, to_yaml
from multimae.engine.checkpoint import export_safetensors, list_checkpoints
from multimae.engine.logger import read_metrics
from multimae.model import MultiMAE
from multimae.tasks.loading import load_finetuned

ENCODER = "{dim: 32, depth: 4, num_heads: 2, image_size: 32, patch_size: 8}"
TINY = [
    f"model.encoder={ENCODER}",
    "data.image_size=32", "data.batch_size=8", "data.num_workers=0",
    "data.world_train_scenes=32", "data.world_val_scenes=16",
    "train.log_every=1", "train.val_every=2", "train.ckpt_every=2", "train.precision=fp32",
    "head.embed_dim=32", "head.feature_dim=8", "head.layer_dims=[4,8,8,16]",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def args(tmp_path, cache, name="run"):
    return [*TINY, f"train.out_dir={tmp_path}", f"train.name={name}", f"data.cache_dir={cache}"]


def pretrained_run(tmp_path, inputs=("rgb", "depth")):
    """A pre-training run folder (config.yaml + model.safetensors) with a random tiny MultiMAE."""
    cfg = load_config(RunConfig, None, [
        f"model.encoder={ENCODER}", "model.decoder={dim: 16, depth: 1, num_heads: 2}",
        f"model.inputs=[{','.join(inputs)}]", "model.outputs=[rgb]", "model.modality_overrides={}",
    ])
    torch.manual_seed(1)
    model = MultiMAE(cfg.model.build())
    run = tmp_path / "pre"
    run.mkdir()
    (run / "config.yaml").write_text(to_yaml(cfg))
    export_safetensors(model, run / "model.safetensors")
    return run, model


def test_segmentation_from_a_checkpoint_writes_a_run_resumes_and_evaluates(tmp_path, cache, capsys):
    pre, _ = pretrained_run(tmp_path)
    assert main(["finetune", "--quiet", "--task", "segmentation", "--inputs", "rgb,depth", "--checkpoint", str(pre),
                 *args(tmp_path, cache), "train.steps=3"]) == 0
    run = tmp_path / "run"
    out = capsys.readouterr().out
    assert "initial weights: multimae" in out and "run folder" in out
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-00000003.pt"]  # keep_last 1
    report = json.loads((run / "report.json").read_text())
    assert set(report["val"]) == {"loss", "miou", "pixel_acc"} and 0 <= report["val"]["miou"] <= 1
    assert report["precision"]["precision"] == "fp32" and report["threads"]["threads"] >= 1
    assert Image.open(run / "predictions.png").size[0] > 200
    assert [r["step"] for r in read_metrics(run, "train")] == [1, 2, 3]
    assert [r["step"] for r in read_metrics(run, "val")] == [2, 3]
    # The run's config holds the resolved architecture: the model rebuilds without the checkpoint.
    model, cfg = load_finetuned(run)
    assert cfg.task.num_classes == 9 and model.head_config.num_classes == 9
    assert model.head_config.modalities == ("rgb",)  # one modality's tokens by default
    assert "output_adapters.semseg.proj_dec.weight" in model.state_dict()
    # Resume to 5 steps.
    assert main(["finetune", "--quiet", "--resume", str(run), "train.steps=5"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert [r["step"] for r in read_metrics(run, "train")] == [1, 2, 3, 4, 5]
    # Evaluate on the test split.
    metrics_file, picture = tmp_path / "m.json", tmp_path / "p.png"
    assert main(["evaluate", "--quiet", "--checkpoint", str(run), "--split", "test", "--out", str(metrics_file),
                 "--picture", str(picture)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(metrics_file.read_text())
    assert printed["split"] == "test" and printed["samples"] == 16 and 0 <= printed["miou"] <= 1
    assert picture.exists()


def test_pretrained_encoder_weights_are_loaded_and_missing_adapters_start_fresh(tmp_path, cache, capsys):
    pre, pre_model = pretrained_run(tmp_path, inputs=("rgb",))  # an RGB-only MAE
    assert main(["finetune", "--quiet", "--task", "segmentation", "--inputs", "depth", "--checkpoint", str(pre),
                 *args(tmp_path, cache), "train.steps=1", "optim.lr=1e-30", "optim.warmup_lr=0",
                 "model.encoder.drop_path_rate=0"]) == 0
    assert "without pre-trained weights (trained from scratch): ['depth']" in capsys.readouterr().out
    model, _ = load_finetuned(tmp_path / "run")
    ours, theirs = model.state_dict(), pre_model.state_dict()
    for key in ("encoder.0.attn.qkv.weight", "encoder.3.mlp.fc2.bias", "global_tokens"):
        torch.testing.assert_close(ours[key], theirs[key])  # lr 1e-30 (0 is refused): still the pre-trained values
    assert "input_adapters.rgb.proj.weight" not in ours


@pytest.mark.parametrize("task,metrics", [
    ("classification", {"loss", "top1", "top5"}),
    ("depth", {"loss", "l1", "delta1", "abs_rel", "rmse"}),
    ("regression", {"loss", "l1"}),
])
def test_other_tasks_from_scratch(tmp_path, cache, task, metrics):
    assert main(["finetune", "--quiet", "--task", task, *args(tmp_path, cache), "train.steps=2"]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert set(report["val"]) == metrics and report["init"] is None
    assert (tmp_path / "run" / "predictions.png").exists() == (task != "classification")


def test_mixup_and_cutmix_run(tmp_path, cache):
    assert main(["finetune", "--quiet", "--task", "classification", "--inputs", "rgb,depth", *args(tmp_path, cache),
                 "train.steps=2", "task.mixup=0.8", "task.cutmix=1.0", "task.label_smoothing=0.1"]) == 0


def test_bad_settings_fail_before_training(tmp_path, cache):
    with pytest.raises(SystemExit, match="cannot also be an input"):
        main(["finetune", "--task", "depth", "--inputs", "rgb,depth", *args(tmp_path, cache)])
    with pytest.raises(SystemExit, match="not among task.inputs"):
        main(["finetune", "--task", "segmentation", "--inputs", "rgb", "head.modalities=[depth]", *args(tmp_path, cache)])
    assert not (tmp_path / "run").exists()


def test_segmentation_and_depth_read_the_folder_layout(tmp_path, capsys):
    root = tmp_path / "data"
    assert main(["data", "generate", "--out", str(root), "--count", "16", "--size", "32", "--quiet"]) == 0
    assert main(["data", "generate", "--out", str(root), "--count", "8", "--size", "32", "--split", "val", "--quiet"]) == 0
    folder = [a for a in TINY if not a.startswith("data.world")] + ["data.source=folder", f"data.root={root}",
                                                                     f"train.out_dir={tmp_path}", "train.steps=2"]
    assert main(["finetune", "--quiet", "--task", "segmentation", "--inputs", "rgb,depth", *folder, "train.name=seg"]) == 0
    assert main(["finetune", "--quiet", "--task", "depth", "--inputs", "rgb", *folder, "train.name=depth"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(tmp_path / "depth"), "--split", "val"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["samples"] == 8 and {"delta1", "abs_rel", "rmse"} <= set(metrics)
    assert json.loads((tmp_path / "seg" / "report.json").read_text())["val"]["miou"] >= 0
