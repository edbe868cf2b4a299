"""4M's masking of a batch of several modalities: grids by positions, sequences by spans (official
``UnifiedMasking``).

Shapes: B batch, M modalities, N tokens of a grid, L ids of a sequence row, T a sequence's
``max_tokens``, S = 2 * (T + 1) its layout length.

A call: per sample, an input and a target budget per modality from
`DirichletInputTargetMasking.sample_budgets` (a mixture of Dirichlets), with caps: a grid's valid
tokens; a sequence's T (0 for a sample without it). A grid's target cap is its cap minus its input
budget, a sequence's is T (its input and target are separate spans). Then, per modality in the
order of the records:

* grid (a token map, or patches of an image): one random permutation of its valid tokens; the first
  ``input`` are given, the next ``target`` predicted (disjoint). Position i takes the rank
  ``argsort(u)[i]`` of uniform noise u (the permutation itself, as 4M gathers it; invalid positions
  rank last), so the same noise gives the official masks.
* sequence: `multimae.masking.span.span_layout` (span masking, the (B, S) layout; chunk masking for
  a sequence whose `SequenceMasking` names its value ids).

The class knows no modality names: the caller names the records and which of them are sequences.
`official_masks` converts a result to 4M's ``input_mask`` / ``target_mask`` / ``decoder_attention_mask``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from multimae.masking.condition_dropout import drop_conditions
from multimae.masking.draws import Draws, GeneratorDraws
from multimae.masking.input_target import DirichletInputTargetMasking
from multimae.masking.span import KEEP_SCHEMES, SentinelId, fourm_sentinel_id, real_ids, span_layout
from multimae.modalities.batch import ModalityBatch

# {modality: (data, valid or None)}: a grid's data is (B, N) ids, (B, h, w) ids, or anything with a
# (B, N) valid mask (pixels); a sequence's data is (B, L) ids, its valid (B, L) or None (not the pad id).
Records = Mapping[str, tuple[Tensor, Tensor | None]]


@dataclass(frozen=True)
class SequenceMasking:
    """How one sequence modality is masked. ``max_tokens``: T, the ids kept per sequence (and its
    budget cap). ``keep``: the keep scheme ('random', 'all' or 'binary'), one for every mixture
    component or a tuple with one per component. ``pad_id``: the id of [PAD]. ``chunk_values``:
    None for span masking of ids; a set of value ids for chunk masking (`multimae.masking.span.chunk_index`:
    a chunk is a key and the values after it, ``eos_id`` alone), 4M-21's metadata."""

    max_tokens: int
    keep: str | tuple[str, ...] = "random"
    pad_id: int = 0
    chunk_values: frozenset[int] | None = None
    eos_id: int | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"SequenceMasking: max_tokens must be >= 1, got {self.max_tokens}")
        schemes = (self.keep,) if isinstance(self.keep, str) else tuple(self.keep)
        bad = [s for s in schemes if s not in KEEP_SCHEMES]
        if not schemes or bad:
            raise ValueError(f"SequenceMasking: keep must be schemes among {KEEP_SCHEMES}, got {self.keep!r}")

    def schemes(self, component: Tensor) -> list[str]:
        """The keep scheme of each sample, from its mixture component (B,)."""
        if isinstance(self.keep, str):
            return [self.keep] * len(component)
        if bool((component >= len(self.keep)).any()):
            raise ValueError(f"SequenceMasking: keep has {len(self.keep)} schemes, a sample drew component "
                             f"{int(component.max())}")
        return [self.keep[int(c)] for c in component]


def grid_valid(name: str, data: Tensor, valid: Tensor | None) -> Tensor:
    """(B, N) bool: ``valid``, else all True over N = data's (B, N) or (B, h, w) tokens."""
    if valid is not None:
        if valid.dtype != torch.bool or valid.dim() != 2 or valid.shape[0] != data.shape[0]:
            raise ValueError(f"{name!r}: valid must be a (B, N) bool tensor with B = {data.shape[0]}, "
                             f"got {valid.dtype} {tuple(valid.shape)}")
        return valid
    if data.dim() not in (2, 3) or data.is_floating_point():
        raise ValueError(f"{name!r}: a grid without valid must be (B, N) or (B, h, w) ids, got "
                         f"{data.dtype} {tuple(data.shape)}; pass its (B, N) valid mask")
    return torch.ones(data.shape[0], data[0].numel(), dtype=torch.bool, device=data.device)


def grid_masks(noise: Tensor, valid: Tensor, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """4M's image rule: ``(given, target)`` (B, N) bool from noise (B, N) in [0, 1), valid (B, N) and
    budgets (B,): a position's rank is ``argsort(noise)[i]`` (invalid ones last); ranks below
    ``inputs`` are given, the next ``targets`` predicted."""
    N = noise.shape[1]
    keys = noise.argsort(dim=1).masked_fill(~valid, N)  # (B, N) a random permutation at valid positions
    rank = keys.argsort(dim=1, stable=True).argsort(dim=1)  # = keys where every position is valid
    given = (rank < inputs.unsqueeze(1)) & valid
    target = (rank >= inputs.unsqueeze(1)) & (rank < (inputs + targets).unsqueeze(1)) & valid
    return given, target


@dataclass
class UnifiedMasking:
    """4M's masking of several modalities (see the module docstring).

    ``budgets``: the Dirichlet mixture drawing the per-sample budgets (its components index the
    ``keep`` tuples of `SequenceMasking`). ``sequences``: ``{name: SequenceMasking}`` for the records
    that are sequences; every other record is a grid. ``sentinel``: id of [S_i].
    ``condition_dropout``: per sample and modality, the probability that its given tokens are
    withdrawn after the masking (`multimae.masking.condition_dropout`; 0 = off, no draw).
    ``grid_max_tokens``: ``{grid: n}``, at most n of its tokens given or predicted per sample, both
    together (4M's per-modality ``max_tokens``, of which an image's target gets what its input leaves;
    others: all their valid tokens).
    """

    budgets: DirichletInputTargetMasking
    sequences: Mapping[str, SequenceMasking] = field(default_factory=dict)
    sentinel: SentinelId = fourm_sentinel_id
    condition_dropout: float = 0.0
    grid_max_tokens: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        both = sorted(set(self.grid_max_tokens) & set(self.sequences))
        bad = {n: v for n, v in self.grid_max_tokens.items() if v < 1}
        if both or bad:
            raise ValueError(f"UnifiedMasking: grid_max_tokens names sequences {both} or values < 1 {bad}")

    def _check(self, records: Records) -> int:
        if not records:
            raise ValueError("UnifiedMasking needs at least one modality")
        unknown = sorted(set(self.sequences) - set(records))
        if unknown:
            raise ValueError(f"UnifiedMasking: sequences {unknown} are not among the records {list(records)}")
        sizes = {n: data.shape[0] for n, (data, _) in records.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"UnifiedMasking: the records disagree on the batch size: {sizes}")
        return next(iter(sizes.values()))

    def caps(self, records: Records) -> Tensor:
        """(B, M) long, records' order: a grid's valid tokens (at most its ``grid_max_tokens``), a
        sequence's T (0 where it has no ids)."""
        self._check(records)
        columns = []
        for name, (data, valid) in records.items():
            seq = self.sequences.get(name)
            if seq is None:
                count = grid_valid(name, data, valid).sum(dim=1)
                columns.append(count.clamp_max(self.grid_max_tokens[name]) if name in self.grid_max_tokens else count)
            else:
                present = torch.tensor([bool(r) for r in real_ids(data, seq.max_tokens, seq.pad_id, valid)])
                columns.append(present.long().to(data.device) * seq.max_tokens)
        return torch.stack(columns, dim=1).long()

    def __call__(self, records: Records, generator: torch.Generator | None = None) -> dict[str, ModalityBatch]:
        """``{name: (data, valid)}`` -> ``{name: ModalityBatch}``: grids keep their data, sequences get
        (B, S) layouts; every draw from ``generator`` (None: torch's global generator)."""
        names = list(records)
        caps = self.caps(records)
        reduce = [n not in self.sequences for n in names]
        component, inputs, targets = self.budgets.sample_budgets(caps, names, generator, reduce)
        out = self.apply(records, inputs, targets, GeneratorDraws(generator), component)
        return drop_conditions(out, self.condition_dropout, generator, self.sequences, self.sentinel)

    def apply(self, records: Records, inputs: Tensor, targets: Tensor, draws: Draws,
              component: Tensor | None = None) -> dict[str, ModalityBatch]:
        """The masks for given budgets ``inputs``, ``targets`` (B, M) in the records' order, drawing
        from ``draws``; ``component`` (B,) picks the sequences' keep schemes (None: component 0)."""
        B = self._check(records)
        if inputs.shape != (B, len(records)) or targets.shape != (B, len(records)):
            raise ValueError(f"budgets must be (B, M) = {(B, len(records))}, got {tuple(inputs.shape)} "
                             f"and {tuple(targets.shape)}")
        if component is None:
            component = torch.zeros(B, dtype=torch.long)
        out = {}
        for i, (name, (data, valid)) in enumerate(records.items()):
            seq = self.sequences.get(name)
            if seq is not None:
                out[name] = span_layout(data, seq.max_tokens, inputs[:, i], targets[:, i], seq.schemes(component),
                                        draws, self.sentinel, seq.pad_id, valid, seq.chunk_values, seq.eos_id)
                continue
            ok = grid_valid(name, data, valid)
            noise = draws.noise(*ok.shape).to(ok.device)
            given, target = grid_masks(noise, ok, inputs[:, i].to(ok.device), targets[:, i].to(ok.device))
            out[name] = ModalityBatch(data, ok, ~given, target)
        return out


def official_masks(batch: ModalityBatch, sequence: bool) -> dict[str, Tensor]:
    """4M's masks of a (B, N) result: ``input_mask`` (True = not encoded), ``target_mask`` (True = not a
    target) and ``decoder_attention_mask`` int32: a sequence 1 on every target (causal), a grid its
    target count at its first target and 0 elsewhere (its targets attend to each other)."""
    counted = batch.counted
    if sequence:
        attention = counted.int()
    else:
        attention = torch.zeros_like(counted, dtype=torch.int32)
        first = counted.int().argmax(dim=1, keepdim=True)  # (B, 1) the first target (0 when none)
        attention.scatter_(1, first, counted.sum(dim=1, keepdim=True).int())
    return {"input_mask": ~batch.encoded, "target_mask": ~counted, "decoder_attention_mask": attention}
