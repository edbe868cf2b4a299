"""Raw values -> model values, one function per `ModalitySpec.normalization`.

Shapes: B batch, C channels, H W pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from multimae.modalities.spec import ModalitySpec


def robust_stats(depth: Tensor, trim: float = 0.1, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Per-sample (mean, scale) of `robust_standardize` for ``(B, C, H, W)`` maps: ``(B,)`` each,
    ``scale = sqrt(var + eps)``, so that ``x = standardized * scale + mean`` undoes it."""
    if depth.dim() != 4:
        raise ValueError(f"robust_standardize expects (B, C, H, W), got shape {tuple(depth.shape)}")
    B = depth.shape[0]
    flat = depth.reshape(B, -1).float()
    valid = torch.isfinite(flat)
    n = valid.sum(dim=1)  # (B,)
    # Invalid values sort to the end (+inf), so the first n entries of each row are the valid ones.
    ordered = torch.where(valid, flat, torch.full_like(flat, float("inf"))).sort(dim=1).values
    lo = (trim * n).long()
    hi = ((1.0 - trim) * n).long()
    idx = torch.arange(flat.shape[1], device=flat.device).unsqueeze(0)
    keep = (idx >= lo.unsqueeze(1)) & (idx < hi.unsqueeze(1))
    k = keep.sum(dim=1).clamp_min(1)
    kept = torch.where(keep, ordered, torch.zeros_like(ordered))
    mean = kept.sum(dim=1) / k
    sq = torch.where(keep, (ordered - mean.unsqueeze(1)) ** 2, torch.zeros_like(ordered)).sum(dim=1)
    var = torch.where(k > 1, sq / (k - 1).clamp_min(1), torch.ones_like(sq))
    return mean, torch.sqrt(var + eps)


def robust_standardize(depth: Tensor, trim: float = 0.1, eps: float = 1e-6) -> Tensor:
    """Per-sample robust standardisation of ``(B, C, H, W)`` maps (paper Sec. 3.4).

    For each sample, the finite values are sorted and the lowest and highest ``trim`` fraction
    dropped (the kept slice is ``[int(trim * n), int((1 - trim) * n))`` of the ``n`` valid values);
    the mean and unbiased variance of what is left standardise the whole map:
    ``(x - mean) / sqrt(var + eps)``. Non-finite (invalid) pixels stay NaN, so a caller can tell
    them apart; `prepare_input` turns them into 0. A sample with fewer than two valid values is
    only centred (its variance is taken as 1). `robust_stats` gives the statistics.
    """
    mean, scale = robust_stats(depth, trim, eps)
    B = depth.shape[0]
    flat = depth.reshape(B, -1).float()
    out = (flat - mean.unsqueeze(1)) / scale.unsqueeze(1)
    return out.reshape(depth.shape).to(depth.dtype)


def normalize(spec: ModalitySpec, raw: Tensor) -> Tensor:
    """Apply ``spec.normalization`` to a raw dense batch ``(B, C, H, W)``; NaNs are kept."""
    if spec.normalization == "none":
        return raw.float()
    if spec.normalization == "unit_range":
        return raw.float() * 2.0 - 1.0
    if spec.normalization == "imagenet":
        assert spec.mean is not None and spec.std is not None  # checked by the spec
        mean = torch.tensor(spec.mean, dtype=torch.float32, device=raw.device).view(1, -1, 1, 1)
        std = torch.tensor(spec.std, dtype=torch.float32, device=raw.device).view(1, -1, 1, 1)
        return (raw.float() - mean) / std
    if spec.normalization == "robust_standardize":
        return robust_standardize(raw.float(), trim=spec.robust_trim)
    raise ValueError(f"modality {spec.name!r}: unknown normalization {spec.normalization!r}")


def denormalize(spec: ModalitySpec, values: Tensor) -> Tensor:
    """Invert the affine normalisations (for display); identity for the per-sample ones."""
    if spec.normalization == "imagenet":
        assert spec.mean is not None and spec.std is not None
        mean = torch.tensor(spec.mean, dtype=values.dtype, device=values.device).view(1, -1, 1, 1)
        std = torch.tensor(spec.std, dtype=values.dtype, device=values.device).view(1, -1, 1, 1)
        return values * std + mean
    if spec.normalization == "unit_range":
        return (values + 1.0) / 2.0
    return values
