"""Fine-tuning heads with the official MultiMAE key names: linear classifier, ConvNeXt
segmentation head, DPT dense-regression head. Each has a typed config readable from weights."""

from multimae.model.heads.build import (
    HEAD_TYPES,
    HeadConfig,
    build_head,
    head_config_from_state_dict,
)
from multimae.model.heads.convnext import (
    ConvNeXtBlock,
    ConvNeXtHead,
    ConvNeXtHeadConfig,
)
from multimae.model.heads.dpt import (
    DPT_KEY_ALIASES,
    DPTHead,
    DPTHeadConfig,
    canonical_dpt_state,
    default_hooks,
)
from multimae.model.heads.linear import LinearHead, LinearHeadConfig
from multimae.model.heads.tokens import select_tokens, tokens_to_map

__all__ = [
    "DPT_KEY_ALIASES", "HEAD_TYPES", "ConvNeXtBlock", "ConvNeXtHead", "ConvNeXtHeadConfig", "DPTHead",
    "DPTHeadConfig", "HeadConfig", "LinearHead", "LinearHeadConfig", "build_head", "canonical_dpt_state",
    "default_hooks", "head_config_from_state_dict", "select_tokens", "tokens_to_map",
]
