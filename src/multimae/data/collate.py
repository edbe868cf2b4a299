"""Batching samples (some of which may lack a modality) and seeding their per-sample augmentation.

Shapes: B batch.

Mixed batches: samples need not have the same keys (an image without depth, a text-only sample
beside image samples). A tensor missing from some samples is filled, for those samples, with a
placeholder of the shape and dtype the other samples give it: NaN for floating-point tensors (NaN
already means "invalid pixel" everywhere) and 0 (False) for integer and bool tensors, a value
nobody may read: the batch then holds ``batch[PRESENT_KEY] = {key: (B,) bool}``, True where the
sample has the key. `PRESENT_KEY` lists exactly the tensor keys missing from at least one sample,
and is itself absent when every sample has every tensor key (so complete batches are what they
always were); a key not listed is present in every sample. A key no sample has is absent from the
batch. Strings (and other objects) missing from some samples are ``None`` in their list; integers
(labels) cannot be filled without making up a class, so a missing integer raises a ValueError.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

PRESENT_KEY = "present"  # batch[PRESENT_KEY][key]: (B,) bool, True where the sample has ``key``


def placeholder(like: torch.Tensor) -> torch.Tensor:
    """The stand-in for a missing tensor shaped like ``like``: NaN if floating point, else 0."""
    if like.is_floating_point() or like.is_complex():
        return torch.full_like(like, float("nan"))
    return torch.zeros_like(like)


def _stack(key: str, values: list[object]) -> torch.Tensor:
    """Stack the tensors of ``values`` (None = missing, filled with a `placeholder`)."""
    tensors = [v for v in values if v is not None]
    if any(not isinstance(v, torch.Tensor) for v in tensors):
        raise ValueError(f"{key!r} is a tensor in some samples and not in others")
    shapes = {tuple(v.shape) for v in tensors}  # type: ignore[union-attr]
    if len(shapes) > 1:
        raise ValueError(f"cannot stack {key!r}: samples have shapes {sorted(shapes)}")
    filler = placeholder(tensors[0])  # type: ignore[arg-type]
    return torch.stack([filler if v is None else v for v in values])  # type: ignore[misc]


def collate(samples: Sequence[Mapping[str, object]]) -> dict[str, object]:
    """Stack a list of samples: tensors -> ``(B, ...)``, ints -> int64 ``(B,)``, strings -> list.

    Samples may lack keys (see the module docstring for the placeholders and ``batch[PRESENT_KEY]``).
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    if any(PRESENT_KEY in s for s in samples):
        raise ValueError(f"samples may not hold the key {PRESENT_KEY!r}: collate writes it for the batch")
    keys: list[str] = []
    for s in samples:
        keys += [k for k in s if k not in keys]
    batch: dict[str, object] = {}
    present: dict[str, torch.Tensor] = {}
    for key in keys:
        values = [s.get(key) for s in samples]
        has = [key in s for s in samples]
        first = next(v for v, h in zip(values, has) if h)
        if isinstance(first, torch.Tensor):
            batch[key] = _stack(key, values)
            if not all(has):
                present[key] = torch.tensor(has, dtype=torch.bool)
        elif isinstance(first, (int, np.integer)):
            if not all(has):
                lacking = [i for i, h in enumerate(has) if not h]
                raise ValueError(f"cannot collate the integer {key!r}: sample(s) {lacking[:5]} lack it and an "
                                 "integer has no placeholder; give every sample one, or none")
            batch[key] = torch.tensor(values, dtype=torch.int64)
        else:
            batch[key] = list(values)
    if present:
        batch[PRESENT_KEY] = present
    return batch


def rows_with_any(batch: Mapping[str, object], keys: Sequence[str], batch_size: int) -> torch.Tensor:
    """(B,) bool: the sample has at least one of the tensors ``keys`` of ``batch`` (by ``batch[PRESENT_KEY]``)."""
    present = batch.get(PRESENT_KEY, {})
    has = torch.zeros(batch_size, dtype=torch.bool)
    for k in keys:
        has |= present[k].cpu() if isinstance(present, Mapping) and k in present else True
    return has


def _map_batch(batch: Mapping[str, object], fn: Callable[[Any], Any], kinds: tuple[type, ...]) -> dict[str, object]:
    """``batch`` with ``fn`` applied to every value of one of ``kinds``, also inside nested dicts such
    as ``batch[PRESENT_KEY]``; other values unchanged."""
    return {key: fn(value) if isinstance(value, kinds) else
            _map_batch(value, fn, kinds) if isinstance(value, Mapping) else value
            for key, value in batch.items()}


def batch_to(batch: Mapping[str, object], device: torch.device | str, non_blocking: bool = False
             ) -> dict[str, object]:
    """``batch`` with its tensors (and those of nested dicts such as ``batch[PRESENT_KEY]``) moved to
    ``device``; other values unchanged."""
    return _map_batch(batch, lambda v: v.to(device, non_blocking=non_blocking), (torch.Tensor,))


def batch_rows(batch: Mapping[str, object], rows: slice) -> dict[str, object]:
    """Rows ``rows`` of every tensor and list of ``batch`` (and of nested dicts such as
    ``batch[PRESENT_KEY]``); other values unchanged."""
    return _map_batch(batch, lambda v: v[rows], (torch.Tensor, list))


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The augmentation generator of sample ``index`` in ``epoch``: independent of workers."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)
