"""Resumable streams of training batches.

A stream yields this process's share of each *global* batch and can report and restore its
position, so an interrupted run continues with exactly the batches it would have seen. Batch
contents depend only on (seed, epoch, batch index), never on the number of processes: rank r of
R takes rows [r * B / R, (r + 1) * B / R) of the global batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from multimae.data.batch_augment import BatchRandomResizedCropFlip
from multimae.data.collate import PRESENT_KEY, collate
from multimae.data.pool import pool_to_raw
from multimae.data.transforms import TEXT_MODALITIES


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across machines and Python versions)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def shard_rows(batch_size: int, rank: int, world_size: int) -> slice:
    if batch_size % world_size:
        raise ValueError(f"global batch {batch_size} is not divisible by {world_size} processes")
    local = batch_size // world_size
    return slice(rank * local, (rank + 1) * local)


class PoolStream:
    """Batches drawn from an in-memory pool (see `multimae.data.pool`), reshuffled every epoch.

    The last incomplete batch of an epoch is dropped. With ``augment``, crop boxes and flips are
    drawn for the whole global batch from a generator seeded by (seed, epoch, batch index).
    """

    def __init__(self, pool: dict[str, Tensor], batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, augment: BatchRandomResizedCropFlip | None = None) -> None:
        self.pool, self.batch_size, self.seed = pool, batch_size, seed
        self.rows = shard_rows(batch_size, rank, world_size)
        self.augment = augment
        self.num_samples = len(next(iter(pool.values())))
        self.batches_per_epoch = self.num_samples // batch_size
        if self.batches_per_epoch < 1:
            raise ValueError(f"the pool holds {self.num_samples} samples, fewer than one batch of {batch_size}")
        self.epoch, self.index = 0, 0
        self._perm: tuple[int, Tensor] | None = None

    def _order(self) -> Tensor:
        if self._perm is None or self._perm[0] != self.epoch:
            g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
            self._perm = (self.epoch, torch.randperm(self.num_samples, generator=g))
        return self._perm[1]

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        return self

    def __next__(self) -> dict[str, Tensor]:
        if self.index >= self.batches_per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
        rows = self._order()[self.index * self.batch_size : (self.index + 1) * self.batch_size]
        batch = pool_to_raw(self.pool, rows[self.rows])
        if self.augment is not None:
            g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, self.index, 1))
            first = next(v for v in batch.values() if v.dim() >= 3)
            boxes, flips = self.augment.params(self.batch_size, tuple(first.shape[-2:]), g)  # type: ignore[arg-type]
            batch = self.augment.apply(batch, boxes[self.rows], flips[self.rows])
        self.index += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


class _EpochSampler(Sampler[int]):
    """Indices of this rank's rows of every global batch of one epoch, from a given batch on."""

    def __init__(self, length: int, batch_size: int, rows: slice, seed: int) -> None:
        self.length, self.batch_size, self.rows, self.seed = length, batch_size, rows, seed
        self.epoch, self.start = 0, 0

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        order = torch.randperm(self.length, generator=g)
        for b in range(self.start, self.length // self.batch_size):
            yield from order[b * self.batch_size : (b + 1) * self.batch_size][self.rows].tolist()

    def __len__(self) -> int:
        local = self.rows.stop - self.rows.start
        return (self.length // self.batch_size - self.start) * local


def _worker_message(err: ValueError) -> str:
    """The original message of an error a DataLoader worker re-raised here (torch prefixes it with
    the worker's traceback); other errors' messages unchanged."""
    text = str(err)
    if "DataLoader worker process" not in text or "Traceback" not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    return last.split(": ", 1)[1] if last.startswith(f"{type(err).__name__}: ") else last


class LoaderStream:
    """Batches from a map-style dataset (folders) or a `ShardDataset`, through a DataLoader.

    Map-style datasets get per-epoch shuffling and exact resumption; shard datasets resume with
    their own ``set_position``. Per-sample augmentation is the dataset's ``transform``. Batches
    hold the tensors, the presence record and the captions (lists of str, None = missing) of text
    modalities; sample keys and other strings are dropped.
    """

    def __init__(self, dataset: Dataset | IterableDataset, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, num_workers: int = 2,
                 to_raw: Callable[[dict[str, Any]], dict[str, Tensor]] | None = None) -> None:
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.rows = shard_rows(batch_size, rank, world_size)
        self.local = self.rows.stop - self.rows.start
        self.num_workers = num_workers
        self.to_raw = to_raw
        self.iterable = isinstance(dataset, IterableDataset)
        self.sampler = None if self.iterable else _EpochSampler(len(dataset), batch_size, self.rows, seed)  # type: ignore[arg-type]
        if self.sampler is not None and len(self.sampler) == 0:
            raise ValueError(f"the dataset holds {len(dataset)} samples, fewer than one batch of {batch_size}")  # type: ignore[arg-type]
        self.epoch, self.index = 0, 0
        self._it: Iterator[dict[str, Any]] | None = None

    def _start_epoch(self) -> None:
        set_epoch = getattr(self.dataset, "set_epoch", None)
        if self.iterable:
            set_position = getattr(self.dataset, "set_position", None)
            if set_position is not None:
                set_position(self.epoch, self.index * self.local)
            elif set_epoch is not None:
                set_epoch(self.epoch)
        else:
            assert self.sampler is not None
            self.sampler.epoch, self.sampler.start = self.epoch, self.index
            if set_epoch is not None:
                set_epoch(self.epoch)
        loader = DataLoader(self.dataset, batch_size=self.local, sampler=self.sampler, drop_last=True,
                            num_workers=self.num_workers, collate_fn=collate,
                            persistent_workers=False)
        self._it = iter(loader)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        return self

    def __next__(self) -> dict[str, Tensor]:
        for _ in range(2):
            if self._it is None:
                self._start_epoch()
            try:
                batch = next(self._it)  # type: ignore[arg-type]
            except StopIteration:
                self.epoch, self.index, self._it = self.epoch + 1, 0, None
                continue
            except ValueError as err:  # a bad sample, raised in a worker: its message without the worker's traceback
                raise ValueError(_worker_message(err)) from None
            self.index += 1
            kept = {k: v for k, v in batch.items()
                    if isinstance(v, Tensor) or k == PRESENT_KEY or (k in TEXT_MODALITIES and isinstance(v, list))}
            return self.to_raw(kept) if self.to_raw else kept
        raise RuntimeError("the dataset yielded no batch in a whole epoch")

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.index, self._it = int(state["epoch"]), int(state["index"]), None
