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


class DepthMetrics:
    """Accumulates depth-estimation metrics over valid pixels (finite target > 0).

    ``delta1``: fraction of pixels with ``max(pred / gt, gt / pred) < 1.25`` (predictions clamped
    to >= 1e-6 for this ratio only); ``abs_rel``: mean ``|pred - gt| / gt``; ``rmse``:
    ``sqrt(mean (pred - gt)^2)``; all over the valid pixels of every update (not per image).
    """

    def __init__(self) -> None:
        self.count = 0
        self.sums = {"delta1": 0.0, "abs_rel": 0.0, "sq_err": 0.0}

    def update(self, pred: Tensor, target: Tensor) -> None:
        """``pred``, ``target``: (B, 1, H, W) (or any equal shapes) in the same units."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        valid = torch.isfinite(target) & (torch.nan_to_num(target) > 0)
        p, t = pred.float()[valid], target.float()[valid]
        ratio = torch.maximum(p.clamp_min(1e-6) / t, t / p.clamp_min(1e-6))
        self.count += int(valid.sum())
        self.sums["delta1"] += float((ratio < 1.25).sum())
        self.sums["abs_rel"] += float(((p - t).abs() / t).sum())
        self.sums["sq_err"] += float(((p - t) ** 2).sum())

    def compute(self) -> dict[str, float]:
        n = max(self.count, 1)
        return {"delta1": self.sums["delta1"] / n, "abs_rel": self.sums["abs_rel"] / n,
                "rmse": (self.sums["sq_err"] / n) ** 0.5}


class TopKAccuracy:
    """Accumulates top-1 and top-k accuracy of class logits (k = min(5, K) by default)."""

    def __init__(self, k: int = 5) -> None:
        self.k, self.correct1, self.correctk, self.count = k, 0, 0, 0

    def update(self, logits: Tensor, labels: Tensor) -> None:
        """``logits`` (B, K); ``labels`` (B,) int class ids."""
        if logits.dim() != 2 or labels.shape != logits.shape[:1]:
            raise ValueError(f"expected logits (B, K) and labels (B,), got {tuple(logits.shape)}, {tuple(labels.shape)}")
        k = min(self.k, logits.shape[1])
        top = logits.topk(k, dim=1).indices  # (B, k)
        hit = top == labels[:, None].to(top.device)
        self.correct1 += int(hit[:, 0].sum())
        self.correctk += int(hit.any(dim=1).sum())
        self.count += labels.shape[0]

    def compute(self) -> dict[str, float]:
        n = max(self.count, 1)
        return {"top1": self.correct1 / n, f"top{self.k}": self.correctk / n}


class MeanAbsoluteError:
    """Accumulates the L1 error over finite target values (every channel counts)."""

    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def update(self, pred: Tensor, target: Tensor) -> None:
        s, n = masked_l1(pred, target)
        self.total, self.count = self.total + s, self.count + n

    def compute(self) -> dict[str, float]:
        return {"l1": self.total / max(self.count, 1)}
