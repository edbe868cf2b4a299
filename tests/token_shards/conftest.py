"""Tiny untrained map tokenizers (16 px crops, 4x4 tokens) and tiny data sources, made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from multimae.config.loader import to_yaml
from multimae.data import WorldDataset
from multimae.data.writer import GenerateConfig, generate
from multimae.modalities.registry import BUILTIN_MODALITIES
from multimae.tokenizers import MapTokenizerConfig, QuantizerConfig, SpatialTokenizer, fit_statistics
from multimae.tokenizers.config import TokenizerDataConfig, TokenizerRunConfig
from multimae.tokenizers.training import RUN_CONFIG_FILE

IMAGE = 16  # pixels a crop is resized to: two stride-2 stages, 4 px per token, a 4x4 grid
RENDER = 32  # world render size (crops are taken in these pixels)
MODALITIES = ("depth", "semseg", "normals")


def make_tokenizer(modality: str, seed: int = 0) -> SpatialTokenizer:
    """An untrained tokenizer of ``modality`` with statistics fitted on 4 world scenes."""
    world = WorldDataset("train", size=RENDER, length=4)
    raw = torch.stack([world[i][modality] for i in range(4)])
    torch.manual_seed(seed)
    config = MapTokenizerConfig(widths=(8, 8), quantizer=QuantizerConfig(kind="fsq", levels=(5, 3, 3)))
    return SpatialTokenizer(fit_statistics(BUILTIN_MODALITIES[modality], raw), config)


@pytest.fixture(scope="session")
def tokenizer_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A saved tokenizer per modality, each with the run config a training run leaves beside it
    (so its image size, ``data.image_size``, is known without --image-size)."""
    root = tmp_path_factory.mktemp("tokenizers")
    dirs = {}
    for modality in MODALITIES:
        folder = make_tokenizer(modality).save(root / modality)
        run = TokenizerRunConfig(modality=modality, data=TokenizerDataConfig(image_size=IMAGE))
        (folder / RUN_CONFIG_FILE).write_text(to_yaml(run))
        dirs[modality] = folder
    return dirs


@pytest.fixture(scope="session")
def folder_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("folder")
    generate(root, GenerateConfig(count=5, size=24, fmt="folder"), progress=False)
    return root


@pytest.fixture(scope="session")
def shard_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    generate(root, GenerateConfig(count=5, size=24, fmt="shards", shard_size=2), progress=False)
    return root
