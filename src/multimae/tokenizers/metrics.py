"""Round-trip quality of a map tokenizer, and how it uses its vocabulary.

Shapes: B samples, C channels, H W pixels, V vocabulary size.

`RoundTrip` accumulates, over batches of (raw, reconstruction) pairs, the error the modality's spec
calls for: mIoU and pixel accuracy of class maps; for dense maps by how they are stored
(`ModalitySpec.stored_as`): MSE and PSNR of colours in [0, 1] (``rgb8``), L1 and relative error of
depth in its units (``depth16``), mean angular error in degrees of unit vectors (``unit_vectors8``),
MSE and L1 of other arrays; always over valid pixels only. `CodeUsage` counts ids: codes used,
dead codes (never used), and the perplexity ``exp(entropy)`` of their histogram (V when every
code is equally used).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from multimae.tokenizers.raw import MapFormat

# The metric each kind of map is judged by first (lower is better unless it is a score).
PRIMARY = {"categorical": "miou", "rgb8": "mse", "depth16": "l1", "unit_vectors8": "angular_error_deg",
           "array": "mse"}
HIGHER_IS_BETTER = ("miou", "pixel_accuracy", "psnr")


def primary_metric(fmt: MapFormat) -> str:
    return PRIMARY["categorical"] if not fmt.dense else PRIMARY.get(fmt.spec.stored_as, "mse")


def angular_error_degrees(pred: Tensor, target: Tensor) -> Tensor:
    """(B, H, W) angle in degrees between vector maps (B, C, H, W)."""
    return torch.rad2deg(torch.acos(F.cosine_similarity(pred, target, dim=1, eps=1e-6).clamp(-1, 1)))


def pixel_error(fmt: MapFormat, raw: Tensor, recon: Tensor) -> Tensor:
    """(B, H, W) error of each pixel, for pictures: class mismatch (0 / 1), angle (unit vectors) or
    mean absolute error over channels; NaN at invalid pixels."""
    valid = fmt.valid(raw)
    if not fmt.dense:
        err = (raw != recon).float()
    elif fmt.spec.stored_as == "unit_vectors8":
        err = angular_error_degrees(recon, torch.nan_to_num(raw))
    else:
        err = (recon - torch.nan_to_num(raw)).abs().mean(dim=1)
    return torch.where(valid, err, torch.full_like(err, float("nan")))


class RoundTrip:
    """Reconstruction error of one modality, accumulated over batches (`update`, then `result`)."""

    def __init__(self, fmt: MapFormat) -> None:
        self.fmt = fmt
        k = fmt.spec.num_channels
        self.confusion = torch.zeros(k, k, dtype=torch.int64) if not fmt.dense else None
        self.sums: dict[str, float] = {}
        self.count = 0  # valid pixels (dense) seen

    def update(self, raw: Tensor, recon: Tensor) -> None:
        """raw and recon: raw maps of one batch (recon from `Tokenizer.decode` or a baseline)."""
        valid = self.fmt.valid(raw)
        if self.confusion is not None:
            k = self.fmt.spec.num_channels
            pairs = raw[valid] * k + recon[valid]
            self.confusion += torch.bincount(pairs, minlength=k * k).view(k, k)
            return
        n = int(valid.sum())
        self.count += n
        target = torch.nan_to_num(raw)
        how = self.fmt.spec.stored_as
        diff = (recon - target).permute(0, 2, 3, 1)[valid]  # (n, C)
        parts = {"mse": diff.square().mean(dim=1), "l1": diff.abs().mean(dim=1)}
        if how == "depth16":
            parts["abs_rel"] = (diff.abs() / target.permute(0, 2, 3, 1)[valid]).mean(dim=1)
        if how == "unit_vectors8":
            parts["angular_error_deg"] = angular_error_degrees(recon, target)[valid]
        for name, values in parts.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(values.double().sum())

    def result(self) -> dict[str, float]:
        """The metrics: ``miou`` / ``pixel_accuracy`` (class maps, classes present in the data or the
        reconstruction), or means over valid pixels (dense maps), plus ``psnr`` for ``rgb8``."""
        if self.confusion is not None:
            c = self.confusion.double()
            inter, union = c.diag(), c.sum(0) + c.sum(1) - c.diag()
            seen = union > 0
            miou = float((inter[seen] / union[seen]).mean()) if seen.any() else float("nan")
            total = float(c.sum())
            return {"miou": miou, "pixel_accuracy": float(inter.sum()) / total if total else float("nan")}
        out = {k: v / self.count if self.count else float("nan") for k, v in self.sums.items()}
        if self.fmt.spec.stored_as == "rgb8" and out.get("mse", 0) > 0:
            out["psnr"] = 10 * math.log10(1.0 / out["mse"])
        return out


class CodeUsage:
    """Histogram of the ids of a vocabulary of ``vocab_size`` codes."""

    def __init__(self, vocab_size: int) -> None:
        self.counts = torch.zeros(vocab_size, dtype=torch.int64)

    def update(self, ids: Tensor, valid: Tensor | None = None) -> None:
        kept = ids[valid] if valid is not None else ids.reshape(-1)
        self.counts += torch.bincount(kept.reshape(-1), minlength=len(self.counts))

    def result(self) -> dict[str, float]:
        total = int(self.counts.sum())
        used = int((self.counts > 0).sum())
        p = self.counts[self.counts > 0].double() / max(total, 1)
        perplexity = float(torch.exp(-(p * p.log()).sum())) if total else 0.0
        return {"vocab_size": len(self.counts), "codes_used": used, "usage": used / len(self.counts),
                "dead_codes": len(self.counts) - used, "perplexity": perplexity, "tokens": total}
