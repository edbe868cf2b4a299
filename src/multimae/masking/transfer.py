"""4M's transfer masking: fixed input and target modalities, nothing random (official ``TransferMasking``).

Shapes: B batch, N tokens of a grid, L ids of a sequence row, T its ``max_tokens``, S = 2 * (T + 1).

* an input grid: every valid token given, none predicted;
* a target grid: none given, every valid token predicted;
* an input sequence (n ids): the ids given at [0, n), the target ``[S_1]`` alone at index T (fed to
  the decoder, predicting nothing, as 4M lays it out);
* a target sequence: nothing given, ``[S_1] ids [S_2]`` at [T, T + n + 2).

A sample without a sequence's ids gets neither input nor target for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from multimae.masking.span import SentinelId, SpanLayout, fourm_sentinel_id, real_ids, spans_from_kept, stack_layouts
from multimae.masking.unified import Records, SequenceMasking, grid_valid
from multimae.modalities.batch import ModalityBatch


@dataclass
class TransferMasking:
    """``inputs``: the records given in full; ``targets``: the records predicted in full; every record
    must be in exactly one. ``sequences``: ``{name: SequenceMasking}`` for the sequence records (only
    ``max_tokens`` and ``pad_id`` are read). ``sentinel``: id of [S_i]."""

    inputs: Sequence[str]
    targets: Sequence[str]
    sequences: Mapping[str, SequenceMasking] = field(default_factory=dict)
    sentinel: SentinelId = fourm_sentinel_id

    def __post_init__(self) -> None:
        both = sorted(set(self.inputs) & set(self.targets))
        if both:
            raise ValueError(f"TransferMasking: {both} are both inputs and targets")

    def _sequence(self, name: str, ids: torch.Tensor, valid: torch.Tensor | None) -> ModalityBatch:
        seq = self.sequences[name]
        T, given = seq.max_tokens, name in self.inputs
        layouts = []
        for row in real_ids(ids, T, seq.pad_id, valid):
            if not row:
                layouts.append(SpanLayout([], [], 0))
                continue
            spans = spans_from_kept(row, [given] * len(row), self.sentinel)  # all kept or all dropped
            layouts.append(SpanLayout(spans.input if given else [], spans.target, T))
        return stack_layouts(layouts, T, seq.pad_id, ids.device)

    def __call__(self, records: Records) -> dict[str, ModalityBatch]:
        """``{name: (data, valid)}`` -> ``{name: ModalityBatch}`` (no randomness)."""
        stray = [n for n in records if n not in self.inputs and n not in self.targets]
        if stray:
            raise ValueError(f"TransferMasking: records {stray} are neither inputs nor targets")
        unknown = sorted(set(self.sequences) - set(records))
        if unknown:
            raise ValueError(f"TransferMasking: sequences {unknown} are not among the records {list(records)}")
        out = {}
        for name, (data, valid) in records.items():
            if name in self.sequences:
                out[name] = self._sequence(name, data, valid)
                continue
            ok = grid_valid(name, data, valid)
            given = name in self.inputs
            out[name] = ModalityBatch(data, ok, ~ok if given else torch.ones_like(ok),
                                      torch.zeros_like(ok) if given else ok.clone())
        return out
