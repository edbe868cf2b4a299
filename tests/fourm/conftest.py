"""A tiny 4M pre-training run on tiny world token shards, made once for the 4M tests that need one."""

from __future__ import annotations

from pathlib import Path

import pytest

from multimae.cli.main import main
from multimae.config.loader import to_yaml
from multimae.pretokenize import CropConfig, TokenizeConfig, run_tokenize
from multimae.tokenizers.sequence_training import train_sequence_tokenizer, world_texts

from token_shards.conftest import IMAGE, RENDER, make_tokenizer

SCENES = 24


@pytest.fixture(scope="package")
def token_data(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """24 world scenes, 2 crops each, tokenised at 16 px (4 x 4 grids) with tiny untrained map
    tokenizers, and captions with a tiny trained sequence tokenizer."""
    root = tmp_path_factory.mktemp("fourm-data")
    dirs = {m: make_tokenizer(m).save(root / f"tok-{m}") for m in ("rgb", "depth")}
    from multimae.tokenizers.config import TokenizerDataConfig, TokenizerRunConfig
    from multimae.tokenizers.training import RUN_CONFIG_FILE

    for m, folder in dirs.items():
        (folder / RUN_CONFIG_FILE).write_text(to_yaml(TokenizerRunConfig(modality=m, data=TokenizerDataConfig(
            image_size=IMAGE))))
    texts = world_texts("train", 40, size=RENDER, progress=False)
    dirs["caption"] = train_sequence_tokenizer({"caption": texts["caption"]}, vocab_size=200, num_sentinels=20,
                                               coord_bins=4, max_length=30).save(root / "tok-caption")
    run_tokenize(tokenize_config(root / "tokens", dirs))
    return root / "tokens", dirs


def tokenize_config(out: Path, dirs: dict[str, Path], **changes) -> TokenizeConfig:
    """How the package's token data is made (``changes``: other settings, e.g. ``pixels``)."""
    return TokenizeConfig(data="world", out=str(out), tokenizers={m: str(d) for m, d in dirs.items()},
                          crops=CropConfig(num_crops=2, scale=(0.5, 1.0)), shard_size=8, world_scenes=SCENES,
                          render_size=RENDER, image_size=IMAGE, batch_size=4, progress=False, **changes)


@pytest.fixture(scope="package")
def pixel_data(tmp_path_factory, token_data) -> Path:
    """The same scenes, crops and tokenizers, with the RGB pixels kept beside the tokens (--pixels rgb)."""
    _, dirs = token_data
    out = tmp_path_factory.mktemp("fourm-pixels") / "tokens"
    run_tokenize(tokenize_config(out, dirs, pixels=("rgb",)))
    return out


def write_config(path: Path, data: Path, dirs: dict[str, Path], out: Path, steps: int = 6,
                 inputs: str = "tok_rgb, tok_depth, caption", patch_size: int = 16) -> Path:
    path.write_text(f"""
family: 4m
model: {{size: tiny, dim: 32, encoder_depth: 1, decoder_depth: 1, num_heads: 2, image_size: {IMAGE},
        patch_size: {patch_size}, inputs: [{inputs}], outputs: [tok_rgb, tok_depth, caption],
        num_encoder_tokens: 24, num_decoder_tokens: 24, modality_overrides: {{caption: {{max_length: 30}}}}}}
data: {{root: {data}, batch_size: 4, val_fraction: 0.25, world_eval_scenes: 8,
       tokenizers: {{rgb: {dirs['rgb']}, depth: {dirs['depth']}, caption: {dirs['caption']}}}}}
masking: {{input_budget: [6, 12], target_budget: [6, 12], max_tokens: {{caption: 14}}}}
optim: {{lr: 1.0e-3, warmup_fraction: 0.2}}
train: {{steps: {steps}, precision: fp32, threads: 1, device: cpu, log_every: 2, val_every: 3, ckpt_every: 3,
        num_val_batches: 1, out_dir: {out}, name: run}}
""")
    return path


@pytest.fixture(scope="package")
def trained_run(tmp_path_factory, token_data) -> Path:
    data, dirs = token_data
    root = tmp_path_factory.mktemp("fourm-run")
    cfg = write_config(root / "4m.yaml", data, dirs, root / "runs")
    assert main(["pretrain", "--config", str(cfg), "--quiet"]) == 0
    return root / "runs" / "run"
