"""Optimiser parameter groups and the learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float, skip: Iterable[str] = ()) -> list[dict]:
    """Two AdamW groups: decayed weight matrices, and undecayed norms, biases, tokens and embeddings.

    A parameter is not decayed when it has at most one dimension (norm weights, biases) or is
    named in ``skip`` (tokens, positional and modality embeddings: `no_weight_decay()`).
    Frozen parameters are left out.
    """
    skip = set(skip)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def lr_at(step: int, total_steps: int, peak: float, warmup_steps: int, warmup_lr: float = 1e-6,
          min_lr: float = 0.0) -> float:
    """Linear warm-up from ``warmup_lr`` to ``peak`` over ``warmup_steps``, then cosine to ``min_lr``."""
    if step < warmup_steps:
        return warmup_lr + (peak - warmup_lr) * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (peak - min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
