"""Unpaired text in training batches, what a flip does to captioned samples, and M3AE on every
data source (folder, JSONL pairs, the world with its text split)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from multimae.data.batch_augment import BatchRandomResizedCropFlip
from multimae.data.collate import PRESENT_KEY, collate
from multimae.data.stream import PoolStream
from multimae.data.transforms import RandomResizedCropFlip
from multimae.data.unpaired import UnpairedText
from multimae.data.world import world_sample

CORPUS = [f"corpus caption {i}" for i in range(50)]


def pool(n: int = 24) -> dict[str, object]:
    g = torch.Generator().manual_seed(0)
    return {"rgb": (torch.rand(n, 3, 8, 8, generator=g) * 255).to(torch.uint8),
            "caption": [f"paired {i} left" for i in range(n)]}


def test_a_fixed_share_of_every_batch_is_text_only_from_the_corpus():
    s = UnpairedText(PoolStream(pool(), 8, seed=3), CORPUS, "caption", 0.25, 8, seed=3)
    for _ in range(5):
        b = next(s)
        text_only = ~b[PRESENT_KEY]["rgb"]
        assert int(text_only.sum()) == 2  # round(0.25 * 8), every batch
        assert torch.isnan(b["rgb"][text_only]).all() and not torch.isnan(b["rgb"][~text_only]).any()
        assert all(c in CORPUS for c, t in zip(b["caption"], text_only.tolist()) if t)
        assert all(c.startswith("paired") for c, t in zip(b["caption"], text_only.tolist()) if not t)


def test_text_rows_do_not_depend_on_the_number_of_processes_and_resume_exactly():
    whole = UnpairedText(PoolStream(pool(), 8, seed=3), CORPUS, "caption", 0.25, 8, seed=3)
    halves = [UnpairedText(PoolStream(pool(), 8, seed=3, rank=r, world_size=2), CORPUS, "caption", 0.25, 8, seed=3)
              for r in range(2)]
    for _ in range(4):
        b = next(whole)
        parts = [next(h) for h in halves]
        assert [c for p in parts for c in p["caption"]] == b["caption"]
        has = [p.get(PRESENT_KEY, {}).get("rgb", torch.ones(4, dtype=torch.bool)) for p in parts]  # absent: all there
        assert torch.cat(has).tolist() == b[PRESENT_KEY]["rgb"].tolist()
    state = whole.state_dict()
    expected = next(whole)
    again = UnpairedText(PoolStream(pool(), 8, seed=3), CORPUS, "caption", 0.25, 8, seed=3)
    again.load_state_dict(state)
    assert next(again)["caption"] == expected["caption"]


def test_the_share_and_the_corpus_are_checked():
    with pytest.raises(ValueError, match="no caption"):
        UnpairedText(PoolStream(pool(), 8), [], "caption", 0.25, 8)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        UnpairedText(PoolStream(pool(), 8), CORPUS, "caption", 1.0, 8)


def _left_right_sample() -> dict[str, object]:
    image = torch.zeros(3, 8, 8)
    image[0, :, :4] = 1.0  # red on the left
    return {"rgb": image, "caption": "a red cube left of a blue sphere"}


@pytest.mark.parametrize("caption_flip, flipped, caption", [
    ("mirror", True, "a red cube right of a blue sphere"),
    ("skip", False, "a red cube left of a blue sphere"),
    ("keep", True, "a red cube left of a blue sphere"),
])
def test_caption_flip_mirrors_skips_or_keeps(caption_flip, flipped, caption):
    sample = _left_right_sample()
    t = RandomResizedCropFlip(8, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=1.0, caption_flip=caption_flip)
    out = t(sample, torch.Generator().manual_seed(0))
    assert out["caption"] == caption
    assert (out["rgb"][0, 0, 0] == 0.0) == flipped  # red moved to the right
    without_caption = t({"rgb": sample["rgb"]}, torch.Generator().manual_seed(0))
    assert without_caption["rgb"][0, 0, 0] == 0.0  # samples without a caption are flipped in every mode

    batch = collate([_left_right_sample(), {"rgb": sample["rgb"].clone()}])
    aug = BatchRandomResizedCropFlip(8, flip_p=1.0, caption_flip=caption_flip)
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0]]).expand(2, 4)
    out = aug.apply(batch, boxes, torch.ones(2, dtype=torch.bool))
    assert out["caption"][0] == caption and out["caption"][1] is None
    assert (out["rgb"][0, 0, 0, 0] == 0.0) == flipped and out["rgb"][1, 0, 0, 0] == 0.0


def test_the_world_text_split_is_other_scenes_than_train():
    train = {world_sample("train", i, 32).caption for i in range(6)}
    text = [world_sample("text", i, 32).caption for i in range(6)]
    assert all(isinstance(c, str) and c for c in text) and not train & set(text)


@pytest.fixture(scope="module")
def world_folder(tmp_path_factory):
    from multimae.data.writer import GenerateConfig, generate

    root = tmp_path_factory.mktemp("captioned")
    generate(root, GenerateConfig(count=40, size=32, fmt="folder"), progress=False)
    return root


def _run(tmp_path, overrides):
    from multimae.config import RunConfig, load_config
    from multimae.configs import preset_path
    from multimae.tasks.pretrain_job import run_pretraining

    cfg = load_config(RunConfig, preset_path("m3ae-cpu"), [
        "model.encoder={dim: 32, depth: 1, num_heads: 2, image_size: 32, patch_size: 8}",
        "model.decoder={dim: 16, depth: 1, num_heads: 2, kind: joint}", "data.image_size=32", "data.batch_size=8",
        "data.num_workers=0", "data.tokenizer_vocab_size=200", "train.steps=2", "train.val_every=0",
        "train.precision=fp32", f"train.out_dir={tmp_path}", "train.name=run", *overrides])
    run = run_pretraining(cfg, progress=False)
    return json.loads((run / "report.json").read_text())


def test_m3ae_trains_on_a_folder_with_captions_and_on_jsonl_pairs(world_folder, tmp_path):
    report = _run(tmp_path / "folder", ["data.source=folder", f"data.root={world_folder}"])
    assert math.isfinite(report["val"]["caption"]) and "caption_acc" in report["val"]
    pairs = tmp_path / "pairs.jsonl"
    lines = []
    for caption in sorted((world_folder / "train" / "caption").rglob("*.txt")):
        image = next((world_folder / "train" / "rgb").glob(f"{caption.parent.name}/{caption.stem}.*"))
        lines.append(json.dumps({"image": str(image), "caption": caption.read_text()}))
    pairs.write_text("\n".join(lines) + "\n")
    report = _run(tmp_path / "jsonl", ["data.source=jsonl", f"data.root={pairs}"])
    assert math.isfinite(report["val"]["caption"]) and report["text"]["captions_truncated"] == 0


def test_m3ae_trains_with_unpaired_text_from_a_corpus_file(world_folder, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(world_sample("text", i, 32).caption for i in range(20)) + "\n")
    report = _run(tmp_path / "u", ["data.source=folder", f"data.root={world_folder}", "data.unpaired_text=0.25",
                                   f"data.text_corpus={corpus}"])
    assert math.isfinite(report["val"]["total"])
    assert "2 of every 8 samples are caption alone, from 20 captions" in capsys.readouterr().out


def test_unpaired_text_needs_a_corpus_off_the_world():
    from multimae.config.schema import DataConfig

    with pytest.raises(ValueError, match="text_corpus"):
        DataConfig(source="folder", root="x", unpaired_text=0.5).validate()
