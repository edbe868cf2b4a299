"""Any-to-any generation: targets decoded one after another from the conditions, step by step.

Shapes: B batch.

``generate_steps`` yields a `GenerationStep` after every decoding step (a token map's MaskGIT / ROAR
step, or a whole autoregressive sequence); ``generate`` runs it to the end, in batches of
``batch_size`` samples. Step i draws from a generator seeded ``seed + i`` (as 4M's sampler seeds its
global one), so a run is reproducible, and equal to 4M's draws where the same calls are made.

* chained (default, 4M's): every target is in the state from the start (empty), so each fully
  generated target is given to the encoder while the next ones are decoded;
* independent: each target is decoded from the original conditions alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from multimae.data.stream import derive_seed
from multimae.generation.autoregressive import SequenceStep, autoregressive_step
from multimae.generation.schedule import TargetSchedule, temperatures, token_counts
from multimae.generation.state import State, decoded, empty_target
from multimae.generation.token_maps import TokenMapStep, maskgit_step, roar_step
from multimae.modalities.batch import ModalityBatch
from multimae.model.fourm import FourM

SEQUENCE_SCHEMES = ("autoregressive",)
TOKEN_MAP_SCHEMES = ("maskgit", "roar")
SEED_RANGE = 2**62  # derived chunk seeds stay below torch's limit with room for seed + step


@dataclass
class GenerationStep:
    """After one step: its global ``index`` (its seed is seed + index), the ``target`` and its
    ``scheme``, the step ``step`` of ``num_steps`` of that target, the ``temperature`` used,
    ``result`` (what the step queried, sampled and committed) and the whole ``state`` after it."""

    index: int
    target: str
    scheme: str
    step: int
    num_steps: int
    temperature: float
    result: TokenMapStep | SequenceStep
    state: State


def check_schedules(model: FourM, conditions: Mapping[str, ModalityBatch], schedules: Sequence[TargetSchedule]) -> None:
    """ValueError naming the problem: a target the model does not predict, a scheme that does not fit it,
    a target given as a condition or twice, a condition the model does not read."""
    stray = [c for c in conditions if c not in model.input_specs]
    if stray:
        raise ValueError(f"conditions {stray} are not inputs of this model ({list(model.input_specs)})")
    names = [s.target for s in schedules]
    for i, s in enumerate(schedules):
        unguidable = [c for c in s.guidance if c not in conditions and c not in names[:i]]
        if unguidable:
            raise ValueError(f"guidance on {unguidable} for {s.target!r}: not among the conditions "
                             f"{sorted(conditions)} (or the targets before it)")
        if s.target not in model.output_specs:
            raise ValueError(f"target {s.target!r} is not an output of this model ({list(model.output_specs)})")
        kind = model.output_specs[s.target].kind
        fits = SEQUENCE_SCHEMES if kind == "tokens" else TOKEN_MAP_SCHEMES
        if s.scheme not in fits:
            raise ValueError(f"target {s.target!r} ({kind}) is decoded with {fits}, not {s.scheme!r}")
        most = model.output_specs[s.target].max_length - 1
        if kind == "tokens" and s.num_tokens is not None and s.num_tokens > most:
            raise ValueError(f"target {s.target!r}: at most {most} new ids (its max_length is {most + 1}), "
                             f"asked for {s.num_tokens}")
        if s.target in conditions or names.count(s.target) > 1:
            raise ValueError(f"target {s.target!r} is a condition or appears twice among the targets")
    if not schedules:
        raise ValueError("no target to generate")


def plan(model: FourM, schedule: TargetSchedule) -> list[tuple[int, float]]:
    """``[(tokens, temperature)]`` per step: tokens committed by a token-map step, or the most new ids
    of a sequence (one step)."""
    spec = model.output_specs[schedule.target]
    if spec.kind == "tokens":
        return [(schedule.num_tokens or max(1, spec.max_length // 2), schedule.temperature)]
    N = model.decoder_embeddings[schedule.target].side ** 2
    counts = token_counts(schedule, min(schedule.num_tokens or N, N))
    return list(zip(counts, temperatures(schedule, counts)))


def generate_steps(model: FourM, conditions: Mapping[str, ModalityBatch], schedules: Sequence[TargetSchedule],
                   seed: int = 0, chained: bool = True, use_cache: bool = True) -> Iterator[GenerationStep]:
    """Decode every target of ``schedules`` in order, yielding after each step (see the module doc)."""
    check_schedules(model, conditions, schedules)
    first = next(iter(conditions.values())).data if conditions else model.mask_token
    B = first.shape[0] if conditions else 1
    device = first.device
    empty = {s.target: empty_target(model, s.target, B, device) for s in schedules}
    state: State = {**conditions, **empty} if chained else dict(conditions)
    index = 0
    for schedule in schedules:
        if not chained:
            state = {**conditions, schedule.target: empty[schedule.target]}
        steps = plan(model, schedule)
        for i, (count, temperature) in enumerate(steps):
            generator = torch.Generator(device=device).manual_seed(seed + index)
            with torch.no_grad():
                if schedule.scheme == "autoregressive":
                    result = autoregressive_step(model, state, schedule, count, temperature, generator, use_cache)
                else:
                    step = maskgit_step if schedule.scheme == "maskgit" else roar_step
                    result = step(model, state, schedule, count, temperature, generator)
            state = {**state, schedule.target: result.record}
            yield GenerationStep(index, schedule.target, schedule.scheme, i, len(steps), temperature, result, state)
            index += 1


def concat_records(records: Sequence[ModalityBatch], pad_id: int = 0) -> ModalityBatch:
    """Records of consecutive sample chunks as one; sequences right-padded with ``pad_id`` to the longest row."""
    L = max(r.valid.shape[1] for r in records)
    data, valid, hidden = [], [], []
    for r in records:
        pad = L - r.valid.shape[1]
        data.append(F.pad(r.data, (0, pad), value=pad_id))
        valid.append(F.pad(r.valid, (0, pad)))
        hidden.append(None if r.hidden is None else F.pad(r.hidden, (0, pad), value=True))
    hid = None if any(h is None for h in hidden) else torch.cat(hidden)
    return ModalityBatch(torch.cat(data), torch.cat(valid), hid)


def generate(model: FourM, conditions: Mapping[str, ModalityBatch], schedules: Sequence[TargetSchedule],
             seed: int = 0, chained: bool = True, batch_size: int | None = None, use_cache: bool = True,
             on_step: Callable[[int, GenerationStep], None] | None = None) -> dict[str, ModalityBatch]:
    """``{target: record}`` every target fully generated (a token map's ids (B, N); a sequence's ids
    (B, L), ``valid`` its real ids), ``batch_size`` samples at a time. The first chunk draws from
    ``seed``, a chunk starting at sample s > 0 from a seed derived from (seed, s), so samples in different
    chunks differ; results at temperature 0 with MaskGIT do not depend on ``batch_size``.
    ``on_step(first sample of the chunk, step)`` is called after every step."""
    B = next(iter(conditions.values())).data.shape[0]
    size = batch_size or B
    chunks = []
    for start in range(0, B, size):
        part = {n: ModalityBatch(r.data[start:start + size], r.valid[start:start + size],
                                 None if r.hidden is None else r.hidden[start:start + size])
                for n, r in conditions.items()}
        done = {}
        chunk_seed = seed if start == 0 else derive_seed(seed, start) % SEED_RANGE
        for step in generate_steps(model, part, schedules, chunk_seed, chained, use_cache):
            done[step.target] = step.state[step.target]
            if on_step is not None:
                on_step(start, step)
        chunks.append(done)
    out = {s.target: concat_records([c[s.target] for c in chunks], model.output_specs[s.target].pad_id)
           for s in schedules}
    for s in schedules:
        if model.output_specs[s.target].kind != "tokens" and not bool(decoded(out[s.target]).all()):
            raise RuntimeError(f"{s.target}: tokens left undecoded")  # the schedules sum to N: a bug if hit
    return out
