"""Multi-modal masking: Dirichlet token budgets, per-modality selection, and mask samplers.

Low-level functions (`sample_masks`, ...) return ``{modality: (B, N_m) bool}`` with True = masked
(hidden from the encoder, predicted). Samplers (`MaskSampler`) return a `MaskDraw` with separate
``hidden`` and ``target`` masks; `build_mask_sampler` makes one from a `MaskingConfig`.
"""

from multimae.masking.build import build_mask_sampler
from multimae.masking.dirichlet import (
    apportion, sample_dirichlet, sample_gamma, sample_log_gamma, sample_masks, sample_proportions, select_tokens,
)
from multimae.masking.input_target import BudgetDirichlet, DirichletInputTargetMasking, split_budget
from multimae.masking.samplers import (
    DirichletInputMasking, ExplicitMasking, FixedRatioMasking, MaskDraw, MaskSampler,
)

__all__ = [
    "BudgetDirichlet", "DirichletInputMasking", "DirichletInputTargetMasking", "ExplicitMasking",
    "FixedRatioMasking", "MaskDraw", "MaskSampler", "apportion", "build_mask_sampler", "sample_dirichlet",
    "sample_gamma", "sample_log_gamma", "sample_masks", "sample_proportions", "select_tokens", "split_budget",
]
