"""Shared tiny configurations and inputs for the test suite (CPU, seconds)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from multimae.model import MultiMAE, model_config

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GOLDEN = SHARED / "reference" / "golden"

NUM_CLASSES = 5
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def load_experiment(name: str) -> ModuleType:
    """``experiments/<name>.py`` as a module (its report code is tested; the experiment never runs)."""
    spec = importlib.util.spec_from_file_location(f"{name}_experiment", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def assert_same_training(a, b):
    """Parameters equal up to float reordering, except key biases (see below)."""
    for k, v in a.items():
        w = b[k]
        # Key biases get a zero gradient in exact arithmetic (softmax is shift-invariant): Adam
        # turns their rounding noise into full-size steps, so only the other slices are compared.
        if k.endswith("qkv.bias"):
            keep = torch.ones_like(v, dtype=torch.bool)
            keep[v.shape[0] // 3 : 2 * v.shape[0] // 3] = False
            v, w = v[keep], w[keep]
        elif k.endswith("kv.bias"):
            v, w = v[v.shape[0] // 2 :], w[v.shape[0] // 2 :]
        torch.testing.assert_close(w, v, atol=1e-6, rtol=1e-5, msg=k)


def tiny_config(**overrides):
    """A 32 px, patch 8 (4x4 grid), 2-block MultiMAE with every built-in modality."""
    args = dict(
        encoder=dict(dim=32, depth=2, num_heads=2, image_size=32, patch_size=8),
        decoder=dict(dim=16, depth=1, num_heads=2),
        inputs=("rgb", "depth", "semseg"),
        outputs=("rgb", "depth", "semseg", "norm_rgb"),
        modality_overrides={"semseg": {"num_channels": NUM_CLASSES}},
    )
    args.update(overrides)
    return model_config("tiny", **args)


@pytest.fixture
def tiny_model() -> MultiMAE:
    torch.manual_seed(0)
    return MultiMAE(tiny_config()).eval()


def make_inputs(batch: int = 2, size: int = 32, seed: int = 0, num_classes: int = NUM_CLASSES) -> dict:
    """Prepared model inputs: rgb (B,3,S,S), depth (B,1,S,S), semseg ids (B,S/4,S/4)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "rgb": torch.randn(batch, 3, size, size, generator=g),
        "depth": torch.randn(batch, 1, size, size, generator=g),
        "semseg": torch.randint(0, num_classes, (batch, size // 4, size // 4), generator=g),
    }


def make_targets(inputs: dict) -> dict:
    return {**inputs, "norm_rgb": inputs["rgb"]}


@pytest.fixture(autouse=True)
def _precision_cache_in_tmp(tmp_path_factory, monkeypatch):
    """`precision auto` timings go to the session's temporary folder, not ~/.cache/multimae."""
    path = tmp_path_factory.getbasetemp() / "precision.json"
    monkeypatch.setattr("multimae.engine.precision.cache_path", lambda: path)
