"""End-to-end: the `multimae pretrain` and `visualize` commands on a tiny world run (CPU, seconds)."""

import json

import pytest
from PIL import Image
from safetensors.torch import load_file

from multimae.cli.main import main
from multimae.engine.checkpoint import list_checkpoints
from multimae.engine.logger import read_metrics

from conftest import assert_same_training

TINY = [
    "model.encoder={dim: 32, depth: 1, num_heads: 2, image_size: 32, patch_size: 8}",
    "model.decoder={dim: 16, depth: 1, num_heads: 2}",
    "data.image_size=32", "data.batch_size=8", "data.num_workers=0",
    "data.world_train_scenes=32", "data.world_val_scenes=8",
    "masking.num_visible=8", "train.log_every=1", "train.val_every=2", "train.ckpt_every=2",
    "train.precision=fp32",
]


@pytest.fixture
def tiny_args(tmp_path):
    return [*TINY, f"train.out_dir={tmp_path}", "train.name=run", f"data.cache_dir={tmp_path / 'cache'}"]


def test_pretrain_writes_checkpoints_pictures_and_a_report_then_resumes(tmp_path, tiny_args, capsys):
    assert main(["pretrain", "--quiet", *tiny_args, "train.steps=3"]) == 0
    run = tmp_path / "run"
    out = capsys.readouterr().out
    assert "run folder" in out and "precision: fp32: requested" in out and "threads: " in out
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-00000002.pt", "checkpoint-00000003.pt"]
    assert (run / "model.safetensors").exists() and (run / "config.yaml").exists()
    report = json.loads((run / "report.json").read_text())
    assert set(report["val"]) == {"rgb", "depth", "semseg", "norm_rgb", "total"}
    assert report["precision"] == {"precision": "fp32", "requested": "fp32", "reason": "fp32: requested", "speedup": None}
    assert report["threads"]["threads"] >= 1 and report["threads"]["reason"]  # 3 steps: too few to measure
    assert [r["setting"] for r in read_metrics(run, "setup")] == ["precision", "threads"]
    for part in ("train", "baseline_train", "baseline_val"):  # the same losses on training scenes / of the baseline
        assert set(report[part]) == set(report["val"]) and report[part] != report["val"]
    assert {"semseg_miou", "semseg_object_iou", "depth_l1"} <= set(report["from_rgb"]) <= set(report["baseline_from_rgb"])
    assert Image.open(run / "reconstructions.png").size[0] > 300 and (run / "cross_modal.png").exists()
    assert [r["step"] for r in read_metrics(run, "train")] == [1, 2, 3]
    val = read_metrics(run, "val")  # every validation also scores the predictions from RGB alone
    assert [r["step"] for r in val] == [2, 3] and all(0 <= r["from_rgb/semseg_object_iou"] <= 1 for r in val)
    # Continue the same run to 5 steps: it picks up at step 3.
    assert main(["pretrain", "--quiet", "--resume", str(run), "train.steps=5"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert [r["step"] for r in read_metrics(run, "train")] == [1, 2, 3, 4, 5]
    out = tmp_path / "pictures"
    assert main(["visualize", "--checkpoint", str(run), "--out", str(out), "--samples", "2"]) == 0
    assert (out / "reconstructions.png").exists() and (out / "cross_modal.png").exists()


def test_a_wrong_key_fails_before_training(tmp_path, tiny_args, capsys):
    with pytest.raises(SystemExit, match="unknown config key"):
        main(["pretrain", *tiny_args, "optim.learning_rate=1"])
    assert not (tmp_path / "run").exists()


def test_an_existing_run_is_not_overwritten(tmp_path, tiny_args):
    assert main(["pretrain", "--quiet", *tiny_args, "train.steps=2"]) == 0
    with pytest.raises(SystemExit, match="already holds checkpoints"):
        main(["pretrain", "--quiet", *tiny_args, "train.steps=2"])


def test_local_processes_train_as_one_process_with_the_same_batch(tmp_path, tiny_args, capfd):
    assert main(["pretrain", "--quiet", *tiny_args, "train.steps=3"]) == 0
    unnamed = [a for a in tiny_args if a != "train.name=run"]
    assert main(["pretrain", "--quiet", *unnamed, "train.steps=3", "train.processes=2"]) == 0
    [group] = [p for p in tmp_path.iterdir() if p.name.startswith("pretrain-")]  # one folder: rank 0's name
    assert_same_training(load_file(tmp_path / "run" / "model.safetensors"), load_file(group / "model.safetensors"))
    assert (group / "report.json").exists() and (group / "cross_modal.png").exists()
    capfd.readouterr()
    # A failure in the group ends the command with status 1 and one message.
    assert main(["pretrain", "--quiet", *tiny_args, "train.steps=3", "train.processes=2"]) == 1
    assert capfd.readouterr().err.count("already holds checkpoints") == 1


def test_pretrain_reads_the_official_folder_layout(tmp_path):
    root = tmp_path / "data"
    assert main(["data", "generate", "--out", str(root), "--count", "16", "--size", "32", "--quiet"]) == 0
    assert main(["data", "generate", "--out", str(root), "--count", "8", "--size", "32", "--split", "val", "--quiet"]) == 0
    args = [a for a in TINY if not a.startswith(("data.world", "train.val_every", "train.ckpt_every"))]
    assert main(["pretrain", "--quiet", *args, "data.source=folder", f"data.root={root}", f"data.val_root={root}",
                 f"train.out_dir={tmp_path}", "train.name=folder", "train.steps=2"]) == 0
    run = tmp_path / "folder"
    report = json.loads((run / "report.json").read_text())
    assert set(report["val"]) == {"rgb", "depth", "semseg", "norm_rgb", "total"}
    assert (run / "reconstructions.png").exists() and (run / "checkpoint-00000002.pt").exists()


def test_fsdp_processes_train_report_and_resume_through_the_command(tmp_path, tiny_args):
    """`train.parallel=fsdp` end to end: 2 processes with validation and pictures during the run (the
    main process alone runs the gathered model), the final report, DCP checkpoints beside the .pt
    files, then the run resumed by one process (the shards of two load into one)."""
    assert main(["pretrain", "--quiet", *tiny_args, "train.steps=2", "train.processes=2", "train.parallel=fsdp",
                 "train.val_every=1", "train.ckpt_every=1", "train.vis_every=1"]) == 0
    run = tmp_path / "run"
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-00000001.pt", "checkpoint-00000002.pt"]
    assert (run / "checkpoint-00000002.dcp" / ".metadata").exists() and (run / "reconstructions-00000001.png").exists()
    report = json.loads((run / "report.json").read_text())
    assert report["parallel"] == {"parallel": "fsdp", "world_size": 2, "sharded": True, "units": 5, "param_dtype": "fp32"}
    assert set(report["val"]) == {"rgb", "depth", "semseg", "norm_rgb", "total"} and (run / "cross_modal.png").exists()
    assert [r["step"] for r in read_metrics(run, "val")] == [1, 2]
    assert main(["pretrain", "--quiet", "--resume", str(run), "train.steps=3", "train.processes=1"]) == 0
    assert [r["step"] for r in read_metrics(run, "train")] == [1, 2, 3]
    assert json.loads((run / "report.json").read_text())["parallel"]["world_size"] == 1
    assert (run / "checkpoint-00000003.dcp").is_dir() and load_file(run / "model.safetensors")
