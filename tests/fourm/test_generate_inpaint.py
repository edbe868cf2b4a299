"""In-painting on the session's tiny 4M run (16 px maps, 4 x 4 token grids): `RunGenerator.inpaint` keeps the
tokenizer's tokens outside the mask, `multimae generate --inpaint` writes the result and inpaint.png, an edit
(another depth) with the picture in-painted there, and errors that name the problem."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from multimae.cli.main import main
from multimae.generation import TargetSchedule
from multimae.generation.runs import RunGenerator, load_run

from token_shards.conftest import IMAGE


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A world picture and depth at the run's frame, and masks: the top-left quarter white (4 of the 16
    tokens), all black, all white; the quarter at the token grid as .npy."""
    from multimae.data import WorldDataset

    root = tmp_path_factory.mktemp("inpaint-in")
    scene = WorldDataset("val", size=IMAGE, length=1)[0]
    Image.fromarray((scene["rgb"].permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(root / "a.png")
    np.save(root / "depth.npy", scene["depth"].numpy())
    quarter = np.zeros((IMAGE, IMAGE), dtype=np.uint8)
    quarter[:IMAGE // 2, :IMAGE // 2] = 255
    for name, mask in (("quarter", quarter), ("black", quarter * 0), ("white", quarter * 0 + 255)):
        Image.fromarray(mask).save(root / f"{name}.png")
    grid = np.zeros((4, 4), dtype=bool)
    grid[:2, :2] = True
    np.save(root / "grid.npy", grid)
    np.save(root / "wrong.npy", np.ones((6, 6), dtype=bool))
    return root


def test_run_generator_keeps_the_tokenizers_tokens_outside_the_mask(trained_run, files):
    gen = RunGenerator(*load_run(trained_run))
    from multimae.inference.inputs import read_input
    from multimae.modalities.registry import get_modality

    picture = read_input(get_modality("rgb"), files / "a.png").value[None].expand(2, -1, -1, -1)
    region = torch.zeros(2, IMAGE, IMAGE, dtype=torch.bool)
    region[:, 5, 9] = True  # one pixel: token (1, 2)
    schedules = [TargetSchedule(gen.output("rgb"), "roar", steps=2, temperature=1.0)]
    steps = list(gen.steps({}, schedules, seed=0, inpaint={"rgb": (picture, region)}))
    assert [s.result.positions.shape[1] for s in steps] == [1]  # one token to regenerate, one step
    assert steps[0].result.positions.tolist() == [[6], [6]]
    tokens = gen.tokenizers["rgb"].encode(picture).ids
    out = steps[-1].state["tok_rgb"].data
    keep = torch.ones(16, dtype=torch.bool)
    keep[6] = False
    assert torch.equal(out[:, keep], tokens[:, keep])
    assert gen.decode(steps[-1].state, schedules)["rgb"].shape == (2, 3, IMAGE, IMAGE)


def test_inpaint_writes_the_result_and_the_picture(tmp_path, trained_run, files, capsys):
    out = tmp_path / "out"
    args = ["generate", "--checkpoint", str(trained_run), "--cond", f"rgb={files / 'a.png'}", "--inpaint",
            f"rgb={files / 'quarter.png'}", "--target", "rgb,depth", "--steps", "2", "--temperature", "0",
            "--samples", "2", "--out", str(out)]
    assert main(args) == 0
    assert "generated tok_rgb, tok_depth" in capsys.readouterr().out
    rgb = np.load(out / "rgb.npy")
    assert rgb.shape == (2, 3, IMAGE, IMAGE) and np.isfinite(rgb).all()
    assert np.array_equal(rgb[0], rgb[1])  # temperature 0: the samples agree
    for name in ("rgb_0.png", "depth_1.png", "figure.png", "inpaint.png"):
        assert (out / name).stat().st_size > 0
    assert Image.open(out / "inpaint.png").width > 4 * 160  # original, regenerated, its tokens, in-painted
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inpaint"]["tok_rgb"] == {"original": "rgb", "mask": str(files / "quarter.png"),
                                             "regenerated_tokens": 4, "tokens": 16}
    assert "rgb" not in summary["conditions"] or summary["conditions"]["rgb"] == "map"
    grid = tmp_path / "grid"  # the same mask at the token grid: the same result
    assert main([*args[:6], f"rgb={files / 'grid.npy'}", *args[7:-1], str(grid)]) == 0
    assert np.array_equal(np.load(grid / "rgb.npy"), rgb)


def test_an_edit_the_depth_changed_and_the_picture_in_painted_there(tmp_path, trained_run, files):
    depth = np.load(files / "depth.npy")
    edited = depth.copy()
    edited[..., :IMAGE // 2, :IMAGE // 2] = float(np.nanmax(depth)) * 2  # the top-left quarter pushed back
    np.save(tmp_path / "edited.npy", edited)
    outs = []
    for name, d in (("same", files / "depth.npy"), ("edit", tmp_path / "edited.npy")):
        outs.append(tmp_path / name)
        assert main(["generate", "--checkpoint", str(trained_run), "--cond", f"rgb={files / 'a.png'}", "--cond",
                     f"depth={d}", "--inpaint", f"rgb={files / 'quarter.png'}", "--target", "rgb", "--steps", "2",
                     "--temperature", "0", "--out", str(outs[-1])]) == 0
    same, edit = (np.load(o / "rgb.npy") for o in outs)
    assert same.shape == edit.shape == (1, 3, IMAGE, IMAGE)
    assert (outs[1] / "inpaint.png").is_file()
    summary = json.loads((outs[1] / "summary.json").read_text())
    assert summary["conditions"] == {"depth": "map", "rgb": "map"}
    gen = RunGenerator(*load_run(trained_run))  # the edit reaches the regenerated tokens' logits
    from multimae.inference.inputs import read_input
    from multimae.modalities.registry import get_modality

    picture = read_input(get_modality("rgb"), files / "a.png").value[None]
    region = torch.zeros(1, IMAGE, IMAGE, dtype=torch.bool)
    region[:, :IMAGE // 2, :IMAGE // 2] = True
    schedules = [TargetSchedule("tok_rgb", steps=2, temperature=0.0)]
    firsts = [next(gen.steps({"depth": torch.from_numpy(d)[None]}, schedules, inpaint={"rgb": (picture, region)}))
              for d in (depth, edited)]
    assert torch.equal(firsts[0].result.queried, firsts[1].result.queried)
    assert firsts[0].result.queried.tolist() == [[0, 1, 4, 5]]
    assert not torch.allclose(firsts[0].result.logits, firsts[1].result.logits)


@pytest.mark.parametrize("mask,note", [("black", "marks nothing: every token is kept, nothing is generated"),
                                       ("white", "marks every token: the original rgb is not used")])
def test_a_mask_that_keeps_everything_or_nothing_says_what_happens(tmp_path, trained_run, files, capsys, mask, note):
    out = tmp_path / "o"
    assert main(["generate", "--checkpoint", str(trained_run), "--cond", f"rgb={files / 'a.png'}", "--inpaint",
                 f"rgb={files / f'{mask}.png'}", "--target", "rgb", "--steps", "2", "--out", str(out)]) == 0
    assert note in capsys.readouterr().out
    kept = json.loads((out / "summary.json").read_text())["inpaint"]["tok_rgb"]["regenerated_tokens"]
    assert kept == (0 if mask == "black" else 16)


@pytest.mark.parametrize("extra,message", [
    (["--inpaint", "rgb=wrong.npy", "--target", "rgb"], "a 6x6 mask; it must be the map's size 16x16 .pixels. or "
                                                         "its token grid 4x4"),
    (["--inpaint", "rgb=nothere.png", "--target", "rgb"], "nothere.png: no such file"),
    (["--inpaint", "caption=quarter.png", "--target", "rgb"], "name caption in --target too"),
    (["--inpaint", "caption=a cube", "--target", "caption"], "no span to regenerate; mark each with a sentinel"),
    (["--inpaint", "caption=a [S_1] cube", "--cond", "caption=a red cube", "--target", "caption"],
     "its text with sentinels is the in-paint, not a --cond"),
    (["--inpaint", "depth=quarter.png", "--target", "depth"], "give the map to in-paint as --cond depth=FILE"),
    (["--inpaint", "rgb=quarter.png", "--target", "depth"], "name rgb in --target too"),
    (["--inpaint", "rgb=quarter.png", "--inpaint", "rgb=black.png", "--target", "rgb"], "in-painted twice"),
])
def test_errors_name_the_problem(tmp_path, trained_run, files, extra, message):
    extra = [e.replace("=", f"={files}/") if e.startswith(("rgb=", "caption=quarter", "depth=")) else e for e in extra]
    base = ["generate", "--checkpoint", str(trained_run), "--cond", f"rgb={files / 'a.png'}", "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit, match=message):
        main([*base, *extra])


def test_generate_in_paints_a_caption_around_its_given_words(tmp_path, trained_run, files, capsys):
    out = tmp_path / "o"
    text = "a [S_1] cube"
    assert main(["generate", "--checkpoint", str(trained_run), "--cond", f"rgb={files / 'a.png'}", "--inpaint",
                 f"caption={text}", "--target", "caption", "--temperature", "0", "--samples", "2", "--out",
                 str(out)]) == 0
    captions = (out / "caption.txt").read_text().splitlines()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inpaint"]["caption"] == {"given": text, "spans": 1}
    assert len(captions) == 2 and captions[0] == captions[1]  # temperature 0: both samples alike
    words = captions[0].split()
    assert words[0] == "a" and "cube" in words[1:] and "[S_1]" not in captions[0]
    gen = RunGenerator(*load_run(trained_run))  # the API: the same record, the same caption
    schedules = [TargetSchedule("caption", "autoregressive", temperature=0.0)]
    *_, last = gen.steps({"rgb": _picture(files)}, schedules, inpaint={"caption": [text]}, precision=
                         summary["precision"]["precision"])
    assert gen.decode(last.state, schedules)["caption"] == captions[:1]


def _picture(files):
    from multimae.inference.inputs import read_input
    from multimae.modalities.registry import get_modality

    return read_input(get_modality("rgb"), files / "a.png").value[None]
