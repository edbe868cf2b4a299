"""`run_tokenize`: shards equal direct encoding, determinism, resume after a crash, the rank split,
and the reader's checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from multimae.data import WorldDataset
from multimae.data.token_shards import TokenShardDataset, sample_record, shard_name
from multimae.pretokenize import CropConfig, TokenizeConfig, crop_view, plan_crops, run_tokenize
from multimae.pretokenize import job as job_module
from multimae.pretokenize.encode import sample_tokens
from multimae.tokenizers import TokenIds, load_tokenizer

from .conftest import IMAGE, RENDER, make_tokenizer

SCENES = 7


def config(out: Path, dirs: dict[str, Path], **overrides) -> TokenizeConfig:
    """7 world scenes, 3 crops each, 2 samples a shard (4 shards, the last holding one sample)."""
    args = dict(data="world", out=str(out), tokenizers={m: str(dirs[m]) for m in ("depth", "semseg")},
                crops=CropConfig(num_crops=3, scale=(0.3, 1.0)), shard_size=2, world_scenes=SCENES,
                render_size=RENDER, batch_size=1, progress=False)
    return TokenizeConfig(**{**args, **overrides})


def read_all(out: Path) -> list[dict]:
    return list(TokenShardDataset(out, crop="all"))


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))}


def test_shards_hold_the_direct_encoding_of_each_crop(tmp_path, tokenizer_dirs):
    cfg = config(tmp_path / "out", tokenizer_dirs)
    report = run_tokenize(cfg)
    assert report.complete and report.written == [0, 1, 2, 3] and report.samples == SCENES
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [s["samples"] for s in manifest["shards"]] == [2, 2, 2, 1] and manifest["num_samples"] == SCENES
    tokenizers = {m: load_tokenizer(tokenizer_dirs[m]) for m in ("depth", "semseg")}
    for m, tok in tokenizers.items():
        entry = manifest["tokenizers"][m]
        assert entry["content_hash"] == tok.content_hash and entry["vocab_size"] == 45
        assert entry["grid"] == [4, 4] and entry["placement"] == "grid" and entry["image_size"] == IMAGE
        assert entry["dtype"] == "uint8"  # 45 ids fit in a byte
    world = WorldDataset("train", size=RENDER, length=SCENES, modalities=("depth", "semseg"))
    items = read_all(tmp_path / "out")
    assert [it["index"] for it in items] == list(range(SCENES))
    for item in items:
        sample = world[item["index"]]
        assert item["key"] == sample["key"]
        crops = plan_crops((RENDER, RENDER), cfg.crops, cfg.seed, item["index"])
        assert torch.equal(item["crop"], torch.from_numpy(crops)) and item["crop"].shape == (3, 5)
        assert item["crop"][0].tolist() == [0, 0, RENDER, RENDER, 0]  # crop 0: the whole (square) view
        for m, tok in tokenizers.items():
            views = [crop_view(sample, c, {m: IMAGE})[m] for c in crops]
            direct = tok.encode(torch.stack(views))
            assert torch.equal(item["ids"][m], direct.ids) and item["ids"][m].shape == (3, 16)
            assert torch.equal(item["valid"][m], direct.valid)
    raw = next(iter(wds.WebDataset(str(tmp_path / "out" / shard_name(0)), shardshuffle=False).decode()))
    assert raw["depth.npy"].dtype == np.uint8 and raw["crops.npy"].dtype == np.int64


def test_crops_differ_and_flips_mirror():
    crops = CropConfig(num_crops=6, scale=(0.2, 0.5))
    plan = plan_crops((30, 40), crops, seed=3, index=5)
    assert plan[0].tolist() == [0, 5, 30, 30, 0]  # the central square of a 30x40 picture
    assert np.array_equal(plan, plan_crops((30, 40), crops, seed=3, index=5))
    assert not np.array_equal(plan, plan_crops((30, 40), crops, seed=4, index=5))
    assert not np.array_equal(plan, plan_crops((30, 40), crops, seed=3, index=6))
    area = plan[1:, 2] * plan[1:, 3] / (30 * 40)
    assert (area <= 0.55).all() and (plan[1:, 0] + plan[1:, 2] <= 30).all() and (plan[1:, 1] + plan[1:, 3] <= 40).all()
    x = torch.arange(16.0).reshape(1, 4, 4)
    flipped = crop_view({"depth": x}, np.array([0, 0, 4, 4, 1]), {"depth": 4})["depth"]
    assert torch.equal(flipped, x.flip(-1))


def test_valid_masks_are_stored_only_where_some_token_is_not():
    crops = np.zeros((2, 5), dtype=np.int64)
    ids = {"depth": np.zeros((2, 3), np.uint8), "semseg": np.ones((2, 3), np.uint8)}
    valid = {"depth": np.ones((2, 3), bool), "semseg": np.array([[True, False, True], [True] * 3])}
    record = sample_record(4, "k", crops, ids, valid)
    assert "depth.valid.npy" not in record and record["semseg.valid.npy"].tolist() == valid["semseg"].tolist()
    assert record["__key__"] == "000000004" and record["key.txt"] == "k"
    with pytest.raises(ValueError, match=r"\(K=2, N\)"):
        sample_record(4, "k", crops, {"depth": np.zeros((3, 3), np.uint8)}, valid)


def test_a_sequence_is_cut_after_its_samples_last_valid_token():
    ids = torch.arange(12).reshape(4, 3)  # 2 samples x 2 crops, padded to 3 tokens for the whole batch
    valid = torch.tensor([[True, False, False], [True, True, False], [True, False, False], [False, False, False]])
    tokens = TokenIds(ids, valid, "sequence")
    first, first_valid = sample_tokens(tokens, slice(0, 2), np.dtype(np.uint8))
    assert first.tolist() == [[0, 1], [3, 4]] and first.dtype == np.uint8 and first_valid.tolist() == [[1, 0], [1, 1]]
    second, _ = sample_tokens(tokens, slice(2, 4), np.dtype(np.uint8))
    assert second.tolist() == [[6], [9]]
    grid, _ = sample_tokens(TokenIds(ids, valid, "grid", (1, 3)), slice(2, 4), np.dtype(np.uint16))
    assert grid.shape == (2, 3) and grid.dtype == np.uint16  # a grid keeps every cell


def test_two_runs_write_the_same_bytes(tmp_path, tokenizer_dirs):
    run_tokenize(config(tmp_path / "a", tokenizer_dirs))
    run_tokenize(config(tmp_path / "b", tokenizer_dirs))
    a, b = shard_bytes(tmp_path / "a"), shard_bytes(tmp_path / "b")
    assert len(a) == 4 and a == b
    assert (tmp_path / "a" / "manifest.json").read_text() == (tmp_path / "b" / "manifest.json").read_text()
    run_tokenize(config(tmp_path / "c", tokenizer_dirs, seed=1))
    assert [it["crop"].tolist() for it in read_all(tmp_path / "c")] != [it["crop"].tolist() for it in read_all(tmp_path / "a")]


def test_resume_after_a_crash_writes_every_sample_once(tmp_path, tokenizer_dirs, monkeypatch):
    out = tmp_path / "out"
    real, calls = job_module.encode_samples, []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:  # batch_size 1: samples 0-4 encoded, the crash in shard 2's second sample
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(job_module, "encode_samples", crashing)
    with pytest.raises(RuntimeError, match="killed"):
        run_tokenize(config(out, tokenizer_dirs))
    monkeypatch.setattr(job_module, "encode_samples", real)
    assert sorted(p.name for p in out.glob("*.tar")) == [shard_name(0), shard_name(1)]  # nothing partial
    assert not list(out.glob("*.tmp"))
    with pytest.raises(ValueError, match="incomplete"):
        TokenShardDataset(out)
    (out / f"{shard_name(2)}.tmp").write_bytes(b"half a shard")  # what a kill -9 would leave
    (out / shard_name(3)).write_bytes(b"renamed, but killed before its record")
    with pytest.raises(ValueError, match="2 finished shard"):
        run_tokenize(config(out, tokenizer_dirs))  # not without resume
    report = run_tokenize(config(out, tokenizer_dirs, resume=True))
    assert report.skipped == [0, 1] and report.written == [2, 3] and report.samples == 3 and report.complete
    indices = [it["index"] for it in read_all(out)]
    assert sorted(indices) == list(range(SCENES)) and len(set(indices)) == SCENES
    run_tokenize(config(tmp_path / "whole", tokenizer_dirs))
    assert shard_bytes(out) == shard_bytes(tmp_path / "whole")
    again = run_tokenize(config(out, tokenizer_dirs, resume=True))
    assert again.written == [] and again.skipped == [0, 1, 2, 3] and again.complete


def test_ranks_split_the_shards_and_together_cover_every_sample_once(tmp_path, tokenizer_dirs):
    out = tmp_path / "out"
    first = run_tokenize(config(out, tokenizer_dirs, rank=0, world_size=2))
    assert first.written == [0, 2] and not first.complete
    with pytest.raises(ValueError, match="incomplete"):
        TokenShardDataset(out)
    second = run_tokenize(config(out, tokenizer_dirs, rank=1, world_size=2))
    assert second.written == [1, 3] and second.complete  # the last to finish completes the manifest
    indices = [it["index"] for it in read_all(out)]
    assert sorted(indices) == list(range(SCENES)) and len(set(indices)) == SCENES
    run_tokenize(config(tmp_path / "one", tokenizer_dirs))
    assert shard_bytes(out) == shard_bytes(tmp_path / "one")


def test_a_reader_on_one_of_two_ranks_reads_its_shards_and_a_pool_reads_them_all(tmp_path, tokenizer_dirs,
                                                                                  monkeypatch):
    from multimae.data.token_pool import load_token_pool

    out = tmp_path / "out"
    run_tokenize(config(out, tokenizer_dirs))
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    mine = [it["index"] for it in TokenShardDataset(out)]
    assert 0 < len(mine) < SCENES  # a streaming reader: this rank's shards only
    pool = load_token_pool(out)  # an in-memory pool: every rank holds every sample (its streams shard rows)
    assert pool.num_samples == SCENES


def test_another_tokenizer_is_refused(tmp_path, tokenizer_dirs):
    out = tmp_path / "out"
    run_tokenize(config(out, tokenizer_dirs))
    same = {m: load_tokenizer(tokenizer_dirs[m]) for m in ("depth", "semseg")}
    assert len(TokenShardDataset(out, tokenizers=same)) == SCENES
    other = make_tokenizer("depth", seed=1)
    with pytest.raises(ValueError, match="made by tokenizer sha256"):
        TokenShardDataset(out, tokenizers={"depth": other})
    with pytest.raises(ValueError, match="hold no 'normals' tokens"):
        TokenShardDataset(out, tokenizers={"normals": load_tokenizer(tokenizer_dirs["normals"])})
    changed = tmp_path / "depth-other"
    other.save(changed)
    (changed / "config.yaml").write_text((tokenizer_dirs["depth"] / "config.yaml").read_text())
    dirs = {**tokenizer_dirs, "depth": changed}
    with pytest.raises(ValueError, match="another run .*tokenizers"):
        run_tokenize(config(out, dirs, resume=True))


def test_the_reader_draws_one_crop_per_epoch_and_shuffles(tmp_path, tokenizer_dirs):
    out = tmp_path / "out"
    run_tokenize(config(out, tokenizer_dirs))
    every = {it["index"]: it for it in read_all(out)}
    data = TokenShardDataset(out, modalities=["depth"], seed=5)
    epoch0 = list(data)
    assert set(epoch0[0]["ids"]) == {"depth"} and epoch0[0]["ids"]["depth"].shape == (16,)
    for it in epoch0:
        k = it["crop_index"]
        assert torch.equal(it["ids"]["depth"], every[it["index"]]["ids"]["depth"][k])
        assert torch.equal(it["crop"], every[it["index"]]["crop"][k])
    assert [it["crop_index"] for it in TokenShardDataset(out, seed=5)] == [it["crop_index"] for it in epoch0]
    data.set_epoch(1)
    assert [it["crop_index"] for it in data] != [it["crop_index"] for it in epoch0]
    fixed = TokenShardDataset(out, crop=2)
    assert {it["crop_index"] for it in fixed} == {2}
    shuffled = [it["index"] for it in TokenShardDataset(out, shuffle=True, buffer_size=4, seed=1)]
    assert sorted(shuffled) == list(range(SCENES)) and shuffled != list(range(SCENES))
    batch = next(iter(torch.utils.data.DataLoader(TokenShardDataset(out), batch_size=3)))
    assert batch["ids"]["semseg"].shape == (3, 16) and batch["crop"].shape == (3, 5) and len(batch["key"]) == 3
    with pytest.raises(ValueError, match="crop 3 is not in"):
        TokenShardDataset(out, crop=3)
