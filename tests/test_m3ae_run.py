"""End-to-end: `multimae pretrain --config m3ae-cpu` on a tiny world run (CPU, seconds): the run's
tokenizer, fixed-ratio masks over real word pieces, masked-word accuracy against its baseline."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from multimae.cli.main import main
from multimae.data.collate import PRESENT_KEY
from multimae.engine.checkpoint import build_model_from_checkpoint, latest_checkpoint, read_checkpoint
from multimae.engine.logger import read_metrics
from multimae.modalities.registry import DEFAULT_TEXT_MODALITY as TEXT
from multimae.text.run import from_checkpoint
from multimae.text.tokenizer import TextTokenizer

TINY = [
    "model.encoder={dim: 32, depth: 1, num_heads: 2, image_size: 32, patch_size: 8}",
    "model.decoder={dim: 16, depth: 1, num_heads: 2, kind: joint}",
    "data.image_size=32", "data.batch_size=8", "data.num_workers=0", "data.tokenizer_vocab_size=200",
    "data.world_train_scenes=32", "data.world_val_scenes=8",
    "train.log_every=1", "train.val_every=2", "train.ckpt_every=2", "train.precision=fp32",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("m3ae")
    args = [*TINY, f"train.out_dir={root}", "train.name=run", f"data.cache_dir={root / 'cache'}"]
    assert main(["pretrain", "--config", "m3ae-cpu", "--quiet", *args, "train.steps=3"]) == 0
    return root / "run"


def test_an_m3ae_run_keeps_its_tokenizer_and_reports_words_against_the_baseline(run):
    ckpt = read_checkpoint(latest_checkpoint(run))
    tokenizer = from_checkpoint(ckpt, TEXT)  # the file's SHA-256 is checked against the table
    assert tokenizer.content_hash == TextTokenizer.load(run / f"tokenizer-{TEXT}").content_hash
    model = build_model_from_checkpoint(ckpt)
    assert model.input_specs[TEXT].num_channels == tokenizer.vocab_size
    assert list(model.output_adapters) == [f"rgb+{TEXT}"]
    report = json.loads((run / "report.json").read_text())
    assert {"rgb", TEXT, f"{TEXT}_acc", "total"} == set(report["val"]) == set(report["baseline_val"])
    assert 0 <= report["val"][f"{TEXT}_acc"] <= 1
    assert set(report["from_rgb"]) == set(report["baseline_from_rgb"]) == {f"{TEXT}_word_acc"}
    # The total weighs the caption by 0.5 (the preset's loss.weights).
    torch.testing.assert_close(report["val"]["total"], report["val"]["rgb"] + 0.5 * report["val"][TEXT],
                               rtol=1e-5, atol=1e-6)
    assert report["text"] == {"tokenizers": {TEXT: {"vocab_size": tokenizer.vocab_size, "sha256": tokenizer.content_hash}},
                              "captions_truncated": 0}  # 32 pieces hold every caption of the world
    assert Image.open(run / "reconstructions.png").size[0] > 200 and (run / "cross_modal.png").exists()
    assert [r["step"] for r in read_metrics(run, "train")] == [1, 2, 3]


def test_a_resumed_m3ae_run_reads_the_same_tokenizer(run, capsys):
    before = TextTokenizer.load(run / f"tokenizer-{TEXT}").content_hash
    assert main(["pretrain", "--quiet", "--resume", str(run), "train.steps=4"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert TextTokenizer.load(run / f"tokenizer-{TEXT}").content_hash == before
    assert [r["step"] for r in read_metrics(run, "train")][-1] == 4
    out = run.parent / "pictures"
    assert main(["visualize", "--checkpoint", str(run), "--out", str(out), "--samples", "2"]) == 0
    assert (out / "reconstructions.png").exists() and (out / "cross_modal.png").exists()


def test_masks_hide_an_exact_share_of_each_captions_real_pieces_and_dropout_drops_captions(run):
    from multimae.config.schema import LossConfig, MaskingConfig
    from multimae.tasks.pretrain import PretrainTask

    model = build_model_from_checkpoint(read_checkpoint(latest_checkpoint(run)))
    tokenizer = TextTokenizer.load(run / f"tokenizer-{TEXT}")
    masking = MaskingConfig(sampler="fixed_ratio", ratios={"rgb": 0.75, TEXT: 0.75})
    task = PretrainTask(model, masking, LossConfig(), tokenizers={TEXT: tokenizer})
    captions = ["a red cube", "a small shiny blue sphere left of a large green cone on a striped floor"]
    raw = task.tokenize({"rgb": torch.rand(2, 3, 32, 32), TEXT: captions})
    real = (raw[TEXT] != tokenizer.pad_id).sum(dim=1)
    draw = task.draw({"rgb": raw["rgb"], TEXT: raw[TEXT]}, 2, slice(0, 2), 0)
    assert torch.equal(draw.target[TEXT].sum(dim=1), torch.round(0.75 * real.double()).long())
    assert not draw.target[TEXT][raw[TEXT] == tokenizer.pad_id].any()
    dropping = PretrainTask(model, masking, LossConfig(), tokenizers={TEXT: tokenizer}, caption_dropout=0.5)
    many = ["a red cube"] * 400
    images = torch.rand(400, 3, 8, 8)
    dropped = dropping.tokenize({"rgb": images, TEXT: many}, 400, slice(0, 400), 7, 4)
    kept = dropped[PRESENT_KEY][TEXT]
    assert 150 < int(kept.sum()) < 250  # about half, drawn from the seed
    again = dropping.tokenize({"rgb": images, TEXT: many}, 400, slice(0, 400), 7, 4)
    assert torch.equal(again[PRESENT_KEY][TEXT], kept)
    assert (dropped[TEXT][~kept] == tokenizer.pad_id).all()
    # the samples whose caption that draw drops have no image now: text-only, they keep it
    text_only = dropping.tokenize({"rgb": images, TEXT: many, PRESENT_KEY: {"rgb": kept}}, 400, slice(0, 400), 7, 4)
    assert TEXT not in text_only[PRESENT_KEY] and (text_only[TEXT] != tokenizer.pad_id).any(dim=1).all()


def test_predict_fills_the_masked_words_of_a_given_caption_and_writes_a_whole_one_without(run, tmp_path, capsys):
    from multimae.inference import predict
    from multimae.inference.captions import MASK_WORD, read_caption
    from multimae.tasks.loading import load_pretrained, load_tokenizers

    model, _ = load_pretrained(run)
    tokenizers = load_tokenizers(run, model)
    spec = model.input_specs[TEXT]
    given = read_caption(f"a red cube {MASK_WORD} of a {MASK_WORD} cone", spec, tokenizers[TEXT])
    assert given.hidden.sum() == 2 and int(given.valid.sum()) == 8 and not given.hidden[~given.valid].any()
    image = torch.rand(3, 32, 32)
    pred = predict(model, {"rgb": image, TEXT: f"a red cube {MASK_WORD} of a {MASK_WORD} cone"}, tokenizers=tokenizers)
    c = pred.captions[TEXT]
    assert c.positions == given.hidden.nonzero().flatten().tolist() and len(c.words) == 2
    assert c.text.startswith("a red cube") and c.marked.count("[") == 2 and MASK_WORD not in c.text
    alone = predict(model, {"rgb": image}, tokenizers=tokenizers).captions[TEXT]
    assert alone.given is None and alone.positions == list(range(len(alone.positions)))

    path = tmp_path / "scene.png"
    Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype("uint8")).save(path)
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(run), "--rgb", str(path), "--caption", "a red [MASK] on a floor",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "inputs used: rgb, caption" in printed and "caption: a red" in printed and "(predicted: " in printed
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["captions"][TEXT]["words"]) == 1 and (out / f"{TEXT}.txt").read_text().startswith("a red")


def test_bad_captions_for_predict_are_named(run):
    from multimae.inference import predict
    from multimae.tasks.loading import load_pretrained, load_tokenizers

    model, _ = load_pretrained(run)
    tokenizers = load_tokenizers(run, model)
    with pytest.raises(ValueError, match="more than the model's 32"):
        predict(model, {"rgb": torch.rand(3, 32, 32), TEXT: "cube " * 40}, tokenizers=tokenizers)
    with pytest.raises(ValueError, match="needs its tokenizer"):
        predict(model, {"rgb": torch.rand(3, 32, 32), TEXT: "a cube"})
    with pytest.raises(ValueError, match="caption is empty"):
        predict(model, {"rgb": torch.rand(3, 32, 32), TEXT: "  "}, tokenizers=tokenizers)


def test_visualize_takes_a_caption_and_prints_the_masked_words(run, tmp_path, capsys):
    out = tmp_path / "vis"
    assert main(["visualize", "--checkpoint", str(run), "--caption", "a [MASK] cube on a floor", "--samples", "2",
                 "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["sample 0", "sample 1"] and "(predicted: " in lines[0]
    assert (out / "reconstructions.png").is_file()
