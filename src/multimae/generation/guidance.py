"""Multimodal classifier-free guidance: logits = l_u + sum_i w_i (l_i - l_u).

l_u is the pass with every guided condition emptied (`state.emptied`: nothing given for a map, the
opening sentinel alone for a sequence); l_i the pass with condition i given again. Conditions without
a weight, and the target's already decoded tokens, are in every pass. Weights may be negative (steer
away from a condition). All weights 0 is the unconditional pass; one condition at weight 1 the
conditional pass. The combination is taken on the raw logits, before filtering and temperature
(as 4M). With one guided condition this is 4M's ``uncond + s (cond - uncond)``.

Shapes: B batch, Q queried positions, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from torch import Tensor

from multimae.generation.passes import Context, encode_state
from multimae.generation.state import State, emptied
from multimae.masking.span import SentinelId, fourm_sentinel_id
from multimae.modalities.batch import ModalityBatch
from multimae.model.fourm import FourM


def guidance_states(model: FourM, state: Mapping[str, ModalityBatch], guidance: Mapping[str, float],
                    sentinel: SentinelId = fourm_sentinel_id) -> tuple[State, list[State]]:
    """``(unconditional, [conditional_i])`` for ``guidance`` ``{condition: weight}``."""
    unknown = [c for c in guidance if c not in state or c not in model.input_specs]
    if unknown:
        raise ValueError(f"guidance on {unknown}: not among the conditions {sorted(state)}")
    empty = {c: emptied(model, c, state[c], sentinel) for c in guidance}
    uncond = {n: empty.get(n, r) for n, r in state.items()}
    return uncond, [{**uncond, c: state[c]} for c in guidance]


def combine(unconditional: Tensor, conditional: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """l_u + sum_i w_i (l_i - l_u), in the logits' shape."""
    out = unconditional.clone()
    for logits, w in zip(conditional, weights):
        out = out + w * (logits - unconditional)
    return out


def guided_contexts(model: FourM, state: Mapping[str, ModalityBatch], guidance: Mapping[str, float],
                    guided: bool, sentinel: SentinelId = fourm_sentinel_id) -> tuple[list[Context], list[float]]:
    """The contexts of a step's passes and the guidance weights: ``([context], [])`` without guidance,
    else ``([unconditional, conditional_1, ...], [w_1, ...])`` (combined by `guided_logits`)."""
    if not guided:
        return [encode_state(model, state)], []
    uncond, conds = guidance_states(model, state, guidance, sentinel)
    return [encode_state(model, s) for s in (uncond, *conds)], list(guidance.values())


def guided_logits(contexts: Sequence[Context], weights: Sequence[float], logits_of: Callable[[Context], Tensor]
                  ) -> Tensor:
    """One pass's logits (``logits_of(context)``) per context, combined when guided."""
    passes = [logits_of(c) for c in contexts]
    return passes[0] if not weights else combine(passes[0], passes[1:], weights)
