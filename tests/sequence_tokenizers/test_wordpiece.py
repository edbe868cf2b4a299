"""The 4M sequence tokenizer: layout, round trips of captions and boxes, cuts, bad inputs, files."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import SHARED
from multimae.cli.main import main
from multimae.data.boxes import Box, parse_boxes, serialize_boxes
from multimae.data.world import SEQUENCE_WORDS, world_sample
from multimae.data.world.sequences import boxes_text
from multimae.tokenizers import SequenceTokenizer, TokenIds, load_tokenizer
from multimae.tokenizers.sequence_training import sequence_report, train_sequence_tokenizer, world_texts

FOURM_TOKENIZER = SHARED / "reference" / "fourm" / "golden" / "tokenizer.json"


@pytest.fixture(scope="module")
def texts() -> dict[str, list[str]]:
    return world_texts("train", 24, size=32, progress=False)


@pytest.fixture(scope="module")
def tokenizer(texts) -> SequenceTokenizer:
    return train_sequence_tokenizer(texts, SEQUENCE_WORDS, vocab_size=400, coord_bins=32, num_sentinels=20,
                                    max_length=64)


def test_ids_follow_4m_layout(tokenizer):
    assert [tokenizer.token_id(t) for t in ("[PAD]", "[UNK]", "[SOS]", "[EOS]")] == [0, 1, 2, 3]
    assert [tokenizer.token_id(f"[S_{i}]") for i in range(20)] == list(range(4, 24))
    assert tokenizer.sentinel_id(1) == 5 and tokenizer.token_id("v0=0") == 24 == tokenizer.coord_id(0, 0)
    assert tokenizer.coord_id(3, 31) == tokenizer.token_id("v3=31") == 24 + 4 * 32 - 1
    assert tokenizer.token_id("v0=32") is None  # one bin per pixel of a 32 px image
    first_word = tokenizer.token_id(SEQUENCE_WORDS[0])
    assert first_word == 24 + 4 * 32 and tokenizer.vocab_size > first_word + len(SEQUENCE_WORDS)
    with pytest.raises(ValueError, match="sentinel 20"):
        tokenizer.sentinel_id(20)
    with pytest.raises(ValueError, match="v4=0"):
        tokenizer.coord_id(4, 0)


@pytest.mark.skipif(not FOURM_TOKENIZER.exists(), reason="shared/reference/fourm is not beside the checkout")
def test_special_tokens_are_those_of_the_official_file(tokenizer):
    official = json.loads(FOURM_TOKENIZER.read_text())["added_tokens"]  # [PAD] .. [S_19]
    ours = {t["content"]: t for t in json.loads(tokenizer.to_json())["added_tokens"]}
    for token in official:
        mine = ours[token["content"]]
        assert (mine["id"], mine["single_word"], mine["normalized"], mine["special"]) == \
               (token["id"], token["single_word"], token["normalized"], token["special"])


def test_captions_boxes_metadata_and_palettes_round_trip_exactly(tokenizer, texts):
    held = world_texts("val", 12, size=32, progress=False)
    report = sequence_report(tokenizer, held)
    for kind, r in report["kinds"].items():
        assert r["texts"] == 12 and r["unk"] == 0 and r["truncated"] == 0, kind
        assert r["exact"] == 1.0, kind
    assert report["kinds"]["metadata"]["tokens_max"] == 25  # 12 fields of 2 tokens, then [EOS]
    ws = world_sample("val", 3, 32)
    text = boxes_text(ws.scene, ws.rendering, 32)
    ids = tokenizer.encode([text])
    assert parse_boxes(tokenizer.decode(ids)[0]) == parse_boxes(text) != []
    pieces = tokenizer.pieces(ids.ids[0, :5].tolist())  # a box is 5 tokens: its coordinates, its class
    assert pieces[:4] == [f"v{a}={v}" for a, v in enumerate(pieces_values(text))] and pieces[4] in SEQUENCE_WORDS


def pieces_values(text: str) -> list[int]:
    box = parse_boxes(text)[0]
    return [box.xmin, box.ymin, box.xmax, box.ymax]


def test_encoding_pads_ends_and_cuts(tokenizer):
    boxes = serialize_boxes([Box(9, 9, 12, 12, "cube"), Box(0, 1, 4, 4, "sphere")])
    assert boxes.startswith("v0=0 v1=1 v2=4 v3=4 sphere")  # nearer the origin first
    out = tokenizer.encode([boxes, "", "a zebra"])
    assert isinstance(out, TokenIds) and out.ids.shape == (3, 64) and out.ids.dtype == torch.int64
    assert out.ids[0, 10].item() == tokenizer.eos_id and out.valid[0].sum() == 11
    assert out.ids[1, 0].item() == tokenizer.eos_id and out.valid[1].sum() == 1  # no boxes: [EOS] alone
    assert (out.ids[out.valid.logical_not()] == tokenizer.pad_id).all()
    assert tokenizer.unk_id not in out.ids[2].tolist()  # an unseen word splits into known pieces
    assert tokenizer.decode(out) == [boxes, "", "a zebra"]
    before = tokenizer.truncated
    cut = tokenizer.encode([" ".join(["cube"] * 50)], max_length=8)
    assert cut.ids.shape == (1, 8) and cut.ids[0, -1].item() == tokenizer.eos_id
    assert tokenizer.truncated == before + 1 and tokenizer.decode(cut) == [" ".join(["cube"] * 7)]
    merged = torch.tensor([[tokenizer.coord_id(0, 3), tokenizer.sentinel_id(1), tokenizer.eos_id, 7, 7]])
    assert tokenizer.decode(merged) == ["v0=3 [S_1]"]  # decoding stops at [EOS]


def test_bad_inputs_are_named(tokenizer):
    with pytest.raises(ValueError, match="one str"):
        tokenizer.encode("a cube")
    with pytest.raises(ValueError, match=r"texts\[1\] is int"):
        tokenizer.encode(["a cube", 3])
    with pytest.raises(ValueError, match=r"\[0, \d+\)"):
        tokenizer.decode(torch.tensor([[tokenizer.vocab_size]]))
    with pytest.raises(ValueError, match="integer"):
        tokenizer.decode(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        tokenizer.decode(torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="distinct single words"):
        SequenceTokenizer.train(["a cube"], words=["cube", "Cube"])
    with pytest.raises(ValueError, match="distinct single words"):
        SequenceTokenizer.train(["a cube"], words=["red cube"])
    with pytest.raises(ValueError, match="vocab_size"):
        SequenceTokenizer.train(["a cube"], vocab_size=10)
    with pytest.raises(ValueError, match="no texts"):
        SequenceTokenizer.train(["", " "])
    with pytest.raises(ValueError, match=r"texts\[1\]: coordinate v2=32 is outside this tokenizer's 32 bins"):
        tokenizer.encode(["v0=1 v1=2 v2=3 v3=4 cube", "v0=1 v1=2 v2=32 v3=4 cube"])
    assert tokenizer.encode(["xv2=99 v2=31"]).valid.any()  # only whole coordinate words are coordinates


def test_saved_tokenizer_reloads_exactly_and_refuses_a_changed_file(tokenizer, texts, tmp_path):
    tokenizer.save(tmp_path / "tok")
    assert (tmp_path / "tok" / "tokenizer.json").is_file()  # the plain file other tools read
    back = load_tokenizer(tmp_path / "tok")
    assert isinstance(back, SequenceTokenizer) and back.content_hash == tokenizer.content_hash
    flat = [t for kind in texts.values() for t in kind]
    assert torch.equal(back.encode(flat).ids, tokenizer.encode(flat).ids)
    record = json.loads((tmp_path / "tok" / "multimae_tokenizer.json").read_text())
    record["config"]["max_length"] = 41
    (tmp_path / "tok" / "multimae_tokenizer.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="recorded"):
        load_tokenizer(tmp_path / "tok")


def test_cli_trains_on_the_world_and_reports_held_out_texts(tmp_path, capsys):
    out = tmp_path / "seq"
    assert main(["tokenizer", "train", "--sequences", "--scenes", "8", "--image-size", "32", "--out", str(out),
                 "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["kinds"]) == {"caption", "boxes", "metadata", "palette"}
    assert all(r["texts"] == 2 and r["unk"] == 0 for r in report["kinds"].values())
    assert load_tokenizer(out).content_hash == report["content_hash"]
    assert "exact" in capsys.readouterr().out
    assert main(["tokenizer", "train", "--sequences", "--scenes", "0", "--out", str(tmp_path / "x")]) != 0
    assert "--scenes must be >= 1" in capsys.readouterr().err
