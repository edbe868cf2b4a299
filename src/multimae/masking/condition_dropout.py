"""Condition dropout: whole modalities withdrawn from the encoder at random, so that a 4M model learns
the unconditional pass that classifier-free guidance needs (`multimae.generation.guidance`).

Shapes: B batch, M modalities, N tokens of a modality.

Per sample and modality, with probability ``rate``, every token the masking gave is withdrawn: a grid
gives nothing, a sequence gives its opening sentinel ``[S_1]`` alone at position 0 (the form the
unconditional pass of generation uses, `multimae.generation.state.emptied`). Targets are unchanged. A
sample's modality that gives nothing anyway is left as it is. One (B, M) uniform draw per call, none
when ``rate`` is 0 (so the other draws of a generator are the same with dropout off).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import torch

from multimae.masking.span import SentinelId, fourm_sentinel_id
from multimae.modalities.batch import ModalityBatch


def drop_conditions(batch: Mapping[str, ModalityBatch], rate: float, generator: torch.Generator | None = None,
                    sequences: Collection[str] = (), sentinel: SentinelId = fourm_sentinel_id
                    ) -> dict[str, ModalityBatch]:
    """``batch`` with modalities withdrawn per sample at ``rate`` (see the module doc); ``sequences``:
    the names of the sequence records."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"condition dropout rate must be in [0, 1], got {rate}")
    if rate == 0.0 or not batch:
        return dict(batch)
    B = next(iter(batch.values())).valid.shape[0]
    drop = torch.rand(B, len(batch), generator=generator) < rate  # (B, M)
    out = {}
    for i, (name, record) in enumerate(batch.items()):
        rows = drop[:, i].to(record.valid.device) & record.encoded.any(dim=1)  # (B,)
        if not bool(rows.any()):
            out[name] = record
            continue
        hidden = record.hidden.clone() if record.hidden is not None else torch.zeros_like(record.valid)
        hidden[rows] = True
        data = record.data
        if name in sequences:
            data = data.clone()
            data[rows, 0] = sentinel(1)
            hidden[rows, 0] = False
        out[name] = ModalityBatch(data, record.valid, hidden, record.target)
    return out
