"""The 4M pre-training task: (model, batch of token ids) -> masked input-to-target cross-entropy.

Shapes: B batch, N_m tokens of modality m (a grid's h * w, a sequence's stored length), V_m its
vocabulary.

A raw batch is what `multimae.data.token_pool.TokenPoolStream` yields: ``{"ids": {stored modality:
(B, N)}, "valid": {...}, "pixels": {picture: (B, C, P, P) uint8}}``. Each model modality reads its
stored modality (a token map its spec's ``source``: ``tok_depth`` reads ``depth``; a raw-pixel input,
4M's RGB, the picture's pixels, normalised as its spec says, every patch valid), and `UnifiedMasking` turns the batch into the model's
records (which tokens are given, which predicted), drawing from a generator seeded by (seed, step,
first row): the model itself is deterministic given its batch, and a resumed run draws what it would
have drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from multimae.config.fourm import FourMMaskingConfig
from multimae.data.stream import derive_seed
from multimae.losses import LossOutput
from multimae.masking import BudgetDirichlet, DirichletInputTargetMasking, SequenceMasking, UnifiedMasking
from multimae.masking.span import layout_length
from multimae.modalities.batch import ModalityBatch
from multimae.modalities.spec import ModalitySpec
from multimae.model.fourm import FourM, FourMOutput
from multimae.tokenizers.base import Tokenizer

VAL_SEED_PART = 7  # validation masks: drawn from (seed, this, batch index), the same at every validation


def stored_name(spec: ModalitySpec) -> str:
    """The modality a model modality's tokens are stored under: a token map's source, else its own name."""
    return spec.source_name if spec.kind == "token_map" else spec.name


def default_max_tokens(spec: ModalitySpec) -> int:
    """The most ids of a sequence whose (2 (T + 1))-long 4M layout fits its max_length."""
    return max(1, spec.max_length // 2 - 1)


def one_sided(alpha: float | Mapping[str, float], names: Sequence[str], usable: Collection[str]
              ) -> float | dict[str, float]:
    """``alpha`` with 0 for the modalities of ``names`` not in ``usable``: an input budget for a
    modality the model cannot read (an output only, 4M's ``tok_rgb`` beside RGB pixels), or a target
    budget for one it cannot predict (an input only, the pixels), would be tokens thrown away."""
    if all(n in usable for n in names):
        return alpha
    table = dict(alpha) if isinstance(alpha, Mapping) else dict.fromkeys(names, float(alpha))
    return {n: (float(table[n]) if n in usable else 0.0) if n in table else 0.0 for n in names}


def build_masking(cfg: FourMMaskingConfig, specs: Mapping[str, ModalitySpec], inputs: Collection[str] | None = None,
                  outputs: Collection[str] | None = None, tokenizers: Mapping[str, Tokenizer] | None = None
                  ) -> UnifiedMasking:
    """`UnifiedMasking` of a masking config over the modalities ``specs`` (every input and output, once);
    with ``inputs`` / ``outputs`` (the model's), a modality gets no input budget unless it is an
    input, and no target budget unless it is an output (`one_sided`). The sequences of
    ``cfg.chunked`` are masked by chunks, their value ids (coordinate ids) read from ``tokenizers``
    (keyed by stored modality)."""
    names = list(specs)
    ins, outs = set(names if inputs is None else inputs), set(names if outputs is None else outputs)
    components = [BudgetDirichlet(one_sided(c.alpha, names, ins), one_sided(c.target_alpha, names, outs))
                  for c in cfg.mixture]
    weights = [c.weight for c in cfg.mixture] if any(c.weight != 1.0 for c in cfg.mixture) else None
    budgets = DirichletInputTargetMasking(cfg.input_budget, cfg.target_budget, components, weights,
                                          min_tokens=dict(cfg.min_tokens))
    sequences = {}
    for name, spec in specs.items():
        if spec.kind == "tokens":
            T = cfg.max_tokens.get(name, default_max_tokens(spec))
            if layout_length(T) > spec.max_length:
                raise ValueError(f"masking.max_tokens.{name}={T}: its layout of {layout_length(T)} ids is longer than "
                                 f"the modality's max_length {spec.max_length}")
            sequences[name] = SequenceMasking(T, cfg.keep, spec.pad_id, *chunking(name, cfg, tokenizers))
    stray = [n for n in cfg.chunked if n not in sequences]
    if stray:
        raise ValueError(f"masking.chunked: {stray} are not sequences of the model ({sorted(sequences)})")
    grids = {n: t for n, t in cfg.max_tokens.items() if n not in sequences}
    return UnifiedMasking(budgets, sequences, condition_dropout=cfg.condition_dropout, grid_max_tokens=grids)


def pixel_record(model: FourM, name: str, pixels: Tensor) -> tuple[Tensor, Tensor]:
    """``(normalised (B, C, P, P) float, valid (B, N) all True)`` of uint8 pixels (B, C, P, P) for the
    raw-pixel input ``name``."""
    from multimae.modalities.prepare import prepare_dense

    data = prepare_dense(model.input_specs[name], pixels.float() / 255)
    N = model.encoder_embeddings[name].num_tokens(data)
    return data, torch.ones(data.shape[0], N, dtype=torch.bool, device=data.device)


def chunking(name: str, cfg: FourMMaskingConfig, tokenizers: Mapping[str, Tokenizer] | None
             ) -> tuple[frozenset[int] | None, int | None]:
    """``(value ids, [EOS] id)`` of a sequence masked by chunks (its tokenizer's coordinate ids), or
    ``(None, None)``."""
    if name not in cfg.chunked:
        return None, None
    tok = (tokenizers or {}).get(name)
    if not hasattr(tok, "coord_ids"):
        raise ValueError(f"masking.chunked.{name}: chunks need the sequence tokenizer of {name} (its coordinate "
                         "ids are the values of each key)")
    return tok.coord_ids, tok.eos_id  # type: ignore[union-attr]


@dataclass
class FourMTask:
    model: FourM  # the unwrapped model (its specs)
    masking: UnifiedMasking
    seed: int = 0
    specs: dict[str, ModalitySpec] = field(init=False)

    def __post_init__(self) -> None:
        self.specs = {**self.model.input_specs, **self.model.output_specs}

    def records(self, raw: Mapping[str, Mapping[str, Tensor]]) -> dict[str, tuple[Tensor, Tensor | None]]:
        """``{model modality: (ids or normalised pixels, valid)}`` from a raw batch (every model
        modality it holds)."""
        out = {}
        for name, spec in self.specs.items():
            key = stored_name(spec)
            if spec.kind == "dense":
                if key in raw.get("pixels", {}):
                    out[name] = pixel_record(self.model, name, raw["pixels"][key])
            elif key in raw["ids"]:
                out[name] = (raw["ids"][key], raw["valid"][key])
        if not out:
            raise ValueError(f"the batch holds none of the model's modalities {list(self.specs)} "
                             f"(stored as {sorted({stored_name(s) for s in self.specs.values()})}); it has "
                             f"{sorted(raw['ids'])}")
        return out

    def draw(self, raw: Mapping[str, Mapping[str, Tensor]], *seed_parts: int) -> dict[str, ModalityBatch]:
        """The masked records of ``raw``, drawn from a generator seeded by (seed, *seed_parts)."""
        g = torch.Generator().manual_seed(derive_seed(self.seed, *seed_parts))
        return self.masking(self.records(raw), g)

    def __call__(self, forward: Callable[..., FourMOutput], raw: Mapping[str, Mapping[str, Tensor]], step: int,
                 global_batch: int, rows: slice) -> LossOutput:
        out = forward(self.draw(raw, step, rows.start))
        return LossOutput(out.loss, out.losses)

    @torch.no_grad()
    def validate(self, raw_batches: Iterable[Mapping[str, Mapping[str, Tensor]]],
                 unigram: Mapping[str, Tensor] | None = None) -> dict[str, float]:
        """Held-out cross-entropy and token accuracy per output (``<m>/ce``, ``<m>/acc``), and with
        ``unigram`` (`unigram_log_probs`) the cross-entropy of predicting every target from the
        modality's token frequencies alone (``<m>/unigram_ce``), on the same targets and fixed masks."""
        sums: dict[str, list[float]] = {}
        for i, raw in enumerate(raw_batches):
            out = self.model(self.draw(raw, VAL_SEED_PART, i))
            for name, logits in out.logits.items():
                labels = out.labels[name]
                s = sums.setdefault(name, [0.0, 0.0, 0.0, 0.0])
                if not labels.numel():
                    continue
                s[0] += float(torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum"))
                s[1] += float((logits.argmax(dim=-1) == labels).sum())
                s[2] += labels.numel()
                if unigram is not None and name in unigram:
                    s[3] -= float(unigram[name][labels].sum())
        report = {}
        for name, (ce, correct, n, uni) in sums.items():
            if n:
                report[f"{name}/ce"] = ce / n
                report[f"{name}/acc"] = correct / n
                if unigram is not None and name in unigram:
                    report[f"{name}/unigram_ce"] = uni / n
        ces = [v for k, v in report.items() if k.endswith("/ce")]
        if ces:
            report["loss"] = sum(ces) / len(ces)
        return report


@torch.no_grad()
def condition_use(task: FourMTask, raw_batches: Iterable[Mapping[str, Mapping[str, Tensor]]],
                  pairs: Iterable[tuple[str, str]]) -> dict[str, dict[str, float]]:
    """Does the model read its inputs? Per (input, target) pair of model modalities, the held-out
    cross-entropy of the whole target given the whole input (`TransferMasking`, one pass): ``ce`` with
    each sample's own input, ``ce_other`` with the input of the next sample of its batch (rows rolled by
    one). ``ce_other - ce`` is what the input tells the model about the target: about 0 for a model that
    ignores it (it predicts each target from the modality's statistics alone)."""
    from multimae.masking import TransferMasking

    pairs = list(pairs)
    sums = {p: [0.0, 0.0, 0] for p in pairs}
    sequences = task.masking.sequences
    for raw in raw_batches:
        records = task.records(raw)
        for inp, tgt in pairs:
            if inp not in records or tgt not in records or len(records[inp][0]) < 2:
                continue
            masking = TransferMasking([inp], [tgt], {n: sequences[n] for n in (inp, tgt) if n in sequences})
            data, valid = records[inp]
            for k, given in enumerate([(data, valid), (data.roll(1, 0), None if valid is None else valid.roll(1, 0))]):
                out = task.model(masking({inp: given, tgt: records[tgt]}))
                logits, labels = out.logits[tgt], out.labels[tgt]
                sums[(inp, tgt)][k] += float(torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum"))
                sums[(inp, tgt)][2] += labels.numel() if k == 0 else 0
    return {f"{inp}->{tgt}": {"ce": own / n, "ce_other": other / n} for (inp, tgt), (own, other, n) in sums.items()
            if n}


@torch.no_grad()
def unigram_log_probs(task: FourMTask, raw_batches: Iterable[Mapping[str, Mapping[str, Tensor]]]) -> dict[str, Tensor]:
    """``{output: (V,) log-frequency}`` of each output's target tokens in ``raw_batches`` (training data)
    under the task's masking (so a sequence's sentinels count as they are predicted), add-one smoothed:
    the baseline that knows which tokens are common but sees no input."""
    counts = {n: torch.ones(s.num_channels, dtype=torch.float64) for n, s in task.model.output_specs.items()}
    for i, raw in enumerate(raw_batches):
        parts, labels = task.model.embed_targets(task.draw(raw, VAL_SEED_PART + 1, i))
        for name, (_, _, counted) in parts.items():
            V = len(counts[name])
            counts[name] += torch.bincount(labels[name][counted].flatten(), minlength=V)[:V].double()
    return {n: (c / c.sum()).log().float() for n, c in counts.items()}
