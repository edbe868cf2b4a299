"""Encoding samples: each sample's K crops through every tokenizer, into shard records.

Shapes: B samples of a batch, K crops each, N tokens of a modality.

The crops of the B samples are encoded together (B * K rows per tokenizer call). Map crops are
stacked into one (B * K, ...) tensor; text values (a sequence tokenizer's raw input) are passed as a
list of B * K strings. A sequence's ids are cut after its last valid token over the sample's K
crops, so what is stored does not depend on how long the other samples of the batch were.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from multimae.data.token_shards import ids_dtype, sample_record
from multimae.pretokenize.crops import CropConfig, crop_view, map_size, plan_crops
from multimae.tokenizers.base import Tokenizer, TokenIds


def stack_raw(values: Sequence[object]) -> object:
    """Raw values of one modality -> a tokenizer's batch: maps stacked (B, ...), strings as a list."""
    if all(isinstance(v, torch.Tensor) for v in values):
        return torch.stack(list(values))  # type: ignore[arg-type]
    if all(isinstance(v, str) for v in values):
        return list(values)
    raise ValueError(f"cannot batch raw values of types {sorted({type(v).__name__ for v in values})}")


def sample_tokens(tokens: TokenIds, rows: slice, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """(ids (K, N) in ``dtype``, valid (K, N) bool) of one sample's rows of a batch's `TokenIds`;
    a sequence is cut after its last valid token."""
    ids, valid = tokens.ids[rows], tokens.valid[rows]
    if tokens.placement == "sequence":
        used = valid.any(dim=0).nonzero()
        length = int(used.max()) + 1 if len(used) else 0
        ids, valid = ids[:, :length], valid[:, :length]
    return ids.numpy().astype(dtype), valid.numpy()


def encode_samples(samples: Sequence[tuple[int, Mapping[str, object]]], tokenizers: Mapping[str, Tokenizer],
                   sizes: Mapping[str, int | None], crops: CropConfig, seed: int) -> list[dict[str, Any]]:
    """Shard records (`multimae.data.token_shards.sample_record`) of ``(index, sample)`` pairs: the
    crops of each (`plan_crops`), every modality of ``tokenizers`` encoded at each crop, its maps
    resized to ``sizes[modality]`` pixels."""
    plans = [plan_crops(map_size(s, list(tokenizers)), crops, seed, i) for i, s in samples]
    views = [crop_view(s, c, sizes) for (_, s), plan in zip(samples, plans) for c in plan]  # B * K views
    k = crops.num_crops
    ids: list[dict[str, np.ndarray]] = [{} for _ in samples]
    valid: list[dict[str, np.ndarray]] = [{} for _ in samples]
    for modality, tokenizer in tokenizers.items():
        tokens = tokenizer.encode(stack_raw([v[modality] for v in views]))  # type: ignore[arg-type]
        dtype = ids_dtype(tokenizer.vocab_size)
        for b in range(len(samples)):
            ids[b][modality], valid[b][modality] = sample_tokens(tokens, slice(b * k, (b + 1) * k), dtype)
    return [sample_record(i, str(s["key"]), plan, ids[b], valid[b])
            for b, ((i, s), plan) in enumerate(zip(samples, plans))]
