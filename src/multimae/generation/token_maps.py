"""One decoding step of a token-map target: MaskGIT (most confident first) or ROAR (random order).

Shapes: B batch, N tokens of the map, Q queried positions per sample, K committed per sample, V
vocabulary.

* MaskGIT: query every position not decoded yet (ascending), sample each (`sampling.sample`), and
  commit the K with the highest confidence (the sampled token's probability).
* ROAR: one ``torch.rand(N)`` shared by the batch orders the positions; the first K not yet decoded
  are queried, and all of them are sampled and committed.

Both take the same draws, in the same order, as 4M's sampler given a generator seeded as its global
one (ROAR: the order, then the tokens; MaskGIT: the tokens).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from multimae.generation.guidance import guided_contexts, guided_logits
from multimae.generation.passes import token_map_logits
from multimae.generation.sampling import most_confident, sample
from multimae.generation.schedule import TargetSchedule
from multimae.generation.state import commit, decoded
from multimae.modalities.batch import ModalityBatch
from multimae.model.fourm import FourM


@dataclass
class TokenMapStep:
    """What one step did: ``queried`` (B, Q) positions and their ``logits`` (B, Q, V) (guided if so),
    ``positions`` / ``tokens`` (B, K) committed, and the target's new ``record``."""

    queried: Tensor
    logits: Tensor
    positions: Tensor
    tokens: Tensor
    record: ModalityBatch


def _pending(record: ModalityBatch) -> Tensor:
    """(B, P) positions not decoded yet, ascending (every sample has as many: one schedule for all)."""
    todo = ~decoded(record)
    counts = todo.sum(dim=1)
    if bool((counts != counts[0]).any()):
        raise ValueError(f"samples have different numbers of tokens left to decode: {counts.tolist()}")
    return todo.nonzero()[:, 1].view(todo.shape[0], -1)


def _logits(model: FourM, state: Mapping[str, ModalityBatch], schedule: TargetSchedule, queried: Tensor) -> Tensor:
    contexts, weights = guided_contexts(model, state, schedule.guidance, schedule.guided)
    return guided_logits(contexts, weights, lambda c: token_map_logits(model, schedule.target, queried, c))


def maskgit_step(model: FourM, state: Mapping[str, ModalityBatch], schedule: TargetSchedule, num_select: int,
                 temperature: float, generator: torch.Generator | None = None) -> TokenMapStep:
    """Commit the ``num_select`` most confident of the sampled tokens of every pending position."""
    record = state[schedule.target]
    queried = _pending(record)
    B, Q = queried.shape
    if not 1 <= num_select <= Q:
        raise ValueError(f"{schedule.target}: cannot commit {num_select} of {Q} pending tokens")
    logits = _logits(model, state, schedule, queried)
    tokens, confidence = sample(logits.reshape(B * Q, -1), temperature, generator, schedule.top_k, schedule.top_p)
    chosen = most_confident(confidence.view(B, Q), num_select)
    positions, chosen_tokens = queried.gather(1, chosen), tokens.view(B, Q).gather(1, chosen)
    return TokenMapStep(queried, logits, positions, chosen_tokens, commit(record, positions, chosen_tokens))


def roar_step(model: FourM, state: Mapping[str, ModalityBatch], schedule: TargetSchedule, num_select: int,
              temperature: float, generator: torch.Generator | None = None) -> TokenMapStep:
    """Sample and commit ``num_select`` pending positions chosen in a random order."""
    record = state[schedule.target]
    B, N = record.valid.shape
    noise = torch.rand(N, generator=generator, device=record.data.device)
    todo = ~decoded(record)
    order = (noise + 2.0 * (~todo)).argsort(dim=1)  # pending positions first, in noise order
    K = min(num_select, int(todo[0].sum()))
    queried = order[:, :K]
    if K < 1 or bool((todo.gather(1, queried) == 0).any()):
        raise ValueError(f"{schedule.target}: cannot commit {num_select} pending tokens ({todo.sum(1).tolist()} left)")
    logits = _logits(model, state, schedule, queried)
    tokens, _ = sample(logits.reshape(B * K, -1), temperature, generator, schedule.top_k, schedule.top_p)
    tokens = tokens.view(B, K)
    return TokenMapStep(queried, logits, queried, tokens, commit(record, queried, tokens))
