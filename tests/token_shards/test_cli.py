"""`multimae tokenize` end to end on tiny world, folder and shard sources, and its errors."""

from __future__ import annotations

import json
import shutil

import pytest

from multimae.cli.main import main
from multimae.data import FolderDataset, ShardDataset
from multimae.data.token_shards import TokenShardDataset
from multimae.modalities.spec import ModalitySpec
from multimae.tokenizers import MapTokenizerConfig, SpatialTokenizer


def tokenize(out, *args: str) -> int:
    return main(["tokenize", "--out", str(out), "--quiet", *args])


def test_world_end_to_end_and_resume(tmp_path, tokenizer_dirs, capsys):
    out = tmp_path / "out"
    args = ["--data", "world", "--world-scenes", "5", "--tokenizers", f"depth={tokenizer_dirs['depth']}",
            f"normals={tokenizer_dirs['normals']}", "--crops", "2", "--shard-size", "2", "--render-size", "24"]
    assert tokenize(out, *args) == 0
    assert "wrote 3 shard(s) (5 samples)" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["source"]["kind"] == "world" and manifest["crops"]["num_crops"] == 2
    assert manifest["tokenizers"]["normals"]["image_size"] == 16  # from the tokenizer's run config
    items = list(TokenShardDataset(out, crop="all"))
    assert [it["key"] for it in items] == [f"{i:08d}" for i in range(5)]
    assert items[0]["ids"]["normals"].shape == (2, 16) and items[0]["crop"][0].tolist() == [0, 0, 24, 24, 0]
    assert tokenize(out, *args) == 2
    assert "pass resume (--resume)" in capsys.readouterr().err
    assert tokenize(out, *args, "--resume") == 0
    assert "wrote 0 shard(s) (0 samples), 3 already complete" in capsys.readouterr().out
    assert tokenize(out, *args[:-1], "32", "--resume") == 2  # another render size: another run
    assert "differs in source" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["folder", "shards"])
def test_folder_and_shard_sources(tmp_path, tokenizer_dirs, folder_root, shard_root, kind):
    root = folder_root if kind == "folder" else shard_root
    out = tmp_path / "out"
    assert tokenize(out, "--data", str(root), "--tokenizers", f"semseg={tokenizer_dirs['semseg']}",
                    f"depth={tokenizer_dirs['depth']}", "--shard-size", "3", "--limit", "4") == 0
    source = (FolderDataset(root, "train", ("depth",)).keys if kind == "folder"
              else [s["key"] for s in ShardDataset(root / "train", modalities=("depth",))])
    items = list(TokenShardDataset(out))
    assert [it["key"] for it in items] == list(source)[:4]
    assert json.loads((out / "manifest.json").read_text())["source"]["kind"] == kind
    assert all(it["crop"].tolist() == [0, 0, 24, 24, 0] for it in items)  # one crop: the whole 24 px view


def test_bad_arguments_are_clear_errors(tmp_path, tokenizer_dirs, folder_root, capsys):
    depth = f"depth={tokenizer_dirs['depth']}"
    heat_spec = ModalitySpec(name="heat", kind="dense", num_channels=1, loss="l1")  # a user modality, no data has it
    heat = SpatialTokenizer.create(heat_spec, MapTokenizerConfig(widths=(8, 8)), (0.0,), (1.0,)).save(tmp_path / "heat")
    cases = [
        (["--data", "world", "--tokenizers", f"heat={tokenizer_dirs['depth']}"], "that is a depth tokenizer"),
        (["--data", "world", "--tokenizers", f"depth={tmp_path / 'nowhere'}"], "no such tokenizer folder"),
        (["--data", "world", "--tokenizers", "depth"], "expects MODALITY=DIR"),
        (["--data", "world", "--tokenizers", depth, depth], "names depth twice"),
        (["--data", str(tmp_path / "nothing"), "--tokenizers", depth], "neither 'world', tar shards"),
        (["--data", "world", "--tokenizers", depth, "--crops", "0"], "num_crops must be >= 1"),
        (["--data", "world", "--tokenizers", depth, "--shard-size", "0"], "shard_size must be >= 1"),
        (["--data", "world", "--tokenizers", depth, "--image-size", "18"], "18x18 pixels does not split into 4x4"),
        (["--data", "world", "--tokenizers", f"heat={heat}", "--image-size", "16"], "unknown modalities ['heat']"),
        (["--data", "world", "--tokenizers", f"heat={heat}"], "give image_size (--image-size)"),
    ]
    for args, message in cases:
        assert tokenize(tmp_path / "out", *args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("multimae tokenize: error:") and message in err, (args, err)
    lacking = tmp_path / "lacking"
    shutil.copytree(folder_root, lacking)
    shutil.rmtree(lacking / "train" / "normals")
    assert tokenize(tmp_path / "out2", "--data", str(lacking), "--tokenizers",
                    f"normals={tokenizer_dirs['normals']}") == 2
    assert "normals: modality folder not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()  # nothing written on a bad start
