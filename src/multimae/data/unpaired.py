"""`UnpairedText`: text-only samples mixed into every training batch of a stream.

M3AE trains one encoder on paired image-text data and on text without images. Here a fixed share
of every *global* batch is text-only: ``round(share * B)`` rows, at positions drawn per batch, keep
no map (each tensor becomes the placeholder of `multimae.data.collate`, NaN or 0, and
``batch[PRESENT_KEY][key]`` is False there) and take a caption drawn from ``corpus`` instead of
their own. The paired rows of the batch are what the stream gave, so the image budget of a run is
``B - round(share * B)`` images per step. Positions and captions are drawn from (seed, epoch,
batch index) of the wrapped stream, for the global batch, then cut to this process's rows, so
they do not depend on the number of processes and a resumed run sees the same batches.

Shapes: B global batch, b this process's rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from multimae.data.collate import PRESENT_KEY, placeholder
from multimae.data.stream import derive_seed


class UnpairedText:
    """``stream`` (a `PoolStream` or `LoaderStream`) with text-only rows of ``modality`` from
    ``corpus`` in every batch (see the module docstring)."""

    def __init__(self, stream: Any, corpus: Sequence[str], modality: str, share: float, batch_size: int,
                 seed: int = 0) -> None:
        if not corpus:
            raise ValueError(f"the unpaired {modality} corpus holds no caption")
        if not 0.0 <= share < 1.0:
            raise ValueError(f"the unpaired share of a batch must be in [0, 1), got {share}")
        self.stream, self.corpus, self.modality = stream, list(corpus), modality
        self.share, self.batch_size, self.seed = share, batch_size, seed
        self.count = round(share * batch_size)  # text-only rows of each global batch

    @property
    def rows(self) -> slice:
        return self.stream.rows

    def text_rows(self, epoch: int, index: int) -> tuple[Tensor, list[str]]:
        """(the global batch's text-only rows (k,), their captions) for batch ``index`` of ``epoch``."""
        g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, index, 11))
        rows = torch.randperm(self.batch_size, generator=g)[: self.count]
        picks = torch.randint(len(self.corpus), (self.count,), generator=g)
        return rows, [self.corpus[i] for i in picks.tolist()]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        batch = dict(next(self.stream))
        if self.count == 0:
            return batch
        rows, captions = self.text_rows(self.stream.epoch, self.stream.index)  # the batch just read
        mine = self.rows
        local = [(int(r) - mine.start, c) for r, c in zip(rows.tolist(), captions) if mine.start <= r < mine.stop]
        if not local:
            return batch
        at = torch.tensor([r for r, _ in local])
        present = {k: v.clone() for k, v in batch.get(PRESENT_KEY, {}).items()}
        size = mine.stop - mine.start
        for key, value in list(batch.items()):
            if isinstance(value, Tensor):
                value = value.clone()
                value[at] = placeholder(value[at])
                batch[key] = value
                present[key] = present.get(key, torch.ones(size, dtype=torch.bool)).clone()
                present[key][at] = False
        texts = list(batch.get(self.modality) or [None] * size)
        for r, caption in local:
            texts[r] = caption
        batch[self.modality] = texts
        batch[PRESENT_KEY] = present
        return batch

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)
