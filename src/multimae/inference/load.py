"""Load any supported checkpoint as a ready-to-use model."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from multimae.convert.api import load_any
from multimae.model.multimae import MultiMAE


def load_model(
    source: str | Path | Mapping[str, Tensor],
    *,
    device: str | torch.device = "cpu",
    num_heads: int | None = None,
    decoder_num_heads: int | None = None,
    trusted: bool = False,
) -> MultiMAE:
    """A `MultiMAE` in eval mode on ``device`` from: our run folder, training checkpoint or
    exported weights; an official MultiMAE / MultiViT ``.pth``; timm or MAE ViT weights (encoder
    only); or a state dict of any of these. See `multimae.convert.load_any` for the report of
    what was mapped and how the architecture was inferred."""
    model, _ = load_any(source, num_heads=num_heads, decoder_num_heads=decoder_num_heads, trusted=trusted)
    return model.to(device).eval()
