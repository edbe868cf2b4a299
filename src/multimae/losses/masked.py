"""Masked reconstruction losses (paper Sec. 3.2 / 3.4).

Shapes: B batch, C channels, K classes, H W pixels of the modality's map, h w token grid,
P patch side on the map (H = h * P).

Reduction: an elementwise loss is averaged over channels, giving one value per pixel; each
sample's loss is the mean over its *counted* pixels (pixels of masked tokens, minus invalid ones);
the batch loss is the mean over samples that have at least one counted pixel, so every such sample
weighs the same. Samples with nothing to count are skipped without producing NaN gradients (the
official 0/0 does). A batch with nothing to count gives a zero that is still attached to the graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

NORM_PIX_EPS = 1e-6  # the norm-pix target's epsilon (official value)


def token_mask_to_pixels(mask: Tensor, grid: tuple[int, int], patch: int) -> Tensor:
    """(B, h*w) token mask -> (B, h*P, w*P) float pixel mask (each token covers its P x P block)."""
    h, w = grid
    B = mask.shape[0]
    if mask.shape[1] != h * w:
        raise ValueError(f"mask has {mask.shape[1]} tokens, the grid {h}x{w} has {h * w}")
    m = mask.reshape(B, h, 1, w, 1).float().expand(B, h, patch, w, patch)
    return m.reshape(B, h * patch, w * patch)


def masked_mean(per_pixel: Tensor, weight: Tensor) -> Tensor:
    """Mean of ``per_pixel`` (B, ...) over the entries with ``weight`` (B, ...) > 0, per sample, then
    over samples (samples with nothing counted are skipped)."""
    num = (per_pixel * weight).flatten(1).sum(dim=1)
    den = weight.flatten(1).sum(dim=1)
    counted = den > 0
    per_sample = num / den.clamp_min(1e-12)
    if not bool(counted.any()):
        return per_pixel.sum() * 0.0
    return per_sample[counted].mean()


def _pixel_weight(mask: Tensor | None, shape: tuple[int, ...], grid: tuple[int, int], patch: int, device: torch.device) -> Tensor:
    if mask is None:
        return torch.ones(shape, device=device)
    return token_mask_to_pixels(mask.to(device), grid, patch)


def masked_regression_loss(
    pred: Tensor, target: Tensor, mask: Tensor | None, grid: tuple[int, int], patch: int, kind: str = "mse"
) -> Tensor:
    """MSE or L1 between ``pred`` and ``target`` (B, C, H, W) on masked tokens.

    Non-finite target values mark invalid pixels (a pixel is invalid if any channel is), which
    are excluded. ``mask`` (B, h*w) bool, True = counted; None counts every patch.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    pred = pred.float()
    valid = torch.isfinite(target).all(dim=1)  # (B, H, W)
    target = torch.where(torch.isfinite(target), target, torch.zeros_like(target)).float()
    diff = pred - target
    per_pixel = (diff * diff if kind == "mse" else diff.abs()).mean(dim=1)  # (B, H, W)
    weight = _pixel_weight(mask, per_pixel.shape, grid, patch, pred.device) * valid
    return masked_mean(per_pixel, weight)


def masked_cross_entropy(
    logits: Tensor,
    target: Tensor,
    mask: Tensor | None,
    grid: tuple[int, int],
    patch: int,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Cross-entropy of ``logits`` (B, K, H, W) against class ids ``target`` (B, H, W) on masked tokens.

    Pixels labelled ``ignore_index`` are excluded.
    """
    if logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(f"logits {tuple(logits.shape)} do not match class map {tuple(target.shape)}")
    target = target.long()
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    per_pixel = F.cross_entropy(logits.float(), safe, reduction="none", label_smoothing=label_smoothing)
    weight = _pixel_weight(mask, per_pixel.shape, grid, patch, logits.device) * valid
    return masked_mean(per_pixel, weight)


def masked_token_cross_entropy(logits: Tensor, target: Tensor, mask: Tensor | None,
                               ignore_index: int | None = None, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of ``logits`` (B, L, K) against token ids ``target`` (B, L) on the tokens
    ``mask`` (B, L) marks True (None: every token); tokens equal to ``ignore_index`` (padding) are
    never counted. Same reduction as the map losses: per sample, then over samples."""
    if logits.dim() != 3 or logits.shape[:2] != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match token ids {tuple(target.shape)}")
    target = target.long()
    weight = torch.ones_like(target, dtype=torch.float32) if mask is None else mask.to(logits.device).float()
    if ignore_index is not None:
        weight = weight * (target != ignore_index)
    per_token = F.cross_entropy(logits.float().transpose(1, 2), target, reduction="none",
                                label_smoothing=label_smoothing)  # (B, L)
    return masked_mean(per_token, weight)


def patch_stats(x: Tensor, patch: int, eps: float = NORM_PIX_EPS) -> tuple[Tensor, Tensor]:
    """Mean and ``sqrt(var + eps)`` (unbiased variance) of every P x P patch of ``x`` (B, C, H, W)
    over its C * P * P values, each as (B, h, w, 1): the statistics of MAE's norm-pix target."""
    return _moments(_patch_values(x, patch), eps)


def patch_standardize(x: Tensor, patch: int, eps: float = NORM_PIX_EPS) -> Tensor:
    """Standardise every P x P patch of ``x`` (B, C, H, W) over its C * P * P values (unbiased variance).

    MAE's norm-pix target: ``(x - mean) / sqrt(var + eps)`` per patch, returned in image layout.
    """
    B, C, H, W = x.shape
    h, w = H // patch, W // patch
    p = _patch_values(x, patch)
    mean, std = _moments(p, eps)
    p = (p - mean) / std
    return p.reshape(B, h, w, C, patch, patch).permute(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)


def _patch_values(x: Tensor, patch: int) -> Tensor:
    """(B, C, H, W) -> (B, h, w, C * P * P), each patch's values in (C, P, P) order."""
    B, C, H, W = x.shape
    h, w = H // patch, W // patch
    return x.reshape(B, C, h, patch, w, patch).permute(0, 2, 4, 1, 3, 5).reshape(B, h, w, -1)


def _moments(p: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    mean = p.mean(dim=-1, keepdim=True)
    std = torch.sqrt(p.var(dim=-1, keepdim=True, unbiased=True) + eps)
    return mean, std
