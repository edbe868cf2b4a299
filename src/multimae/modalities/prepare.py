"""Raw batches -> model inputs and loss targets, as each modality's spec says.

Shapes: B batch, C channels, H W full image resolution, s a modality's stride.

Raw conventions (see `multimae.modalities.spec`): dense maps (B, C, H, W) float with NaN at
invalid pixels; categorical maps (B, H, W) integer class ids, all at full image resolution.
Categorical modalities with stride s are reduced to (B, H/s, W/s) by nearest-neighbour sampling.

Samples lacking a modality (mixed batches, see `multimae.data.collate`): the presence record
``present = {modality: (B,) bool}`` (``raw[PRESENT_KEY]`` as `collate` writes it, or given) marks
them. Their inputs are zeros (dense and categorical), their dense targets all NaN and their
categorical targets ``ignore_index`` (when the spec has one; otherwise the placeholder 0 stays, and
a loss must read `PreparedBatch.present`), so losses that skip invalid pixels skip them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from multimae.data.collate import PRESENT_KEY
from multimae.modalities.normalize import normalize
from multimae.modalities.spec import ModalitySpec


@dataclass
class PreparedBatch:
    """``inputs``: what the encoder takes (invalid values -> 0); ``targets``: what the losses compare
    against, keyed by output modality (invalid values stay NaN, so losses can skip them);
    ``present``: (B,) bool per input and output modality whose source modality some sample of the
    batch may lack (True = the sample has it); a modality not listed is present in every sample."""

    inputs: dict[str, Tensor]
    targets: dict[str, Tensor]
    present: dict[str, Tensor] = field(default_factory=dict)


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


def _presence(raw: Mapping[str, Any], present: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
    """The checked presence record: ``present``, else ``raw[PRESENT_KEY]``, else empty."""
    record = present if present is not None else raw.get(PRESENT_KEY) or {}
    if not hasattr(record, "items"):  # a ValueError, like every bad input of the library
        raise ValueError(f"the presence record must map modality names to (B,) bool tensors, got {type(record).__name__}")
    out: dict[str, Tensor] = {}
    for name, flags in record.items():
        data = raw.get(name)
        if not isinstance(flags, Tensor) or flags.dtype != torch.bool or flags.dim() != 1:
            raise ValueError(f"present[{name!r}] must be a (B,) bool tensor, got {flags!r:.80}")
        if isinstance(data, Tensor) and data.shape[0] != flags.shape[0]:
            raise ValueError(f"present[{name!r}] has {flags.shape[0]} entries, the batch's {name!r} has "
                             f"{data.shape[0]} samples")
        out[name] = flags
    return out


def _blank(x: Tensor, absent: Tensor, value: float) -> Tensor:
    """``x`` (B, ...) with the rows where ``absent`` (B,) is True set to ``value``."""
    return torch.where(absent.to(x.device).view(-1, *([1] * (x.dim() - 1))), torch.full_like(x, value), x)


def prepare_batch(
    raw: Mapping[str, Any],
    input_specs: Mapping[str, ModalitySpec],
    output_specs: Mapping[str, ModalitySpec],
    present: Mapping[str, Tensor] | None = None,
) -> PreparedBatch:
    """Normalise every modality of ``raw`` that the model uses, once, for inputs and targets.

    Modalities missing from ``raw`` are skipped (a model accepts any subset of its inputs); an
    output whose source modality is missing gets no target. ``present`` ({modality: (B,) bool},
    default ``raw[PRESENT_KEY]``) marks samples that lack a modality (see the module docstring);
    `PreparedBatch.present` carries it to each input and output modality fed by such a source.
    """
    record = _presence(raw, present)
    cache: dict[str, Tensor] = {}

    def prepared(spec: ModalitySpec) -> Tensor:
        key = f"{spec.source_name}:{spec.normalization}:{spec.robust_trim}"
        if key not in cache:
            data = raw[spec.source_name]
            absent = ~record[spec.source_name] if spec.source_name in record else None
            if absent is not None and spec.is_discrete:
                fill = spec.pad_id if spec.kind == "tokens" else spec.ignore_index if spec.ignore_index is not None else 0
                data = _blank(data, absent, fill)
            elif absent is not None:
                data = _blank(data.float(), absent, float("nan"))
            cache[key] = _prepare(spec, data)
        return cache[key]

    inputs, flags = {}, {}
    for name, spec in input_specs.items():
        if name in raw:
            x = prepared(spec)
            if spec.source_name in record:
                flags[name] = record[spec.source_name]
                x = _blank(x, ~flags[name], spec.pad_id if spec.kind == "tokens" else 0)  # never encoded
            inputs[name] = x if spec.is_discrete else torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    targets = {}
    for name, spec in output_specs.items():
        if spec.source_name in raw:
            targets[name] = prepared(spec)
            if spec.source_name in record:
                flags[name] = record[spec.source_name]
    return PreparedBatch(inputs, targets, flags)
