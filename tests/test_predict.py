"""`multimae predict` and `multimae.inference`: files of the built-in world, an arbitrary photo,
random and explicit masks, un-normalised outputs equal to the model's own, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from multimae.cli.main import main
from multimae.convert import multimae_to_timm, save_multimae, timm_to_multimae
from multimae.data.codecs import decode_modality
from multimae.data.world import NUM_CLASSES
from multimae.inference import load_model, predict, prediction_figure
from multimae.inference.predict import _patch_stats
from multimae.losses.masked import patch_standardize
from multimae.model import FineTuneModel, MultiMAE
from multimae.model.heads import ConvNeXtHeadConfig, DPTHeadConfig, LinearHeadConfig
from multimae.modalities import denormalize, prepare_batch, robust_stats

from conftest import tiny_config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny model (32 px, patch 8) with the world's 9 classes, saved as our self-contained file."""
    torch.manual_seed(0)
    model = MultiMAE(tiny_config(modality_overrides={"semseg": {"num_channels": NUM_CLASSES}}))
    return save_multimae(model, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One scene of the built-in world written by `multimae data generate`: {modality: file}."""
    root = tmp_path_factory.mktemp("world")
    assert main(["data", "generate", "--out", str(root), "--count", "1", "--size", "32", "--quiet"]) == 0
    return {m: next((root / "train" / m).rglob("*.png")) for m in ("rgb", "depth", "semseg")}


def _load(path):
    return torch.from_numpy(np.load(path))


def test_predict_on_world_files_matches_the_model_and_un_normalises(checkpoint, world, tmp_path, capsys):
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(checkpoint), "--rgb", str(world["rgb"]), "--depth", str(world["depth"]),
                 "--semseg", str(world["semseg"]), "--visible", "20", "--seed", "3", "--out", str(out),
                 "--precision", "fp32"]) == 0
    printed = capsys.readouterr().out
    assert "precision: fp32: requested" in printed
    assert "ImageNet mean" in printed and "standardised per image" in printed and "20 of 48 tokens visible" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert sum(summary["visible_tokens"].values()) == 20
    for name in ("rgb", "depth", "semseg", "norm_rgb"):
        assert (out / f"{name}.npy").exists() and Image.open(out / f"{name}.png").size == (32, 32)
    assert Image.open(out / "figure.png").width > 3 * 32

    # The same computation done by hand: read, prepare, mask, run, un-normalise.
    model = load_model(checkpoint)
    raw = {m: decode_modality(m, world[m].read_bytes(), world[m].name, NUM_CLASSES) for m in world}
    batch = prepare_batch({k: v[None] for k, v in raw.items()}, model.input_specs, model.output_specs)
    with np.load(out / "mask.npz") as m:
        masks = {k: torch.from_numpy(m[k]).reshape(1, -1).bool() for k in m.files}
    with torch.no_grad():
        preds = model(batch.inputs, masks).preds
    torch.testing.assert_close(_load(out / "rgb.npy"), denormalize(model.output_specs["rgb"], preds["rgb"])[0])
    mean, scale = robust_stats(raw["depth"][None])
    torch.testing.assert_close(_load(out / "depth.npy"), preds["depth"][0] * scale + mean)
    torch.testing.assert_close(_load(out / "semseg_logits.npy"), preds["semseg"][0])
    ids = _load(out / "semseg.npy")
    assert ids.shape == (32, 32) and torch.equal(ids[::4, ::4], preds["semseg"][0].argmax(0))
    torch.testing.assert_close(_load(out / "norm_rgb.npy"), preds["norm_rgb"][0])


def test_predict_on_an_arbitrary_photo_resized_cropped_or_native(checkpoint, tmp_path, capsys):
    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (45, 70, 4), dtype=np.uint8), "RGBA").save(photo)
    for flag in ([], ["--crop"]):
        assert main(["predict", "--checkpoint", str(checkpoint), "--rgb", str(photo), "--out", str(tmp_path / "a"),
                     *flag]) == 0
        assert np.load(tmp_path / "a" / "rgb.npy").shape == (3, 32, 32)
    assert "resized from 70×45 to 32×32 (W×H)" in capsys.readouterr().out
    native = tmp_path / "native.jpg"
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(native)
    assert main(["predict", "--checkpoint", str(checkpoint), "--rgb", str(native), "--native-size", "--visible", "30",
                 "--out", str(tmp_path / "n")]) == 0
    assert np.load(tmp_path / "n" / "depth.npy").shape == (1, 48, 64)
    assert np.load(tmp_path / "n" / "semseg.npy").shape == (48, 64)
    assert np.load(tmp_path / "n" / "semseg_logits.npy").shape == (NUM_CLASSES, 12, 16)
    assert "standardised depth (relative" in json.loads((tmp_path / "n" / "summary.json").read_text())["units"]["depth"]


def test_an_explicit_mask_reproduces_a_random_mask_run(checkpoint, world, tmp_path):
    common = ["predict", "--checkpoint", str(checkpoint), "--rgb", str(world["rgb"]), "--depth", str(world["depth"])]
    assert main([*common, "--visible", "12", "--seed", "5", "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--mask", str(tmp_path / "a" / "mask.npz"), "--out", str(tmp_path / "b")]) == 0
    with np.load(tmp_path / "a" / "mask.npz") as m:
        np.save(tmp_path / "mask.npy", np.stack([m["rgb"], m["depth"]]))
    assert main([*common, "--mask", str(tmp_path / "mask.npy"), "--out", str(tmp_path / "c")]) == 0
    for name in ("rgb", "depth", "semseg_logits"):
        a = np.load(tmp_path / "a" / f"{name}.npy")
        assert np.array_equal(a, np.load(tmp_path / "b" / f"{name}.npy"))
        assert np.array_equal(a, np.load(tmp_path / "c" / f"{name}.npy"))


def test_python_api_seeds_masks_and_figure(checkpoint):
    model = load_model(checkpoint)
    rgb = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    a = predict(model, {"rgb": rgb}, num_visible=6, seed=0)
    b = predict(model, {"rgb": rgb}, num_visible=6, seed=0)
    c = predict(model, {"rgb": rgb}, num_visible=6, seed=1)
    assert a.visible_counts() == {"rgb": 6}
    assert torch.equal(a.masks["rgb"], b.masks["rgb"]) and not torch.equal(a.masks["rgb"], c.masks["rgb"])
    assert torch.equal(a.outputs["depth"], b.outputs["depth"])
    mask = {"rgb": np.ones((4, 4), dtype=np.uint8)}
    mask["rgb"][0, :2] = 0
    d = predict(model, {"rgb": torch.from_numpy(rgb).permute(2, 0, 1)}, mask=mask)
    assert d.visible_counts() == {"rgb": 2}
    full = predict(model, {"rgb": rgb})
    assert not full.masks["rgb"].any() and "all 16 tokens visible" in " ".join(full.notes)
    assert a.norm_rgb_view is not None and 0 <= float(a.norm_rgb_view.min()) and float(a.norm_rgb_view.max()) <= 1
    figure = prediction_figure(a)
    assert figure.width >= 4 * 32 and figure.height > 2 * 32
    low = predict(model, {"rgb": rgb}, num_visible=6, seed=0, precision="bf16")  # autocast; outputs back in fp32
    assert low.outputs["depth"].dtype == torch.float32 and torch.equal(low.masks["rgb"], a.masks["rgb"])
    assert (low.outputs["depth"] - a.outputs["depth"]).abs().max() < 0.1 * a.outputs["depth"].abs().max() + 1e-3


def test_norm_rgb_patch_statistics_put_back_invert_the_target():
    """The view's arithmetic: per-patch statistics of an image undo its norm-pix standardisation."""
    x = torch.randn(3, 32, 48)
    z = patch_standardize(x[None], 8)[0]
    mean, std = _patch_stats(x, 8)
    torch.testing.assert_close(z * std + mean, x, atol=1e-5, rtol=1e-5)


def test_predict_errors_name_the_problem(checkpoint, tmp_path):
    model = load_model(checkpoint)
    rgb = np.zeros((32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="does not take"):
        predict(model, {"thermal": rgb})
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        predict(model, {"rgb": rgb.astype(np.float32) + 2})
    with pytest.raises(ValueError, match="colour-coded"):
        predict(model, {"semseg": rgb})
    with pytest.raises(ValueError, match="num_visible must be in"):
        predict(model, {"rgb": rgb}, num_visible=17)
    with pytest.raises(ValueError, match="missing"):
        predict(model, {"rgb": rgb, "depth": np.ones((32, 32), np.float32)}, mask={"rgb": np.zeros(16)})
    with pytest.raises(ValueError, match="no such file"):
        predict(model, {"rgb": tmp_path / "absent.png"})
    encoder_only, _ = timm_to_multimae(multimae_to_timm(model)[0], num_heads=2)
    with pytest.raises(ValueError, match="no decoders"):
        predict(encoder_only, {"rgb": rgb})
    with pytest.raises(SystemExit, match="at least one input"):
        main(["predict", "--checkpoint", str(checkpoint), "--out", str(tmp_path)])


@pytest.mark.parametrize("head_name, head", [
    ("cls", LinearHeadConfig(dim=32, num_classes=10)),
    ("depth", DPTHeadConfig(dim=32, hooks=(0, 1, 2, 3), layer_dims=(8, 8, 16, 16), feature_dim=8)),
    ("semseg", ConvNeXtHeadConfig(dim=32, num_classes=5, embed_dim=64, preds_per_patch=16, depth=1)),
])
def test_predict_with_fine_tuned_models(head_name, head, tmp_path, capsys):
    torch.manual_seed(0)
    cfg = tiny_config(encoder=dict(dim=32, depth=4, num_heads=2, image_size=32, patch_size=8), outputs=())
    specs = cfg.modality_specs()
    model = FineTuneModel(cfg.encoder, {n: specs[n] for n in cfg.inputs}, head, head_name).eval()
    ckpt = save_multimae(model, tmp_path / "ft.safetensors")
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(photo)
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(ckpt), "--rgb", str(photo), "--native-size", "--out", str(out)]) == 0
    rgb = predict(model, {"rgb": photo}, fit="native").inputs["rgb"]
    with torch.no_grad():
        expected = model({"rgb": prepare_batch({"rgb": rgb[None]}, model.input_specs, {}).inputs["rgb"]})[0]
    saved = _load(out / f"{head_name}.npy")
    if head_name == "cls":
        torch.testing.assert_close(saved, expected.softmax(0))
        assert "top classes" in capsys.readouterr().out
    elif head_name == "semseg":
        assert saved.shape == (40, 48) and torch.equal(saved, expected.argmax(0))
    else:
        assert saved.shape == (1, 40, 48) and (out / "depth.png").exists()
        torch.testing.assert_close(saved, expected)
    assert rgb.shape == (3, 40, 48)
    with pytest.raises(ValueError, match="masks apply to MultiMAE"):
        predict(model, {"rgb": photo}, num_visible=4)


def test_run_folders_predict_and_convert_with_their_own_config(tmp_path):
    """A training run's folder (config.yaml + model.safetensors): its config is used, not inferred."""
    from multimae.config import RunConfig, to_yaml
    from multimae.config.schema import ModelSection
    from multimae.engine.checkpoint import export_safetensors

    run = tmp_path / "run"
    run.mkdir()
    section = ModelSection(size="tiny", encoder=dict(dim=32, depth=2, num_heads=2, image_size=32, patch_size=8),
                           decoder=dict(dim=16, depth=1, num_heads=4))  # 4 decoder heads: not the convention (8)
    (run / "config.yaml").write_text(to_yaml(RunConfig(model=section)))
    torch.manual_seed(0)
    export_safetensors(MultiMAE(section.build()), run / "model.safetensors")
    assert load_model(run).model_config.decoder.num_heads == 4
    rgb = tmp_path / "rgb.npy"
    np.save(rgb, np.random.default_rng(0).random((32, 32, 3), dtype=np.float32))
    assert main(["predict", "--checkpoint", str(run), "--rgb", str(rgb), "--visible", "8", "--out", str(tmp_path / "p")]) == 0
    assert np.load(tmp_path / "p" / "rgb.npy").shape == (3, 32, 32)
    assert main(["convert", str(run), str(tmp_path / "vit.safetensors"), "--to", "timm"]) == 0


def test_fine_tuning_run_folders_predict_with_their_head(tmp_path):
    """A fine-tuning run's folder is told apart from a pre-training one by its config.yaml."""
    from multimae.config import load_config, to_yaml
    from multimae.config.finetune import FinetuneConfig
    from multimae.engine.checkpoint import export_safetensors
    from multimae.tasks.finetune_arch import build_model

    cfg = load_config(FinetuneConfig, None, ["model.encoder={dim: 32, depth: 4, num_heads: 2, patch_size: 8}",
                                             "data.image_size=32", "task.kind=segmentation", "head.embed_dim=32"])
    run = tmp_path / "ft-run"
    run.mkdir()
    (run / "config.yaml").write_text(to_yaml(cfg))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    export_safetensors(model, run / "model.safetensors")
    rgb = np.random.default_rng(0).random((32, 32, 3), dtype=np.float32)
    np.save(tmp_path / "rgb.npy", rgb)
    assert main(["predict", "--checkpoint", str(run), "--rgb", str(tmp_path / "rgb.npy"), "--out", str(tmp_path / "p")]) == 0
    x = prepare_batch({"rgb": torch.from_numpy(rgb).permute(2, 0, 1)[None]}, model.input_specs, {}).inputs
    with torch.no_grad():
        expected = model(x)[0]
    torch.testing.assert_close(_load(tmp_path / "p" / "semseg_logits.npy"), expected)


def test_prediction_pictures_are_the_figures_maps(checkpoint, world):
    from multimae.inference import prediction_pictures

    model = load_model(checkpoint)
    inputs = {m: world[m] for m in ("rgb", "depth", "semseg")}
    pred = predict(model, inputs, num_visible=20, seed=1)
    pics = prediction_pictures(pred)
    assert list(pics.inputs) == ["rgb", "depth", "semseg"] and set(pics.outputs) == {"rgb", "depth", "semseg", "norm_rgb"}
    assert set(pics.pasted) == {"rgb", "depth", "semseg"} and pics.palette.shape == (NUM_CLASSES, 3)
    assert all(p.shape == (32, 32, 3) and p.dtype == np.uint8 for p in [*pics.inputs.values(), *pics.outputs.values()])
    for name, mask in pred.masks.items():  # pasted: the input at visible patches, the prediction at masked ones
        pixels = mask.repeat_interleave(8, 0).repeat_interleave(8, 1).numpy()
        assert (pics.pasted[name][~pixels] == pics.inputs[name][~pixels]).all()
        if name != "depth":  # depth pictures share the input's range, so both are drawn alike
            assert (pics.pasted[name][pixels] == pics.outputs[name][pixels]).all()
