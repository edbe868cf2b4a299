"""A tiny folder of world scenes with feature vectors, its token shards (rgb, depth and the feature's
global tokens) and a tiny 4M run that reads and predicts all three, made once for the retrieval tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from multimae.cli.main import main
from multimae.config.loader import to_yaml
from multimae.data.writer import GenerateConfig, generate
from multimae.modalities.registry import get_modality
from multimae.tokenizers import QuantizerConfig, VectorTokenizer, VectorTokenizerConfig
from multimae.tokenizers.config import TokenizerDataConfig, TokenizerRunConfig
from multimae.tokenizers.training import RUN_CONFIG_FILE

from token_shards.conftest import IMAGE, RENDER, make_tokenizer

SCENES = 16
FEATURES = 8  # channels of the test's feature vectors
TOKENS = 4  # global tokens per feature vector: a 2 x 2 table


def feature_files(root: Path, split: str = "train", seed: int = 0) -> torch.Tensor:
    """Write one random (1, FEATURES) vector per picture of ``root/split`` beside it (as `multimae
    pseudolabel --tasks feature` does) and return them (M, 1, FEATURES) in key order."""
    pictures = sorted((root / split / "rgb").rglob("*.png"))
    vectors = torch.randn(len(pictures), 1, FEATURES, generator=torch.Generator().manual_seed(seed))
    for path, v in zip(pictures, vectors):
        out = root / split / "feature" / path.relative_to(root / split / "rgb").with_suffix(".npy")
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, v.numpy())
    return vectors


@pytest.fixture(scope="package")
def feature_data(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """(a folder root of SCENES world scenes holding rgb, depth and feature, {modality: tokenizer folder})."""
    root = tmp_path_factory.mktemp("retrieval-data")
    generate(root / "data", GenerateConfig(count=SCENES, size=RENDER, fmt="folder"), progress=False)
    vectors = feature_files(root / "data")
    dirs = {}
    for m in ("rgb", "depth"):
        dirs[m] = make_tokenizer(m).save(root / f"tok-{m}")
        (dirs[m] / RUN_CONFIG_FILE).write_text(to_yaml(TokenizerRunConfig(modality=m, data=TokenizerDataConfig(
            image_size=IMAGE))))
    torch.manual_seed(0)
    spec = get_modality("feature").replace(num_channels=FEATURES)
    config = VectorTokenizerConfig(tokens=TOKENS, hidden=16, layers=1, quantizer=QuantizerConfig(kind="fsq",
                                                                                                 levels=(5, 3, 3)))
    dirs["feature"] = VectorTokenizer.fit(spec, vectors, config).save(root / "tok-feature")
    return root / "data", dirs


@pytest.fixture(scope="package")
def feature_tokens(tmp_path_factory, feature_data) -> Path:
    """`multimae tokenize` of the folder: rgb and depth maps and the feature vectors, 2 crops each."""
    data, dirs = feature_data
    out = tmp_path_factory.mktemp("retrieval-tokens") / "tokens"
    assert main(["tokenize", "--data", str(data), "--tokenizers", *(f"{m}={d}" for m, d in dirs.items()), "--out",
                 str(out), "--crops", "2", "--min-scale", "0.5", "--shard-size", "8", "--batch-size", "4",
                 "--quiet"]) == 0
    return out


@pytest.fixture(scope="package")
def feature_run(tmp_path_factory, feature_data, feature_tokens) -> Path:
    """A tiny 4M run (6 steps) reading and predicting tok_rgb, tok_depth and tok_feature."""
    _, dirs = feature_data
    root = tmp_path_factory.mktemp("retrieval-run")
    cfg = root / "4m.yaml"
    cfg.write_text(f"""
family: 4m
model: {{size: tiny, dim: 32, encoder_depth: 1, decoder_depth: 1, num_heads: 2, image_size: {IMAGE},
        inputs: [tok_rgb, tok_depth, tok_feature], outputs: [tok_rgb, tok_depth, tok_feature],
        num_encoder_tokens: 16, num_decoder_tokens: 16}}
data: {{root: {feature_tokens}, batch_size: 4, val_fraction: 0.25, world_eval_scenes: 0,
       tokenizers: {{rgb: {dirs['rgb']}, depth: {dirs['depth']}, feature: {dirs['feature']}}}}}
masking: {{input_budget: [4, 12], target_budget: [4, 12]}}
optim: {{lr: 1.0e-3, warmup_fraction: 0.2}}
train: {{steps: 6, precision: fp32, threads: 1, device: cpu, log_every: 2, val_every: 3, ckpt_every: 3,
        num_val_batches: 1, out_dir: {root / 'runs'}, name: run}}
""")
    assert main(["pretrain", "--config", str(cfg), "--quiet"]) == 0
    return root / "runs" / "run"
