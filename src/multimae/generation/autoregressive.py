"""Autoregressive decoding of a sequence target, with a KV cache, stopping at ``[EOS]``.

Shapes: B batch, n ids generated, V vocabulary.

The decoder is fed the opening sentinel ``[S_1]`` at target rank 0, then each sampled id at the next
rank; the logits after the last id give the next one (argmax at temperature ~0, else filtered,
tempered and drawn, one ``multinomial`` over the batch per id). Decoding stops when every row has
stopped, or after ``max_new`` ids.

The target's own record in the state is what the encoder reads of it, as in 4M's span masking: an
empty target is ``[S_1]`` alone (everything is one span); an in-paint (`editing.inpaint_sequence`) is
its text with k spans replaced by [S_1] .. [S_k]. A row stops at the closing sentinel [S_(k+1)]
(dropped) or, when its given ids end in their last sentinel (the last span runs to the end of the
text), at its first ``[EOS]`` (kept). The spans decoded, "[S_1] span_1 .. [S_k] span_k", are merged
into the given ids (`masking.span.merge_spans`); for an empty target that is span_1. 4M stops at the
closing sentinel only and keeps what a row generates after its ``[EOS]`` (the caption's decoding cuts
there anyway). A record without sentinels (a given sequence) is generated anew from [S_1].

With guidance, each pass (unconditional, conditional_i) keeps its own cache; the logits are combined
after every id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from multimae.generation.guidance import combine, guided_contexts
from multimae.generation.kv_cache import SequenceDecoderCache
from multimae.generation.passes import sequence_logits
from multimae.generation.sampling import ARGMAX_BELOW, filter_logits
from multimae.generation.schedule import TargetSchedule
from multimae.generation.state import sequence_result
from multimae.masking.span import SentinelId, fourm_sentinel_id, merge_spans, sentinel_numbers
from multimae.modalities.batch import ModalityBatch
from multimae.model.fourm import FourM
from multimae.tokenizers.sequence import SequenceTokenizer

EOS_ID = SequenceTokenizer.eos_id  # 4M's layout: [EOS] = 3


@dataclass
class SequenceStep:
    """``generated`` (B, 1 + n): the opening sentinel and every id drawn (rows that stopped early go on
    being decoded with the others; their tail is ignored); ``logits`` (n, B, V) after each fed id;
    ``ids``: each row's result (its given ids with the decoded spans merged in; for an empty target the
    ids up to and with its [EOS], without the closing sentinel); ``record``: the result as a fully
    given sequence."""

    generated: Tensor
    logits: Tensor
    ids: list[list[int]]
    record: ModalityBatch


@dataclass(frozen=True)
class Row:
    """One row's given ids (what the encoder reads of the target), its ``spans`` k, the id that closes
    its decoding ([S_(k+1)]) and whether its first [EOS] ends it too (its last span runs to the end of
    the text)."""

    given: list[int]
    spans: int
    closing: int
    eos_ends: bool


def rows_of(model: FourM, target: str, state: Mapping[str, ModalityBatch], batch_size: int,
            sentinel: SentinelId = fourm_sentinel_id) -> list[Row]:
    """Each row's `Row` from the target's record in ``state`` (none, or no sentinel in a row: [S_1] alone)."""
    most = model.output_specs[target].max_length
    record = state.get(target)
    rows = []
    for b in range(batch_size):
        given = [] if record is None else [t for t, k in zip(record.data[b].tolist(), record.valid[b].tolist()) if k]
        numbers = sentinel_numbers(given, most, sentinel)
        if not numbers:
            given, numbers = [sentinel(1)], [1]
        rows.append(Row(given, len(numbers), sentinel(len(numbers) + 1), given[-1] == sentinel(numbers[-1])))
    return rows


def _next(logits: Tensor, temperature: float, top_k: float, top_p: float, generator: torch.Generator | None) -> Tensor:
    if temperature < ARGMAX_BELOW:
        return logits.argmax(dim=-1)
    probs = (filter_logits(logits, top_k, top_p) / temperature).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def _cut(decoded: list[int], row: Row, eos: int) -> list[int]:
    """``decoded`` ([S_1] and the ids after it) up to its closing sentinel (dropped) or, where [EOS] ends
    the row, its first [EOS] (kept)."""
    for i, t in enumerate(decoded):
        if t == row.closing:
            return decoded[:i]
        if t == eos and row.eos_ends:
            return decoded[:i + 1]
    return decoded


def merged(row: Row, decoded: list[int], sentinel: SentinelId, eos: int, max_length: int) -> list[int]:
    """The row's result: its spans decoded merged into its given ids, at most ``max_length`` ids (cut:
    its last id [EOS]). Only [S_0] .. [S_(k+1)] split the decoded ids (in a small vocabulary the ids
    4M's layout gives higher sentinels may be words)."""
    out = merge_spans(row.given, _cut(decoded, row, eos), row.spans + 1, sentinel)
    return out if len(out) <= max_length else [*out[:max_length - 1], eos]


def autoregressive_step(model: FourM, state: Mapping[str, ModalityBatch], schedule: TargetSchedule, max_new: int,
                        temperature: float, generator: torch.Generator | None = None, use_cache: bool = True,
                        sentinel: SentinelId = fourm_sentinel_id, eos_id: int = EOS_ID) -> SequenceStep:
    """Generate the sequence ``schedule.target`` given ``state`` (its other records, and its own: empty or
    an in-paint); at most ``max_new`` ids."""
    target = schedule.target
    spec = model.output_specs[target]
    contexts, weights = guided_contexts(model, state, schedule.guidance, schedule.guided)
    B, device = contexts[0].tokens.shape[0], contexts[0].tokens.device
    rows = rows_of(model, target, state, B, sentinel)
    closing = torch.tensor([r.closing for r in rows], device=device)
    eos_ends = torch.tensor([r.eos_ends for r in rows], device=device)
    out = torch.full((B, 1), sentinel(1), dtype=torch.long, device=device)
    caches = [SequenceDecoderCache(model, target, c) for c in contexts] if use_cache else None
    done = torch.zeros(B, dtype=torch.bool, device=device)
    steps = []
    for _ in range(max_new):
        if caches is not None:
            per_pass = [cache.feed(out[:, -1:])[:, -1] for cache in caches]
        else:
            per_pass = [sequence_logits(model, target, out, c)[:, -1] for c in contexts]
        logits = per_pass[0] if not weights else combine(per_pass[0], per_pass[1:], weights)
        steps.append(logits)
        token = _next(logits, temperature, schedule.top_k, schedule.top_p, generator)
        out = torch.cat([out, token[:, None]], dim=1)
        done |= (token == closing) | ((token == eos_id) & eos_ends)
        if bool(done.all()):
            break
    ids = [merged(r, decoded, sentinel, eos_id, spec.max_length) for r, decoded in zip(rows, out.tolist())]
    return SequenceStep(out, torch.stack(steps), ids, sequence_result(ids, spec.pad_id, device))
