"""Raw batches -> model inputs and loss targets, as each modality's spec says.

Shapes: B batch, C channels, H W full image resolution, s a modality's stride.

Raw conventions (see `multimae.modalities.spec`): dense maps (B, C, H, W) float with NaN at
invalid pixels; categorical maps (B, H, W) integer class ids, all at full image resolution.
Categorical modalities with stride s are reduced to (B, H/s, W/s) by nearest-neighbour sampling.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from multimae.modalities.normalize import normalize
from multimae.modalities.spec import ModalitySpec


@dataclass
class PreparedBatch:
    """``inputs``: what the encoder takes (invalid values -> 0); ``targets``: what the losses compare
    against, keyed by output modality (invalid values stay NaN, so losses can skip them)."""

    inputs: dict[str, Tensor]
    targets: dict[str, Tensor]


def _check_dense(spec: ModalitySpec, raw: Tensor) -> None:
    if raw.dim() != 4 or raw.shape[1] != spec.num_channels:
        raise ValueError(
            f"{spec.name}: expected a raw (B, {spec.num_channels}, H, W) tensor, got shape {tuple(raw.shape)}"
        )


def prepare_categorical(spec: ModalitySpec, raw: Tensor) -> Tensor:
    """(B, H, W) class ids at full resolution -> (B, H/s, W/s) int64 (nearest); every pixel is range-checked."""
    if raw.dim() != 3 or raw.is_floating_point():
        raise ValueError(f"{spec.name}: expected (B, H, W) integer class ids, got {raw.dtype} {tuple(raw.shape)}")
    ids = raw.long()
    valid = ids != spec.ignore_index if spec.ignore_index is not None else torch.ones_like(ids, dtype=torch.bool)
    if bool(valid.any()):
        lo, hi = int(ids[valid].min()), int(ids[valid].max())
        if lo < 0 or hi >= spec.num_channels:
            raise ValueError(
                f"{spec.name}: class id out of range: found ids in [{lo}, {hi}], the modality has "
                f"{spec.num_channels} classes"
            )
    if spec.stride > 1:
        H, W = ids.shape[-2:]
        if H % spec.stride or W % spec.stride:
            raise ValueError(f"{spec.name}: map size {H}x{W} is not divisible by the stride {spec.stride}")
        ids = ids[:, :: spec.stride, :: spec.stride].contiguous()  # nearest: the top-left pixel of each block
    return ids


def prepare_tokens(spec: ModalitySpec, raw: Tensor) -> Tensor:
    """(B, L) token ids -> (B, max_length) int64, padded with ``pad_id`` (so every sequence of a
    modality has one length, whether it is given or only predicted)."""
    if raw.dim() != 2 or raw.is_floating_point() or raw.dtype == torch.bool:
        raise ValueError(f"{spec.name}: expected (B, L) integer token ids, got {raw.dtype} {tuple(raw.shape)}")
    B, L = raw.shape
    if L > spec.max_length:
        raise ValueError(f"{spec.name}: sequence of {L} tokens, longer than max_length {spec.max_length}")
    ids = raw.long()
    if L < spec.max_length:
        ids = torch.cat([ids, ids.new_full((B, spec.max_length - L), spec.pad_id)], dim=1)
    return ids


def _prepare(spec: ModalitySpec, raw: Tensor) -> Tensor:
    if spec.kind == "tokens":
        return prepare_tokens(spec, raw)
    if spec.kind == "vector":
        return raw.float()
    return prepare_categorical(spec, raw) if spec.is_categorical else prepare_dense(spec, raw)


def prepare_dense(spec: ModalitySpec, raw: Tensor) -> Tensor:
    """(B, C, H, W) raw -> normalised (B, C, H, W) float, NaN kept at invalid pixels."""
    _check_dense(spec, raw)
    return normalize(spec, raw)


def prepare_batch(
    raw: Mapping[str, Tensor],
    input_specs: Mapping[str, ModalitySpec],
    output_specs: Mapping[str, ModalitySpec],
) -> PreparedBatch:
    """Normalise every modality of ``raw`` that the model uses, once, for inputs and targets.

    Modalities missing from ``raw`` are skipped (a model accepts any subset of its inputs); an
    output whose source modality is missing gets no target.
    """
    cache: dict[str, Tensor] = {}

    def prepared(spec: ModalitySpec) -> Tensor:
        key = f"{spec.source_name}:{spec.normalization}:{spec.robust_trim}"
        if key not in cache:
            data = raw[spec.source_name]
            cache[key] = _prepare(spec, data)
        return cache[key]

    inputs = {}
    for name, spec in input_specs.items():
        if name in raw:
            x = prepared(spec)
            inputs[name] = x if spec.is_discrete else torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    targets = {name: prepared(spec) for name, spec in output_specs.items() if spec.source_name in raw}
    return PreparedBatch(inputs, targets)
