"""The JSONL reader of image-caption pairs, and bad captions in every reader."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch

from multimae.data.codecs import encode_png
from multimae.data.folder import FolderDataset
from multimae.data.jsonl import JsonlDataset
from multimae.data.shards import ShardDataset


def _png(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(np.full((6, 8, 3), value, np.uint8)))
    return path


@pytest.fixture
def pairs(tmp_path):
    _png(tmp_path / "img" / "a.png", 10)
    absolute = _png(tmp_path / "elsewhere" / "b.png", 200)
    lines = [json.dumps({"image": "img/a.png", "caption": "  a red cube left of a cone "}), "",
             json.dumps({"image": str(absolute), "caption": "a blue sphere", "extra": 1}),
             json.dumps({"image": "img/a.png", "caption": "a second caption of a"})]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_reads_pairs_like_the_folder_reader(pairs):
    ds = JsonlDataset(pairs)
    assert len(ds) == 3 and ds.captions == ["a red cube left of a cone", "a blue sphere", "a second caption of a"]
    first, second = ds[0], ds[1]
    assert set(first) == {"rgb", "caption", "key"} and first["key"] == "00000001" and second["key"] == "00000003"
    assert first["rgb"].shape == (3, 6, 8) and first["rgb"].dtype == torch.float32
    assert torch.allclose(first["rgb"], torch.full((3, 6, 8), 10 / 255))  # relative to the JSONL's folder
    assert torch.allclose(second["rgb"], torch.full((3, 6, 8), 200 / 255))  # absolute
    assert first["caption"] == "a red cube left of a cone"


def test_jsonl_custom_field_names_and_transform(tmp_path):
    _png(tmp_path / "x.png", 0)
    (tmp_path / "p.jsonl").write_text(json.dumps({"file": "x.png", "text": "a cube left of a cone"}) + "\n")
    from multimae.data.transforms import RandomResizedCropFlip

    ds = JsonlDataset(tmp_path / "p.jsonl", image_field="file", caption_field="text",
                      transform=RandomResizedCropFlip(4, flip_p=1.0))
    assert ds[0]["caption"] == "a cube right of a cone" and ds[0]["rgb"].shape == (3, 4, 4)


@pytest.mark.parametrize(("line", "problem"), [
    (b'{"image": "a.png", "caption": "   "}', r"pairs\.jsonl:2: caption is empty"),
    (b'{"image": "a.png", "caption": "caf\xe9"}', r"pairs\.jsonl:2: not UTF-8"),
    (b'{"image": "a.png", "caption": "' + b"word " * 2001 + b'"}', r"pairs\.jsonl:2: caption has 10004 characters"),
    (b'{"image": "a.png", "caption": "a cube"', r"pairs\.jsonl:2: not valid JSON"),
    (b'["a.png", "a cube"]', r"pairs\.jsonl:2: expected a JSON object"),
    (b'{"image": "a.png"}', r"pairs\.jsonl:2: field 'caption' is missing"),
    (b'{"image": 3, "caption": "a cube"}', r"pairs\.jsonl:2: field 'image' is a int, not a string"),
])
def test_bad_lines_name_the_file_and_line_or_are_skipped_and_counted(tmp_path, line, problem):
    _png(tmp_path / "a.png", 1)
    good = json.dumps({"image": "a.png", "caption": "a cube"}).encode()
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(b"\n".join([good, line, good]))
    with pytest.raises(ValueError, match=problem):
        JsonlDataset(path)
    skipping = JsonlDataset(path, on_error="skip")
    assert len(skipping) == 2 and skipping.num_skipped == 1 and skipping[1]["key"] == "00000003"


def test_missing_or_broken_image_names_the_line_or_is_skipped(tmp_path):
    _png(tmp_path / "a.png", 1)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    rows = [("a.png", "one"), ("gone.png", "two"), ("broken.png", "three"), ("a.png", "four")]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"image": i, "caption": c}) + "\n" for i, c in rows))
    ds = JsonlDataset(path)
    with pytest.raises(ValueError, match=r"pairs\.jsonl:2: .*gone\.png: cannot read"):
        ds[1]
    with pytest.raises(ValueError, match=r"pairs\.jsonl:3: .*broken\.png: cannot decode"):
        ds[2]
    skipping = JsonlDataset(path, on_error="skip")
    assert skipping[1]["caption"] == "four" and skipping.num_skipped == 2
    with pytest.raises(ValueError, match="no image-caption pairs"):
        (tmp_path / "empty.jsonl").write_text("\n\n")
        JsonlDataset(tmp_path / "empty.jsonl")
    with pytest.raises(ValueError, match=r"missing\.jsonl: cannot read"):
        JsonlDataset(tmp_path / "missing.jsonl")


# ------------------------------------------------------------------- captions in folders and shards
def _folder_with_captions(root, captions: dict[str, bytes]):
    for key, data in captions.items():
        _png(root / "train" / "rgb" / f"{key}.png", 5)
        path = root / "train" / "caption" / f"{key}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@pytest.mark.parametrize(("data", "problem"), [(b" \n\t", "caption is empty"),
                                              (b"caf\xe9", "caption is not UTF-8 text"),
                                              (b"x" * 10_001, "caption has 10001 characters, more than")])
def test_folder_reader_refuses_empty_and_non_utf8_captions_naming_the_file(tmp_path, data, problem):
    _folder_with_captions(tmp_path, {"a": b"a red cube\n", "b": data, "c": "a café".encode()})
    ds = FolderDataset(tmp_path, "train", ("rgb", "caption"))
    assert ds[0]["caption"] == "a red cube" and ds[2]["caption"] == "a café"
    with pytest.raises(ValueError, match=rf"caption/b\.txt: {problem}"):
        ds[1]
    skipping = FolderDataset(tmp_path, "train", ("rgb", "caption"), on_error="skip")
    assert skipping[1]["key"] == "c" and skipping.num_skipped == 1


def _tar(path, members: dict[str, bytes]):
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize(("data", "problem"), [(b"", "caption is empty"),
                                              (b"\xff\xfe", "caption is not UTF-8 text")])
def test_shard_reader_refuses_empty_and_non_utf8_captions_naming_the_member(tmp_path, data, problem):
    png = encode_png(np.zeros((4, 4, 3), np.uint8))
    _tar(tmp_path / "s.tar", {"a.rgb.png": png, "a.txt": b"a cube", "b.rgb.png": png, "b.txt": data,
                              "c.rgb.png": png, "c.txt": b"a cone"})
    with pytest.raises(ValueError, match=rf"s\.tar:b\.txt: {problem}"):
        list(ShardDataset(tmp_path, modalities=("rgb", "caption")))
    skipping = ShardDataset(tmp_path, modalities=("rgb", "caption"), on_error="skip")
    assert [s["caption"] for s in skipping] == ["a cube", "a cone"] and skipping.num_skipped == 1
