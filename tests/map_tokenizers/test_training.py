"""`multimae tokenizer train / eval` on a tiny world: the run's files, its report, resuming, errors."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from multimae.cli.main import main
from multimae.data import WorldDataset
from multimae.data.transforms import resized_crop
from multimae.data.writer import GenerateConfig, generate
from multimae.tokenizers import load_tokenizer
from multimae.tokenizers.maps import training_maps
from multimae.tokenizers.training import STATE_FILE, run_config_of


def tiny(tmp_path, steps: int) -> list[str]:
    """Overrides of a 32 px world run (4x4 tokens) of a few steps, rendered into a test cache."""
    return [f"data.cache_dir={tmp_path / 'cache'}", "data.image_size=32", "data.train_scenes=12", "data.val_scenes=4",
            "data.workers=0", f"train.steps={steps}", "train.batch_size=4", "train.ckpt_every=2", "train.log_every=1",
            "train.baseline_scenes=12", "train.stats_scenes=12", "train.eval_batch_size=4", "train.figure_samples=3",
            "tokenizer.quantizer.levels=[5,3,3]"]


def train(tmp_path, out, modality: str, steps: int, *extra: str) -> int:
    """The CLI run; ``extra``: flags (``--resume``) and overrides, which win over `tiny`'s."""
    flags = [e for e in extra if e.startswith("--")]
    overrides = [e for e in extra if not e.startswith("--")]
    return main(["tokenizer", "train", "--modality", modality, "--out", str(out), "--quiet", *flags,
                 *tiny(tmp_path, steps), *overrides])


@pytest.mark.parametrize("modality", ["depth", "semseg"])
def test_train_ends_with_tokenizer_report_and_picture(tmp_path, modality, capsys):
    out = tmp_path / "run"
    assert train(tmp_path, out, modality, 4) == 0
    rep = json.loads((out / "report.json").read_text())
    tok = load_tokenizer(out)
    assert rep["modality"] == modality and rep["tokenizer"]["content_hash"] == tok.content_hash
    assert rep["tokenizer"]["grid"] == [4, 4] and rep["tokenizer"]["vocab_size"] == 45 == tok.vocab_size
    assert rep["val_maps"] == 4 and rep["training"]["steps"] == 4
    primary = rep["primary_metric"]
    assert primary == ("l1" if modality == "depth" else "miou")
    for side in (rep["metrics"], rep["baseline"]["metrics"]):
        assert 0 <= side[primary] and side["tokens"] == 4 * 16 and 0 < side["codes_used"] <= 45
        assert side["dead_codes"] == side["vocab_size"] - side["codes_used"]
    picture = Image.open(out / "reconstructions.png")
    assert picture.width > 4 * 128 and picture.height > 3 * 128  # 4 columns, 3 samples
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert "tokenizer" in capsys.readouterr().out

    capsys.readouterr()
    assert main(["tokenizer", "eval", "--tokenizer", str(out), "--json", "--quiet"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["metrics"] == rep["metrics"] and again["baseline"] == rep["baseline"]


def test_an_interrupted_run_resumes_to_the_same_tokenizer(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert train(tmp_path, whole, "rgb", 4) == 0
    assert train(tmp_path, parts, "rgb", 2) == 0  # stopped at step 2 (its checkpoint)
    assert torch.load(parts / STATE_FILE, weights_only=False)["step"] == 2
    assert train(tmp_path, parts, "rgb", 2) == 2  # a run folder is not overwritten without --resume
    with (parts / "log.jsonl").open("a") as log:  # a record of step 3, written before the run was killed
        log.write('{"step": 3, "loss": 9.0}\n')
    assert main(["tokenizer", "train", "--out", str(parts), "--resume", "--quiet", "train.steps=4"]) == 0  # its modality
    assert torch.load(parts / STATE_FILE, weights_only=False)["step"] == 4
    assert load_tokenizer(parts).content_hash == load_tokenizer(whole).content_hash
    log = [json.loads(line)["step"] for line in (parts / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3, 4]


def test_bad_runs_are_refused_with_a_message(tmp_path, capsys):
    assert train(tmp_path, tmp_path / "a", "rgb", 2, "--resume") == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert main(["tokenizer", "train", "--out", str(tmp_path / "a"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert train(tmp_path, tmp_path / "b", "norm_rgb", 2) == 2
    assert "derived from 'rgb'" in capsys.readouterr().err
    assert train(tmp_path, tmp_path / "c", "depth", 2, "data.image_size=36") == 2
    assert "not a multiple of the tokenizer's 8 pixels per token" in capsys.readouterr().err
    assert main(["tokenizer", "train", "--modality", "depth", "--data", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "d")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["tokenizer", "train", "--modality", "depth", "--data", str(tmp_path), "--out", str(tmp_path / "d"),
                 "--quiet", *tiny(tmp_path, 2)]) == 2
    assert "train: split folder not found" in capsys.readouterr().err
    assert main(["tokenizer", "eval", "--tokenizer", str(tmp_path / "none")]) == 2
    assert "no multimae_tokenizer.json" in capsys.readouterr().err


@pytest.fixture(scope="module")
def disk_sources(tmp_path_factory):
    """A folder-layout root with train (6) and val (3) splits, and shards of 9 samples (3 a shard), at 24 px."""
    folder, shards = tmp_path_factory.mktemp("folder"), tmp_path_factory.mktemp("shards")
    generate(folder, GenerateConfig(count=6, size=24, fmt="folder"), progress=False)
    generate(folder, GenerateConfig(count=3, size=24, fmt="folder", split="val"), progress=False)
    generate(shards, GenerateConfig(count=9, size=24, fmt="shards", shard_size=3), progress=False)
    return {"folder": folder, "shards": shards}


@pytest.mark.parametrize("kind", ["folder", "shards"])
def test_a_map_tokenizer_trains_on_a_folder_or_shards(tmp_path, disk_sources, kind, capsys):
    out = tmp_path / "run"
    assert main(["tokenizer", "train", "--modality", "depth", "--data", str(disk_sources[kind]), "--out", str(out),
                 "--quiet", *tiny(tmp_path, 2)]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["val_maps"] == 3 and rep["tokenizer"]["grid"] == [4, 4]  # val: the val split, or the last shard
    assert load_tokenizer(out).content_hash == rep["tokenizer"]["content_hash"]
    train_maps = training_maps(run_config_of(out).data, "depth", "train", 100)
    assert train_maps.shape == (6, 1, 32, 32)  # every training sample (fewer than asked), resized to 32 px
    if kind == "shards":  # the held-out shard is the last one: scenes 6-8
        val_maps = training_maps(run_config_of(out).data, "depth", "val", 100)
        world = WorldDataset("train", size=24, length=9, modalities=("depth",))
        direct = resized_crop({"depth": world[6]["depth"]}, (0, 0, 24, 24), 32)["depth"]
        torch.testing.assert_close(val_maps[0], direct, equal_nan=True)
    capsys.readouterr()
    assert main(["tokenizer", "eval", "--tokenizer", str(out), "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == rep["metrics"]


def test_one_shard_is_not_enough_to_hold_one_out(tmp_path, capsys):
    generate(tmp_path / "one", GenerateConfig(count=3, size=24, fmt="shards", shard_size=3), progress=False)
    assert main(["tokenizer", "train", "--modality", "depth", "--data", str(tmp_path / "one"),
                 "--out", str(tmp_path / "run"), "--quiet", *tiny(tmp_path, 2)]) == 2
    assert "needs two or more (the last is held out)" in capsys.readouterr().err
