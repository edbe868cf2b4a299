"""Multi-modal masking: Dirichlet token budgets, per-modality selection, and mask samplers.

Low-level functions (`sample_masks`, ...) return ``{modality: (B, N_m) bool}`` with True = masked
(hidden from the encoder, predicted). Samplers (`MaskSampler`) return a `MaskDraw` with separate
``hidden`` and ``target`` masks; `build_mask_sampler` makes one from a `MaskingConfig`.
4M's data-side masking of several modalities at once (grids by positions, sequences by spans) is
`UnifiedMasking` (random budgets) and `TransferMasking` (fixed inputs and targets); both return
``{modality: ModalityBatch}``.
"""

from multimae.masking.build import build_mask_sampler
from multimae.masking.dirichlet import (
    apportion, sample_dirichlet, sample_gamma, sample_log_gamma, sample_masks, sample_proportions, select_tokens,
)
from multimae.masking.draws import Draws, GeneratorDraws
from multimae.masking.input_target import BudgetDirichlet, DirichletInputTargetMasking, split_budget
from multimae.masking.samplers import (
    DirichletInputMasking, ExplicitMasking, FixedRatioMasking, MaskDraw, MaskSampler,
)
from multimae.masking.span import (
    SpanLayout, SpanMasked, cut_target, fourm_sentinel_id, mask_sequence, span_layout, span_mask, span_mask_within,
    spans_from_kept, teacher_forced_slots,
)
from multimae.masking.transfer import TransferMasking
from multimae.masking.unified import SequenceMasking, UnifiedMasking, grid_masks, official_masks

__all__ = [
    "BudgetDirichlet", "DirichletInputMasking", "DirichletInputTargetMasking", "Draws", "ExplicitMasking",
    "FixedRatioMasking", "GeneratorDraws", "MaskDraw", "MaskSampler", "SequenceMasking", "SpanLayout", "SpanMasked",
    "TransferMasking", "UnifiedMasking", "apportion", "build_mask_sampler", "cut_target", "fourm_sentinel_id",
    "grid_masks", "mask_sequence", "official_masks", "sample_dirichlet", "sample_gamma", "sample_log_gamma",
    "sample_masks", "sample_proportions", "select_tokens", "span_layout", "span_mask", "span_mask_within",
    "spans_from_kept", "split_budget", "teacher_forced_slots",
]
