"""Sequence modalities through `run_tokenize`: boxes follow each crop and flip of the maps, metadata and
palette stay as the whole picture has them, from the world and from folder data alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from multimae.data import FolderDataset, WorldDataset
from multimae.data.boxes import parse_boxes, serialize_boxes, transform_boxes
from multimae.data.token_shards import TokenShardDataset
from multimae.data.world import SEQUENCE_WORDS
from multimae.pretokenize import CropConfig, TokenizeConfig, plan_crops, run_tokenize
from multimae.tokenizers import load_tokenizer
from multimae.tokenizers.sequence_training import train_sequence_tokenizer, world_texts

from .conftest import RENDER

SEQUENCES = ("boxes", "metadata", "palette", "caption")
CROPS = CropConfig(num_crops=4, scale=(0.3, 1.0))
BINS = 64  # the world's metadata and palette values are in 64 bins: the tokenizer needs them all


@pytest.fixture(scope="module")
def sequence_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = world_texts("train", 24, size=RENDER, bins=BINS, progress=False)
    tokenizer = train_sequence_tokenizer(texts, SEQUENCE_WORDS, vocab_size=300, coord_bins=BINS, num_sentinels=8)
    return tokenizer.save(tmp_path_factory.mktemp("tok-seq") / "seq")


def _config(data: str, out: Path, tokenizer_dirs: dict[str, Path], sequence_dir: Path, **extra) -> TokenizeConfig:
    folders = {"depth": str(tokenizer_dirs["depth"]), **{m: str(sequence_dir) for m in SEQUENCES}}
    return TokenizeConfig(data=data, out=str(out), tokenizers=folders, crops=CROPS,
                          shard_size=3, world_scenes=6, render_size=RENDER, progress=False, **extra)


def _check_items(out: Path, sequence_dir: Path, samples, size: int) -> None:
    """Every crop's decoded boxes are the sample's boxes moved through that crop into the tokenizer's
    bins; metadata and palette are the sample's own at every crop."""
    tokenizer = load_tokenizer(sequence_dir)
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["tokenizers"]["boxes"]
    assert entry["placement"] == "sequence" and entry["coord_bins"] == BINS and entry["image_size"] is None
    moved_somewhere = 0
    for item in TokenShardDataset(out, crop="all"):
        sample = samples[item["index"]]
        texts = {m: tokenizer.decode(item["ids"][m]) for m in SEQUENCES}
        for k, crop in enumerate(item["crop"].tolist()):
            assert crop == plan_crops((size, size), CROPS, 0, item["index"])[k].tolist()
            top, left, h, w, flipped = crop
            moved = transform_boxes(parse_boxes(sample["boxes"]), (top, left, h, w), BINS, bool(flipped))
            expected = serialize_boxes(moved)
            assert texts["boxes"][k] == expected
            moved_somewhere += expected != sample["boxes"]
            assert texts["metadata"][k] == sample["metadata"] and texts["palette"][k] == sample["palette"]
        assert texts["caption"][0] == sample["caption"]
    assert moved_somewhere > 6


def test_world_sequences_are_tokenized_per_crop(tmp_path, tokenizer_dirs, sequence_dir):
    out = tmp_path / "out"
    assert run_tokenize(_config("world", out, tokenizer_dirs, sequence_dir)).complete
    world = WorldDataset("train", size=RENDER, length=6, modalities=("boxes", "metadata", "palette"))
    _check_items(out, sequence_dir, world, RENDER)


def test_folder_sequences_are_tokenized_alike(tmp_path, tokenizer_dirs, sequence_dir, folder_root):
    out = tmp_path / "out"
    assert run_tokenize(_config(str(folder_root), out, tokenizer_dirs, sequence_dir, limit=5)).complete
    folder = FolderDataset(folder_root, "train", ("rgb", *SEQUENCES))
    _check_items(out, sequence_dir, folder, 24)


def test_boxes_need_a_map_beside_them(tmp_path, sequence_dir):
    config = TokenizeConfig(data="world", out=str(tmp_path / "out"), tokenizers={"boxes": str(sequence_dir)},
                            world_scenes=2, progress=False)
    with pytest.raises(ValueError, match="boxes are in pixels of the sample's maps; tokenize them together"):
        run_tokenize(config)
