"""Any-to-any generation: targets decoded one after another from the conditions, step by step.

Shapes: B batch.

``generate_steps`` yields a `GenerationStep` after every decoding step (a token map's MaskGIT / ROAR
step, or a whole autoregressive sequence); ``generate`` runs it to the end, in batches of
``batch_size`` samples. Step i draws from a generator seeded ``seed + i`` (as 4M's sampler seeds its
global one), so a run is reproducible, and equal to 4M's draws where the same calls are made.

* chained (default, 4M's): every target is in the state from the start (empty), so each fully
  generated target is given to the encoder while the next ones are decoded;
* independent: each target is decoded from the original conditions alone;
* in-paint (`editing`): a target given in ``inpaint`` starts from that record, its kept tokens
  given and never changed; a token map's schedule covers only the positions to regenerate (none: no
  step); a sequence's record is its text with sentinels for the spans to regenerate.

``precision`` ('fp32', 'bf16', 'fp16') is the model passes' autocast (`engine.precision.autocast`);
logits are sampled in fp32 whatever it is. `generate` keeps one autocast on around all steps, so the
weights are cast once (autocast caches casts while it is on); a loop over `generate_steps` can do the
same by running inside ``engine.precision.autocast``. bf16 draws differ from fp32 ones where logits round
differently; `engine.precision.choose_precision` picks bf16 for ``auto`` only where the CPU computes it
natively and faster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from multimae.data.stream import derive_seed
from multimae.engine.precision import autocast
from multimae.generation.autoregressive import SequenceStep, autoregressive_step
from multimae.generation.editing import check_inpaint, is_sequence, regenerated
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


def plan(model: FourM, schedule: TargetSchedule, pending: int | None = None) -> list[tuple[int, float]]:
    """``[(tokens, temperature)]`` per step: tokens committed by a token-map step, or the most new ids
    of a sequence (one step). ``pending``: a token map's positions left to decode (an in-paint's
    regenerated ones; None: all N); 0 plans no step."""
    spec = model.output_specs[schedule.target]
    if spec.kind == "tokens":
        return [(schedule.num_tokens or max(1, spec.max_length // 2), schedule.temperature)]
    N = model.decoder_embeddings[schedule.target].side ** 2 if pending is None else pending
    if N == 0:
        return []
    counts = token_counts(schedule, min(schedule.num_tokens or N, N))
    return list(zip(counts, temperatures(schedule, counts)))


def _batch(records: Mapping[str, ModalityBatch], model: FourM) -> tuple[int, torch.device]:
    if not records:
        return 1, model.mask_token.device
    first = next(iter(records.values())).data
    return first.shape[0], first.device


def _starts(model: FourM, schedules: Sequence[TargetSchedule], inpaint: Mapping[str, ModalityBatch],
            batch_size: int, device: torch.device) -> dict[str, ModalityBatch]:
    """Every target's first record: its in-paint record, else empty; in-paint records must leave as many
    tokens to regenerate in every sample (one schedule for the batch)."""
    starts = {}
    for s in schedules:
        if s.target not in inpaint:
            starts[s.target] = empty_target(model, s.target, batch_size, device)
            continue
        if not is_sequence(model, s.target):  # a sequence's spans are decoded in one step
            counts = regenerated(inpaint[s.target])
            if bool((counts != counts[0]).any()):
                raise ValueError(f"in-paint of {s.target!r}: the samples regenerate different numbers of tokens "
                                 f"({counts.tolist()}); generate them apart (batch_size=1)")
        starts[s.target] = inpaint[s.target]
    return starts


def generate_steps(model: FourM, conditions: Mapping[str, ModalityBatch], schedules: Sequence[TargetSchedule],
                   seed: int = 0, chained: bool = True, use_cache: bool = True,
                   inpaint: Mapping[str, ModalityBatch] | None = None, precision: str = "fp32"
                   ) -> Iterator[GenerationStep]:
    """Decode every target of ``schedules`` in order, yielding after each step (see the module doc).
    ``inpaint``: ``{target: record}`` targets partly given (`editing.inpaint_target`); ``precision``: the
    passes' autocast."""
    inpaint = dict(inpaint or {})
    check_schedules(model, conditions, schedules)
    B, device = _batch({**conditions, **inpaint}, model)
    check_inpaint(model, inpaint, [s.target for s in schedules], B)
    starts = _starts(model, schedules, inpaint, B, device)
    state: State = {**conditions, **starts} if chained else dict(conditions)
    index = 0
    for schedule in schedules:
        if not chained:
            state = {**conditions, schedule.target: starts[schedule.target]}
        map_inpaint = schedule.target in inpaint and not is_sequence(model, schedule.target)
        pending = int(regenerated(starts[schedule.target])[0]) if map_inpaint else None
        steps = plan(model, schedule, pending)
        for i, (count, temperature) in enumerate(steps):
            generator = torch.Generator(device=device).manual_seed(seed + index)
            with torch.no_grad(), autocast(model, device.type, precision):
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


def _rows(records: Mapping[str, ModalityBatch], start: int, size: int) -> dict[str, ModalityBatch]:
    """Samples ``start : start + size`` of every record."""
    return {n: ModalityBatch(r.data[start:start + size], r.valid[start:start + size],
                             None if r.hidden is None else r.hidden[start:start + size])
            for n, r in records.items()}


def generate(model: FourM, conditions: Mapping[str, ModalityBatch], schedules: Sequence[TargetSchedule],
             seed: int = 0, chained: bool = True, batch_size: int | None = None, use_cache: bool = True,
             on_step: Callable[[int, GenerationStep], None] | None = None,
             inpaint: Mapping[str, ModalityBatch] | None = None, precision: str = "fp32") -> dict[str, ModalityBatch]:
    """``{target: record}`` every target fully generated (a token map's ids (B, N); a sequence's ids
    (B, L), ``valid`` its real ids), ``batch_size`` samples at a time. The first chunk draws from
    ``seed``, a chunk starting at sample s > 0 from a seed derived from (seed, s), so samples in different
    chunks differ; results at temperature 0 with MaskGIT do not depend on ``batch_size``.
    ``on_step(first sample of the chunk, step)`` is called after every step. ``inpaint``: targets partly
    given (`generate_steps`); one that regenerates nothing comes back as given. ``precision``: the passes'
    autocast (fp32 | bf16 | fp16)."""
    inpaint = dict(inpaint or {})
    B, device = _batch({**conditions, **inpaint}, model)
    size = batch_size or B
    chunks = []
    # autocast caches the weights it casts while it is on: on around all steps, they are cast once
    # (each step's own autocast is nested in it; on_step runs inside it too)
    with autocast(model, device.type, precision):
        for start in range(0, B, size):
            part, part_inpaint = (_rows(records, start, size) for records in (conditions, inpaint))
            done = dict(part_inpaint)
            chunk_seed = seed if start == 0 else derive_seed(seed, start) % SEED_RANGE
            for step in generate_steps(model, part, schedules, chunk_seed, chained, use_cache, part_inpaint,
                                       precision):
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
