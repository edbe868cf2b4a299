"""Feature labelers: a global vector per image from a transformers backbone or from our own encoder,
written by `multimae pseudolabel` and read back by the data pipeline as a ``vector`` modality."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from multimae.cli.main import main
from multimae.config import RunConfig, load_config, to_yaml
from multimae.data import FolderDataset
from multimae.engine.checkpoint import export_safetensors
from multimae.model import MultiMAE
from multimae.pseudolabel import build_labeler
from multimae.tasks.probe import encoder_features

from .conftest import transformers, world_photo

torch.set_num_threads(1)


def tiny_dinov2(path: Path) -> Path:
    config = transformers.Dinov2Config(hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                       image_size=28, patch_size=14)
    torch.manual_seed(0)
    transformers.Dinov2Model(config).save_pretrained(path)
    transformers.BitImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28},
                                   do_center_crop=False).save_pretrained(path)
    return path


def encoder_run(tmp_path: Path) -> tuple[Path, MultiMAE]:
    cfg = load_config(RunConfig, None, [
        "model.encoder={dim: 16, depth: 1, num_heads: 2, image_size: 32, patch_size: 8}",
        "model.decoder={dim: 16, depth: 1, num_heads: 2}", "model.inputs=[rgb]", "model.outputs=[rgb]",
        "model.modality_overrides={}"])
    torch.manual_seed(1)
    model = MultiMAE(cfg.model.build()).eval()
    run = tmp_path / "pre"
    run.mkdir()
    (run / "config.yaml").write_text(to_yaml(cfg))
    export_safetensors(model, run / "model.safetensors")
    return run, model


def photos(tmp_path: Path, count: int = 3) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(count):
        Image.fromarray(world_photo(i, 40)).save(folder / f"scene{i}.png")
    return folder


def test_a_transformers_backbone_gives_one_vector_of_its_width_per_image(tmp_path):
    labeler = build_labeler("feature", "hf-features", str(tiny_dinov2(tmp_path / "dino")), batch_size=2)
    images = [world_photo(i, 40) for i in range(3)]
    out = labeler(images)
    assert labeler.feature_dim == 24
    assert [o.shape for o in out] == [(1, 24)] * 3 and all(o.dtype == np.float32 for o in out)
    # the pooled output of the model itself, on the processor's input (28 px, as the processor resizes)
    processor = transformers.AutoImageProcessor.from_pretrained(tmp_path / "dino")
    pixel = processor(images=images[1], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        want = labeler.model(pixel_values=pixel).pooler_output[0].numpy()
    np.testing.assert_allclose(out[1][0], want, atol=0.05)  # resampling differs slightly from the processor's
    assert not np.allclose(out[0], out[1])
    # a batch of one gives the same vector as a batch of three (fixed-size micro-batches)
    np.testing.assert_allclose(labeler(images[2:])[0], out[2], atol=1e-6)


def test_our_encoder_labels_the_features_linear_probes_use(tmp_path):
    run, model = encoder_run(tmp_path)
    labeler = build_labeler("feature", "encoder", str(run), batch_size=2)
    images = [world_photo(i, 32) for i in range(3)]
    out = labeler(images)
    assert labeler.feature_dim == 16 and [o.shape for o in out] == [(1, 16)] * 3
    x = torch.stack([torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images])
    np.testing.assert_allclose(np.concatenate(out), encoder_features(model, x).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="pooling must be one of"):
        build_labeler("feature", "encoder", str(run), pooling="max")
    with pytest.raises(ValueError, match="cannot load"):
        build_labeler("feature", "encoder", str(tmp_path / "nothing"))(images)


def test_pseudolabel_writes_features_the_folder_reader_returns(tmp_path, capsys):
    run, _ = encoder_run(tmp_path)
    out = tmp_path / "labelled"
    assert main(["pseudolabel", "--images", str(photos(tmp_path)), "--out", str(out), "--tasks", "feature",
                 "--labeler", "feature=encoder", "--model", f"feature={run}", "--device", "cpu", "--workers", "0",
                 "--batch-size", "2", "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["feature"]["num_channels"] == 16 and manifest["labelers"]["feature"]["labeler"] == "encoder"
    files = sorted(p.name for p in (out / "train" / "feature").iterdir())
    assert files == ["scene0.npy", "scene1.npy", "scene2.npy"]
    data = FolderDataset(out, "train", ("rgb", "feature"))
    sample = data[0]
    assert sample["feature"].shape == (1, 16) and sample["feature"].dtype == torch.float32
    np.testing.assert_array_equal(sample["feature"].numpy(), np.load(out / "train" / "feature" / "scene0.npy"))
