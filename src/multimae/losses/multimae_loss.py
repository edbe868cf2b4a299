"""The pre-training objective: one masked loss per output modality, summed with equal weights."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor

from multimae.losses.masked import (
    masked_cross_entropy,
    masked_regression_loss,
    masked_token_cross_entropy,
    patch_standardize,
)
from multimae.modalities.spec import ModalitySpec


@dataclass
class LossOutput:
    """``total``: scalar to optimise; ``per_task``: ``{output modality: scalar}`` for logging."""

    total: Tensor
    per_task: dict[str, Tensor]


class MultiMAELoss:
    """Computes each output modality's loss as its spec says (mse, l1, cross_entropy, norm_pix_mse).

    Args:
        specs: the output modalities' specs.
        patch_size: the model's patch size at full resolution.
        loss_on_all_patches: count visible patches too (default: masked patches only, as in MAE);
            tokens that do not exist (``valid`` False) are never counted.
        weights: per-modality loss weights (default 1 each: tasks equally weighted).
    """

    def __init__(
        self,
        specs: Mapping[str, ModalitySpec],
        patch_size: int,
        loss_on_all_patches: bool = False,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        self.specs = dict(specs)
        self.patch_size = patch_size
        self.loss_on_all_patches = loss_on_all_patches
        self.weights = {n: 1.0 for n in specs} | dict(weights or {})

    def task_loss(self, spec: ModalitySpec, pred: Tensor, target: Tensor, mask: Tensor | None,
                  valid: Tensor | None = None) -> Tensor:
        """One modality's loss. pred (B, C, H, W) or (B, L, K); target (B, C, H, W), (B, H, W)
        class ids or (B, L) token ids; mask and valid (B, N) bool, True = counted / exists."""
        if self.loss_on_all_patches:
            mask = valid
        if spec.placement == "sequence":
            return masked_token_cross_entropy(pred, target, mask, spec.pad_id)
        P = spec.patch_size(self.patch_size)
        grid = (pred.shape[-2] // P, pred.shape[-1] // P)
        if spec.loss == "cross_entropy":
            return masked_cross_entropy(pred, target, mask, grid, P, spec.ignore_index)
        if spec.loss == "norm_pix_mse":
            return masked_regression_loss(pred, patch_standardize(target.float(), P), mask, grid, P, "mse")
        return masked_regression_loss(pred, target, mask, grid, P, "l1" if spec.loss == "l1" else "mse")

    def __call__(
        self, preds: Mapping[str, Tensor], targets: Mapping[str, Tensor], masks: Mapping[str, Tensor],
        valid: Mapping[str, Tensor] | None = None,
    ) -> LossOutput:
        """``preds``, ``masks`` (True = counted) and ``valid`` (True = the token exists) as in
        `MultiMAEOutput`; ``targets`` keyed by output modality."""
        per_task = {}
        for name, pred in preds.items():
            if name not in targets:
                raise ValueError(f"no target for output {name!r}; targets given: {sorted(targets)}")
            v = (valid or {}).get(name)
            per_task[name] = self.task_loss(self.specs[name], pred, targets[name], masks.get(name), v)
        total = sum(self.weights[n] * v for n, v in per_task.items())
        return LossOutput(total, per_task)  # type: ignore[arg-type]
