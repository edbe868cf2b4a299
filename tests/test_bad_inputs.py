"""The bad-input corpus: what a careless user types, each ending in one clear message.

Every case runs the CLI in-process (`main(argv)`) and asserts a non-zero exit, no traceback in
what was printed, and a message naming the file, key or value at fault. The cases fail before
any real work (no scene is rendered, no model trained), so the corpus runs in seconds.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from multimae.cli.main import main
from multimae.config import RunConfig, to_yaml
from multimae.config.schema import ModelSection
from multimae.convert import save_multimae, save_timm
from multimae.engine.checkpoint import export_safetensors
from multimae.model import MultiMAE

from conftest import tiny_config

ENCODER = "{dim: 32, depth: 1, num_heads: 2, image_size: 32, patch_size: 8}"
PRE = [  # a tiny pre-training run: 3 inputs x 16 tokens
    f"model.encoder={ENCODER}", "model.decoder={dim: 16, depth: 1, num_heads: 2}",
    "data.image_size=32", "data.batch_size=4", "data.num_workers=0", "data.world_train_scenes=8",
    "data.world_val_scenes=4", "masking.num_visible=8", "train.steps=2", "train.precision=fp32",
]
FT = [f"model.encoder={ENCODER}", "data.image_size=32", "data.batch_size=4", "data.num_workers=0",
      "data.world_train_scenes=8", "data.world_val_scenes=4", "train.steps=2", "train.precision=fp32"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Paths of good and bad files, formatted into the cases' arguments."""
    root = tmp_path_factory.mktemp("bad")
    torch.manual_seed(0)
    ckpt = save_multimae(MultiMAE(tiny_config()), root / "tiny.safetensors")
    run = root / "run"
    run.mkdir()
    section = ModelSection(size="tiny", encoder=dict(dim=32, depth=1, num_heads=2, image_size=32, patch_size=8),
                           decoder=dict(dim=16, depth=1, num_heads=2))
    (run / "config.yaml").write_text(to_yaml(RunConfig(model=section)))
    export_safetensors(MultiMAE(section.build()), run / "model.safetensors")
    good = ckpt.read_bytes()
    (root / "empty.pt").write_bytes(b"")
    (root / "empty.safetensors").write_bytes(b"")
    (root / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    (root / "random.safetensors").write_bytes(np.random.default_rng(1).bytes(4096))
    (root / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    torch.save({"model": {"w": torch.zeros(3)}}, root / "whole.pt")
    save_timm(MultiMAE(tiny_config()), root / "vit.safetensors")
    (root / "truncated.pt").write_bytes((root / "whole.pt").read_bytes()[:300])
    rgb = np.random.default_rng(0).random((32, 32, 3), dtype=np.float32)
    np.save(root / "rgb.npy", rgb)
    Image.fromarray((rgb * 255).astype(np.uint8)).save(root / "rgb.png")
    Image.fromarray((rgb * 255).astype(np.uint8)).save(root / "rgb.jpg")
    (root / "empty.jpg").write_bytes(b"")
    (root / "truncated.jpg").write_bytes((root / "rgb.jpg").read_bytes()[:20])
    np.save(root / "nan_rgb.npy", np.full((32, 32, 3), np.nan, np.float32))
    np.save(root / "neg_depth.npy", np.arange(-512, 512, dtype=np.int16).reshape(32, 32))
    np.save(root / "huge_depth.npy", np.full((32, 32), 1e38, np.float32) * np.linspace(0.5, 1, 32, dtype=np.float32))
    (root / "corrupt.npz").write_bytes(b"PK\x03\x04 not a zip")
    (root / "corrupt.npy").write_bytes(b"\x93NUMPY garbage")
    with zipfile.ZipFile(root / "empty.npz", "w"):
        pass
    (root / "afile").write_text("I am a file")
    (root / "bad.yaml").write_text("model: {size: tiny\n  encoder: [")
    (root / "list.yaml").write_text("- a\n- b\n")
    (root / "images").mkdir()
    (root / "folder.png").mkdir()
    locked = root / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return {"root": root, "ckpt": ckpt, "run": run, "locked": locked}


def out_args(env) -> list[str]:
    return [f"train.out_dir={env['root'] / 'runs'}", f"data.cache_dir={env['root'] / 'cache'}"]


# (id, argv with {root} / {ckpt} / {run} placeholders, words the message must hold)
PRETRAIN = [
    ("lr-nan", ["optim.lr=nan"], ["optim.lr", "nan"]),
    ("lr-zero", ["optim.lr=0"], ["optim.lr", "0"]),
    ("lr-negative", ["optim.lr=-1e-3"], ["optim.lr", "-0.001"]),
    ("base-lr-negative", ["optim.base_lr=-1"], ["optim.base_lr", "-1"]),
    ("lr-inf", ["optim.lr=.inf"], ["optim.lr", "inf"]),
    ("min-lr-negative", ["optim.min_lr=-1"], ["optim.min_lr", "-1"]),
    ("warmup-lr-nan", ["optim.warmup_lr=nan"], ["optim.warmup_lr", "nan"]),
    ("weight-decay-negative", ["optim.weight_decay=-0.1"], ["optim.weight_decay", "-0.1"]),
    ("warmup-fraction-above-1", ["optim.warmup_fraction=1.5"], ["optim.warmup_fraction", "1.5"]),
    ("warmup-fraction-negative", ["optim.warmup_fraction=-0.1"], ["optim.warmup_fraction", "-0.1"]),
    ("betas-above-1", ["optim.betas=[1.5, 0.9]"], ["optim.betas", "1.5"]),
    ("clip-grad-zero", ["optim.clip_grad=0"], ["optim.clip_grad", "0"]),
    ("accum-steps-zero", ["optim.accum_steps=0"], ["optim.accum_steps", "0"]),
    ("layer-decay-zero", ["optim.layer_decay=0"], ["optim.layer_decay", "0"]),
    ("crop-scale-reversed", ["data.crop_scale=[1.0, 0.2]"], ["data.crop_scale", "1.0", "0.2"]),
    ("crop-scale-above-1", ["data.crop_scale=[0.2, 1.5]"], ["data.crop_scale", "1.5"]),
    ("crop-ratio-reversed", ["data.crop_ratio=[1.3, 0.7]"], ["data.crop_ratio", "1.3"]),
    ("num-workers-negative", ["data.num_workers=-1"], ["data.num_workers", "-1"]),
    ("on-error-unknown", ["data.on_error=ignore"], ["data.on_error", "ignore"]),
    ("image-size-not-encoder", ["data.image_size=64"], ["data.image_size", "64", "32"]),
    ("render-size-zero", ["data.world_render_size=0"], ["data.world_render_size", "0"]),
    ("data-root-missing", ["data.source=folder", "data.root=/nonexistent/data"], ["data.root", "/nonexistent/data"]),
    ("accum-not-dividing-batch", ["optim.accum_steps=3"], ["data.batch_size", "4", "3"]),
    ("unknown-input", ["model.inputs=[rgb, banana]"], ["banana"]),
    ("patch-not-dividing", ["model.encoder.patch_size=5"], ["32", "5"]),
    ("heads-not-dividing", ["model.encoder.num_heads=3"], ["32", "3"]),
    ("steps-zero", ["train.steps=0"], ["train.steps", "0"]),
    ("steps-negative", ["train.steps=-5"], ["train.steps", "-5"]),
    ("log-every-zero", ["train.log_every=0"], ["train.log_every", "0"]),
    ("ckpt-every-negative", ["train.ckpt_every=-1"], ["train.ckpt_every", "-1"]),
    ("keep-last-zero", ["train.keep_last=0"], ["train.keep_last", "0"]),
    ("seed-not-integer", ["train.seed=1e23"], ["train.seed", "1e23"]),
    ("seed-overflow", ["train.seed=1.0e+23"], ["train.seed", "2**63"]),
    ("seed-negative", ["train.seed=-1"], ["train.seed", "-1"]),
    ("device-banana", ["train.device=banana"], ["train.device", "banana"]),
    ("device-cuda-9", ["train.device=cuda:x"], ["train.device", "cuda:x"]),
    ("visible-all-tokens", ["masking.num_visible=48"], ["masking.num_visible", "48"]),
    ("visible-too-many", ["masking.num_visible=100"], ["masking.num_visible", "100", "48"]),
    ("visible-zero", ["masking.num_visible=0"], ["masking.num_visible", "0"]),
    ("alpha-zero", ["masking.alpha=0"], ["masking.alpha", "0"]),
    ("alpha-negative", ["masking.alpha=-1"], ["masking.alpha", "-1"]),
    ("alpha-nan", ["masking.alpha=nan"], ["masking.alpha", "nan"]),
    ("loss-weight-typo", ["loss.weights.rgbb=2"], ["loss.weights", "rgbb"]),
    ("loss-weight-negative", ["loss.weights.rgb=-1"], ["loss.weights.rgb", "-1"]),
    ("loss-weights-all-zero", ["loss.weights={rgb: 0, depth: 0, semseg: 0, norm_rgb: 0}"], ["loss.weights", "0"]),
    ("override-bad-yaml", ["model.encoder={dim: 32"], ["model.encoder", "{dim: 32"]),
    ("override-bad-yaml-list", ["data.crop_scale=[0.2, 1.0"], ["data.crop_scale"]),
]
PRETRAIN_FLAGS = [
    ("config-bad-yaml", ["--config", "{root}/bad.yaml"], ["bad.yaml"]),
    ("config-not-mapping", ["--config", "{root}/list.yaml"], ["list.yaml", "mapping"]),
    ("config-missing", ["--config", "{root}/nope.yaml"], ["nope.yaml"]),
    ("config-unknown-preset", ["--config", "banana"], ["banana"]),
]
FINETUNE = [
    ("ft-num-classes-small", ["task.num_classes=2"], ["task.num_classes", "2", "6"]),
    ("ft-num-classes-zero", ["task.num_classes=0"], ["task.num_classes", "0"]),
    ("ft-lr-nan", ["optim.lr=nan"], ["optim.lr", "nan"]),
    ("ft-steps-zero", ["train.steps=0"], ["train.steps", "0"]),
    ("ft-timm-unknown", ["--checkpoint", "timm:not_a_model"], ["not_a_model"]),
    ("ft-checkpoint-missing", ["--checkpoint", "{root}/absent.pt"], ["absent.pt"]),
    ("ft-checkpoint-empty", ["--checkpoint", "{root}/empty.pt"], ["empty.pt"]),
    ("ft-checkpoint-random-st", ["--checkpoint", "{root}/random.safetensors"], ["random.safetensors"]),
    ("ft-device-banana", ["train.device=banana"], ["train.device", "banana"]),
    ("ft-unknown-input", ["--inputs", "rgb,banana"], ["banana"]),
    ("ft-config-bad-yaml", ["--config", "{root}/bad.yaml"], ["bad.yaml", "line 2"]),
    ("ft-seg-num-classes-small", ["--task", "segmentation", "task.num_classes=3"], ["task.num_classes", "3", "9"]),
    ("ft-mixup-negative", ["task.mixup=-1"], ["task.mixup", "-1"]),
    ("ft-image-not-patches", ["data.image_size=30"], ["30", "8"]),
    ("ft-heads-not-dividing", ["model.encoder.num_heads=3"], ["32", "3"]),
    ("ft-hooks-past-depth", ["--task", "depth", "head.hooks=[0, 1, 2, 99]"], ["99"]),
    ("ft-label-smoothing", ["task.label_smoothing=1.5"], ["task.label_smoothing", "1.5"]),
]
CKPT = "--checkpoint"
PREDICT = [  # after `predict --out {root}/pred`
    ("pr-empty-pt", [CKPT, "{root}/empty.pt", "--rgb", "{root}/rgb.npy"], ["empty.pt"]),
    ("pr-random-pt", [CKPT, "{root}/random.pt", "--rgb", "{root}/rgb.npy"], ["random.pt"]),
    ("pr-truncated-pt", [CKPT, "{root}/truncated.pt", "--rgb", "{root}/rgb.npy"], ["truncated.pt"]),
    ("pr-empty-st", [CKPT, "{root}/empty.safetensors", "--rgb", "{root}/rgb.npy"], ["empty.safetensors"]),
    ("pr-random-st", [CKPT, "{root}/random.safetensors", "--rgb", "{root}/rgb.npy"], ["random.safetensors"]),
    ("pr-truncated-st", [CKPT, "{root}/truncated.safetensors", "--rgb", "{root}/rgb.npy"], ["truncated.safetensors"]),
    ("pr-mask-missing", [CKPT, "{ckpt}", "--rgb", "{root}/rgb.npy", "--mask", "{root}/nomask.npz"], ["nomask.npz"]),
    ("pr-mask-corrupt-npz", [CKPT, "{ckpt}", "--rgb", "{root}/rgb.npy", "--mask", "{root}/corrupt.npz"], ["corrupt.npz"]),
    ("pr-mask-corrupt-npy", [CKPT, "{ckpt}", "--rgb", "{root}/rgb.npy", "--mask", "{root}/corrupt.npy"], ["corrupt.npy"]),
    ("pr-mask-empty-npz", [CKPT, "{ckpt}", "--rgb", "{root}/rgb.npy", "--mask", "{root}/empty.npz"], ["empty.npz"]),
    ("pr-mask-wrong-suffix", [CKPT, "{ckpt}", "--rgb", "{root}/rgb.npy", "--mask", "{root}/afile"], ["afile"]),
    ("pr-device-banana", [CKPT, "{ckpt}", "--rgb", "{root}/rgb.npy", "--device", "banana"], ["--device", "banana"]),
    ("pr-nan-rgb", [CKPT, "{ckpt}", "--rgb", "{root}/nan_rgb.npy"], ["nan_rgb.npy", "NaN"]),
    ("pr-negative-int-depth", [CKPT, "{ckpt}", "--depth", "{root}/neg_depth.npy"], ["neg_depth.npy", "negative"]),
    ("pr-huge-depth", [CKPT, "{ckpt}", "--depth", "{root}/huge_depth.npy"], ["huge_depth.npy"]),
    ("pr-empty-jpeg", [CKPT, "{ckpt}", "--rgb", "{root}/empty.jpg"], ["empty.jpg"]),
    ("pr-truncated-jpeg", [CKPT, "{ckpt}", "--rgb", "{root}/truncated.jpg"], ["truncated.jpg"]),
    ("pr-visible-too-many", [CKPT, "{ckpt}", "--rgb", "{root}/rgb.npy", "--visible", "99"], ["99"]),
    ("pr-seed-negative", [CKPT, "{ckpt}", "--rgb", "{root}/rgb.npy", "--visible", "4", "--seed", "-1"], ["--seed", "-1"]),
    ("pr-seed-overflow", [CKPT, "{ckpt}", "--rgb", "{root}/rgb.npy", "--visible", "4", "--seed", "1" + "0" * 23],
     ["--seed", "1" + "0" * 23]),
    ("pr-seed-float", [CKPT, "{ckpt}", "--rgb", "{root}/rgb.npy", "--visible", "4", "--seed", "1e23"], ["--seed", "1e23"]),
    ("pr-alpha-zero", [CKPT, "{ckpt}", "--rgb", "{root}/rgb.npy", "--visible", "4", "--alpha", "0"], ["--alpha", "0"]),
]
PREDICT_OUT = [  # with their own --out
    ("pr-out-is-file", [CKPT, "{ckpt}", "--rgb", "{root}/rgb.npy", "--out", "{root}/afile"], ["afile"]),
    ("pr-out-unwritable", [CKPT, "{ckpt}", "--rgb", "{root}/rgb.npy", "--out", "{root}/locked/p"], ["locked"]),
    ("pr-out-under-file", [CKPT, "{ckpt}", "--rgb", "{root}/rgb.npy", "--out", "{root}/afile/p"], ["afile"]),
]
OTHERS = [
    ("cv-num-heads-5", ["convert", "{root}/vit.safetensors", "{root}/o.safetensors", "--num-heads", "5"],
     ["--num-heads", "5", "32"]),
    ("cv-num-heads-0", ["convert", "{root}/vit.safetensors", "{root}/o.safetensors", "--num-heads", "0"],
     ["--num-heads", "0"]),
    ("cv-decoder-heads-negative", ["convert", "{ckpt}", "{root}/o.safetensors", "--decoder-num-heads", "-2"],
     ["--decoder-num-heads", "-2"]),
    ("cv-report-missing-dir", ["convert", "{ckpt}", "{root}/o.safetensors", "--report", "{root}/no/dir/r.json"],
     ["--report", "no/dir"]),
    ("cv-out-is-dir", ["convert", "{ckpt}", "{root}/images"], ["images", "folder"]),
    ("cv-empty-pt", ["convert", "{root}/empty.pt", "{root}/o.safetensors"], ["empty.pt"]),
    ("cv-random-st", ["convert", "{root}/random.safetensors", "{root}/o.safetensors"], ["random.safetensors"]),
    ("cv-truncated-st", ["convert", "{root}/truncated.safetensors", "{root}/o.safetensors"], ["truncated.safetensors"]),
    ("cv-missing-source", ["convert", "{root}/absent.pth", "{root}/o.safetensors"], ["absent.pth"]),
    ("cv-truncated-pt", ["convert", "{root}/truncated.pt", "{root}/o.safetensors"], ["truncated.pt"]),
    ("cv-random-pt", ["convert", "{root}/random.pt", "{root}/o.safetensors"], ["random.pt"]),
    ("cv-dpt-hooks", ["convert", "{ckpt}", "{root}/o.safetensors", "--dpt-hooks", "a,b"], ["--dpt-hooks"]),
    ("ev-picture-missing-dir", ["evaluate", CKPT, "{run}", "--picture", "{root}/no/dir/p.png"], ["no/dir"]),
    ("ev-out-missing-dir", ["evaluate", CKPT, "{run}", "--out", "{root}/no/dir/m.json"], ["no/dir"]),
    ("ev-random-pt", ["evaluate", CKPT, "{root}/random.pt"], ["random.pt"]),
    ("ev-checkpoint-missing", ["evaluate", CKPT, "{root}/absent.pt"], ["absent.pt"]),
    ("ev-truncated-st", ["evaluate", CKPT, "{root}/truncated.safetensors"], ["truncated.safetensors"]),
    ("ev-max-samples-zero", ["evaluate", CKPT, "{run}", "--max-samples", "0"], ["--max-samples", "0"]),
    ("vi-random-pt", ["visualize", CKPT, "{root}/random.pt"], ["random.pt"]),
    ("vi-truncated-st", ["visualize", CKPT, "{root}/truncated.safetensors"], ["truncated.safetensors"]),
    ("vi-out-is-file", ["visualize", CKPT, "{run}", "--out", "{root}/afile"], ["afile"]),
    ("vi-seed-overflow", ["visualize", CKPT, "{run}", "--seed", "1" + "0" * 23], ["--seed", "1" + "0" * 23]),
    ("vi-checkpoint-missing", ["visualize", CKPT, "{root}/absent"], ["absent"]),
    ("vi-samples-zero", ["visualize", CKPT, "{run}", "--samples", "0"], ["--samples", "0"]),
    ("vi-masks-zero", ["visualize", CKPT, "{run}", "--masks", "0"], ["--masks", "0"]),
    ("ds-out-no-suffix", ["data", "show", "--out", "{root}/world"], ["--out", "world"]),
    ("ds-out-bad-suffix", ["data", "show", "--out", "{root}/world.xyz"], ["--out", "world.xyz"]),
    ("ds-out-under-file", ["data", "show", "--out", "{root}/afile/w.png"], ["afile"]),
    ("ds-out-is-dir", ["data", "show", "--out", "{root}/folder.png"], ["folder.png", "folder"]),
    ("ds-count-zero", ["data", "show", "--count", "0"], ["--count", "0"]),
    ("ds-count-negative", ["data", "show", "--count", "-2"], ["--count", "-2"]),
    ("ds-size-zero", ["data", "show", "--size", "0"], ["--size", "0"]),
    ("ds-size-tiny", ["data", "show", "--size", "3"], ["--size", "3"]),
    ("ds-start-negative", ["data", "show", "--start", "-1"], ["--start", "-1"]),
    ("ds-difficulty", ["data", "show", "--difficulty", "2"], ["--difficulty", "2"]),
    ("ds-class-colors", ["data", "show", "--class-colors", "-0.5"], ["--class-colors", "-0.5"]),
    ("ds-tile-zero", ["data", "show", "--tile", "0"], ["--tile", "0"]),
    ("dg-count-zero", ["data", "generate", "--out", "{root}/g", "--count", "0"], ["--count", "0"]),
    ("dg-count-negative", ["data", "generate", "--out", "{root}/g", "--count", "-3"], ["--count", "-3"]),
    ("dg-size-zero", ["data", "generate", "--out", "{root}/g", "--count", "1", "--size", "0"], ["--size", "0"]),
    ("dg-difficulty", ["data", "generate", "--out", "{root}/g", "--count", "1", "--difficulty", "-1"],
     ["--difficulty", "-1"]),
    ("dg-class-colors", ["data", "generate", "--out", "{root}/g", "--count", "1", "--class-colors", "1.5"],
     ["--class-colors", "1.5"]),
    ("dg-shard-size-zero", ["data", "generate", "--out", "{root}/g", "--count", "1", "--format", "shards",
                            "--shard-size", "0"], ["--shard-size", "0"]),
    ("dg-workers-zero", ["data", "generate", "--out", "{root}/g", "--count", "1", "--workers", "0"], ["--workers", "0"]),
    ("dg-out-is-file", ["data", "generate", "--out", "{root}/afile", "--count", "1"], ["afile"]),
    ("pl-images-missing", ["pseudolabel", "--images", "/nonexistent/photos", "--out", "{root}/pl"],
     ["/nonexistent/photos"]),
    ("pl-images-empty", ["pseudolabel", "--images", "{root}/images", "--out", "{root}/pl"], ["images"]),
    ("pl-device-banana", ["pseudolabel", "--images", "{root}/images", "--out", "{root}/pl", "--device", "banana"],
     ["banana"]),
    ("pl-out-is-file", ["pseudolabel", "--images", "{root}/images", "--out", "{root}/afile"], ["afile"]),
    ("pl-shards-missing", ["pseudolabel", "--shards", "{root}/no-shards", "--out", "{root}/pl"], ["no-shards"]),
    ("pl-workers-negative", ["pseudolabel", "--images", "{root}/images", "--out", "{root}/pl", "--workers", "-1"],
     ["--workers", "-1"]),
    ("pl-batch-size-zero", ["pseudolabel", "--images", "{root}/images", "--out", "{root}/pl", "--batch-size", "0"],
     ["--batch-size", "0"]),
]
if not torch.cuda.is_available():
    PRETRAIN.append(("device-cuda-without-gpu", ["train.device=cuda"], ["train.device", "cuda"]))
    PREDICT.append(("pr-device-cuda-without-gpu", [CKPT, "{ckpt}", "--rgb", "{root}/rgb.npy", "--device", "cuda"],
                    ["--device", "cuda"]))
    OTHERS.append(("pl-device-cuda-without-gpu", ["pseudolabel", "--images", "{root}/images", "--out", "{root}/pl",
                                                  "--device", "cuda"], ["cuda"]))


def run_cli(argv: list[str], capfd) -> tuple[int, str]:
    """(exit status, everything printed) of ``multimae argv``, as a shell would see them."""
    try:
        code: object = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    out, err = capfd.readouterr()
    if isinstance(code, str):  # SystemExit("message"): Python prints it on stderr, status 1
        err, code = err + code + "\n", 1
    return int(code or 0), out + err


def fill(text: str, env) -> str:
    for key in ("root", "ckpt", "run"):
        text = text.replace("{" + key + "}", str(env[key]))
    return text


def check(argv: list[str], words: list[str], env, capfd) -> None:
    argv, words = [fill(a, env) for a in argv], [fill(w, env) for w in words]
    code, text = run_cli(argv, capfd)
    assert code != 0, f"exit 0 for {argv}:\n{text}"
    assert "Traceback" not in text, text
    said = [line for line in text.strip().splitlines() if not line.startswith(("usage:", "   "))]  # argparse usage
    assert len(said) <= 3, f"more than a short message:\n{text}"
    for word in words:
        assert word in text, f"{word!r} not in the message:\n{text}"


@pytest.mark.parametrize("overrides, words", [c[1:] for c in PRETRAIN], ids=[c[0] for c in PRETRAIN])
def test_pretrain_settings(overrides, words, env, capfd):
    check(["pretrain", "--quiet", *PRE, *out_args(env), "train.name=p", *overrides], words, env, capfd)
    assert not (env["root"] / "runs" / "p").exists() and not (env["root"] / "cache").exists()


@pytest.mark.parametrize("flags, words", [c[1:] for c in PRETRAIN_FLAGS], ids=[c[0] for c in PRETRAIN_FLAGS])
def test_pretrain_config_files(flags, words, env, capfd):
    check(["pretrain", "--quiet", *flags, *PRE, *out_args(env)], words, env, capfd)


@pytest.mark.parametrize("args, words", [c[1:] for c in FINETUNE], ids=[c[0] for c in FINETUNE])
def test_finetune_settings(args, words, env, capfd):
    flags = [a for a in args if "=" not in a or a.startswith("timm:")]
    overrides = [a for a in args if a not in flags]
    check(["finetune", "--quiet", *flags, *FT, *out_args(env), "train.name=f", *overrides], words, env, capfd)
    assert not (env["root"] / "runs" / "f").exists() and not (env["root"] / "cache").exists()


@pytest.mark.parametrize("args, words", [c[1:] for c in PREDICT], ids=[c[0] for c in PREDICT])
def test_predict_inputs(args, words, env, capfd):
    check(["predict", *args, "--out", "{root}/pred"], words, env, capfd)
    assert not (env["root"] / "pred").exists()


@pytest.mark.parametrize("args, words", [c[1:] for c in PREDICT_OUT], ids=[c[0] for c in PREDICT_OUT])
def test_predict_outputs(args, words, env, capfd, monkeypatch):
    if os.geteuid() == 0:  # root may write into a read-only folder: let it see the folder as others do
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != env["locked"] and real_access(path, mode, **kw))
    check(["predict", *args], words, env, capfd)


@pytest.mark.parametrize("argv, words", [c[1:] for c in OTHERS], ids=[c[0] for c in OTHERS])
def test_other_commands(argv, words, env, capfd):
    check(argv, words, env, capfd)
    assert not (env["root"] / "o.safetensors").exists()


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory):
    """Four world scenes in the folder layout, one with an empty rgb file, and two val scenes."""
    root = tmp_path_factory.mktemp("folder")
    assert main(["data", "generate", "--out", str(root), "--count", "4", "--size", "32", "--quiet"]) == 0
    assert main(["data", "generate", "--out", str(root), "--split", "val", "--count", "2", "--size", "32", "--quiet"]) == 0
    bad = sorted((root / "train" / "rgb").rglob("*.png"))[1]
    bad.write_bytes(b"")
    return root, bad


def folder_run(root, tmp_path, *extra):
    return ["pretrain", "--quiet", *PRE, "data.source=folder", f"data.root={root}", f"data.val_root={root}",
            "data.augment=false",
            f"train.out_dir={tmp_path}", "train.name=r", "train.steps=1", "train.ckpt_every=0", *extra]


def test_a_bad_sample_read_by_a_worker_is_one_line_naming_the_file(folder_data, tmp_path, capfd):
    root, bad = folder_data
    code, text = run_cli(folder_run(root, tmp_path, "data.num_workers=1", "data.on_error=raise"), capfd)
    assert code != 0 and "Traceback" not in text and "worker" not in text
    [line] = [t for t in text.splitlines() if "error" in t]
    assert bad.name in line and "empty" in line and "BytesIO" not in line


def test_data_on_error_skip_is_reachable_from_the_command_line(folder_data, tmp_path, capfd, caplog):
    root, bad = folder_data
    code, text = run_cli(folder_run(root, tmp_path, "data.on_error=skip"), capfd)  # a batch of all 4 samples
    assert code == 0, text
    assert (tmp_path / "r" / "model.safetensors").exists()
    assert "on_error: skip" in (tmp_path / "r" / "config.yaml").read_text()
    assert any("skipped sample" in r.getMessage() and bad.name in r.getMessage() for r in caplog.records)


def test_user_errors_are_one_line_with_status_2_and_bugs_keep_their_traceback(monkeypatch, capsys):
    import multimae.cli.info as info
    from multimae.errors import UserError

    monkeypatch.setattr(info, "run", lambda args: (_ for _ in ()).throw(UserError("--thing 3: too many")))
    assert main(["info"]) == 2
    assert capsys.readouterr().err == "multimae info: error: --thing 3: too many\n"
    monkeypatch.setattr(info, "run", lambda args: open("/nonexistent/dir/file.txt"))
    assert main(["info"]) == 2
    assert capsys.readouterr().err.startswith("multimae info: error: /nonexistent/dir/file.txt: No such file")
    monkeypatch.setattr(info, "run", lambda args: 1 / 0)  # a bug: not swallowed
    with pytest.raises(ZeroDivisionError):
        main(["info"])
