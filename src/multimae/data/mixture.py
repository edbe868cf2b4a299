"""`WeightedInterleave`: one stream of samples drawn from several sources by weight.

M3AE trains on paired image-text samples beside image-only and text-only ones; a MultiMAE user may
mix a fully labelled dataset with one that lacks depth. Each next sample comes from source ``i``
with probability ``w_i / sum(w)``, the choices drawn from a generator seeded by (seed, epoch,
consumer), so the stream is reproducible. Batches of such a stream mix samples with different
modalities: `multimae.data.collate` fills what a sample lacks and records it.

Sources: map-style datasets (with ``__len__`` and ``__getitem__``, e.g. `FolderDataset`) are read
in a permutation drawn per pass from (seed, epoch, source, pass), consumer ``g`` of ``G``
(DataLoader workers times DDP ranks, as in `multimae.data.shards`) taking its entries ``g, g + G,
...``; other iterables (e.g. `ShardDataset`, which shuffles and splits itself over consumers) are
iterated as they are. A source with a ``set_epoch`` is set, before each pass, to
`pass_epoch` (epoch, pass) (pass 0, 1, ... in epoch 0), for new shuffles and augmentations. A
source that runs out is, with ``exhausted="cycle"`` (the default), started again for its next
pass (an iterable source must then be re-iterable: a list or a dataset, not a generator, which
raises a ValueError when its second pass is empty), so the stream is endless unless ``length``
ends it; with ``exhausted="stop"`` the epoch ends the first time a draw picks an
exhausted source. ``length``: draws per epoch over all consumers (None: endless with ``cycle``).
Every epoch starts each source at its first pass again.

Resuming: ``set_position(epoch, consumed)`` (the interface `multimae.data.stream.LoaderStream`
calls) makes each consumer skip its first ``consumed // G`` draws of that epoch. The choices are
replayed without reading samples; map-style sources skip by index, without reading; samples of
other iterables are read and dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import IterableDataset

from multimae.data.shards import consumer
from multimae.data.stream import derive_seed

Exhausted = Literal["cycle", "stop"]
CHUNK = 1024  # choices are drawn this many at a time (part of the reproducible sequence)


def pass_epoch(epoch: int, passes: int) -> int:
    """The epoch a source is set to (``set_epoch``) for its pass ``passes`` in the mixture's ``epoch``."""
    return passes if epoch == 0 else derive_seed(epoch, passes) % 2**31


def _is_map_style(source: object) -> bool:
    return not isinstance(source, IterableDataset) and hasattr(source, "__len__") and hasattr(source, "__getitem__")


class _Reader:
    """Samples of source ``index`` for consumer ``g`` of ``total`` in ``epoch``, pass after pass."""

    def __init__(self, source: Any, index: int, seed: int, epoch: int, g: int, total: int, cycle: bool) -> None:
        self.source, self.index, self.seed, self.epoch = source, index, seed, epoch
        self.g, self.total, self.cycle = g, total, cycle
        self.map_style = _is_map_style(source)
        if self.map_style and len(range(g, len(source), total)) == 0:
            raise ValueError(f"source {index} holds {len(source)} samples, none for consumer {g} of {total}")
        self.passes, self.position, self.pending = 0, 0, True  # pending: the next read starts a pass
        self._it: Iterator[dict[str, object]] | None = None
        self._order: list[int] = []

    def _start_pass(self) -> None:
        set_epoch = getattr(self.source, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(pass_epoch(self.epoch, self.passes))
        if self.map_style:
            g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, self.index, self.passes))
            self._order = torch.randperm(len(self.source), generator=g)[self.g :: self.total].tolist()
        else:
            self._it = iter(self.source)
        self.position, self.pending = 0, False

    def next(self, read: bool = True) -> dict[str, object] | None:
        """The next sample; None when the source is exhausted and does not cycle. ``read=False``
        skips it (a map-style source without reading it, and then returns an empty dict)."""
        for _ in range(2):
            if self.pending:
                self._start_pass()
            if self.map_style:
                if self.position < len(self._order):
                    self.position += 1
                    return self.source[self._order[self.position - 1]] if read else {}
            else:
                assert self._it is not None
                sample = next(self._it, None)
                if sample is not None:
                    self.position += 1
                    return sample
            if not self.cycle:
                return None
            self.passes, self.pending = self.passes + 1, True
        raise ValueError(f"source {self.index} yielded no sample in a whole pass")


class WeightedInterleave(IterableDataset):
    """Samples from ``sources``, each next one from source ``i`` with probability ``weights[i] / sum``
    (see the module docstring for passes, epochs, consumers and resuming).

    Items are the sources' own sample dicts, unchanged (give each source its ``transform``).
    """

    def __init__(self, sources: Sequence[Iterable[dict[str, object]]], weights: Sequence[float], seed: int = 0,
                 exhausted: Exhausted = "cycle", length: int | None = None) -> None:
        if len(sources) == 0:
            raise ValueError("WeightedInterleave needs at least one source")
        if len(weights) != len(sources):
            raise ValueError(f"got {len(sources)} sources and {len(weights)} weights; give one weight per source")
        w = np.asarray(weights, dtype=np.float64)
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"weights must be finite, >= 0 and not all 0, got {list(weights)}")
        if exhausted not in ("cycle", "stop"):
            raise ValueError(f"exhausted must be 'cycle' or 'stop', got {exhausted!r}")
        if length is not None and length < 1:
            raise ValueError(f"length must be >= 1 (or None: endless), got {length}")
        self.sources, self.probs, self.seed = list(sources), w / w.sum(), seed
        self.exhausted, self.length = exhausted, length
        self.epoch, self.skip_consumed = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.skip_consumed = epoch, 0

    def set_position(self, epoch: int, consumed: int) -> None:
        """Resume ``epoch`` after ``consumed`` samples (over all consumers) were already used."""
        self.epoch, self.skip_consumed = epoch, consumed

    def choices(self, g: int = 0) -> Iterator[int]:
        """The endless sequence of source indices drawn by consumer ``g`` in the current epoch."""
        rng = np.random.Generator(np.random.PCG64(derive_seed(self.seed, self.epoch, g)))
        while True:
            yield from rng.choice(len(self.probs), size=CHUNK, p=self.probs).tolist()

    def __iter__(self) -> Iterator[dict[str, object]]:
        g, total = consumer()
        readers = [_Reader(s, i, self.seed, self.epoch, g, total, self.exhausted == "cycle")
                   for i, s in enumerate(self.sources)]
        draws = None if self.length is None else len(range(g, self.length, total))
        skip = self.skip_consumed // total
        for position, i in enumerate(self.choices(g)):
            if draws is not None and position >= draws:
                return
            sample = readers[i].next(read=position >= skip)
            if sample is None:
                return
            if position >= skip:
                yield sample
