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


def pixel_bytes(modality: str, picture: torch.Tensor) -> np.ndarray:
    """(C, P, P) float in [0, 1] -> uint8 (rounded): a picture's pixels as the shards keep them."""
    if not picture.is_floating_point() or picture.dim() != 3:
        raise ValueError(f"{modality}: pixels are kept of (C, H, W) float pictures, got {picture.dtype} "
                         f"{tuple(picture.shape)}")
    if bool(picture.isnan().any()) or float(picture.min()) < 0 or float(picture.max()) > 1:
        raise ValueError(f"{modality}: pixels are kept of pictures in [0, 1] (an rgb image); this one has values "
                         f"in [{float(picture.nan_to_num().min()):.3g}, {float(picture.nan_to_num().max()):.3g}]"
                         + (" and NaN" if bool(picture.isnan().any()) else ""))
    return (picture * 255).round().to(torch.uint8).numpy()


def encode_samples(samples: Sequence[tuple[int, Mapping[str, object]]], tokenizers: Mapping[str, Tokenizer],
                   sizes: Mapping[str, int | None], crops: CropConfig, seed: int,
                   pixels: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """Shard records (`multimae.data.token_shards.sample_record`) of ``(index, sample)`` pairs: the
    crops of each (`plan_crops`), every modality of ``tokenizers`` encoded at each crop, its maps
    resized to ``sizes[modality]`` pixels; the modalities of ``pixels`` kept as uint8 pixels of each
    crop, resized to ``pixels[modality]``."""
    pixels = dict(pixels or {})
    plans = [plan_crops(map_size(s, list(dict.fromkeys([*tokenizers, *pixels]))), crops, seed, i) for i, s in samples]
    views = [crop_view(s, c, sizes) for (_, s), plan in zip(samples, plans) for c in plan]  # B * K views
    pictures = [crop_view(s, c, pixels) for (_, s), plan in zip(samples, plans) for c in plan] if pixels else []
    k = crops.num_crops
    ids: list[dict[str, np.ndarray]] = [{} for _ in samples]
    valid: list[dict[str, np.ndarray]] = [{} for _ in samples]
    for modality, tokenizer in tokenizers.items():
        tokens = tokenizer.encode(stack_raw([v[modality] for v in views]))  # type: ignore[arg-type]
        dtype = ids_dtype(tokenizer.vocab_size)
        for b in range(len(samples)):
            ids[b][modality], valid[b][modality] = sample_tokens(tokens, slice(b * k, (b + 1) * k), dtype)
    kept = [{m: np.stack([pixel_bytes(m, v[m]) for v in pictures[b * k : (b + 1) * k]])  # type: ignore[arg-type]
             for m in pixels} for b in range(len(samples))]
    return [sample_record(i, str(s["key"]), plan, ids[b], valid[b], kept[b])
            for b, ((i, s), plan) in enumerate(zip(samples, plans))]
