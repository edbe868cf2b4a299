"""Which encoder tokens a fine-tuning head reads, and how they become a feature map.

Shapes: B batch, N = h * w tokens of one modality, D encoder width, M modalities read.

A head reads the tokens of one or several input modalities (``modalities``); several are
concatenated along the feature axis (M * D features per grid position), as in the official
MultiMAE heads. Global tokens are never read by the dense heads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from multimae.model.encoder import EncoderOutput


def select_tokens(enc: EncoderOutput, modalities: Sequence[str], tokens: Tensor | None = None) -> Tensor:
    """(B, N, M * D): the tokens of ``modalities`` (in that order), concatenated along features.

    ``tokens`` defaults to the encoder's final output; pass an entry of ``enc.intermediates`` for
    another layer. Raises ValueError when a modality was not among the encoded inputs.
    """
    missing = [m for m in modalities if m not in enc.layout.names]
    if missing:
        raise ValueError(
            f"the head reads the tokens of {list(modalities)}, but {missing} were not given to the "
            f"encoder (inputs: {list(enc.layout.names)})"
        )
    parts = enc.modality_tokens(tokens)
    return torch.cat([parts[m] for m in modalities], dim=-1)


def tokens_to_map(x: Tensor, grid: tuple[int, int]) -> Tensor:
    """(B, h * w, C) row-major tokens -> (B, C, h, w)."""
    B, N, C = x.shape
    h, w = grid
    if N != h * w:
        raise ValueError(f"{N} tokens do not fill a {h}x{w} grid")
    return x.transpose(1, 2).reshape(B, C, h, w)
