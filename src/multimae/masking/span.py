"""4M's span masking of sequences, and the layout a masked sequence takes in a batch.

Shapes: B batch, L ids per row before masking, T ``max_tokens``, S = 2 * (T + 1) layout length.

One sequence (its real ids, ending in ``[EOS]``, at most T of them) with keep probability p and
noise u (one value per token): token i is kept iff u_i <= p. Each maximal run of dropped tokens
becomes one sentinel in the input, numbered from [S_1]; the target lists every run after its
sentinel and closes with the sentinel one past the last used::

    ids     a    red  cube big  [EOS]        u = 0.1 0.9 0.8 0.2 0.7, p = 0.5
    input   a    [S_1] big [S_2]
    target  [S_1] red cube [S_2] [EOS] [S_3]

Chunk masking (4M-21's metadata, `chunk_index`): the keep decision is drawn per chunk (one noise value
each) and every id of a chunk follows it, so a key and its value are given or predicted together;
consecutive dropped chunks share one sentinel, as dropped ids do. 4M keeps the chunks of a metadata
record apart in its data; ours are one stored text, so a chunk is a word and the value ids after it
(a key and its value), and [EOS] a chunk of its own.

[S_0] is never used. Sentinel ids come from a function (``sentinel(i)`` = id of [S_i]; 4M's layout:
`fourm_sentinel_id`, 4 + i, or `multimae.tokenizers.SequenceTokenizer.sentinel_id`).

Layout of a masked sequence (`SpanLayout`, `span_layout`): a row of S ids filled with the pad id,
the input at [0, n_in) and the target at [input_budget, input_budget + n_tgt) -- the offset is the
budget, not n_in, so pad ids can sit between the two (as in 4M). ``hidden`` is False exactly on the
input, ``target`` True exactly on the target, ``valid`` is their union.

The decoder teacher-forces a sequence target: slot p is fed the target id at p and predicts the id
at p + 1, and counts only when both p and p + 1 are targets (`teacher_forced_slots`). The opening
sentinel of a target is therefore only ever fed, its last id only ever predicted.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from multimae.masking.draws import Draws, GeneratorDraws
from multimae.modalities.batch import ModalityBatch

KEEP_SCHEMES: tuple[str, ...] = ("random", "all", "binary")  # keep probability: uniform, 1, 0 or 1
FOURM_SENTINEL_OFFSET = 4  # [PAD] [UNK] [SOS] [EOS] come first, then [S_0], [S_1], ...
KEEP_DECAY = 0.9  # an over-budget input is drawn again with p * KEEP_DECAY (4M)
# After this many decays p < 1e-45, below any nonzero float32 noise: only noise exactly 0 still keeps
# an id, and p itself never reaches 0 (it sticks at the smallest subnormal float), so we stop there.
MAX_DECAYS = 1000

SentinelId = Callable[[int], int]


def fourm_sentinel_id(i: int) -> int:
    """The id of [S_i] in 4M's vocabulary layout."""
    return FOURM_SENTINEL_OFFSET + i


class SpanMasked(NamedTuple):
    """One masked sequence: ``input`` (kept ids, a sentinel per dropped run), ``target`` ([S_1] run_1
    .. [S_k]) and ``sentinels`` (the index in ``target`` of each of its sentinels, in order)."""

    input: list[int]
    target: list[int]
    sentinels: list[int]


def spans_from_kept(ids: Sequence[int], kept: Sequence[bool], sentinel: SentinelId = fourm_sentinel_id) -> SpanMasked:
    """`SpanMasked` of ``ids`` for a given keep decision per id (True = stays in the input)."""
    if len(kept) != len(ids):
        raise ValueError(f"one keep decision per id: {len(ids)} ids, {len(kept)} decisions")
    opens = [not k and (i == 0 or kept[i - 1]) for i, k in enumerate(kept)]  # first id of a dropped run
    run = [0] * len(ids)  # run number of each id (1-based), counted at the run openings
    for i, o in enumerate(opens):
        run[i] = (run[i - 1] if i else 0) + int(o)
    inputs = [sentinel(run[i]) if opens[i] else t for i, t in enumerate(ids) if kept[i] or opens[i]]
    target: list[int] = []
    marks: list[int] = []
    for i, t in enumerate(ids):
        if opens[i]:
            marks.append(len(target))
            target.append(sentinel(run[i]))
        if not kept[i]:
            target.append(t)
    marks.append(len(target))
    target.append(sentinel((run[-1] if ids else 0) + 1))
    return SpanMasked(inputs, target, marks)


def sentinel_numbers(ids: Sequence[int], most: int, sentinel: SentinelId = fourm_sentinel_id) -> list[int]:
    """The numbers i of the sentinels [S_i] (0 <= i <= ``most``) among ``ids``, in their order."""
    number = {sentinel(i): i for i in range(most + 1)}
    return [number[t] for t in ids if t in number]


def merge_spans(input_ids: Sequence[int], target: Sequence[int], most: int,
                sentinel: SentinelId = fourm_sentinel_id) -> list[int]:
    """The sequence a span-masked ``input_ids`` stands for, with each of its sentinels [S_i] replaced by
    the ids after [S_i] in ``target`` up to the next sentinel (`spans_from_kept`'s inverse; 4M's
    merge after generation). A span missing from ``target`` is empty. ``most``: the highest sentinel
    number looked for."""
    number = {sentinel(i): i for i in range(most + 1)}
    spans: dict[int, list[int]] = {}
    current: list[int] | None = None
    for t in target:
        if t in number:
            current = spans.setdefault(number[t], [])
        elif current is not None:
            current.append(t)
    out: list[int] = []
    for t in input_ids:
        out.extend(spans.get(number[t], []) if t in number else [t])
    return out


def chunk_index(ids: Sequence[int], values: Collection[int], eos_id: int | None = None) -> list[int]:
    """The chunk of each id (0, 1, ...): a chunk starts at every id not in ``values`` (a key; its
    values follow it), and ``eos_id`` is a chunk of its own."""
    chunks: list[int] = []
    for i, t in enumerate(ids):
        starts = i == 0 or t not in values or t == eos_id or ids[i - 1] == eos_id
        chunks.append((chunks[-1] + 1 if chunks else 0) if starts else chunks[-1])
    return chunks


def whole_chunks(ids: Sequence[int], chunks: Sequence[int], max_tokens: int) -> int:
    """How many of ``ids`` to keep so that at most ``max_tokens`` remain and no chunk is cut (4M)."""
    n = min(len(ids), max_tokens)
    while 0 < n < len(ids) and chunks[n] == chunks[n - 1]:
        n -= 1
    return n


def span_mask(ids: Sequence[int], keep_prob: float, noise: Tensor | None = None,
              generator: torch.Generator | None = None, sentinel: SentinelId = fourm_sentinel_id,
              chunks: Sequence[int] | None = None) -> SpanMasked:
    """4M's span masking of one sequence: id i kept iff ``noise[i] <= keep_prob``; with ``chunks``
    (`chunk_index`), iff its chunk's noise is.

    ``ids``: the real ids (L,). ``noise``: (L,) floats in [0, 1), (number of chunks,) with ``chunks``;
    None: drawn from ``generator``.
    """
    n = len(ids) if chunks is None else (chunks[-1] + 1 if chunks else 0)
    if noise is None:
        noise = torch.rand(n, generator=generator)
    if noise.shape != (n,):
        raise ValueError(f"noise must have shape ({'L' if chunks is None else 'chunks'},) = ({n},), got "
                         f"{tuple(noise.shape)}")
    kept = (noise <= keep_prob).tolist()
    return spans_from_kept(ids, kept if chunks is None else [kept[c] for c in chunks], sentinel)


def keep_probability(scheme: str, draws: Draws) -> float:
    """The starting keep probability of a scheme: 'random' uniform, 'all' 1, 'binary' 0 or 1."""
    if scheme == "random":
        return draws.uniform()
    if scheme == "all":
        return 1.0
    if scheme == "binary":
        return 1.0 if draws.coin() else 0.0
    raise ValueError(f"keep scheme must be one of {KEEP_SCHEMES}, got {scheme!r}")


def span_mask_within(ids: Sequence[int], budget: int, keep_prob: float, draws: Draws,
                     sentinel: SentinelId = fourm_sentinel_id,
                     chunks: Sequence[int] | None = None) -> tuple[SpanMasked, float]:
    """Span masking whose input fits ``budget`` (>= 1): while the input is longer, p *= 0.9 and fresh
    noise is drawn. Returns the masking and the p it used.

    Terminates: after `MAX_DECAYS` decays (only ids with noise exactly 0 are then still kept; 4M
    would keep drawing) every id is dropped instead, an input of one sentinel.
    """
    if budget < 1:
        raise ValueError(f"span_mask_within needs an input budget >= 1, got {budget}")
    n = len(ids) if chunks is None else (chunks[-1] + 1 if chunks else 0)
    spans = span_mask(ids, keep_prob, draws.noise(n), sentinel=sentinel, chunks=chunks)
    decays = 0
    while len(spans.input) > budget and decays < MAX_DECAYS:
        keep_prob *= KEEP_DECAY
        decays += 1
        spans = span_mask(ids, keep_prob, draws.noise(n), sentinel=sentinel, chunks=chunks)
    if len(spans.input) > budget:
        spans = spans_from_kept(ids, [False] * len(ids), sentinel)
    return spans, keep_prob


def cut_target(spans: SpanMasked, budget: int, draws: Draws) -> list[int]:
    """The target cut to ``budget`` ids (4M): unchanged if it fits; else pick one of its sentinels
    uniformly (the closing one only when it is the only one) and keep ``budget`` ids from there; if
    fewer than ``budget`` remain from the pick, keep everything from the earliest sentinel from which
    the rest fits. A cut can drop the closing sentinel."""
    target, marks = spans.target, spans.sentinels
    if len(target) <= budget:
        return list(target)
    start = marks[draws.index(max(1, len(marks) - 1))]
    if len(target) - start >= budget:
        return target[start:start + budget]
    start = next(m for m in marks if len(target) - m <= budget)  # the closing sentinel always fits
    return target[start:]


@dataclass(frozen=True)
class SpanLayout:
    """One masked sequence placed in a row: ``input`` at [0, len(input)), ``target`` at
    [target_start, target_start + len(target)); ``keep_prob``: the p used (None: not span-masked)."""

    input: list[int]
    target: list[int]
    target_start: int
    keep_prob: float | None = None

    def place(self, length: int, pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(ids (S,) int64, given (S,) bool, target (S,) bool)`` for a row of ``length`` = S."""
        end = self.target_start + len(self.target)
        if len(self.input) > self.target_start or end > length:
            raise ValueError(f"input [0, {len(self.input)}) and target [{self.target_start}, {end}) "
                             f"must be disjoint and fit a row of {length}")
        ids = torch.full((length,), pad_id, dtype=torch.int64)
        given = torch.zeros(length, dtype=torch.bool)
        target = torch.zeros(length, dtype=torch.bool)
        ids[:len(self.input)] = torch.tensor(self.input, dtype=torch.int64)
        given[:len(self.input)] = True
        ids[self.target_start:end] = torch.tensor(self.target, dtype=torch.int64)
        target[self.target_start:end] = True
        return ids, given, target


def mask_sequence(ids: Sequence[int], input_budget: int, target_budget: int, keep: str, draws: Draws,
                  sentinel: SentinelId = fourm_sentinel_id, chunks: Sequence[int] | None = None) -> SpanLayout:
    """4M's masking of one sequence (real ids, at most T) for its budgets: input budget 0 makes the
    whole sequence the target; otherwise the keep scheme's p, lowered until the input fits; then the
    target is cut to its budget (`cut_target`) and placed at offset ``input_budget``. ``chunks``
    (`chunk_index` of ``ids``): the keep decisions are drawn per chunk."""
    if input_budget < 0 or target_budget < 0:
        raise ValueError(f"budgets must be >= 0, got input {input_budget}, target {target_budget}")
    if input_budget == 0:
        spans, given, p = spans_from_kept(ids, [False] * len(ids), sentinel), [], 0.0
    else:
        spans, p = span_mask_within(ids, input_budget, keep_probability(keep, draws), draws, sentinel, chunks)
        given = spans.input
    return SpanLayout(given, cut_target(spans, target_budget, draws), input_budget, p)


def layout_length(max_tokens: int) -> int:
    """S = 2 * (T + 1): room for an input of T + 1 ids and a target of T + 1 (4M)."""
    return 2 * (max_tokens + 1)


def real_ids(ids: Tensor, max_tokens: int, pad_id: int = 0, valid: Tensor | None = None) -> list[list[int]]:
    """Each row's real ids (``valid``, else not ``pad_id``), in order, cut to the first ``max_tokens``
    (as 4M cuts after appending [EOS], a sequence of more than T ids loses its [EOS])."""
    if ids.dim() != 2:
        raise ValueError(f"sequence ids must be (B, L), got {tuple(ids.shape)}")
    if valid is None:
        valid = ids != pad_id
    elif valid.shape != ids.shape or valid.dtype != torch.bool:
        raise ValueError(f"valid must be a (B, L) = {tuple(ids.shape)} bool tensor, got {valid.dtype} {tuple(valid.shape)}")
    return [row[keep].tolist()[:max_tokens] for row, keep in zip(ids.cpu(), valid.cpu())]


def stack_layouts(layouts: Sequence[SpanLayout], max_tokens: int, pad_id: int = 0,
                  device: torch.device | str | None = None) -> ModalityBatch:
    """B row layouts -> a `ModalityBatch` with data (B, S) ids; hidden = not input, target = target,
    valid = input or target."""
    S = layout_length(max_tokens)
    ids = torch.full((len(layouts), S), pad_id, dtype=torch.int64)
    given = torch.zeros(len(layouts), S, dtype=torch.bool)
    target = torch.zeros(len(layouts), S, dtype=torch.bool)
    for b, layout in enumerate(layouts):
        ids[b], given[b], target[b] = layout.place(S, pad_id)
    ids, given, target = ids.to(device), given.to(device), target.to(device)
    return ModalityBatch(ids, given | target, ~given, target)


def span_layout(ids: Tensor, max_tokens: int, input_budget: Tensor, target_budget: Tensor,
                keep: str | Sequence[str] = "random", draws: Draws | None = None,
                sentinel: SentinelId = fourm_sentinel_id, pad_id: int = 0,
                valid: Tensor | None = None, chunk_values: Collection[int] | None = None,
                eos_id: int | None = None) -> ModalityBatch:
    """4M's masking of a batch of sequences: ids (B, L) -> `ModalityBatch` with data (B, S).

    ``input_budget``, ``target_budget``: (B,) ints, the input budget at most T. ``keep``: one scheme
    or one per sample. ``draws``: the random source (None: torch's global generator). A row without
    real ids (the sample lacks the sequence) gets no input, no target and takes no draws.
    ``chunk_values``: chunk masking (`chunk_index` with these value ids and ``eos_id``), each row cut
    to its whole chunks within T.
    """
    B = ids.shape[0]
    schemes = [keep] * B if isinstance(keep, str) else list(keep)
    if input_budget.shape != (B,) or target_budget.shape != (B,) or len(schemes) != B:
        raise ValueError(f"need one input budget, target budget and keep scheme per row (B = {B}), got "
                         f"{tuple(input_budget.shape)}, {tuple(target_budget.shape)}, {len(schemes)}")
    if bool((input_budget > max_tokens).any()):
        raise ValueError(f"input budgets must be <= max_tokens = {max_tokens}, got {input_budget.tolist()}")
    draws = draws if draws is not None else GeneratorDraws()
    rows: list[tuple[list[int], list[int] | None]] = []
    if chunk_values is None:
        rows = [(row, None) for row in real_ids(ids, max_tokens, pad_id, valid)]
    else:
        for row in real_ids(ids, ids.shape[1], pad_id, valid):
            chunks = chunk_index(row, chunk_values, eos_id)
            n = whole_chunks(row, chunks, max_tokens)
            rows.append((row[:n], chunks[:n]))
    layouts = [
        mask_sequence(row, int(n_in), int(n_tgt), scheme, draws, sentinel, chunks) if row else SpanLayout([], [], 0)
        for (row, chunks), n_in, n_tgt, scheme in zip(rows, input_budget, target_budget, schemes)
    ]
    return stack_layouts(layouts, max_tokens, pad_id, ids.device)


def teacher_forced_slots(target: Tensor) -> Tensor:
    """(B, S) target mask -> (B, S - 1) bool: decoder slot p (fed the id at p, predicting the id at
    p + 1) counts iff p and p + 1 are both targets."""
    return target[:, :-1] & target[:, 1:]
