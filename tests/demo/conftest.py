"""A tiny MultiMAE with the built-in world's classes, saved and loaded back as a checkpoint, and
demo sessions on it (CPU, a fraction of a second per prediction)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from multimae.convert import save_multimae
from multimae.data.world import NUM_CLASSES
from multimae.demo import DemoLimits, DemoSession
from multimae.inference import load_model
from multimae.model import MultiMAE

from conftest import tiny_config


@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory):
    """A 32 px, patch 8 (4 x 4 tokens) MultiMAE on every world input, as our self-contained file."""
    torch.manual_seed(0)
    model = MultiMAE(tiny_config(modality_overrides={"semseg": {"num_channels": NUM_CLASSES}}))
    return save_multimae(model, tmp_path_factory.mktemp("demo-ckpt") / "tiny.safetensors")


@pytest.fixture(scope="session")
def demo_model(demo_checkpoint):
    return load_model(demo_checkpoint)


@pytest.fixture
def session(demo_model, demo_checkpoint) -> DemoSession:
    return DemoSession(demo_model, demo_checkpoint.name, DemoLimits())


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def decode_picture(data_url: str) -> np.ndarray:
    """A ``data:image/png;base64,...`` picture as uint8 (H, W, 3)."""
    import base64

    head, _, payload = data_url.partition(",")
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(payload))).convert("RGB"))
