"""Multi-modal masking: Dirichlet token budgets and uniform per-modality selection.

Masks are ``{modality: (B, N_m) bool}`` with True = masked (hidden from the encoder, predicted).
"""

from multimae.masking.dirichlet import apportion, sample_gamma, sample_masks, sample_proportions, select_tokens

__all__ = ["apportion", "sample_gamma", "sample_masks", "sample_proportions", "select_tokens"]
