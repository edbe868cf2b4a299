"""The fine-tuning task: (model, raw batch) -> loss, and the evaluation metrics of each kind.

Shapes: B batch, K classes, C channels, H W pixels.

Targets are raw: scene labels (B,) for classification, class ids (B, H, W) for segmentation,
depth in scene units (B, 1, H, W) for depth estimation (as the official depth fine-tuning: no
standardisation), the raw map (B, C, H, W) for dense regression; NaN marks invalid pixels, which
losses and metrics skip.

Losses: cross-entropy (label smoothing; soft targets under timm Mixup / CutMix) for
classification, cross-entropy with an ignore index for segmentation, and for dense regression L1,
MSE or berHu (L1 below c = 0.2 * the batch's largest absolute error, (d^2 + c^2) / 2c above), each
a mean over the valid pixels of the batch. Dense regression heads start predicting the mean
training target (`FinetuneTask.init_output_bias`): otherwise a short schedule spends most of its
steps moving the output to the targets' scale (world depth averages about 8 units), as Adam moves
a bias by about one learning rate per step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from multimae.config.finetune import TaskSection
from multimae.data.collate import batch_to
from multimae.data.stream import derive_seed
from multimae.losses import LossOutput
from multimae.modalities import prepare_batch
from multimae.modalities.spec import ModalitySpec
from multimae.model import FineTuneModel
from multimae.tokenizers.base import Tokenizer
from multimae.tasks.metrics import (
    ConfusionMatrix,
    DepthMetrics,
    MeanAbsoluteError,
    TopKAccuracy,
)

# The metric each kind of task is judged by, and whether higher is better.
PRIMARY_METRIC = {"classification": ("top1", True), "segmentation": ("miou", True), "depth": ("delta1", True),
                  "regression": ("l1", False)}


def dense_loss(pred: Tensor, target: Tensor, kind: str) -> Tensor:
    """L1 / MSE / berHu between (B, C, H, W) maps, averaged over the valid pixels of the batch
    (a pixel is invalid when any target channel is non-finite)."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    valid = torch.isfinite(target).all(dim=1, keepdim=True).expand_as(target)
    diff = (pred.float() - torch.nan_to_num(target.float()))[valid]
    if diff.numel() == 0:
        return pred.sum() * 0.0
    if kind == "l1":
        return diff.abs().mean()
    if kind == "mse":
        return diff.square().mean()
    if kind == "berhu":
        a = diff.abs()
        c = (0.2 * a.max()).detach().clamp_min(1e-6)
        return torch.where(a <= c, a, (a.square() + c * c) / (2 * c)).mean()
    raise ValueError(f"unknown dense loss {kind!r}; choose l1, mse or berhu")


@dataclass
class FinetuneTask:
    model: FineTuneModel  # the unwrapped model (specs)
    task: TaskSection
    seed: int = 0
    ignore_index: int = -100  # segmentation: class id excluded (resolved from the task / the target spec)
    tokenizers: Mapping[str, Tokenizer] = field(default_factory=dict)  # by source: encode token-map inputs
    mixup: Any = field(init=False, default=None)

    def __post_init__(self) -> None:
        t = self.task
        if t.ignore_index is not None:
            self.ignore_index = t.ignore_index
        if t.mixup > 0 or t.cutmix > 0:
            from timm.data import Mixup

            discrete = [n for n, s in self.model.input_specs.items() if s.is_discrete]
            if discrete:
                raise ValueError(f"mixup / cutmix need dense inputs; {discrete} hold class or token ids")
            self.mixup = Mixup(mixup_alpha=t.mixup, cutmix_alpha=t.cutmix, label_smoothing=t.label_smoothing,
                               num_classes=self.model.head_config.num_classes)  # type: ignore[union-attr]

    # ------------------------------------------------------------------ data
    def inputs(self, raw: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Model inputs of the task's input modalities (normalised as their specs say)."""
        specs = self.model.input_specs
        maps = {n: s for n, s in specs.items() if s.kind == "token_map"}
        missing = [m for m in self.task.inputs if (maps[m].source_name if m in maps else m) not in raw]
        if missing:
            raise ValueError(f"the batch lacks the input modalities {missing} (it has {sorted(raw)})")
        inputs = prepare_batch(raw, {n: s for n, s in specs.items() if n not in maps}, {}).inputs
        inputs.update(self._token_maps(raw, maps))
        return inputs

    def _token_maps(self, raw: Mapping[str, Tensor], maps: Mapping[str, ModalitySpec]) -> dict[str, Tensor]:
        """``{token-map input: (B, N) ids}`` of the raw maps they tokenize, by the run's tokenizers (in
        fp32, whatever the autocast around: the ids must not depend on the training precision)."""
        out = {}
        for name, spec in maps.items():
            tokenizer = self.tokenizers.get(spec.source_name)
            if tokenizer is None:
                raise ValueError(f"input {name!r} needs the tokenizer of {spec.source_name!r}; this run has "
                                 f"{sorted(self.tokenizers) or 'none'}")
            data = raw[spec.source_name]
            with torch.autocast(data.device.type, enabled=False):
                out[name] = tokenizer.to(data.device).encode(data).ids
        return out

    def target(self, raw: Mapping[str, Tensor]) -> Tensor:
        name = "label" if self.task.kind == "classification" else self.task.target_name
        if name not in raw:
            raise ValueError(f"the batch has no {name!r} (the task's target); it has {sorted(raw)}")
        t = raw[name]  # type: ignore[index]
        return t.long() if self.task.kind in ("classification", "segmentation") else t.float()

    # ------------------------------------------------------------------ loss
    def loss(self, pred: Tensor, target: Tensor, soft: Tensor | None = None) -> Tensor:
        kind = self.task.kind
        if kind == "classification":
            if soft is not None:
                return torch.sum(-soft * F.log_softmax(pred.float(), dim=-1), dim=-1).mean()
            return F.cross_entropy(pred.float(), target, label_smoothing=self.task.label_smoothing)
        if kind == "segmentation":
            return F.cross_entropy(pred.float(), target, ignore_index=self.ignore_index)
        return dense_loss(pred, target, self.task.loss_name)

    def _mix(self, inputs: dict[str, Tensor], target: Tensor, step: int, rows: slice) -> tuple[dict[str, Tensor], Tensor]:
        """Mixup / CutMix applied jointly to every input modality (timm draws from numpy: seeded per step)."""
        names = list(inputs)
        sizes = [inputs[n].shape[1] for n in names]
        x = torch.cat([inputs[n] for n in names], dim=1)
        if x.shape[0] % 2:
            raise ValueError(f"mixup needs an even batch per process, got {x.shape[0]}")
        state = np.random.get_state()
        np.random.seed(derive_seed(self.seed, step, rows.start, 4) % 2**32)
        try:
            x, soft = self.mixup(x, target)
        finally:
            np.random.set_state(state)
        return dict(zip(names, x.split(sizes, dim=1))), soft

    def __call__(self, forward: Callable[..., Tensor], raw: Mapping[str, Tensor], step: int, global_batch: int,
                 rows: slice) -> LossOutput:
        inputs, target = self.inputs(raw), self.target(raw)
        soft = None
        if self.mixup is not None:
            inputs, soft = self._mix(inputs, target, step, rows)
        loss = self.loss(forward(inputs), target, soft)
        return LossOutput(loss, {self.task.kind: loss.detach()})

    @torch.no_grad()
    def init_output_bias(self, raw_batches: Iterable[Mapping[str, Tensor]]) -> Tensor | None:
        """Depth / regression: set the head's last bias to the per-channel mean of the valid targets
        of ``raw_batches`` (training data); returns that mean (None for other tasks)."""
        if self.task.kind not in ("depth", "regression"):
            return None
        total, count = None, None
        for raw in raw_batches:
            t = self.target(raw)  # (B, C, H, W)
            valid = torch.isfinite(t)
            s, n = torch.nan_to_num(t).mul(valid).sum(dim=(0, 2, 3)), valid.sum(dim=(0, 2, 3))
            total, count = (s, n) if total is None else (total + s, count + n)
        if total is None:
            return None
        mean = total / count.clamp_min(1)
        self.model.head.set_output_bias(mean)  # type: ignore[operator]
        return mean

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def predict(self, raw: Mapping[str, Tensor]) -> Tensor:
        """Class ids (B,) / (B, H, W), or dense predictions (B, C, H, W), on the CPU."""
        device = next(self.model.parameters()).device
        out = self.model(self.inputs(batch_to(raw, device))).cpu()
        return out.argmax(dim=1) if self.task.kind in ("classification", "segmentation") else out.float()

    @torch.no_grad()
    def evaluate(self, raw_batches: Iterable[Mapping[str, Tensor]]) -> dict[str, float]:
        """The task's metrics and mean loss over ``raw_batches``: top1/top5 (classification), miou /
        pixel_acc (segmentation), delta1 / abs_rel / rmse (depth), l1 (regression)."""
        kind = self.task.kind
        device = next(self.model.parameters()).device
        loss_sum, n = 0.0, 0
        if kind == "classification":
            acc = TopKAccuracy()
        elif kind == "segmentation":
            cm = ConfusionMatrix(self.model.head_config.num_classes,  # type: ignore[union-attr]
                                 None if self.ignore_index < 0 else self.ignore_index)
        else:
            dm, mae = DepthMetrics(), MeanAbsoluteError()
        for raw in raw_batches:
            raw = batch_to(raw, device)
            out = self.model(self.inputs(raw))
            target = self.target(raw)
            loss_sum += float(self.loss(out, target)) * target.shape[0]
            n += target.shape[0]
            if kind == "classification":
                acc.update(out, target)
            elif kind == "segmentation":
                cm.update(out.argmax(dim=1), target)
            else:
                mae.update(out, target)
                if kind == "depth":
                    dm.update(out, target)
        metrics: dict[str, float] = {"loss": loss_sum / max(n, 1)}
        if kind == "classification":
            metrics.update(acc.compute())
        elif kind == "segmentation":
            metrics.update(miou=cm.mean_iou(), pixel_acc=cm.accuracy())
        else:
            metrics.update(mae.compute())
            if kind == "depth":
                metrics.update(dm.compute())
        return metrics
