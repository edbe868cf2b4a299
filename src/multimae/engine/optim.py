"""Optimiser parameter groups and the learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from multimae.model.state_keys import named_checkpoint_parameters


def layer_id(name: str, num_layers: int) -> int:
    """Depth of parameter ``name`` for layer-wise lr decay, in a model with ``num_layers`` blocks.

    0: input adapters (patch embeddings, positional tables) and global tokens (a 4M encoder's
    ``encoder_embeddings`` and register tokens); ``i + 1``: encoder block ``i`` (``encoder.<i>.*``);
    ``num_layers + 1``: everything else (heads, decoders, a 4M encoder's final norm).
    """
    if name.startswith(("input_adapters.", "global_tokens", "encoder_embeddings.", "register_tokens")):
        return 0
    if name.startswith("encoder."):
        return int(name.split(".")[1]) + 1
    return num_layers + 1


def layer_scale(layer: int, num_layers: int, decay: float) -> float:
    """Learning-rate multiplier ``decay ** (num_layers + 1 - layer)`` (BEiT / MAE): 1 for the head,
    ``decay`` for the last block, ``decay ** num_layers`` for the first, ``decay ** (num_layers + 1)``
    for the input adapters and global tokens."""
    return decay ** (num_layers + 1 - layer)


def param_groups(model: nn.Module, weight_decay: float, skip: Iterable[str] = (), layer_decay: float = 1.0,
                 num_layers: int | None = None) -> list[dict]:
    """AdamW groups: decayed weight matrices, and undecayed norms, biases, tokens and embeddings.

    Parameters are named by their state-dict keys (the official checkpoint names, also for a
    composed model). A parameter is not decayed when it has at most one dimension (norm weights,
    biases) or is named in ``skip`` (tokens, positional and modality embeddings:
    `no_weight_decay()`). Frozen parameters are left out. With ``layer_decay`` < 1 the groups are
    further split by `layer_id` and each carries ``lr_scale`` = `layer_scale` (`set_lr`
    multiplies by it); ``num_layers`` defaults to the number of encoder blocks (``encoder.<i>.*``).
    """
    skip = set(skip)
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    named = named_checkpoint_parameters(model)
    if layer_decay < 1.0 and num_layers is None:
        blocks = {int(n.split(".")[1]) for n in named if n.startswith("encoder.")}
        if not blocks:
            raise ValueError("layer-wise lr decay needs num_layers (the model has no `encoder.<i>` blocks)")
        num_layers = max(blocks) + 1
    groups: dict[tuple[int, bool], dict] = {}  # key (layer, not decayed): per layer, the decayed group first
    for name, p in named.items():
        if not p.requires_grad:
            continue
        layer = layer_id(name, num_layers) if layer_decay < 1.0 else 0  # type: ignore[arg-type]
        decayed = not (p.ndim <= 1 or name in skip)
        group = groups.get((layer, not decayed))
        if group is None:
            group = groups[(layer, not decayed)] = {"params": [], "weight_decay": weight_decay if decayed else 0.0}
            if layer_decay < 1.0:
                group.update(lr_scale=layer_scale(layer, num_layers, layer_decay), layer=layer)  # type: ignore[arg-type]
        group["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def lr_at(step: int, total_steps: int, peak: float, warmup_steps: int, warmup_lr: float = 1e-6,
          min_lr: float = 0.0) -> float:
    """Linear warm-up from ``warmup_lr`` to ``peak`` over ``warmup_steps``, then cosine to ``min_lr``."""
    if step < warmup_steps:
        return warmup_lr + (peak - warmup_lr) * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (peak - min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate to ``lr`` times its ``lr_scale`` (1 when absent)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
