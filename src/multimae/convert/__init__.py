"""Checkpoint conversion: official MultiMAE / MultiViT, timm and MAE ViT weights <-> ours.

``load_any(path)`` gives our model from any supported file with a `ConversionReport` (what was
mapped, dropped, missing, and how the architecture was read off the tensors); `save_multimae` and
`save_timm` write ours or timm's format; ``multimae convert`` does both from the command line.
One module per foreign format: `official`, `timm_vit`.
"""

from multimae.convert.api import SOURCES, TARGETS, convert_file, load_any, save_multimae, save_timm, timm_usage
from multimae.convert.io import Checkpoint, detect_format, read_checkpoint
from multimae.convert.official import infer_config, official_to_multimae
from multimae.convert.report import ConversionReport
from multimae.convert.timm_vit import TIMM_ARCH, multimae_to_timm, timm_kwargs, timm_to_multimae

__all__ = [
    "SOURCES", "TARGETS", "TIMM_ARCH", "Checkpoint", "ConversionReport", "convert_file", "detect_format",
    "infer_config", "load_any", "multimae_to_timm", "official_to_multimae", "read_checkpoint", "save_multimae",
    "save_timm", "timm_kwargs", "timm_to_multimae", "timm_usage",
]
