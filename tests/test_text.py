"""The text data path: the caption tokenizer (train, encode, decode, save / load, cache)."""

from __future__ import annotations

import json

import pytest
import torch

from multimae.data.world import world_sample
from multimae.text import TextTokenizer, load_or_train
from multimae.text.tokenizer import CONFIG_FILE, SPECIAL_TOKENS, TOKENIZER_FILE


@pytest.fixture(scope="module")
def captions() -> list[str]:
    return [world_sample("train", i, size=24).caption for i in range(24)]


@pytest.fixture(scope="module")
def tokenizer(captions) -> TextTokenizer:
    return TextTokenizer.train(captions, vocab_size=200)


def test_trained_vocabulary_starts_with_the_special_tokens(tokenizer):
    assert tokenizer.pad_id == 0 and tokenizer.pad_token == "[PAD]"
    assert [tokenizer._tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert 100 < tokenizer.vocab_size <= 200


def test_padding_is_pad_id_and_valid_is_false_exactly_there(tokenizer):
    enc = tokenizer.encode(["a red cube", "a small red cube left of a blue sphere"], max_length=16)
    assert enc.ids.shape == enc.valid.shape == (2, 16) and enc.ids.dtype == torch.int64
    assert enc.valid.dtype == torch.bool and enc.truncated == 0
    counts = tokenizer.token_counts(["a red cube", "a small red cube left of a blue sphere"])
    assert enc.lengths.tolist() == enc.valid.sum(1).tolist() == counts and 3 <= counts[0] < counts[1] < 16
    assert (enc.ids[~enc.valid] == tokenizer.pad_id).all() and (enc.ids[enc.valid] != tokenizer.pad_id).all()
    assert enc.valid[0, :counts[0]].all() and not enc.valid[0, counts[0]:].any()
    assert not (enc.ids[enc.valid] < len(SPECIAL_TOKENS)).any()  # no [CLS] / [SEP] added


def test_special_tokens_written_in_a_caption_are_text(tokenizer):
    enc = tokenizer.encode(["a [PAD] cube [MASK] [CLS]"], max_length=32)
    assert enc.truncated == 0 and int(enc.valid.sum()) > 5
    assert not (enc.ids[enc.valid] == tokenizer.pad_id).any()
    assert not set(enc.ids[enc.valid].tolist()) & {0, 2, 3, 4}  # [CLS] [SEP] [MASK] never produced


def test_truncated_captions_are_counted_exactly(tokenizer, captions):
    counts = tokenizer.token_counts(captions)
    limit = sorted(counts)[len(counts) // 2]
    enc = tokenizer.encode(captions, max_length=limit)
    assert enc.truncated == sum(c > limit for c in counts) > 0
    assert enc.lengths.tolist() == counts and enc.ids.shape == (len(captions), limit)
    assert enc.valid.sum(1).tolist() == [min(c, limit) for c in counts]
    assert tokenizer.encode(captions, max_length=max(counts)).truncated == 0


def test_decode_of_encode_gives_the_lowercased_text(tokenizer, captions):
    texts = [c.upper() if i % 2 else c for i, c in enumerate(captions[:6])] + ["Hello, World!"]
    enc = tokenizer.encode(texts, max_length=40)
    assert tokenizer.decode(enc.ids) == [t.lower() for t in texts]
    cut = enc.valid.clone()
    cut[0, 3:] = False  # `valid` False hides tokens as padding does
    assert tokenizer.decode(enc.ids, cut)[0] == tokenizer.decode(enc.ids[:1, :3])[0] != texts[0]


def test_save_and_load_give_identical_ids_and_hash(tokenizer, captions, tmp_path):
    folder = tokenizer.save(tmp_path / "tok")
    assert {p.name for p in folder.iterdir()} == {TOKENIZER_FILE, CONFIG_FILE}  # no temporary file left
    loaded = TextTokenizer.load(folder)
    assert loaded.content_hash == tokenizer.content_hash == json.loads((folder / CONFIG_FILE).read_text())[
        "content_hash"]
    import hashlib

    assert tokenizer.content_hash == hashlib.sha256((folder / TOKENIZER_FILE).read_bytes()).hexdigest()
    a, b = tokenizer.encode(captions, 20), loaded.encode(captions, 20)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.valid, b.valid) and a.truncated == b.truncated
    assert TextTokenizer.from_pretrained(folder).content_hash == tokenizer.content_hash
    assert TextTokenizer.from_pretrained(folder / TOKENIZER_FILE).pad_id == 0
    other = TextTokenizer.train(["a completely different sentence"] * 3, vocab_size=120)
    assert other.content_hash != tokenizer.content_hash


def test_bad_captions_name_their_index(tokenizer):
    with pytest.raises(ValueError, match=r"texts\[1\] is empty"):
        tokenizer.encode(["a cube", "   "], 8)
    with pytest.raises(ValueError, match=r"texts\[2\] is int, not str"):
        tokenizer.encode(["a cube", "a cone", 3], 8)  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"texts\[0\] is empty"):
        TextTokenizer.train([""])
    with pytest.raises(ValueError, match="one str"):
        tokenizer.encode("a cube", 8)
    with pytest.raises(ValueError, match="max_length"):
        tokenizer.encode(["a cube"], 0)
    with pytest.raises(ValueError, match="vocab_size must be at least"):
        TextTokenizer.train(["a cube"], vocab_size=10)


def test_unknown_names_and_bad_files_give_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="cannot load tokenizer 'no-such/tokenizer-xyz'.*HF_HUB_OFFLINE"):
        TextTokenizer.from_pretrained("no-such/tokenizer-xyz")
    (tmp_path / TOKENIZER_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not a tokenizer file"):
        TextTokenizer.load(tmp_path)
    with pytest.raises(ValueError, match="no tokenizer file"):
        TextTokenizer.load(tmp_path / "missing")


def test_a_pretrained_tokenizer_without_pad_needs_one_named(tokenizer, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    bare = Tokenizer(models.WordLevel({"a": 0, "cube": 1, "<unk>": 2}, unk_token="<unk>"))
    bare.pre_tokenizer = pre_tokenizers.Whitespace()
    bare.save(str(tmp_path / TOKENIZER_FILE))
    with pytest.raises(ValueError, match="no padding token"):
        TextTokenizer.from_pretrained(tmp_path)
    named = TextTokenizer.from_pretrained(tmp_path, pad_token="<unk>")
    assert named.pad_id == 2 and named.encode(["a cube"], 3).ids.tolist() == [[0, 1, 2]]


def test_load_or_train_trains_once_then_reads_the_cache(captions, tmp_path):
    calls = []

    def texts():
        calls.append(1)
        return captions

    first = load_or_train(tmp_path / "tok", texts, vocab_size=150)
    again = load_or_train(tmp_path / "tok", texts, vocab_size=150)
    assert len(calls) == 1 and again.content_hash == first.content_hash
    with pytest.raises(ValueError, match="trained with .*vocab_size.*150"):
        load_or_train(tmp_path / "tok", texts, vocab_size=300)


# ------------------------------------------------------------------------------ mirrored captions
def test_mirror_caption_swaps_whole_words_and_keeps_case():
    from multimae.text.flip import mirror_caption

    assert mirror_caption("a cube left of a cone") == "a cube right of a cone"
    assert mirror_caption("Left: RIGHT, right-hand; Right") == "Right: LEFT, left-hand; Left"
    assert mirror_caption("leftover brightness, a rightist") == "leftover brightness, a rightist"
    text = "a red cube right of a cone left of a wall"
    assert mirror_caption(text) == "a red cube left of a cone right of a wall"
    assert mirror_caption(mirror_caption(text)) == text


def _relation_index(split: str = "train", size: int = 32) -> int:
    return next(i for i in range(50) if " left of " in world_sample(split, i, size).caption)


def test_a_flipped_world_sample_says_the_true_relation():
    """The caption of the mirrored picture, computed by the world from the mirrored instance map,
    is what the real flip transform writes."""
    import dataclasses

    from multimae.data.generated import WorldDataset
    from multimae.data.transforms import RandomResizedCropFlip
    from multimae.data.world.captions import caption, visible_objects

    size, index = 32, _relation_index()
    ws = world_sample("train", index, size)
    r = ws.rendering
    mirrored = dataclasses.replace(r, instance=r.instance[:, ::-1].copy(), depth=r.depth[:, ::-1].copy())
    truth = caption(ws.scene, visible_objects(ws.scene, mirrored), size)
    sample = WorldDataset("train", size=size, length=index + 1)[index]
    flip = RandomResizedCropFlip(size, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=1.0)
    out = flip(sample, torch.Generator().manual_seed(0))
    assert out["caption"] == truth != sample["caption"] and " right of " in truth
    assert out["key"] == sample["key"]  # other strings pass through
    kept = RandomResizedCropFlip(size, flip_p=0.0)(sample, torch.Generator().manual_seed(0))
    assert kept["caption"] == sample["caption"]


def test_batch_flip_mirrors_the_captions_of_flipped_samples_with_a_picture():
    from multimae.data.batch_augment import BatchRandomResizedCropFlip
    from multimae.data.collate import PRESENT_KEY, collate
    from multimae.data.generated import WorldDataset

    index = _relation_index(size=16)
    data = WorldDataset("train", size=16, length=index + 1, modalities=("rgb",))
    image = {k: v for k, v in data[index].items() if k != "label"}
    text_only = {"caption": image["caption"], "key": "t"}
    batch = collate([image, image, text_only])
    assert batch[PRESENT_KEY]["rgb"].tolist() == [True, True, False]
    aug = BatchRandomResizedCropFlip(16)
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0]] * 3)
    out = aug.apply(batch, boxes, torch.tensor([True, False, True]))
    original = data[index]["caption"]
    assert out["caption"] == [original.replace(" left of ", " right of "), original, original]
    assert torch.equal(out["rgb"][0], batch["rgb"][0].flip(-1)) and torch.equal(out["rgb"][1], batch["rgb"][1])


# ------------------------------------------------------------------------------ caption sources, CLI
@pytest.fixture(scope="module")
def world_sources(tmp_path_factory) -> dict[str, object]:
    from multimae.data.writer import GenerateConfig, generate

    root = tmp_path_factory.mktemp("sources")
    generate(root / "folder", GenerateConfig(count=5, size=16, fmt="folder"), progress=False)
    generate(root / "shards", GenerateConfig(count=5, size=16, fmt="shards", shard_size=2), progress=False)
    truth = [world_sample("train", i, size=16).caption for i in range(5)]
    (root / "lines.txt").write_text("\n".join(truth) + "\n\n")
    (root / "pairs.jsonl").write_text("".join(json.dumps({"image": f"{i}.png", "caption": c}) + "\n"
                                              for i, c in enumerate(truth)))
    return {"root": root, "truth": truth}


@pytest.mark.parametrize(("name", "kind"), [("folder", "folder"), ("shards", "shards"), ("lines.txt", "text file"),
                                            ("pairs.jsonl", "jsonl"), ("folder/train/caption", "text folder")])
def test_every_source_gives_the_world_captions(world_sources, name, kind):
    from multimae.data.text_sources import read_captions

    captions = read_captions(world_sources["root"] / name)
    assert captions.kind == kind and captions.num_skipped == 0
    assert sorted(captions.texts) == sorted(world_sources["truth"])


def test_bad_caption_sources_name_the_file(tmp_path):
    from multimae.data.text_sources import read_captions

    (tmp_path / "c.txt").write_bytes(b"a cube\n\xff bad\na cone\n")
    with pytest.raises(ValueError, match=r"c\.txt:2: caption is not UTF-8"):
        read_captions(tmp_path / "c.txt")
    skipped = read_captions(tmp_path / "c.txt", on_error="skip")
    assert skipped.texts == ["a cube", "a cone"] and skipped.num_skipped == 1
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ValueError, match="found neither"):
        read_captions(tmp_path / "empty_dir")
    with pytest.raises(ValueError, match="give a .jsonl"):
        (tmp_path / "x.csv").write_text("a")
        read_captions(tmp_path / "x.csv")


def test_cli_trains_saves_and_reports_truncation(world_sources, tmp_path, capsys):
    from multimae.cli.main import main

    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--data", str(world_sources["root"] / "shards"), "--vocab-size", "150",
                 "--max-length", "12", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    tokenizer = TextTokenizer.load(out)
    counts = tokenizer.token_counts(world_sources["truth"])
    truncated = sum(c > 12 for c in counts)
    assert "read 5 captions" in printed and f"vocab size {tokenizer.vocab_size};" in printed
    assert f"max length 12: {truncated} of 5 captions truncated" in printed and truncated > 0
    assert tokenizer.content_hash[:16] in printed
    assert main(["tokenizer", "train", "--data", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["tokenizer", "train", "--data", str(out), "--vocab-size", "0", "--out", str(out)]) == 2
    assert "--vocab-size must be >= 1" in capsys.readouterr().err


# ------------------------------------------------------------------------------ batches of captions
def test_tokenize_batch_pads_missing_captions_and_feeds_prepare_batch(tokenizer, captions):
    from multimae.data.collate import PRESENT_KEY, collate
    from multimae.modalities.prepare import prepare_batch
    from multimae.modalities.spec import ModalitySpec
    from multimae.text.batch import spec_for, tokenize_batch

    rgb = torch.zeros(3, 4, 4)
    batch = collate([{"rgb": rgb, "caption": captions[0], "key": "a"}, {"caption": captions[1], "key": "b"},
                     {"rgb": rgb, "key": "c"}])
    assert batch["caption"] == [captions[0], captions[1], None]
    limit = 8
    out, truncated = tokenize_batch(batch, tokenizer, "caption", max_length=limit)
    expected = tokenizer.encode(captions[:2], limit)
    assert truncated == expected.truncated == sum(c > limit for c in tokenizer.token_counts(captions[:2]))
    assert out["caption"].shape == (3, limit) and torch.equal(out["caption"][:2], expected.ids)
    assert (out["caption"][2] == tokenizer.pad_id).all()
    assert out[PRESENT_KEY]["caption"].tolist() == [True, True, False]
    assert out[PRESENT_KEY]["rgb"].tolist() == [True, False, True] and batch["caption"][2] is None  # not mutated

    spec = spec_for(ModalitySpec("caption", kind="tokens", num_channels=2, loss="cross_entropy", max_length=limit),
                    tokenizer)
    assert (spec.num_channels, spec.pad_id) == (tokenizer.vocab_size, tokenizer.pad_id)
    prepared = prepare_batch(out, {"caption": spec}, {"caption": spec})
    assert torch.equal(prepared.inputs["caption"], out["caption"])
    assert prepared.present["caption"].tolist() == [True, True, False]
    with pytest.raises(ValueError, match="a dense modality"):
        spec_for(ModalitySpec("height", num_channels=1), tokenizer)


def test_tokenize_batch_names_the_bad_caption_and_passes_batches_without_text(tokenizer):
    from multimae.text.batch import tokenize_batch

    with pytest.raises(ValueError, match=r"batch\['caption'\]\[2\] is empty.*sample keys \['a', 'b', 'c'\]"):
        tokenize_batch({"caption": ["a cube", None, " "], "key": ["a", "b", "c"]}, tokenizer, "caption", 8)
    complete, _ = tokenize_batch({"caption": ["a cube", "a cone"]}, tokenizer, "caption", 8)
    assert "present" not in complete
    assert tokenize_batch({"key": ["a"]}, tokenizer, "caption", 8) == ({"key": ["a"]}, 0)
    with pytest.raises(ValueError, match="collated list of captions"):
        tokenize_batch({"caption": torch.zeros(2, 8)}, tokenizer, "caption", 8)


# ------------------------------------------------------------------------------ runs and checkpoints
def test_run_tokenizer_is_trained_once_and_travels_with_checkpoints(captions, tmp_path):
    from multimae.engine.checkpoint import Checkpoint
    from multimae.text.run import from_checkpoint, run_tokenizer

    calls = []

    def texts():
        calls.append(1)
        return captions

    run = tmp_path / "run"
    tokenizer, files = run_tokenizer(run, "caption", texts, vocab_size=150)
    again, files_again = run_tokenizer(run, "caption", texts, vocab_size=150)  # a resumed run
    assert len(calls) == 1 and files == files_again and again.content_hash == tokenizer.content_hash
    (entry,) = files.values()
    assert entry.path == "tokenizer-caption/tokenizer.json" and entry.sha256 == tokenizer.content_hash
    checkpoint = Checkpoint(state={}, format="multimae", path=run / "checkpoint-00000010.pt", files=files)
    loaded = from_checkpoint(checkpoint, "caption")
    assert loaded.content_hash == tokenizer.content_hash
    assert torch.equal(loaded.encode(captions, 12).ids, tokenizer.encode(captions, 12).ids)
    with pytest.raises(ValueError, match="no file named 'tokenizer:title'"):
        from_checkpoint(checkpoint, "title")
    (run / entry.path).write_text((run / entry.path).read_text().replace('"[MASK]"', '"[MASQ]"'))
    with pytest.raises(ValueError, match="SHA-256"):
        from_checkpoint(checkpoint, "caption")


def test_run_tokenizer_from_a_pretrained_folder_and_a_changed_one(tokenizer, captions, tmp_path):
    from multimae.text.run import run_tokenizer

    source = tokenizer.save(tmp_path / "pretrained")
    got, files = run_tokenizer(tmp_path / "run", "caption", list, pretrained=source)
    assert got.content_hash == tokenizer.content_hash == files["tokenizer:caption"].sha256
    other = TextTokenizer.train(["a completely different sentence"] * 3, vocab_size=120).save(tmp_path / "other")
    with pytest.raises(ValueError, match="already has another caption tokenizer"):
        run_tokenizer(tmp_path / "run", "caption", list, pretrained=other)
