"""Head configs -> heads, and head configs read back from weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from multimae.modalities.registry import DEFAULT_IMAGE_MODALITY
from multimae.model.heads.convnext import ConvNeXtHead, ConvNeXtHeadConfig
from multimae.model.heads.dpt import DPTHead, DPTHeadConfig
from multimae.model.heads.linear import LinearHead, LinearHeadConfig

HeadConfig = LinearHeadConfig | ConvNeXtHeadConfig | DPTHeadConfig
HEAD_TYPES: dict[type, type[nn.Module]] = {
    LinearHeadConfig: LinearHead,
    ConvNeXtHeadConfig: ConvNeXtHead,
    DPTHeadConfig: DPTHead,
}


def build_head(config: HeadConfig) -> nn.Module:
    """The head a config describes."""
    try:
        return HEAD_TYPES[type(config)](config)
    except KeyError:
        raise ValueError(f"no head for config type {type(config).__name__}") from None


def head_config_from_state_dict(state: Mapping[str, Tensor], prefix: str = "",
                                modalities: Sequence[str] = (DEFAULT_IMAGE_MODALITY,), hooks: Sequence[int] = (2, 5, 8, 11)
                                ) -> HeadConfig:
    """Recognise the head stored under ``prefix`` (linear, ConvNeXt or DPT) and read its config.

    ``modalities`` (dense heads) and ``hooks`` (DPT) are not stored in weights.
    """
    names = {k[len(prefix):] for k in state if k.startswith(prefix)}
    if "proj_dec.weight" in names:
        return ConvNeXtHeadConfig.from_state_dict(state, prefix, modalities)
    if "head.4.weight" in names and any(n.startswith(("act_1_postprocess.", "act_postprocess.")) for n in names):
        return DPTHeadConfig.from_state_dict(state, prefix, modalities, hooks)
    if "head.weight" in names and "norm.weight" in names:
        return LinearHeadConfig.from_state_dict(state, prefix)
    raise ValueError(f"no known head under {prefix!r} (keys: {sorted(names)[:6]} ...)")
