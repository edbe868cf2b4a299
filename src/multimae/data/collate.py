"""Batching samples and seeding their per-sample augmentation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def collate(samples: Sequence[dict[str, object]]) -> dict[str, object]:
    """Stack a list of samples: tensors -> ``(B, ...)``, ints -> int64 ``(B,)``, strings -> list."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    keys = samples[0].keys()
    for i, s in enumerate(samples):
        if s.keys() != keys:
            raise ValueError(f"sample {i} has keys {sorted(s)}, sample 0 has {sorted(keys)}")
    batch: dict[str, object] = {}
    for key in keys:
        values = [s[key] for s in samples]
        if isinstance(values[0], torch.Tensor):
            shapes = {tuple(v.shape) for v in values}  # type: ignore[union-attr]
            if len(shapes) > 1:
                raise ValueError(f"cannot stack {key!r}: samples have shapes {sorted(shapes)}")
            batch[key] = torch.stack(values)  # type: ignore[arg-type]
        elif isinstance(values[0], (int, np.integer)):
            batch[key] = torch.tensor(values, dtype=torch.int64)
        else:
            batch[key] = list(values)
    return batch


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The augmentation generator of sample ``index`` in ``epoch``: independent of workers."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)
