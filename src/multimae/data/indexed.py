"""What the map-style readers (`FolderDataset`, `JsonlDataset`) share: the bad-sample policy and
per-sample augmentation seeds.

A subclass reads item ``i`` in ``load(i)`` (a ValueError naming the bad file) and says how many
items it has. ``on_error="raise"`` stops at the first bad item; ``"skip"`` counts it in
``num_skipped``, logs it and returns the next readable item in its place. ``transform(sample,
generator)`` gets a generator seeded by (seed, epoch, index): deterministic whatever the worker.
"""

from __future__ import annotations

import logging

from torch.utils.data import Dataset

from multimae.data.collate import sample_generator
from multimae.data.transforms import Transform

log = logging.getLogger(__name__)
ON_ERROR = ("raise", "skip")


class IndexedSamples(Dataset):
    """Base of the map-style readers (see the module docstring)."""

    def __init__(self, transform: Transform | None = None, on_error: str = "raise", seed: int = 0) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.transform, self.on_error, self.seed, self.epoch, self.num_skipped = transform, on_error, seed, 0, 0

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> dict[str, object]:
        """Item ``index`` without augmentation; a ValueError naming what is bad."""
        raise NotImplementedError

    def where(self) -> str:
        """What the reader reads, for the error when nothing is readable."""
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip(self, err: ValueError) -> None:
        """Apply the bad-item policy to ``err``: raise it, or count and log it."""
        if self.on_error == "raise":
            raise err
        self.num_skipped += 1
        log.warning("skipped sample (%d so far): %s", self.num_skipped, err)

    def __getitem__(self, index: int) -> dict[str, object]:
        for attempt in range(len(self)):
            try:
                sample = self.load((index + attempt) % len(self))
                break
            except ValueError as err:
                self.skip(err)
        else:
            raise ValueError(f"{self.where()}: nothing readable")
        if self.transform is not None:
            sample = self.transform(sample, sample_generator(self.seed, self.epoch, index))
        return sample
