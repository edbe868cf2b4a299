"""Rough edges found by running on real photos: odd sizes at native size, 16-bit grey, EXIF
orientation, misaligned inputs, foreign checkpoints, folders without a val split, incomplete data."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from multimae.cli.main import main
from multimae.convert import load_any, save_multimae
from multimae.data import FolderDataset
from multimae.data.codecs import read_image
from multimae.data.world import NUM_CLASSES
from multimae.engine.logger import dump_json
from multimae.inference import predict
from multimae.inference.inputs import fit_size
from multimae.model import MultiMAE
from multimae.pseudolabel.sources import decode_image

from conftest import tiny_config

TINY = [
    "model.encoder={dim: 32, depth: 1, num_heads: 2, image_size: 32, patch_size: 8}",
    "model.decoder={dim: 16, depth: 1, num_heads: 2}", "data.image_size=32", "data.batch_size=4",
    "data.num_workers=0", "masking.num_visible=8", "train.log_every=1", "train.precision=fp32",
]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MultiMAE(tiny_config(modality_overrides={"semseg": {"num_channels": NUM_CLASSES}})).eval()


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    return save_multimae(model, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def _png(array: np.ndarray, **info) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", **info)
    return buf.getvalue()


def _rotated_jpeg(rgb: np.ndarray, orientation: int = 6) -> bytes:
    """``rgb`` stored sideways with an EXIF tag saying how to display it (6: rotate 90° clockwise)."""
    im = Image.fromarray(rgb).transpose(Image.Transpose.ROTATE_90)  # what a phone stores
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


# ------------------------------------------------------------------ native size


@pytest.mark.parametrize("H, W, out_h, out_w", [(45, 70, 48, 72), (36, 43, 40, 40), (33, 35, 32, 32), (3, 5, 8, 8)])
def test_native_size_rounds_each_side_to_the_nearest_multiple(H, W, out_h, out_w):
    rgb = torch.rand(3, H, W)
    depth = torch.rand(1, H, W) + 1
    out, how = fit_size({"rgb": rgb, "depth": depth}, 32, 8, "native")
    assert out["rgb"].shape == (3, out_h, out_w) and out["depth"].shape == (1, out_h, out_w)
    assert f"{W}×{H} to {out_w}×{out_h} (W×H)" in how
    if out_h < H and out_w < W:  # centre crop: the middle pixels are unchanged
        top, left = (H - out_h) // 2, (W - out_w) // 2
        assert torch.equal(out["rgb"], rgb[:, top:top + out_h, left:left + out_w]) and "cropped" in how
    if out_h > H:  # padding: edges repeated for rgb, invalid for depth
        assert "padded" in how and torch.isnan(out["depth"][0, 0]).all()
        assert torch.equal(out["rgb"][:, 0], out["rgb"][:, (out_h - H) // 2])


def test_predict_native_size_takes_ordinary_photos_and_says_what_it_did(checkpoint, tmp_path, capsys):
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (45, 70, 3), dtype=np.uint8)).save(photo)
    assert main(["predict", "--checkpoint", str(checkpoint), "--rgb", str(photo), "--native-size",
                 "--out", str(tmp_path / "p")]) == 0
    assert "rounded from 70×45 to 72×48 (W×H)" in capsys.readouterr().out
    assert np.load(tmp_path / "p" / "rgb.npy").shape == (3, 48, 72)


def test_inputs_are_checked_before_the_checkpoint_is_loaded(tmp_path):
    """A bogus checkpoint path is never reached: the input problems are reported first."""
    rgb, depth = tmp_path / "rgb.png", tmp_path / "depth.png"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(rgb)
    Image.fromarray(np.full((40, 40), 1000, np.uint16)).save(depth)
    common = ["predict", "--checkpoint", str(tmp_path / "no-such.pth"), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit, match=r"different aspect ratios \(rgb 60×40, depth 40×40, W×H\)"):
        main([*common, "--rgb", str(rgb), "--depth", str(depth)])
    with pytest.raises(SystemExit, match="no such file"):
        main([*common, "--rgb", str(tmp_path / "missing.jpg")])
    Image.fromarray(np.full((20, 30), 1000, np.uint16)).save(depth)  # same framing, half the resolution
    with pytest.raises(SystemExit, match=r"different sizes \(rgb 60×40, depth 30×20, W×H\).*native"):
        main([*common, "--rgb", str(rgb), "--depth", str(depth), "--native-size"])


def test_inputs_of_different_aspect_ratios_are_refused_not_stretched(model):
    with pytest.raises(ValueError, match="different aspect ratios"):
        predict(model, {"rgb": torch.rand(3, 48, 64), "depth": torch.rand(1, 48, 48) + 1}, fit="crop")
    # the same framing at another resolution is fine (a depth sensor at half resolution)
    pred = predict(model, {"rgb": torch.rand(3, 48, 64), "depth": torch.rand(1, 24, 32) + 1})
    assert pred.inputs["depth"].shape == (1, 32, 32)


# ------------------------------------------------------------------ colour modes, 16 bits, EXIF


def test_16_bit_grey_is_scaled_not_clipped_and_every_conversion_is_named(model, tmp_path):
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    array, notes = read_image(_png(ramp), "grey16.png", rgb=True)
    assert array.dtype == np.uint8 and array.shape == (32, 32, 3)
    assert array.min() == 0 and array.max() == 255 and len(np.unique(array)) > 200  # not all white
    assert np.array_equal(array[..., 0], np.round(ramp / 257).astype(np.uint8)) and "16-bit" in notes[0]
    path = tmp_path / "grey16.png"
    path.write_bytes(_png(ramp))
    note = predict(model, {"rgb": path}).notes[0]
    assert "16-bit grey scaled to 8 bits" in note
    assert 0.45 < float(predict(model, {"rgb": path}).inputs["rgb"].mean()) < 0.55
    decoded = decode_image(_png(ramp), "grey16.png", readable_as_is=True)  # pseudolabel: re-encoded, same pixels
    assert not decoded.keep_bytes and np.array_equal(decoded.rgb, array)
    for mode, phrase in [("LA", "alpha"), ("RGBA", "alpha"), ("L", "grey"), ("CMYK", "CMYK"), ("P", "palette")]:
        im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).convert(mode)
        buf = io.BytesIO()
        im.save(buf, format="JPEG" if mode == "CMYK" else "PNG")
        rgb, notes = read_image(buf.getvalue(), f"x.{mode}", rgb=True)
        assert rgb.shape == (8, 8, 3) and any(phrase in n for n in notes), (mode, notes)


def test_exif_orientation_is_one_rule_for_predict_pseudolabel_and_the_readers(model, tmp_path):
    upright = np.zeros((16, 24, 3), np.uint8)
    upright[:4] = 255  # a white band at the top, as displayed
    data = _rotated_jpeg(upright)
    shown, notes = read_image(data, "phone.jpg", rgb=True)
    assert shown.shape == (16, 24, 3) and shown[:4].mean() > 200 and shown[8:].mean() < 30
    assert notes == ["EXIF orientation 6 applied"]
    # pseudolabel labels the displayed image (and does not keep the sideways bytes)
    decoded = decode_image(data, "phone.jpg", readable_as_is=True)
    assert not decoded.keep_bytes and np.array_equal(decoded.rgb, shown)
    # the training readers see it the same way, so a label map drawn on the displayed image aligns
    root = tmp_path / "data" / "train"
    (root / "rgb").mkdir(parents=True)
    (root / "semseg").mkdir()
    (root / "rgb" / "a.jpg").write_bytes(data)
    labels = np.zeros((16, 24), np.uint8)
    labels[:4] = 1
    (root / "semseg" / "a.png").write_bytes(_png(labels))
    sample = FolderDataset(tmp_path / "data", "train", ("rgb", "semseg"))[0]
    assert sample["rgb"].shape == (3, 16, 24) and sample["rgb"][:, :4].mean() > 0.8
    # predict too
    path = tmp_path / "phone.jpg"
    path.write_bytes(data)
    assert "EXIF orientation 6 applied" in predict(model, {"rgb": path}, fit="native").notes[0]
    assert predict(model, {"rgb": path}, fit="native").inputs["rgb"].shape == (3, 16, 24)


def test_readers_refuse_modalities_of_different_sizes(tmp_path):
    root = tmp_path / "data" / "train"
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    (root / "rgb" / "a.png").write_bytes(_png(np.zeros((16, 24, 3), np.uint8)))
    (root / "depth" / "a.png").write_bytes(_png(np.full((16, 16), 900, np.uint16)))
    with pytest.raises(ValueError, match=r"different sizes \(rgb 24×16, depth 16×16, W×H\)"):
        FolderDataset(tmp_path / "data", "train", ("rgb", "depth"))[0]


# ------------------------------------------------------------------ foreign checkpoints


def test_predict_prints_the_converters_report_and_input_order_can_be_given(tmp_path, capsys):
    torch.manual_seed(0)
    official = MultiMAE(tiny_config(inputs=("depth", "rgb"), outputs=("rgb", "depth"), modality_overrides={})).eval()
    state = dict(sorted(official.state_dict().items()))  # as a safetensors file stores them
    model, report = load_any(state, num_heads=2, decoder_num_heads=2)
    assert model.model_config.inputs == ("rgb", "depth") and "unknown" in report.inferred["inputs"]
    model, report = load_any(state, num_heads=2, decoder_num_heads=2, input_order=("depth", "rgb"))
    assert model.model_config.inputs == ("depth", "rgb") and "as given" in report.inferred["inputs"]
    with pytest.raises(ValueError, match="must name each"):
        load_any(state, num_heads=2, decoder_num_heads=2, input_order=("rgb",))
    path = tmp_path / "official.pth"
    torch.save({"model": official.state_dict()}, path)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(rgb)
    assert main(["predict", "--checkpoint", str(path), "--rgb", str(rgb), "--num-heads", "2", "--decoder-num-heads",
                 "2", "--inputs", "depth,rgb", "--out", str(tmp_path / "p")]) == 0
    printed = capsys.readouterr().out
    assert "architecture:" in printed and "encoder heads: 2 (given)" in printed and "inputs: depth, rgb" in printed


# ------------------------------------------------------------------ folders without val, incomplete data


def test_json_is_strict_non_finite_values_become_null():
    text = dump_json({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": 2}})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {"a": None, "b": [1.0, None], "c": {"d": 2}}


def test_pretraining_on_a_folder_without_val_holds_samples_out_and_warns_if_incomplete(tmp_path, capsys, caplog):
    root = tmp_path / "data"
    assert main(["data", "generate", "--out", str(root), "--count", "20", "--size", "32", "--quiet"]) == 0
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["splits"]["train"]["complete"] = False  # as an interrupted generate / pseudolabel leaves it
    (root / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING):
        assert main(["pretrain", "--quiet", *TINY, "data.source=folder", f"data.root={root}",
                     f"train.out_dir={tmp_path}", "train.name=run", "train.steps=2"]) == 0
    printed = capsys.readouterr().out
    assert "not complete (complete: false)" in printed
    assert "2 samples held out of" in printed
    text = (tmp_path / "run" / "report.json").read_text()
    report = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in report.json"))
    assert "NaN" not in text and all(v is not None for v in report["val"].values())
    assert report["val_data"].startswith("2 samples held out")
    assert (tmp_path / "run" / "reconstructions.png").exists() and (tmp_path / "run" / "cross_modal.png").exists()
