"""`multimae data import` on small synthetic files written in the real formats: NYUv2's MATLAB
v7.3 (HDF5, column-major axes), ADE20K's images + PNG annotations, ImageNet's class folders;
read back by the folder reader, resumed, and fine-tuned on."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from multimae.cli.main import main
from multimae.data import FolderDataset
from multimae.data.importers import import_ade20k, import_imagenet, import_nyuv2

h5py = pytest.importorskip("h5py")
scipy_io = pytest.importorskip("scipy.io")

N, H, W, RAW = 6, 32, 40, 10  # frames, height, width, raw label count
RAW_NAMES = [f"thing{i}" for i in range(1, RAW + 1)]
MAPPING = np.array([1, 1, 2, 2, 3, 3, 4, 4, 4, 2])  # raw label 1..10 -> class 1..4


def _frames():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (N, H, W, 3), dtype=np.uint8)
    rgb[:, :4, :, 0] = 255  # a red band at the top: a transposition would move it to the left
    depth = rng.uniform(0.5, 9.0, (N, H, W)).astype(np.float32)
    labels = rng.integers(0, RAW + 1, (N, H, W)).astype(np.uint16)  # 0 = unlabelled
    return rgb, depth, labels


def write_nyu_mat(path):
    """A small nyu_depth_v2_labeled.mat as MATLAB v7.3 writes it: HDF5 after a 512-byte header,
    every array with its axes reversed (column-major), names as references to uint16 char arrays."""
    rgb, depth, labels = _frames()
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset("images", data=rgb.transpose(0, 3, 2, 1))  # (N, 3, W, H)
        f.create_dataset("depths", data=depth.transpose(0, 2, 1))  # (N, W, H)
        f.create_dataset("labels", data=labels.transpose(0, 2, 1))
        refs = f.create_group("#refs#")
        names = []
        for i, name in enumerate(RAW_NAMES):
            chars = refs.create_dataset(f"n{i}", data=np.array([[ord(c)] for c in name], np.uint16))
            names.append(chars.ref)
        f.create_dataset("names", data=np.array([names], dtype=h5py.ref_dtype))  # (1, 894) in the real file
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .")
    return rgb, depth, labels


@pytest.fixture
def nyu(tmp_path):
    mat = tmp_path / "nyu_depth_v2_labeled.mat"
    frames = write_nyu_mat(mat)
    scipy_io.savemat(tmp_path / "splits.mat", {"trainNdxs": np.array([[1], [3], [4], [6]]),
                                                "testNdxs": np.array([[2], [5]])})
    return mat, frames


def test_nyuv2_frames_depth_classes_and_the_official_split(nyu, tmp_path, capsys):
    mat, (rgb, depth, labels) = nyu
    np.save(tmp_path / "map.npy", MAPPING)
    out = tmp_path / "out"
    assert main(["data", "import", "nyuv2", str(mat), "--out", str(out), "--splits", str(tmp_path / "splits.mat"),
                 "--mapping", str(tmp_path / "map.npy"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 4 train, 2 val samples" in printed and "official: splits.mat" in printed
    assert "multimae finetune --task depth" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_classes"] == 4 and manifest["semseg"]["ignore_index"] == 255
    assert all(s["complete"] for s in manifest["splits"].values())
    train = FolderDataset(out, "train", ("rgb", "depth", "semseg"))
    val = FolderDataset(out, "val", ("rgb", "depth", "semseg"))
    assert train.keys == ["0001", "0003", "0004", "0006"] and val.keys == ["0002", "0005"]
    s = val[0]  # frame 2
    assert s["rgb"].shape == (3, H, W)  # H x W, not transposed
    torch.testing.assert_close(s["rgb"], torch.from_numpy(rgb[1]).permute(2, 0, 1).float() / 255)
    torch.testing.assert_close(s["depth"][0], torch.from_numpy(depth[1]), atol=6e-4, rtol=0)  # metres, mm steps
    lut = np.concatenate([[0], MAPPING])
    expected = np.where(labels[1] == 0, 255, lut[labels[1]] - 1)
    assert torch.equal(s["semseg"], torch.from_numpy(expected.astype(np.int64)))


def test_nyuv2_mapping_mat_without_splits_and_raw_labels(nyu, tmp_path, capsys):
    mat, (_, _, labels) = nyu
    scipy_io.savemat(tmp_path / "classMapping40.mat", {"mapClass": MAPPING[None],
                                                        "className": np.array([["a", "b", "c", "d"]], dtype=object)})
    out = import_nyuv2(mat, tmp_path / "mapped", mapping=tmp_path / "classMapping40.mat", progress=False)
    assert out["classes"] == ["a", "b", "c", "d"] and "NOT the official split" in out["split_source"]
    assert out["splits"]["train"]["count"] + out["splits"]["val"]["count"] == N
    raw = import_nyuv2(mat, tmp_path / "raw", progress=False)  # no mapping: the raw labels, said so
    assert raw["num_classes"] == RAW and raw["classes"] == RAW_NAMES and "NOT the 40-class" in raw["class_source"]
    key = FolderDataset(tmp_path / "raw", "train", ("semseg",)).keys[0]
    got = FolderDataset(tmp_path / "raw", "train", ("semseg",))[0]["semseg"]
    i = int(key) - 1
    assert torch.equal(got, torch.from_numpy(np.where(labels[i] == 0, 255, labels[i].astype(np.int64) - 1)))
    with pytest.raises(SystemExit, match="not a MATLAB v7.3"):
        (tmp_path / "v5.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
        main(["data", "import", "nyuv2", str(tmp_path / "v5.mat"), "--out", str(tmp_path / "x"), "--quiet"])


def test_nyuv2_import_resumes_and_refuses_other_settings(nyu, tmp_path):
    mat, _ = nyu
    out = tmp_path / "out"
    import_nyuv2(mat, out, splits=tmp_path / "splits.mat", progress=False)
    first = {p: p.read_bytes() for p in sorted(out.rglob("*.png"))}
    victim = out / "val" / "semseg" / "0005.png"
    victim.unlink()  # as if killed before the frame's last file
    (out / "val" / "rgb" / "0005.png").write_bytes(b"half")
    import_nyuv2(mat, out, splits=tmp_path / "splits.mat", progress=False)
    assert {p: p.read_bytes() for p in sorted(out.rglob("*.png"))} == first
    with pytest.raises(ValueError, match="existing data has split_source"):
        import_nyuv2(mat, out, progress=False)


def test_finetune_on_an_imported_nyuv2(nyu, tmp_path):
    mat, _ = nyu
    np.save(tmp_path / "map.npy", MAPPING)
    out = tmp_path / "nyu"
    import_nyuv2(mat, out, splits=tmp_path / "splits.mat", mapping=tmp_path / "map.npy", progress=False)
    tiny = ["model.encoder={dim: 32, depth: 4, num_heads: 2, image_size: 32, patch_size: 8}", "data.image_size=32",
            "data.batch_size=2", "data.num_workers=0", "train.log_every=1", "train.precision=fp32", "train.steps=2",
            "head.embed_dim=32", "head.feature_dim=8", "head.layer_dims=[4,8,8,16]", "data.source=folder",
            f"data.root={out}", f"train.out_dir={tmp_path}"]
    assert main(["finetune", "--quiet", "--task", "depth", "--inputs", "rgb", *tiny, "train.name=depth"]) == 0
    report = json.loads((tmp_path / "depth" / "report.json").read_text())
    assert report["steps"] == 2 and np.isfinite(report["val"]["abs_rel"])
    assert main(["finetune", "--quiet", "--task", "segmentation", "--inputs", "rgb", *tiny, "task.num_classes=4",
                 "train.name=seg"]) == 0
    report = json.loads((tmp_path / "seg" / "report.json").read_text())
    assert 0 <= report["val"]["miou"] <= 1


def test_ade20k_layout_ids_shifted_and_unlabelled_ignored(tmp_path, capsys):
    src = tmp_path / "ADEChallengeData2016"
    rng = np.random.default_rng(0)
    annotations = {}
    for split, prefix, count in (("training", "ADE_train", 3), ("validation", "ADE_val", 2)):
        (src / "images" / split).mkdir(parents=True)
        (src / "annotations" / split).mkdir(parents=True)
        for i in range(1, count + 1):
            name = f"{prefix}_{i:08d}"
            Image.fromarray(rng.integers(0, 256, (24, 36, 3), dtype=np.uint8)).save(src / "images" / split / f"{name}.jpg")
            ann = rng.integers(0, 151, (24, 36)).astype(np.uint8)
            Image.fromarray(ann).save(src / "annotations" / split / f"{name}.png")
            annotations[name] = ann
    rows = ["Idx\tRatio\tTrain\tVal\tName"] + [f"{i}\t0.1\t1\t1\tname{i};other" for i in range(1, 151)]
    (src / "objectInfo150.txt").write_text("\n".join(rows) + "\n")
    out = tmp_path / "ade"
    assert main(["data", "import", "ade20k", str(src), "--out", str(out), "--quiet"]) == 0
    assert "wrote 3 train, 2 val samples" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"][:2] == ["name1", "name2"] and manifest["num_classes"] == 150
    val = FolderDataset(out, "val", ("rgb", "semseg"))
    assert val.keys == ["ADE_val_00000001", "ADE_val_00000002"]
    ann = annotations["ADE_val_00000002"]
    expected = np.where(ann == 0, 255, ann.astype(np.int64) - 1)
    assert torch.equal(val[1]["semseg"], torch.from_numpy(expected)) and val[1]["rgb"].shape == (3, 24, 36)
    assert (out / "val/rgb/ADE_val_00000002.jpg").read_bytes() == (
        src / "images/validation/ADE_val_00000002.jpg").read_bytes()
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(src / "annotations/training/ADE_train_00000001.png")
    (out / "train/semseg/ADE_train_00000001.png").unlink()
    with pytest.raises(ValueError, match="does not match"):
        import_ade20k(src, out, progress=False)


def test_imagenet_class_folders(tmp_path):
    src = tmp_path / "imagenet"
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("val", 1)):
        for wnid in ("n01440764", "n01443537"):
            (src / split / wnid).mkdir(parents=True)
            for i in range(count):
                im = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
                (im.convert("CMYK") if i == 1 else im).save(src / split / wnid / f"{wnid}_{i}.JPEG")
    (src / "train" / "n01440764" / "bad.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="bad.JPEG: cannot decode"):
        import_imagenet(src, tmp_path / "strict", progress=False)
    manifest = import_imagenet(src, tmp_path / "out", on_error="skip", progress=False)
    assert manifest["label_names"] == ["n01440764", "n01443537"] and manifest["splits"]["train"]["count"] == 6
    assert manifest["splits"]["train"]["skipped"][0].endswith("bad.JPEG")
    data = FolderDataset(tmp_path / "out", "val", ("rgb",))
    assert [data[i]["label"] for i in range(len(data))] == [0, 1]
    assert FolderDataset(tmp_path / "out", "train", ("rgb",))[1]["rgb"].shape == (3, 20, 30)  # CMYK read as RGB
    flat = tmp_path / "flat"
    (flat / "train" / "n0").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(flat / "train" / "n0" / "a.JPEG")
    (flat / "val").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(flat / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(ValueError, match="sort them into one folder per class"):
        import_imagenet(flat, tmp_path / "o", progress=False)
