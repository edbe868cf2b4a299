"""A 4M pre-training run end to end on tiny world token shards: `multimae pretrain` with a 4M config
trains, validates against the unigram baseline, writes a checkpoint that rebuilds the model exactly,
keeps its tokenizers in the run folder, draws predictions, and resumes to the same weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from multimae.cli.main import main
from multimae.engine.checkpoint import build_model_from_checkpoint, latest_checkpoint, read_checkpoint
from multimae.model.fourm import FourM

from fourm.conftest import write_config
from token_shards.conftest import IMAGE, make_tokenizer


def test_a_4m_run_trains_reports_and_reloads(trained_run, token_data):
    data, _ = token_data
    run = trained_run
    report = json.loads((run / "report.json").read_text())
    assert report["steps"] == 6 and report["val_samples"] == 6 and report["train_samples"] == 18
    assert report["tokens_per_step"] == 4 * (12 + 12) and report["tokens_seen"] == 6 * 96
    for name in ("tok_rgb", "tok_depth", "caption"):
        val = report["val"]
        assert 0 <= val[f"{name}/acc"] <= 1 and val[f"{name}/ce"] > 0 and val[f"{name}/unigram_ce"] > 0
    assert (run / "predictions.png").stat().st_size > 0
    conditions = report["conditions"]  # the held-out CE of each output given each input, and another sample's
    assert list(conditions)[:2] == ["tok_rgb->tok_depth", "tok_rgb->caption"]  # the picture's first
    assert set(conditions) == {f"{i}->{o}" for i in ("tok_rgb", "tok_depth", "caption")
                               for o in ("tok_rgb", "tok_depth", "caption") if i != o}
    assert all(v["ce"] > 0 and v["ce_other"] > 0 for v in conditions.values())
    rgb = report["from_rgb"]  # depth from the picture alone against the exact truth, and the tokenizer's ceiling
    assert set(rgb) == {"model", "tokenizer", "caption", "scenes"} and "8 px" not in rgb["scenes"]
    assert all(v > 0 and np.isfinite(v) for v in (rgb["model"]["depth_l1"], rgb["tokenizer"]["depth_l1"]))
    captions = rgb["caption"]  # generated from the picture, read back against the true captions
    assert all(0 <= captions[f"{k}_acc"] <= 1 and 0 < captions[f"{k}_majority"] <= 1
               for k in ("color", "shape", "objects", "floor"))
    assert len(captions["examples"]) == 3 and all(e["truth"] for e in captions["examples"])
    ckpt = read_checkpoint(latest_checkpoint(run))
    assert ckpt.kind == "fourm" and sorted(ckpt.files) and all(k.startswith("tokenizer/") for k in ckpt.files)
    for entry in ckpt.files.values():
        assert (run / entry.path).is_file()
    model = build_model_from_checkpoint(ckpt)
    assert isinstance(model, FourM)
    manifest = json.loads((data / "manifest.json").read_text())["tokenizers"]
    assert model.input_specs["tok_depth"].stride == 4  # 16 px crops, 4 x 4 tokens
    assert model.input_specs["caption"].num_channels == manifest["caption"]["vocab_size"]
    assert model.input_specs["tok_rgb"].num_channels == manifest["rgb"]["vocab_size"] == 45
    state = torch.load(latest_checkpoint(run), weights_only=True)["model"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_resume_continues_to_the_same_weights(tmp_path, token_data):
    """Resumed from its step-3 checkpoint, a run ends with the weights of the uninterrupted run."""
    data, dirs = token_data
    cfg = write_config(tmp_path / "a.yaml", data, dirs, tmp_path / "a")
    assert main(["pretrain", "--config", str(cfg), "--quiet"]) == 0
    run = tmp_path / "a" / "run"
    last = latest_checkpoint(run)
    assert last.name.endswith("06.pt")
    whole = torch.load(last, weights_only=True)["model"]
    last.unlink()  # as if the run had stopped after step 3
    assert main(["pretrain", "--resume", str(run), "--quiet"]) == 0
    again = torch.load(latest_checkpoint(run), weights_only=True)
    assert again["step"] == 6
    assert whole.keys() == again["model"].keys()
    assert all(torch.equal(whole[k], again["model"][k]) for k in whole)


def test_a_tokenizer_that_did_not_make_the_shards_is_refused(tmp_path, token_data):
    data, dirs = token_data
    other = make_tokenizer("depth", seed=3).save(tmp_path / "other-depth")
    cfg = write_config(tmp_path / "4m.yaml", data, {**dirs, "depth": other}, tmp_path / "runs")
    with pytest.raises(SystemExit, match="not the tokenizer the shards' depth tokens were made with"):
        main(["pretrain", "--config", str(cfg), "--quiet"])


def test_predict_on_a_picture_with_the_runs_tokenizers(tmp_path, trained_run, capsys):
    from PIL import Image

    from multimae.data import WorldDataset

    picture = WorldDataset("val", size=40, length=1)[0]["rgb"]  # 40 px: resized to the model's 16
    Image.fromarray((picture.permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(trained_run), "--rgb", str(tmp_path / "a.png"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "predicted from them in one pass: depth" in printed
    caption = (out / "caption.txt").read_text().strip()  # the caption, generated token by token from the picture
    assert f"caption (autoregressive, greedy): {caption}" in printed
    assert json.loads((out / "summary.json").read_text())["sequences"] == {"caption": caption}
    depth = np.load(out / "depth.npy")
    assert depth.shape == (1, IMAGE, IMAGE) and np.isfinite(depth).any()
    assert (out / "figure.png").is_file() and json.loads((out / "summary.json").read_text())["predicted"] == ["depth"]
    # a changed tokenizer file is caught by the run's files table before anything is predicted
    weights = trained_run / "tokenizers" / "depth" / "weights.safetensors"
    original = weights.read_bytes()
    try:
        weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        with pytest.raises(SystemExit, match="tokenizer/depth/weights.safetensors"):
            main(["predict", "--checkpoint", str(trained_run), "--rgb", str(tmp_path / "a.png"), "--out",
                  str(tmp_path / "out2")])
    finally:
        weights.write_bytes(original)


def test_a_4m_run_shards_over_two_processes_with_fsdp(tmp_path, token_data):
    """`train.parallel=fsdp` on 2 gloo processes: 4M's encoder and decoder blocks sharded, the run
    validates and reports (the main process alone, on the gathered weights), and writes DCP
    checkpoints whose .pt and export hold the whole model, tied heads included."""
    data, dirs = token_data
    cfg = write_config(tmp_path / "4m.yaml", data, dirs, tmp_path / "runs")
    assert main(["pretrain", "--config", str(cfg), "--quiet", "train.processes=2", "train.parallel=fsdp"]) == 0
    run = tmp_path / "runs" / "run"
    report = json.loads((run / "report.json").read_text())
    assert report["parallel"] == {"parallel": "fsdp", "world_size": 2, "sharded": True, "units": 2, "param_dtype": "fp32"}
    assert report["steps"] == 6 and (run / "predictions.png").stat().st_size > 0
    assert (run / "checkpoint-00000006.dcp" / ".metadata").is_file()
    model = build_model_from_checkpoint(run)  # model.safetensors
    state = torch.load(latest_checkpoint(run), weights_only=True)["model"]
    assert isinstance(model, FourM) and state.keys() == model.state_dict().keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_fsdp_over_two_processes_trains_as_one_process_accumulating_their_halves(tmp_path, token_data):
    """The masks are drawn per row of the step's global batch (tasks.fourm.FourMTask), so 2 gloo
    processes with FSDP2 and 1 process accumulating the same two halves see the same batches and
    reach the same weights (up to the order of float sums)."""
    from safetensors.torch import load_file

    data, dirs = token_data
    cfg = write_config(tmp_path / "4m.yaml", data, dirs, tmp_path / "runs", steps=3)
    common = ["--quiet", "train.val_every=0", "train.ckpt_every=1", "train.log_every=1", "data.world_eval_scenes=0"]
    assert main(["pretrain", "--config", str(cfg), *common, "train.processes=2", "train.parallel=fsdp",
                 "train.name=two"]) == 0
    assert main(["pretrain", "--config", str(cfg), *common, "optim.accum_steps=2", "train.name=one"]) == 0
    runs = tmp_path / "runs"
    losses = {n: [r["loss"] for r in map(json.loads, (runs / n / "metrics.jsonl").read_text().splitlines())
                  if r.get("kind") == "train"] for n in ("two", "one")}
    assert len(losses["one"]) == 3 and losses["two"] == pytest.approx(losses["one"], rel=1e-5)
    two, one = (load_file(str(runs / n / "model.safetensors")) for n in ("two", "one"))
    first = torch.load(runs / "one" / "checkpoint-00000001.pt", weights_only=True)["model"]
    assert sum(not torch.equal(first[k], v) for k, v in one.items()) > len(one) // 2  # steps 2 and 3 trained
    assert two.keys() == one.keys()
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-6, msg=k)


def test_the_schedule_in_tokens_sets_steps_and_warmup():
    """4M measures training and warm-up in tokens: the 4m-b preset's 500 B tokens at 8192 x (128 + 128)
    tokens per step are 238,419 steps (rounded up), its 10 B warm-up tokens 4,769 of them."""
    from multimae.config import load_config
    from multimae.config.fourm import FourMRunConfig
    from multimae.configs import preset_path

    cfg = load_config(FourMRunConfig, preset_path("4m-b"), ["data.root=x"])
    assert cfg.tokens_per_step == 8192 * 256
    resolved = cfg.with_token_schedule()
    assert resolved.train.steps == 238_419
    assert round(resolved.optim.warmup_fraction * resolved.train.steps) == 4_769
    plain = load_config(FourMRunConfig, None, ["data.root=x", "train.steps=10", "masking.input_budget=[2, 6]",
                                               "masking.target_budget=4", "data.batch_size=2"])
    assert plain.with_token_schedule() == plain  # no token schedule: the steps as given
    assert plain.tokens_per_step == 2 * (6 + 4)
    with pytest.raises(ValueError, match="tokens.total must be a finite number > 0"):
        load_config(FourMRunConfig, None, ["data.root=x", "tokens.total=-1"]).with_token_schedule()


def test_boxes_generated_from_the_picture_are_scored_against_the_truth(tmp_path, token_data):
    """A run that predicts boxes: its report scores the boxes generated from the picture alone against
    the world's true boxes (in the tokenizer's bins), next to the boxes of another scene."""
    from multimae.pretokenize import CropConfig, TokenizeConfig, run_tokenize
    from multimae.tokenizers.sequence_training import train_sequence_tokenizer, world_texts

    from token_shards.conftest import RENDER

    _, dirs = token_data
    texts = world_texts("train", 30, size=RENDER, bins=IMAGE, progress=False)
    seq = train_sequence_tokenizer({"boxes": texts["boxes"]}, vocab_size=120, num_sentinels=20, coord_bins=IMAGE,
                                   max_length=40).save(tmp_path / "tok-seq")
    run_tokenize(TokenizeConfig(data="world", out=str(tmp_path / "tokens"), world_scenes=12, render_size=RENDER,
                                image_size=IMAGE, tokenizers={"rgb": str(dirs["rgb"]), "boxes": str(seq)},
                                crops=CropConfig(num_crops=1), shard_size=6, progress=False))
    cfg = write_config(tmp_path / "4m.yaml", tmp_path / "tokens", {**dirs, "caption": seq}, tmp_path / "runs", steps=2)
    text = cfg.read_text().replace("tok_depth, caption]", "boxes]").replace("caption:", "boxes:")
    cfg.write_text(text.replace(f"depth: {dirs['depth']}, ", ""))
    assert main(["pretrain", "--config", str(cfg), "--quiet"]) == 0
    boxes = json.loads((tmp_path / "runs" / "run" / "report.json").read_text())["from_rgb"]["boxes"]
    for scores in (boxes, boxes["other_scene"]):
        assert all(0 <= scores[k] <= 1 for k in ("recall_iou", "recall_50", "precision_iou", "count_acc"))
    assert boxes["boxes_true"] == boxes["other_scene"]["boxes_true"] > 8  # 8 val scenes, a box or more each
    assert boxes["other_scene"]["recall_iou"] > 0  # another scene's boxes overlap some
    assert len(boxes["examples"]) == 3 and all(e["truth"].startswith("v0=") for e in boxes["examples"])
    # predict writes the generated boxes and draws them on the picture
    from PIL import Image

    Image.fromarray(np.full((IMAGE, IMAGE, 3), 90, dtype=np.uint8)).save(tmp_path / "a.png")
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(tmp_path / "runs" / "run"), "--rgb", str(tmp_path / "a.png"),
                 "--out", str(out)]) == 0
    text = (out / "boxes.txt").read_text().strip()
    assert json.loads((out / "summary.json").read_text())["sequences"] == {"boxes": text}
    assert np.asarray(Image.open(out / "boxes.png")).shape == (3 * IMAGE, 3 * IMAGE, 3)
    # and generate, on the picture it is given
    gen = tmp_path / "gen"
    assert main(["generate", "--checkpoint", str(tmp_path / "runs" / "run"), "--cond", f"rgb={tmp_path / 'a.png'}",
                 "--target", "boxes", "--temperature", "0", "--out", str(gen)]) == 0
    assert (gen / "boxes.txt").read_text().strip() == text  # greedy from the same picture: the same boxes
    assert np.array_equal(np.asarray(Image.open(gen / "boxes.png")), np.asarray(Image.open(out / "boxes.png")))


def test_draw_boxes_outlines_each_box_in_its_class_colour():
    from multimae.data.boxes import Box
    from multimae.viz.boxes import box_color, draw_boxes

    picture = draw_boxes(np.zeros((8, 8, 3), dtype=np.uint8), [Box(0, 0, 3, 3, "cube"), Box(4, 4, 7, 7, "cone")], 8,
                         scale=4)
    assert picture.shape == (32, 32, 3) and box_color("cube") != box_color("cone")
    assert tuple(picture[15, 0]) == box_color("cube") and tuple(picture[31, 20]) == box_color("cone")
    assert tuple(picture[5, 28]) == (0, 0, 0)  # outside the boxes: the picture
    with pytest.raises(ValueError, match=r"uint8 \(H, W, 3\)"):
        draw_boxes(np.zeros((8, 8)), [], 8)
