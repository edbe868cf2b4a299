"""End to end: `multimae pseudolabel` on rendered photos with tiny real-class networks, read back by
the data pipeline, pre-trained on; interruption and resumption; several processes; shards."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from multimae.cli.main import main
from multimae.data import FolderDataset, ShardDataset, write_shard
from multimae.pseudolabel import (
    Labeler,
    PseudolabelConfig,
    build_labeler,
    register_labeler,
    run_pseudolabel,
)

from .conftest import world_photo

torch.set_num_threads(1)
GOOD = ["gray", "odd", "scene0", "scene1", "scene2", "scene3"]


def _cli_args(photos: Path, out: Path, models: dict[str, Path], *extra: str) -> list[str]:
    return ["pseudolabel", "--images", str(photos), "--out", str(out), "--tasks", "depth,semseg",
            "--model", f"depth={models['dpt-hybrid']}", "--model", f"semseg={models['mask2former-coco-panoptic']}",
            "--device", "cpu", "--workers", "0", "--batch-size", "2", "--quiet", *extra]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png")) + sorted(root.rglob("*.jpg"))}


def test_pseudolabel_a_photo_folder_then_pretrain_on_it(photo_folder, tmp_path, tiny_models, capsys):
    out = tmp_path / "labelled"
    assert main(_cli_args(photo_folder, out, tiny_models)) == 0
    printed = capsys.readouterr().out
    assert "6 images labelled" in printed and "1 unreadable skipped" in printed and "broken.jpg" in printed
    assert f"multimae pretrain data.source=folder data.root={out} " in printed
    assert "'model.modality_overrides={semseg: {num_channels: 133}}'" in printed

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "folder" and manifest["num_classes"] == 133 and len(manifest["classes"]) == 133
    assert manifest["labelers"]["depth"]["labeler"] == "dpt-hybrid"
    assert manifest["labelers"]["depth"]["model"] == str(tiny_models["dpt-hybrid"].resolve())
    assert manifest["labelers"]["depth"]["model_class"] == "DPTForDepthEstimation"
    assert manifest["labelers"]["semseg"]["model_class"] == "Mask2FormerForUniversalSegmentation"
    assert manifest["depth"]["scale"] == 65535.0
    split = manifest["splits"]["train"]
    assert split["complete"] and split["count"] == 6 and split["skipped"] == [str(photo_folder / "broken.jpg")]

    # The originals that the pipeline reads are kept byte for byte; the grayscale one became RGB.
    assert (out / "train/rgb/scene3.jpg").read_bytes() == (photo_folder / "scene3.jpg").read_bytes()
    assert Image.open(out / "train/rgb/gray.png").mode == "RGB"

    data = FolderDataset(out, "train", ("rgb", "depth", "semseg"))
    assert data.keys == GOOD and data.num_classes == 133
    for i in range(len(data)):
        s = data[i]
        assert s["rgb"].shape[-2:] == s["depth"].shape[-2:] == s["semseg"].shape
        valid = s["depth"][torch.isfinite(s["depth"])]
        assert valid.numel() > 0 and valid.max() == 1.0 and valid.min() > 0  # relative depth, farthest = 1
    assert tuple(data[data.keys.index("odd")]["semseg"].shape) == (37, 50)

    # The printed hint, as a user would paste it (no val split: samples are held out), at a tiny size.
    hint = next(line for line in printed.splitlines() if line.startswith("pre-train on it: multimae pretrain "))
    command = shlex.split(hint.removeprefix("pre-train on it: multimae "))
    tiny = ["model.encoder={dim: 32, depth: 1, num_heads: 2, image_size: 32, patch_size: 8}",
            "model.decoder={dim: 16, depth: 1, num_heads: 2}", "data.image_size=32", "data.batch_size=4",
            "data.num_workers=0", "masking.num_visible=8", "train.log_every=1", "train.precision=fp32"]
    assert main([command[0], "--quiet", *command[1:], *tiny, f"train.out_dir={tmp_path}", "train.name=run",
                 "train.steps=2"]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    assert report["steps"] == 2 and report["val_data"].startswith("1 sample held out")
    assert (tmp_path / "run" / "reconstructions.png").exists()
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [m for m in metrics if m.get("kind", "train") == "train" and "depth" in m]
    assert losses and all(np.isfinite(m["depth"]) and np.isfinite(m["semseg"]) for m in losses)


class Counting(Labeler):
    """Wraps a labeler; counts which images it labelled; can stop the run after ``fail_after`` calls."""

    def __init__(self, inner: Labeler, fail_after: int | None = None) -> None:
        self.inner, self.fail_after, self.seen, self.calls = inner, fail_after, [], 0
        self.modality, self.name = inner.modality, inner.name  # type: ignore[misc]
        self.loaded, self.batch_size = False, inner.batch_size

    def load(self) -> None:
        self.inner.ensure_loaded()

    def predict(self, images):
        raise AssertionError("not used")

    def __call__(self, images):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("interrupted")
        self.calls += 1
        out = self.inner(images)
        self.seen += [im.tobytes() for im in images]
        return out

    @property
    def num_classes(self):
        return self.inner.num_classes

    @property
    def class_names(self):
        return self.inner.class_names

    def info(self):
        return self.inner.info()


def _labelers(models: dict[str, Path], fail_after: int | None = None) -> dict[str, Counting]:
    return {
        "depth": Counting(build_labeler("depth", "depth-anything-small", str(models["depth-anything-small"]),
                                        batch_size=2), fail_after),
        "semseg": Counting(build_labeler("semseg", "segformer-ade20k", str(models["segformer-ade20k"]),
                                         batch_size=2)),
    }


def test_an_interrupted_run_resumes_and_equals_an_uninterrupted_one(photo_folder, tmp_path, tiny_models):
    for i in range(6, 12):  # 12 good images and a broken one, read in chunks of 8 (batch 2 x CHUNK_BATCHES)
        Image.fromarray(world_photo(i)).save(photo_folder / f"more{i}.png")
    config = {"images": str(photo_folder), "workers": 0, "batch_size": 2, "progress": False}

    whole = _labelers(tiny_models)
    run_pseudolabel(PseudolabelConfig(out=str(tmp_path / "whole"), **config), whole)

    # A crash at the second depth call: the first chunk (7 good images and the broken one) is on disk,
    # nothing half-written.
    first = _labelers(tiny_models, fail_after=1)
    with pytest.raises(KeyboardInterrupt):
        run_pseudolabel(PseudolabelConfig(out=str(tmp_path / "resumed"), **config), first)
    partial = _files(tmp_path / "resumed")
    assert not list((tmp_path / "resumed").rglob("*.tmp"))
    assert sum(k.startswith("train/depth/") for k in partial) == 7
    # Then a run told to stop after 3 images (the broken one, tried again, is among them), then one that finishes.
    second = _labelers(tiny_models)
    report = run_pseudolabel(PseudolabelConfig(out=str(tmp_path / "resumed"), max_images=3, **config), second)
    assert not report.progress.complete and not report.split_complete
    assert report.progress.labelled == 2 and report.progress.skipped == [str(photo_folder / "broken.jpg")]
    third = _labelers(tiny_models)
    report = run_pseudolabel(PseudolabelConfig(out=str(tmp_path / "resumed"), **config), third)
    assert report.progress.complete and report.split_complete and report.progress.done == 12

    for modality in ("depth", "semseg"):
        once = first[modality].seen + second[modality].seen + third[modality].seen
        assert len(once) == len(set(once)) == 12  # every image labelled exactly once
        assert sorted(once) == sorted(whole[modality].seen)
    assert _files(tmp_path / "resumed") == _files(tmp_path / "whole")  # byte for byte
    m1 = json.loads((tmp_path / "whole" / "manifest.json").read_text())
    m2 = json.loads((tmp_path / "resumed" / "manifest.json").read_text())
    assert m1["splits"] == m2["splits"] and m1["labelers"] == m2["labelers"]


def test_processes_label_disjoint_slices_and_the_last_one_completes_the_manifest(photo_folder, tmp_path, tiny_models,
                                                                                monkeypatch):
    out = tmp_path / "out"
    seen = []
    for rank in (1, 0):
        labelers = _labelers(tiny_models)
        if rank == 1:  # as torchrun would start it
            monkeypatch.setenv("RANK", "1")
            monkeypatch.setenv("WORLD_SIZE", "2")
            config = PseudolabelConfig(out=str(out), images=str(photo_folder), workers=0, progress=False)
        else:  # or as one job of a scheduler array
            monkeypatch.delenv("RANK")
            monkeypatch.delenv("WORLD_SIZE")
            config = PseudolabelConfig(out=str(out), images=str(photo_folder), workers=2, rank=0, world_size=2,
                                       progress=False)  # decoding in worker processes
        report = run_pseudolabel(config, labelers)
        assert report.world_size == 2 and report.rank == rank
        seen.append(labelers["depth"].seen)
        manifest = json.loads((out / "manifest.json").read_text())
        assert report.split_complete == (rank == 0) == manifest["splits"]["train"]["complete"]
    assert len(seen[0]) == len(seen[1]) == 3 and not set(seen[0]) & set(seen[1])
    assert manifest["splits"]["train"]["count"] == 6 and manifest["splits"]["train"]["processes"] == 2
    assert FolderDataset(out, "train", ("rgb", "depth", "semseg")).keys == GOOD


def test_a_different_labeler_cannot_resume_into_the_same_output(photo_folder, tmp_path, tiny_models):
    args = _cli_args(photo_folder, tmp_path / "out", tiny_models, "--max-images", "2", "--set", "depth.max_depth_ratio=50")
    assert main(args) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["labelers"]["depth"]["settings"] == {"resolution": None, "output": "auto", "max_depth_ratio": 50.0}
    assert manifest["labelers"]["depth"]["predicts"] == "disparity" and not manifest["splits"]["train"]["complete"]
    swapped = [a.replace(str(tiny_models["dpt-hybrid"]), str(tiny_models["depth-anything-small"])) for a in args]
    with pytest.raises(SystemExit, match="its depth labels were made by"):
        main([*swapped, "--labeler", "depth=depth-anything-small"])
    with pytest.raises(SystemExit, match="no built-in normals labeler"):
        main(["pseudolabel", "--images", str(photo_folder), "--out", str(tmp_path / "n"), "--tasks", "normals"])


@register_labeler
class Brightness(Labeler):
    """A user's own labeler in a few lines: 'depth' from brightness, 'normals' facing the camera."""

    name = "test-brightness"
    modality = "depth"
    default_model = "none"

    def load(self) -> None:
        pass

    def predict(self, images):
        return [(256.0 - im.float().mean(0)).cpu().numpy() for im in images]


@register_labeler
class Facing(Labeler):
    name = "test-facing"
    modality = "normals"
    default_model = "none"

    def load(self) -> None:
        pass

    def predict(self, images):
        return [np.broadcast_to(np.array([0.0, 0.0, -1.0], np.float32), (*im.shape[-2:], 3)) for im in images]


def test_shards_in_shards_out_with_labelers_of_ones_own(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    good = [(f"{i:04d}", {"jpg": _jpeg(world_photo(i)), "cls": b"3"}) for i in range(5)]
    write_shard(src / "a.tar", good[:3] + [("0099", {"jpg": b"broken"})])
    write_shard(src / "b.tar", good[3:])
    (src / "c.tar").write_bytes(b"not a tar at all")
    out = tmp_path / "out"
    assert main(["pseudolabel", "--shards", str(src), "--out", str(out), "--tasks", "depth,normals", "--labeler",
                 "depth=test-brightness", "--labeler", "normals=test-facing", "--device", "cpu", "--workers", "0",
                 "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    split = manifest["splits"]["train"]
    assert split["count"] == 5 and len(split["skipped"]) == 2 and split["complete"]
    assert [s["path"] for s in split["shards"]] == ["a.tar", "b.tar"]
    samples = list(ShardDataset(out / "train", ("rgb", "depth", "normals")))
    assert sorted(s["key"] for s in samples) == [k for k, _ in good] and all(s["label"] == 3 for s in samples)
    for s in samples:
        assert s["depth"].shape == (1, 48, 48) and torch.allclose(s["normals"][2], torch.tensor(-1.0), atol=0.01)


def _jpeg(rgb: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_auto_precision_keeps_the_precision_of_the_labels_already_there(tmp_path, capsys):
    from multimae.data.manifest import write_manifest
    from multimae.pseudolabel.job import label_precision

    write_manifest(tmp_path, {"generator": "multimae.pseudolabel", "format": "folder",
                              "labelers": {"depth": {"labeler": "dpt-hybrid", "precision": "bf16"}}})
    auto = PseudolabelConfig(out=str(tmp_path), images="x", tasks=("depth",))
    assert auto.precision == "auto"
    assert label_precision(auto, torch.device("cpu")) == "bf16"
    assert "precision: bf16, as the labels already in" in capsys.readouterr().out
    explicit = PseudolabelConfig(out=str(tmp_path), images="x", tasks=("depth",), precision="fp32")
    assert label_precision(explicit, torch.device("cpu")) == "fp32"
