"""The pre-training task: (model, raw batch) -> masked multi-task reconstruction losses.

Masks for a step are drawn for the whole *global* batch from a generator seeded by (seed, step),
and each micro-batch of each process takes its rows, so results depend neither on the number of
processes nor on gradient accumulation, and a resumed run draws the masks it would have drawn.

Captions arrive as text (readers and augmentation keep them so: a flip rewrites them) and are
tokenised here, with the run's tokenizer of each text modality, just before `prepare_batch`;
``caption_dropout`` drops a training sample's caption (M3AE), drawn like the masks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from multimae.config.schema import LossConfig, MaskingConfig
from multimae.data.collate import rows_with_any
from multimae.data.stream import derive_seed
from multimae.losses import LossOutput, MultiMAELoss, patch_standardize
from multimae.masking.build import build_mask_sampler
from multimae.masking.samplers import MaskDraw, MaskSampler
from multimae.modalities import prepare_batch
from multimae.modalities.registry import DEFAULT_IMAGE_MODALITY
from multimae.model import MultiMAE, MultiMAEOutput
from multimae.tasks.metrics import ConfusionMatrix, masked_l1
from multimae.text.batch import tokenize_texts
from multimae.text.tokenizer import TextTokenizer


@dataclass
class PretrainTask:
    model: MultiMAE  # the unwrapped model (specs, token counts)
    masking: MaskingConfig
    loss: LossConfig
    seed: int = 0
    sampler: MaskSampler | None = None  # default: the sampler the masking config names (build_mask_sampler)
    tokenizers: Mapping[str, TextTokenizer] = field(default_factory=dict)  # {text modality: its tokenizer}
    caption_dropout: float = 0.0  # chance that a training sample's caption is dropped
    truncated: int = 0  # captions cut to their modality's max_length so far
    loss_fn: MultiMAELoss = field(init=False)
    _built: dict[tuple[str, ...], MaskSampler] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.loss_fn = MultiMAELoss(self.model.output_specs, self.model.backbone.config.patch_size,
                                    self.loss.all_patches, self.loss.weights)

    def tokenize(self, raw: Mapping[str, object], global_batch: int | None = None, rows: slice | None = None,
                 *seed_parts: int) -> dict[str, object]:
        """``raw`` with each text modality's captions (a list of str, None = missing) as (B, L) ids.

        With ``seed_parts`` (training), each caption is dropped with chance ``caption_dropout``,
        drawn for the global batch from (seed, *seed_parts) and cut to ``rows``; the caption of a
        sample that has nothing else (a text-only sample) is kept.
        """
        out = dict(raw)
        for name in self.tokenizers:
            captions = out.get(name)
            if seed_parts and self.caption_dropout > 0 and isinstance(captions, list):
                g = torch.Generator().manual_seed(derive_seed(self.seed, *seed_parts))
                drop = (torch.rand(global_batch or len(captions), generator=g) < self.caption_dropout)
                drop = drop[rows] if rows is not None else drop[: len(captions)]
                others = [k for k, v in out.items() if k != name and isinstance(v, Tensor)]
                drop &= rows_with_any(out, others, len(captions))  # a text-only sample keeps its caption
                out[name] = [None if d else c for c, d in zip(captions, drop.tolist())]
        out, cut = tokenize_texts(out, self.tokenizers, {**self.model.output_specs, **self.model.input_specs})
        self.truncated += cut
        return out

    def _sampler(self, inputs: Sequence[str]) -> MaskSampler:
        """The given sampler, else the config's for this set of inputs (built once per set)."""
        if self.sampler is not None:
            return self.sampler
        key = tuple(inputs)
        if key not in self._built:
            self._built[key] = build_mask_sampler(self.masking, list(inputs))
        return self._built[key]

    def draw(self, inputs: Mapping[str, Tensor], global_batch: int, rows: slice, *seed_parts: int,
             present: Mapping[str, Tensor] | None = None) -> MaskDraw:
        """This process's rows of the global batch's hidden and target masks, drawn from (seed, *seed_parts).

        ``present`` ({modality: (B,) bool} for this process's rows) keeps the sampler off the tokens
        of samples that lack a modality; other processes' rows count as complete (each process
        only keeps its own rows, which depend on its own samples alone).
        """
        g = torch.Generator().manual_seed(derive_seed(self.seed, *seed_parts))
        counts = self.model.backbone.num_tokens(inputs)
        tokens = self.model.backbone.token_validity(inputs)  # padding of sequences: (rows, N_m)
        valid = {}
        for name in (n for n in counts if n in (present or {}) or n in tokens):
            valid[name] = torch.ones(global_batch, counts[name], dtype=torch.bool)
            if name in (present or {}):
                valid[name][rows] = present[name].cpu()[:, None]  # type: ignore[index]
            if name in tokens:
                valid[name][rows] &= tokens[name].cpu()
        draw = self._sampler(list(counts))(counts, global_batch, g, valid or None)
        return draw.rows(rows, next(iter(inputs.values())).device)

    def masks(self, inputs: Mapping[str, Tensor], global_batch: int, rows: slice, *seed_parts: int) -> dict[str, Tensor]:
        """The hidden masks of `draw` (True = not given to the encoder)."""
        return self.draw(inputs, global_batch, rows, *seed_parts).hidden

    @staticmethod
    def _forward(forward: Callable[..., MultiMAEOutput], inputs: Mapping[str, Tensor], draw: MaskDraw,
                 present: Mapping[str, Tensor] | None = None) -> MultiMAEOutput:
        return forward(inputs, draw.hidden, targets=draw.target, valid=present or None)

    def __call__(self, forward: Callable[..., MultiMAEOutput], raw: Mapping[str, Tensor], step: int,
                 global_batch: int, rows: slice) -> LossOutput:
        """Losses of ``raw``: the rows ``rows`` of the global batch of ``step``."""
        raw = self.tokenize(raw, global_batch, rows, step, 4)
        batch = prepare_batch(raw, self.model.input_specs, self.model.output_specs)
        draw = self.draw(batch.inputs, global_batch, rows, step, 2, present=batch.present)
        out = self._forward(forward, batch.inputs, draw, batch.present)
        return self.loss_fn(out.preds, batch.targets, out.masks, out.valid)

    @torch.no_grad()
    def validate(self, raw_batches: Iterable[Mapping[str, Tensor]],
                 baseline: Mapping[str, Tensor] | None = None) -> dict[str, float]:
        """Mean masked-reconstruction losses on held-out batches, with fixed masks.

        With ``baseline`` (per-pixel predictions (1, C, H, W), see `mean_baseline`), the same
        losses for those constant predictions instead of the model's. A token output also gets
        ``<name>_acc``: the fraction of its counted (hidden, real) tokens predicted exactly
        (masked-word accuracy), over all held-out tokens.
        """
        totals: dict[str, float] = {}
        hits: dict[str, list[int]] = {}
        n = 0
        for i, raw in enumerate(raw_batches):
            batch = prepare_batch(self.tokenize(raw), self.model.input_specs, self.model.output_specs)
            B = next(iter(batch.inputs.values())).shape[0]
            draw = self.draw(batch.inputs, B, slice(0, B), 10**6, i, 3, present=batch.present)  # fixed
            out = self._forward(self.model, batch.inputs, draw, batch.present)
            preds = out.preds if baseline is None else {k: baseline[k].expand_as(v) for k, v in out.preds.items()}
            losses = self.loss_fn(preds, batch.targets, out.masks, out.valid)
            for k, v in losses.per_task.items():
                totals[k] = totals.get(k, 0.0) + float(v)
            totals["total"] = totals.get("total", 0.0) + float(losses.total)
            for name, spec in self.model.output_specs.items():
                if spec.kind == "tokens" and name in batch.targets:
                    counted = out.masks[name]
                    right = (preds[name].argmax(-1) == batch.targets[name]) & counted
                    h = hits.setdefault(name, [0, 0])
                    h[0], h[1] = h[0] + int(right.sum()), h[1] + int(counted.sum())
            n += 1
        means = {k: v / max(n, 1) for k, v in totals.items()}
        return means | {f"{k}_acc": right / total for k, (right, total) in hits.items() if total}


@torch.no_grad()
def transfer_metrics(
    predict: Callable[[dict[str, Tensor]], Mapping[str, Tensor]],
    model: MultiMAE,
    raw_batches: Iterable[Mapping[str, Tensor]],
    sources: Sequence[str] = (DEFAULT_IMAGE_MODALITY,),
    object_classes: Sequence[int] | None = None,
) -> dict[str, float]:
    """Dense predictions from the full ``sources`` only, scored as each output's spec says
    (`ModalitySpec.scored_by`): ``<name>_miou`` / ``_acc`` (and ``_object_iou`` / ``_object_acc``
    over ``object_classes``) for segmentation, ``<name>_l1`` on valid pixels for l1; a token
    sequence that is not a source (a caption from the image): ``<name>_word_acc``, the fraction of
    its real tokens predicted exactly.

    ``predict(inputs)`` returns ``{output: prediction}`` (the model, or a baseline).
    """
    specs = model.output_specs
    confusions = {n: ConfusionMatrix(s.num_channels, s.ignore_index)
                  for n, s in specs.items() if s.scored_by == "segmentation"}
    l1 = {n: [0.0, 0] for n, s in specs.items() if s.scored_by == "l1"}
    words = {n: [0, 0] for n, s in specs.items() if s.kind == "tokens" and n not in sources}
    for raw in raw_batches:
        batch = prepare_batch(raw, model.input_specs, model.output_specs)
        preds = predict({k: v for k, v in batch.inputs.items() if k in sources})
        for name, hits in words.items():
            if name in preds and name in batch.targets:
                t = batch.targets[name]
                real = t != specs[name].pad_id
                hits[0] += int(((preds[name].argmax(-1) == t) & real).sum())
                hits[1] += int(real.sum())
        for name, confusion in confusions.items():
            if name in preds and name in batch.targets:
                confusion.update(preds[name].argmax(dim=1).expand_as(batch.targets[name]), batch.targets[name])
        for name, acc in l1.items():
            if name in preds and name in batch.targets:
                s, n = masked_l1(preds[name].expand_as(batch.targets[name]), batch.targets[name])
                acc[0], acc[1] = acc[0] + s, acc[1] + n
    out: dict[str, float] = {}
    for name, confusion in confusions.items():
        out[f"{name}_miou"] = confusion.mean_iou()
        out[f"{name}_acc"] = confusion.accuracy()
        if object_classes:
            out[f"{name}_object_iou"] = confusion.mean_iou(object_classes)
            out[f"{name}_object_acc"] = confusion.accuracy(object_classes)
    for name, (total, count) in l1.items():
        if count:
            out[f"{name}_l1"] = total / count
    for name, (right, count) in words.items():
        if count:
            out[f"{name}_word_acc"] = right / count
    return out


@torch.no_grad()
def mean_baseline(model: MultiMAE, raw_batches: Iterable[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Per-pixel training means (dense outputs) and per-pixel class frequencies (categorical
    outputs, as log-probability logits: their argmax is the per-pixel majority class), as
    predictions of shape (1, C, H, W); for a token sequence, each position's token frequencies
    (1, L, V) (the most frequent word per position)."""
    sums: dict[str, Tensor] = {}
    counts: dict[str, Tensor] = {}
    for raw in raw_batches:
        batch = prepare_batch(raw, model.input_specs, model.output_specs)
        for name, spec in model.output_specs.items():
            if name not in batch.targets:
                continue
            t = batch.targets[name]
            if spec.is_categorical or spec.kind == "tokens":
                onehot = torch.nn.functional.one_hot(t.clamp(0, spec.num_channels - 1), spec.num_channels)
                if spec.kind == "tokens":  # (B, L, V), each position's real tokens only
                    onehot = onehot * (t != spec.pad_id)[..., None]
                else:  # (B, K, H, W)
                    onehot = onehot.permute(0, 3, 1, 2)
                sums[name] = sums.get(name, 0) + onehot.sum(0, keepdim=True).double()
                continue
            if spec.loss == "norm_pix_mse":
                t = patch_standardize(t.float(), spec.patch_size(model.backbone.config.patch_size))
            valid = torch.isfinite(t)
            sums[name] = sums.get(name, 0) + torch.nan_to_num(t).sum(0, keepdim=True).double()
            counts[name] = counts.get(name, 0) + valid.sum(0, keepdim=True).double()
    preds = {}
    for name, s in sums.items():
        spec = model.output_specs[name]
        if spec.is_categorical or spec.kind == "tokens":
            classes = -1 if spec.kind == "tokens" else 1  # (1, L, V) or (1, K, H, W)
            preds[name] = torch.log((s + 1e-3) / (s + 1e-3).sum(classes, keepdim=True)).float()
        else:
            preds[name] = (s / counts[name].clamp_min(1)).float()
    return preds
