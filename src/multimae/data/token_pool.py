"""A token-shard folder (`multimae.data.token_shards`) held in memory, and batches drawn from it.

Shapes: S samples, K crops each, N_m tokens of modality m, B batch.

Pre-tokenised data is small (a 64 px world scene is a few hundred ids per crop), so a run reads its
folder once (`load_token_pool`) and draws training batches from memory (`TokenPoolStream`): every
epoch a new order of the samples, every sample one of its K stored crops, both from generators
seeded by (seed, epoch, batch), so a resumed run draws what it would have drawn and the batch does
not depend on the number of processes (each takes its rows).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from multimae.data.stream import derive_seed, shard_rows
from multimae.data.token_shards import TokenShardDataset
from multimae.tokenizers.base import Tokenizer


@dataclass
class TokenPool:
    """Attributes:
    ids: ``{modality: (S, K, N_m) int64}`` (sequences right-padded to their longest stored length).
    valid: ``{modality: (S, K, N_m) bool}``.
    manifest: the folder's manifest (tokenizers, grids, crops).
    pixels: ``{picture: (S, K, C, P, P) uint8}``, the pixels the shards keep (``tokenize --pixels``).
    """

    ids: dict[str, Tensor]
    valid: dict[str, Tensor]
    manifest: dict[str, Any]
    pixels: dict[str, Tensor] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return next(iter(self.ids.values())).shape[0]

    def rows(self, index: Tensor, crop: Tensor) -> dict[str, dict[str, Tensor]]:
        """``{"ids": {m: (B, N_m)}, "valid": {m: (B, N_m)}, "pixels": {m: (B, C, P, P) uint8}}`` of
        samples ``index`` (B,) at crops ``crop`` (B,)."""
        return {"ids": {m: x[index, crop] for m, x in self.ids.items()},
                "valid": {m: v[index, crop] for m, v in self.valid.items()},
                "pixels": {m: x[index, crop] for m, x in self.pixels.items()}}

    def subset(self, samples: slice) -> TokenPool:
        """The pool of samples ``samples`` (a slice of the source order), same manifest."""
        return TokenPool({m: x[samples] for m, x in self.ids.items()}, {m: v[samples] for m, v in self.valid.items()},
                         self.manifest, {m: x[samples] for m, x in self.pixels.items()})


def load_token_pool(root: str | Path, tokenizers: dict[str, Tokenizer] | None = None,
                    modalities: Sequence[str] | None = None, pixels: Sequence[str] | None = None) -> TokenPool:
    """Every sample and crop of a complete token-shard folder (tokenizers checked against its hashes);
    ``modalities`` / ``pixels`` limit the tokens / pixels read (default: all)."""
    data = TokenShardDataset(root, tokenizers, modalities, crop="all", pixels=pixels, split=False)  # every rank: all
    items = sorted(data, key=lambda item: item["index"])
    if not items:
        raise ValueError(f"{root}: the token shards hold no sample")
    ids, valid = {}, {}
    for m in data.modalities:
        length = max(item["ids"][m].shape[-1] for item in items)
        ids[m] = torch.stack([_pad(item["ids"][m], length, 0) for item in items])
        valid[m] = torch.stack([_pad(item["valid"][m], length, False) for item in items])
    kept = {m: torch.stack([item["pixels"][m] for item in items]) for m in data.pixels}
    return TokenPool(ids, valid, data.manifest, kept)


def _pad(x: Tensor, length: int, value: Any) -> Tensor:
    return torch.nn.functional.pad(x, (0, length - x.shape[-1]), value=value)


class TokenPoolStream:
    """This process's rows of every global batch of ``batch_size`` samples drawn from a `TokenPool`
    (the last incomplete batch of an epoch is dropped)."""

    def __init__(self, pool: TokenPool, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.pool, self.batch_size, self.seed = pool, batch_size, seed
        self.rows = shard_rows(batch_size, rank, world_size)
        self.batches_per_epoch = pool.num_samples // batch_size
        if self.batches_per_epoch < 1:
            raise ValueError(f"the token pool holds {pool.num_samples} samples, fewer than one batch of {batch_size}")
        self.epoch, self.index = 0, 0
        self._draws: tuple[int, Tensor, Tensor] | None = None  # (epoch, order, crops): `_epoch_draws`

    def __iter__(self) -> Iterator[dict[str, dict[str, Tensor]]]:
        return self

    def __next__(self) -> dict[str, dict[str, Tensor]]:
        if self.index >= self.batches_per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
        order, crops = self._epoch_draws()
        window = slice(self.index * self.batch_size, (self.index + 1) * self.batch_size)
        self.index += 1
        return self.pool.rows(order[window][self.rows], crops[window][self.rows])

    def _epoch_draws(self) -> tuple[Tensor, Tensor]:
        """(order (N,), crop (N,)) of the current epoch, drawn once per epoch: the samples' order, and
        a crop per place in that order, so a batch split into more micro-batches or over more
        processes gets the same crops."""
        if self._draws is None or self._draws[0] != self.epoch:
            order = torch.randperm(self.pool.num_samples, generator=torch.Generator().manual_seed(
                derive_seed(self.seed, self.epoch)))
            num_crops = next(iter(self.pool.ids.values())).shape[1]
            crops = torch.randint(num_crops, (self.pool.num_samples,), generator=torch.Generator().manual_seed(
                derive_seed(self.seed, self.epoch, 1)))
            self._draws = (self.epoch, order, crops)
        return self._draws[1], self._draws[2]

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
