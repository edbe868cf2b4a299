"""Load any supported checkpoint as a ready-to-use model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from multimae.convert.api import load_any
from multimae.model import Model


def load_model(
    source: str | Path | Mapping[str, Tensor],
    *,
    device: str | torch.device = "cpu",
    num_heads: int | None = None,
    decoder_num_heads: int | None = None,
    head_modalities: Sequence[str] | None = None,
    hooks: Sequence[int] | None = None,
    input_order: Sequence[str] | None = None,
    trusted: bool = False,
) -> Model:
    """A model in eval mode on ``device`` from: our run folder, training checkpoint or exported
    weights; an official MultiMAE / MultiViT ``.pth`` (a `MultiMAE`, or a `FineTuneModel` for
    fine-tuned checkpoints); timm or MAE ViT weights (an encoder without decoders); or a state
    dict of any of these. Arguments as `multimae.convert.load_any`, which also returns the report
    of what was mapped and how the architecture was inferred."""
    model, _ = load_any(source, num_heads=num_heads, decoder_num_heads=decoder_num_heads,
                        head_modalities=head_modalities, hooks=hooks, input_order=input_order, trusted=trusted)
    return model.to(device).eval()
