"""Evaluation metrics for dense predictions. Shapes: B batch, K classes, H W pixels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class ConfusionMatrix:
    """Accumulates a K x K confusion matrix (rows: truth, columns: prediction)."""

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: Tensor, target: Tensor) -> None:
        """``pred`` and ``target``: integer maps of the same shape."""
        keep = torch.ones_like(target, dtype=torch.bool) if self.ignore_index is None else target != self.ignore_index
        idx = target[keep].long() * self.num_classes + pred[keep].long()
        self.matrix += torch.bincount(idx.cpu(), minlength=self.num_classes**2).reshape(self.num_classes, -1)

    def iou(self) -> Tensor:
        """(K,) per-class IoU; NaN for classes absent from both truth and prediction."""
        m = self.matrix.double()
        inter = m.diag()
        union = m.sum(0) + m.sum(1) - inter
        return torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(inter, float("nan")))

    def mean_iou(self, classes: Sequence[int] | None = None) -> float:
        iou = self.iou() if classes is None else self.iou()[list(classes)]
        return float(iou.nanmean())

    def accuracy(self, classes: Sequence[int] | None = None) -> float:
        """Pixel accuracy (over the truth pixels of ``classes`` if given)."""
        m = self.matrix if classes is None else self.matrix[list(classes)]
        diag = self.matrix.diag() if classes is None else self.matrix.diag()[list(classes)]
        return float(diag.sum() / m.sum().clamp_min(1))


def masked_l1(pred: Tensor, target: Tensor) -> tuple[float, int]:
    """(sum of |pred - target| over finite targets, number of such pixels)."""
    valid = torch.isfinite(target)
    return float((pred.float() - torch.nan_to_num(target)).abs()[valid].sum()), int(valid.sum())
