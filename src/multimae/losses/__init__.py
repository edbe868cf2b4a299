"""Masked losses and the MultiMAE objective."""

from multimae.losses.masked import (
    masked_cross_entropy, masked_mean, masked_regression_loss, patch_standardize, patch_stats,
    token_mask_to_pixels,
)
from multimae.losses.multimae_loss import LossOutput, MultiMAELoss

__all__ = [
    "LossOutput", "MultiMAELoss", "masked_cross_entropy", "masked_mean", "masked_regression_loss",
    "patch_standardize", "patch_stats", "token_mask_to_pixels",
]
