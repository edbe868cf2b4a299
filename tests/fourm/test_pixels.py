"""4M's RGB input as raw pixels (a patch projection; 4M-7's setting): `multimae tokenize --pixels rgb`
keeps each crop's pixels beside its tokens, the pool and the task hand them to the model normalised,
the masking never asks a one-sided modality for what it cannot give, and a run on them trains,
reports whether it reads the picture, draws and predicts from a picture."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from multimae.cli.main import main
from multimae.config.fourm import FourMMaskingConfig
from multimae.data import WorldDataset
from multimae.engine.checkpoint import latest_checkpoint
from multimae.data.token_pool import load_token_pool
from multimae.data.token_shards import TokenShardDataset
from multimae.modalities.normalize import normalize
from multimae.model.fourm import FourM, FourMConfig
from multimae.pretokenize import run_tokenize
from multimae.pretokenize.crops import crop_view
from multimae.tasks.fourm import FourMTask, build_masking
from multimae.tasks.fourm_job import with_token_data

from fourm.conftest import SCENES, tokenize_config, write_config
from token_shards.conftest import IMAGE, RENDER


def test_the_shards_keep_each_crops_pixels(pixel_data, token_data):
    """Crop 0's pixels are the picture resized to the crops' size; every crop's are the picture seen
    through that crop, to the uint8 step; the tokens are those of the shards without pixels."""
    manifest = json.loads((pixel_data / "manifest.json").read_text())
    assert manifest["pixels"] == {"rgb": {"size": IMAGE, "channels": 3, "dtype": "uint8"}}
    world = WorldDataset("train", size=RENDER, length=SCENES, modalities=("rgb",), class_colors=0.0)
    plain = {it["index"]: it for it in TokenShardDataset(token_data[0], crop="all")}
    for item in TokenShardDataset(pixel_data, crop="all"):
        pixels = item["pixels"]["rgb"]
        assert pixels.shape == (2, 3, IMAGE, IMAGE) and pixels.dtype == torch.uint8
        for k, crop in enumerate(item["crop"].numpy()):
            want = crop_view(world[item["index"]], crop, {"rgb": IMAGE})["rgb"]
            assert (pixels[k].float() / 255 - want).abs().max() <= 0.5 / 255 + 1e-6
        assert all(torch.equal(item["ids"][m], plain[item["index"]]["ids"][m]) for m in item["ids"])
    assert TokenShardDataset(token_data[0]).pixels == ()  # shards without pixels: none, and asking for them fails
    with pytest.raises(ValueError, match="keep no pixels of \\['rgb'\\].*--pixels"):
        TokenShardDataset(token_data[0], pixels=["rgb"])


def test_only_pictures_in_0_1_are_kept(tmp_path, token_data):
    with pytest.raises(ValueError, match="depth: pixels are kept of pictures in \\[0, 1\\]"):
        run_tokenize(tokenize_config(tmp_path / "t", token_data[1], pixels=("depth",)))


def test_a_resumed_tokenize_must_keep_the_same_pixels(tmp_path, token_data):
    out = tmp_path / "t"
    run_tokenize(tokenize_config(out, token_data[1], pixels=("rgb",), limit=8))
    with pytest.raises(ValueError, match="differs in pixels"):
        run_tokenize(tokenize_config(out, token_data[1], limit=8, resume=True))


def _model(data, inputs=("rgb", "tok_depth", "caption")) -> FourM:
    manifest = json.loads((data / "manifest.json").read_text())
    config = FourMConfig(dim=32, encoder_depth=1, decoder_depth=1, num_heads=2, image_size=IMAGE, patch_size=4,
                         inputs=inputs, outputs=("tok_rgb", "tok_depth", "caption"), num_encoder_tokens=24,
                         num_decoder_tokens=24, modality_overrides={"caption": {"max_length": 30}})
    return FourM(with_token_data(config, manifest))


def test_the_task_gives_normalised_pixels_and_one_sided_budgets(pixel_data):
    """The rgb record is the pixels normalised as the spec says, every patch valid; rgb is never a
    target and tok_rgb never an input, whatever the mixture's alphas, and the budgets stay exact."""
    pool = load_token_pool(pixel_data)
    assert pool.pixels["rgb"].shape == (SCENES, 2, 3, IMAGE, IMAGE)
    model = _model(pixel_data)
    specs = {**model.input_specs, **model.output_specs}
    masking = build_masking(FourMMaskingConfig(input_budget=10, target_budget=10), specs, model.input_specs,
                            model.output_specs)
    task = FourMTask(model, masking)
    raw = pool.rows(torch.arange(8), torch.ones(8, dtype=torch.long))
    records = task.records(raw)
    data, valid = records["rgb"]
    assert torch.allclose(data, normalize(model.input_specs["rgb"], raw["pixels"]["rgb"].float() / 255))
    assert valid.shape == (8, (IMAGE // 4) ** 2) and bool(valid.all())
    for step in range(5):
        batch = task.draw(raw, step, 0)
        assert not bool(batch["rgb"].counted.any()) and not bool(batch["tok_rgb"].encoded.any())
        given = sum(batch[n].encoded.sum(dim=1) for n in ("rgb", "tok_depth"))
        assert bool((given <= 10).all()) and bool(batch["tok_rgb"].counted.any())
        out = model(batch)
        assert torch.isfinite(out.loss) and "tok_rgb" in out.losses
    with pytest.raises(ValueError, match="reads rgb pixels, which the shards do not keep.*--pixels rgb"):
        with_token_data(_model(pixel_data).config, {**pool.manifest, "pixels": {}})
    with pytest.raises(ValueError, match="keep 3 x 16 px rgb pixels; model 'rgb' reads 3 x 32 px"):
        with_token_data(FourMConfig(dim=32, encoder_depth=1, decoder_depth=1, num_heads=2, image_size=32, patch_size=4,
                                    inputs=("rgb",), outputs=("tok_depth",)),
                        pool.manifest)


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory, pixel_data, token_data):
    root = tmp_path_factory.mktemp("pixel-run")
    cfg = write_config(root / "4m.yaml", pixel_data, token_data[1], root / "runs", inputs="rgb, tok_depth, caption",
                       patch_size=4)
    assert main(["pretrain", "--config", str(cfg), "--quiet"]) == 0
    return root / "runs" / "run"


def test_a_run_on_pixels_reports_draws_and_predicts(tmp_path, pixel_run):
    run = pixel_run
    report = json.loads((run / "report.json").read_text())
    assert list(report["conditions"])[:2] == ["rgb->tok_depth", "rgb->caption"]  # not tok_rgb: its own tokens
    assert "rgb->tok_rgb" not in report["conditions"] and "tok_depth->tok_rgb" in report["conditions"]
    assert np.isfinite(report["from_rgb"]["model"]["depth_l1"]) and "tok_rgb/ce" in report["val"]
    assert (run / "predictions.png").stat().st_size > 0
    from PIL import Image

    picture = WorldDataset("val", size=IMAGE, length=1)[0]["rgb"]
    Image.fromarray((picture.permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(run), "--rgb", str(tmp_path / "a.png"), "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["predicted"] == ["depth"]
    assert np.load(out / "depth.npy").shape == (1, IMAGE, IMAGE) and (out / "caption.txt").read_text().strip()


def test_a_pixel_run_fine_tunes_from_the_picture(tmp_path, pixel_run, capsys):
    """`multimae finetune --inputs rgb` on a run reading pixels feeds the encoder the picture itself."""
    from fourm.test_finetune import TINY

    assert main(["finetune", "--quiet", "--task", "segmentation", "--inputs", "rgb", "--checkpoint", str(pixel_run),
                 *TINY, "train.steps=2", f"train.out_dir={tmp_path}", "train.name=ft",
                 f"data.cache_dir={tmp_path / 'cache'}"]) == 0
    report = json.loads((tmp_path / "ft" / "report.json").read_text())
    assert report["inputs"] == ["rgb"] and np.isfinite(report["val"]["loss"])
    state = torch.load(latest_checkpoint(tmp_path / "ft"), weights_only=True)["model"]
    proj = [k for k in state if k.endswith("rgb.proj.weight")]
    assert len(proj) == 1 and tuple(state[proj[0]].shape) == (32, 4 * 4 * 3)  # the 4M run's patch projection
