"""Autoregressive decoding of a sequence target, with a KV cache, stopping at ``[EOS]``.

Shapes: B batch, n ids generated, V vocabulary.

The decoder is fed the opening sentinel ``[S_1]`` at target rank 0, then each sampled id at the next
rank; the logits after the last id give the next one (argmax at temperature ~0, else filtered,
tempered and drawn, one ``multinomial`` over the batch per id). A row stops at the first ``[EOS]`` or
closing sentinel ``[S_2]`` it produces (kept / dropped); decoding stops when every row has, or after
``max_new`` ids. 4M stops at the closing sentinel only and keeps what a row generates after its
``[EOS]`` (the caption's decoding cuts there anyway).

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
from multimae.masking.span import SentinelId, fourm_sentinel_id
from multimae.modalities.batch import ModalityBatch
from multimae.model.fourm import FourM
from multimae.tokenizers.sequence import SequenceTokenizer

EOS_ID = SequenceTokenizer.eos_id  # 4M's layout: [EOS] = 3


@dataclass
class SequenceStep:
    """``generated`` (B, 1 + n): the opening sentinel and every id drawn (rows that stopped early go on
    being decoded with the others; their tail is ignored); ``logits`` (n, B, V) after each fed id;
    ``ids``: each row's result (up to and with its [EOS], without the closing sentinel); ``record``:
    the result as a fully given sequence."""

    generated: Tensor
    logits: Tensor
    ids: list[list[int]]
    record: ModalityBatch


def _next(logits: Tensor, temperature: float, top_k: float, top_p: float, generator: torch.Generator | None) -> Tensor:
    if temperature < ARGMAX_BELOW:
        return logits.argmax(dim=-1)
    probs = (filter_logits(logits, top_k, top_p) / temperature).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def _cut(row: list[int], stops: tuple[int, int]) -> list[int]:
    eos, closing = stops
    for i, t in enumerate(row):
        if t == eos:
            return row[:i + 1]
        if t == closing:
            return row[:i]
    return row


def autoregressive_step(model: FourM, state: Mapping[str, ModalityBatch], schedule: TargetSchedule, max_new: int,
                        temperature: float, generator: torch.Generator | None = None, use_cache: bool = True,
                        sentinel: SentinelId = fourm_sentinel_id, eos_id: int = EOS_ID) -> SequenceStep:
    """Generate the sequence ``schedule.target`` given ``state`` (its other records); at most ``max_new`` ids."""
    target = schedule.target
    spec = model.output_specs[target]
    contexts, weights = guided_contexts(model, state, schedule.guidance, schedule.guided)
    B, device = contexts[0].tokens.shape[0], contexts[0].tokens.device
    out = torch.full((B, 1), sentinel(1), dtype=torch.long, device=device)
    caches = [SequenceDecoderCache(model, target, c) for c in contexts] if use_cache else None
    stops = (eos_id, sentinel(2))
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
        done |= (token == eos_id) | (token == stops[1])
        if bool(done.all()):
            break
    ids = [_cut(row[1:], stops) for row in out.tolist()]
    return SequenceStep(out, torch.stack(steps), ids, sequence_result(ids, spec.pad_id, device))

