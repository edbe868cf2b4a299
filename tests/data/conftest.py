"""Shared tiny data sets, generated once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from multimae.data.writer import GenerateConfig, generate

SIZE = 24


@pytest.fixture(scope="session")
def folder_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("folder")
    generate(root, GenerateConfig(count=6, size=SIZE, fmt="folder"), progress=False)
    return root


@pytest.fixture(scope="session")
def shard_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    generate(root, GenerateConfig(count=20, size=SIZE, fmt="shards", shard_size=4), progress=False)
    return root
