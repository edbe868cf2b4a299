"""Modalities as data: `ModalitySpec`, the built-in registry, normalisation and batch preparation."""

from multimae.modalities.normalize import denormalize, normalize, robust_standardize, robust_stats
from multimae.modalities.prepare import PreparedBatch, prepare_batch
from multimae.modalities.registry import BUILTIN_MODALITIES, get_modality, resolve_modalities, spec_from_dict
from multimae.modalities.spec import ModalitySpec

__all__ = [
    "BUILTIN_MODALITIES", "ModalitySpec", "PreparedBatch", "denormalize", "get_modality", "normalize",
    "prepare_batch", "resolve_modalities", "robust_standardize", "robust_stats", "spec_from_dict",
]
