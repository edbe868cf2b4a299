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


@pytest.fixture(scope="session")
def tiny_fourm():
    """A 4M model: a family the page has no view for."""
    from multimae.model.fourm import FourM, fourm_config

    cfg = fourm_config("tiny", dim=32, num_heads=2, encoder_depth=1, decoder_depth=1, image_size=32, patch_size=8,
                       inputs=("rgb", "tok_depth"), outputs=("tok_depth",), num_encoder_tokens=16,
                       num_decoder_tokens=16, modality_overrides={"tok_depth": {"num_channels": 16}})
    torch.manual_seed(0)
    return FourM(cfg)


M3AE_TINY = [
    "model.encoder={dim: 32, depth: 1, num_heads: 2, image_size: 32, patch_size: 8}",
    "model.decoder={dim: 16, depth: 1, num_heads: 2, kind: joint}",
    "data.image_size=32", "data.batch_size=8", "data.num_workers=0", "data.tokenizer_vocab_size=200",
    "data.world_train_scenes=16", "data.world_val_scenes=8",
    "train.log_every=1", "train.val_every=1", "train.ckpt_every=1", "train.precision=fp32", "train.steps=1",
]


@pytest.fixture(scope="session")
def m3ae_run(tmp_path_factory):
    """A tiny M3AE run folder (`multimae pretrain --config m3ae-cpu`, one step: 32 px, 4 x 4 tokens, a
    caption of at most 32 word pieces, the run's own 200-piece tokenizer)."""
    from multimae.cli.main import main

    root = tmp_path_factory.mktemp("demo-m3ae")
    args = [*M3AE_TINY, f"train.out_dir={root}", "train.name=run", f"data.cache_dir={root / 'cache'}"]
    assert main(["pretrain", "--config", "m3ae-cpu", "--quiet", *args]) == 0
    return root / "run"


@pytest.fixture(scope="session")
def m3ae_model(m3ae_run):
    return load_model(m3ae_run)


@pytest.fixture
def m3ae_session(m3ae_model, m3ae_run) -> DemoSession:
    from multimae.tasks.loading import load_tokenizers

    return DemoSession(m3ae_model, m3ae_run.name, DemoLimits(), tokenizers=load_tokenizers(m3ae_run, m3ae_model))


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
