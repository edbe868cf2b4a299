"""`multimae generate` end to end on the session's tiny 4M run: conditions tokenised by the run's
tokenizers, chained targets (a token map by MaskGIT, the caption autoregressively), guidance, outputs
written; errors that name the problem."""

from __future__ import annotations

import json

import numpy as np
import pytest

from multimae.cli.main import main

from token_shards.conftest import IMAGE


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    from PIL import Image

    from multimae.data import WorldDataset

    path = tmp_path_factory.mktemp("gen-in") / "a.png"
    rgb = WorldDataset("val", size=32, length=1)[0]["rgb"]
    Image.fromarray((rgb.permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(path)
    return path


def test_generate_depth_and_a_caption_from_a_picture_and_text(tmp_path, trained_run, picture, capsys):
    out = tmp_path / "out"
    args = ["generate", "--checkpoint", str(trained_run), "--cond", f"rgb={picture}", "--cond", "caption=a red cube",
            "--target", "depth", "--scheme", "maskgit", "--steps", "3", "--guidance", "caption=3", "--seed", "0",
            "--samples", "2", "--batch-size", "1", "--steps-picture", "--precision", "fp32", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "generated tok_depth" in printed and "precision: fp32: requested" in printed
    depth = np.load(out / "depth.npy")
    assert depth.shape == (2, 1, IMAGE, IMAGE) and np.isfinite(depth).all()
    for name in ("depth_0.png", "depth_1.png", "figure.png", "steps.png"):
        assert (out / name).stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["chained"] and summary["schedules"][0]["guidance"] == {"caption": 3.0}
    assert summary["schedules"][0]["target"] == "tok_depth" and summary["conditions"]["caption"] == "a red cube"
    assert summary["precision"]["precision"] == "fp32"
    again = tmp_path / "again"
    assert main([*args[:-1], str(again)]) == 0  # same seed, same tokens
    assert np.array_equal(np.load(again / "depth.npy"), depth)
    assert not np.array_equal(depth[0], depth[1])  # two samples, drawn apart


def test_chained_map_then_caption(tmp_path, trained_run, picture, capsys):
    out = tmp_path / "out"
    assert main(["generate", "--checkpoint", str(trained_run), "--cond", f"rgb={picture}", "--target",
                 "tok_depth,caption", "--scheme", "roar", "--steps", "2", "--temperature", "0", "--max-new", "8",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    chosen = json.loads((out / "summary.json").read_text())["precision"]  # auto: this machine's choice
    assert chosen["requested"] == "auto" and f"precision: {chosen['reason']}" in printed
    text = (out / "caption.txt").read_text().splitlines()
    assert len(text) == 1 and f"caption: {text[0]}" in printed
    assert (out / "depth.npy").is_file() and (out / "figure.png").is_file()


@pytest.mark.parametrize("extra,message", [
    (["--target", "normals"], "'normals' is not an output of this model"),
    (["--target", "depth", "--cond", "sound=a.wav"], "'sound' is not an input"),
    (["--target", "depth", "--guidance", "rgb=x"], "--guidance weights must be numbers"),
    (["--target", "depth", "--cond", "depth=nothere.png"], "no such file"),
    (["--target", "rgb"], "'tok_rgb' is a condition"),
])
def test_errors_name_the_problem(tmp_path, trained_run, picture, extra, message):
    base = ["generate", "--checkpoint", str(trained_run), "--cond", f"rgb={picture}", "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit, match=message):
        main([*base, *extra])


def test_a_condition_the_tokenizer_cannot_read(tmp_path, trained_run):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((5, 7), dtype=np.float32))  # one channel: not a picture the rgb tokenizer reads
    with pytest.raises(SystemExit, match=r"rgb: bad.npy: expected \(3, H, W\)"):
        main(["generate", "--checkpoint", str(trained_run), "--cond", f"rgb={bad}", "--target", "depth",
              "--out", str(tmp_path / "o")])
