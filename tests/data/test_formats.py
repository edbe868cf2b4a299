import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from multimae.data.codecs import encode_npy, encode_png
from multimae.data.folder import FolderDataset
from multimae.data.generated import WorldDataset
from multimae.data.shards import ShardDataset, iter_shard
from multimae.data.writer import GenerateConfig, generate
SIZE = 24  # as in conftest.py

ALL = ("rgb", "depth", "normals", "semseg", "instance", "caption", "boxes", "metadata", "palette")
WORLD = tuple(m for m in ALL if m != "caption")  # the caption comes with every world sample


def _same(a, b):
    for k in (*ALL, "label"):
        if isinstance(a[k], torch.Tensor):
            assert a[k].dtype == b[k].dtype and torch.equal(a[k].nan_to_num(-1), b[k].nan_to_num(-1)), k
        else:
            assert a[k] == b[k], k


def test_folder_round_trips_exactly(folder_root):
    ds = FolderDataset(folder_root, "train", ALL)
    world = WorldDataset("train", size=SIZE, length=6, modalities=WORLD)
    assert len(ds) == 6 and ds.has_classes
    for i in range(len(ds)):
        sample = ds[i]
        _same(sample, world[int(sample["key"].split("/")[1])])


def test_shards_round_trip_exactly(shard_root):
    world = WorldDataset("train", size=SIZE, length=20, modalities=WORLD)
    samples = list(ShardDataset(shard_root / "train"))
    assert [s["key"] for s in samples] == [f"{i:08d}" for i in range(20)]
    for s in samples:
        _same(s, world[int(s["key"])])


def test_manifest(folder_root):
    import json

    m = json.loads((folder_root / "manifest.json").read_text())
    assert m["splits"]["train"]["complete"] and m["splits"]["train"]["count"] == 6
    assert m["depth"]["scale"] == 1000.0 and len(m["palette"]) == m["num_classes"] == len(m["classes"])


def test_generate_resumes(tmp_path):
    generate(tmp_path, GenerateConfig(count=3, size=SIZE, fmt="shards", shard_size=2), progress=False)
    first = (tmp_path / "train" / "shard-000000.tar").read_bytes()
    (tmp_path / "train" / "shard-000001.tar").unlink()  # interrupted run
    generate(tmp_path, GenerateConfig(count=5, size=SIZE, fmt="shards", shard_size=2), progress=False)
    assert (tmp_path / "train" / "shard-000000.tar").read_bytes() == first
    assert len(list(ShardDataset(tmp_path / "train"))) == 5
    with pytest.raises(ValueError, match="size"):
        generate(tmp_path, GenerateConfig(count=5, size=SIZE * 2, fmt="shards", shard_size=2), progress=False)
    with pytest.raises(ValueError, match="class_colors"):  # another world is not a resume
        generate(tmp_path, GenerateConfig(count=5, size=SIZE, fmt="shards", shard_size=2, class_colors=0.8),
                 progress=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    del manifest["class_colors"]  # as written before the setting existed: the shape-only world
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    generate(tmp_path, GenerateConfig(count=5, size=SIZE, fmt="shards", shard_size=2), progress=False)


def test_folder_generate_resumes(tmp_path):
    generate(tmp_path, GenerateConfig(count=2, size=SIZE), progress=False)
    rgb = sorted((tmp_path / "train" / "rgb").glob("*/*.png"))
    stamp = rgb[0].stat().st_mtime_ns
    generate(tmp_path, GenerateConfig(count=4, size=SIZE), progress=False)
    assert rgb[0].stat().st_mtime_ns == stamp and len(FolderDataset(tmp_path, modalities=ALL)) == 4


def _flat_copy(folder_root, tmp_path, modalities=("rgb", "depth", "semseg")):
    for m in modalities:
        out = tmp_path / "val" / m
        out.mkdir(parents=True)
        for f in (folder_root / "train" / m).glob("*/*"):
            shutil.copy(f, out / f.name)
    return tmp_path


def test_flat_layout_without_class_level(folder_root, tmp_path):
    root = _flat_copy(folder_root, tmp_path)
    ds = FolderDataset(root, "val", ("rgb", "depth", "semseg"), num_classes=9)
    assert len(ds) == 6 and "label" not in ds[0]
    with pytest.raises(ValueError, match="class_level=True"):
        FolderDataset(root, "val", ("rgb",), class_level=True)
    with pytest.raises(ValueError, match="class_level=False"):
        FolderDataset(folder_root, "train", ("rgb",), class_level=False)


def test_clear_errors_name_the_file(folder_root, tmp_path):
    root = _flat_copy(folder_root, tmp_path)
    with pytest.raises(ValueError, match="found 0 normals files"):
        (root / "val" / "normals").mkdir()
        FolderDataset(root, "val", ("rgb", "normals"))
    victim = sorted((root / "val" / "depth").iterdir())[0]
    victim.unlink()
    with pytest.raises(ValueError, match=r"depth: 1 sample\(s\).*missing"):
        FolderDataset(root, "val", ("rgb", "depth"))
    skipping = FolderDataset(root, "val", ("rgb", "depth"), on_error="skip")
    assert len(skipping) == 5 and skipping.num_skipped == 1
    bad = sorted((root / "val" / "rgb").iterdir())[1]
    bad.write_bytes(b"not a png")
    ds = FolderDataset(root, "val", ("rgb",))
    with pytest.raises(ValueError, match=bad.name):
        ds[1]
    skipping = FolderDataset(root, "val", ("rgb",), on_error="skip")
    assert skipping[1]["key"] == ds.keys[2] and skipping.num_skipped == 1
    with pytest.raises(ValueError, match="split folder not found"):
        FolderDataset(root, "test", ("rgb",))


def test_size_mismatch_class_overflow_and_bad_depth(tmp_path):
    root = tmp_path / "d" / "train"
    for m in ("rgb", "semseg", "depth"):
        (root / m).mkdir(parents=True)
    (root / "rgb" / "a.png").write_bytes(encode_png(np.zeros((8, 8, 3), np.uint8)))
    (root / "semseg" / "a.png").write_bytes(encode_png(np.full((8, 8), 300, np.uint16)))
    (root / "depth" / "a.npy").write_bytes(encode_npy(np.full((8, 8), np.inf, np.float32)))
    with pytest.raises(ValueError, match=r"a\.png: class id 300 .* 40"):
        FolderDataset(tmp_path / "d", "train", ("rgb", "semseg"), num_classes=40)[0]
    assert int(FolderDataset(tmp_path / "d", "train", ("semseg",), num_classes=400)[0]["semseg"].max()) == 300
    with pytest.raises(ValueError, match=r"a\.npy: depth has NaN or inf"):
        FolderDataset(tmp_path / "d", "train", ("depth",))[0]
    (root / "semseg" / "a.png").write_bytes(encode_png(np.zeros((4, 8), np.uint8)))
    with pytest.raises(ValueError, match="different sizes"):
        FolderDataset(tmp_path / "d", "train", ("rgb", "semseg"))[0]


def test_jpeg_rgb_and_palette_semseg(tmp_path):
    root = tmp_path / "train"
    (root / "rgb").mkdir(parents=True)
    (root / "semseg").mkdir()
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(root / "rgb" / "x.jpg")
    Image.fromarray(np.full((8, 8), 7, np.uint8)).convert("P").save(root / "semseg" / "x.png")
    s = FolderDataset(tmp_path, "train", ("rgb", "semseg"))[0]
    assert s["rgb"].shape == (3, 8, 8) and int(s["semseg"][0, 0]) == 7


def test_corrupt_shard_names_the_file(tmp_path):
    path = tmp_path / "broken.tar"
    path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ValueError, match="broken.tar"):
        list(iter_shard(path))


def test_one_file_name_table_names_every_stored_modality():
    from multimae.data.codecs import LABEL_SUFFIX, MEMBER_TO_MODALITY, MODALITIES, READABLE, SUFFIX, member_suffix

    assert set(READABLE) == set(MODALITIES) and SUFFIX["depth"] == "png" and SUFFIX["caption"] == "txt"
    assert [member_suffix(m) for m in ("rgb", "depth", "caption")] == ["rgb.png", "depth.png", "txt"]
    assert MEMBER_TO_MODALITY["depth.npy"] == "depth" and LABEL_SUFFIX not in MEMBER_TO_MODALITY
    assert member_suffix("boxes") == "boxes.txt" and SUFFIX["metadata"] == "txt"  # beside the caption's txt


def test_stored_boxes_are_checked_and_sequences_may_be_empty(folder_root, tmp_path):
    root = _flat_copy(folder_root, tmp_path, ("rgb", "boxes", "palette"))
    boxes, palette = (sorted((root / "val" / m).iterdir()) for m in ("boxes", "palette"))
    boxes[0].write_text("")  # a scene without boxes
    palette[0].write_text("")
    sample = FolderDataset(root, "val", ("rgb", "boxes", "palette"))[0]
    assert sample["boxes"] == "" and sample["palette"] == ""
    boxes[1].write_text("v0=1 v1=2 v2=3 cube")
    with pytest.raises(ValueError, match=f"{boxes[1].name}: boxes: not a list of boxes"):
        FolderDataset(root, "val", ("rgb", "boxes"))[1]
    boxes[2].write_text(f"v0=1 v1=2 v2=3 v3={SIZE} cube")
    with pytest.raises(ValueError, match=f"boxes: box .* reaches outside the {SIZE}x{SIZE} \\(WxH\\) maps"):
        FolderDataset(root, "val", ("rgb", "boxes"))[2]
