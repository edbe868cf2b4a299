"""Typed model configuration and the named sizes (tiny, small, base, large)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from torch import nn

from multimae.modalities.registry import (
    DEFAULT_INPUTS,
    DEFAULT_OUTPUTS,
    resolve_modalities,
)
from multimae.modalities.spec import ModalitySpec


@dataclass
class EncoderConfig:
    dim: int = 768  # token width D
    depth: int = 12  # number of Transformer blocks
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    num_global_tokens: int = 1  # learned tokens appended after the patch tokens
    drop_path_rate: float = 0.0  # stochastic depth, linearly increasing over blocks
    patch_size: int = 16  # patch side in pixels at full image resolution
    image_size: int = 224  # resolution the positional tables are stored for
    act: str = "gelu"  # MLP activation: gelu (exact, PyTorch's and timm's) or gelu_tanh (Flax's nn.gelu: M3AE's JAX models)

    def __post_init__(self) -> None:
        check_act(self.act, "encoder")


DECODER_KINDS = ("cross_attention", "joint")
ACTIVATIONS = ("gelu", "gelu_tanh")


def check_act(act: str, part: str) -> None:
    if act not in ACTIVATIONS:
        raise ValueError(f"{part} act must be one of {ACTIVATIONS}, got {act!r}")


def activation(act: str) -> type[nn.Module] | Callable[[], nn.Module]:
    """The MLP activation layer of ``act`` (`ACTIVATIONS`), as timm's ``act_layer``."""
    return nn.GELU if act == "gelu" else partial(nn.GELU, approximate="tanh")


@dataclass
class DecoderConfig:
    dim: int = 256  # decoder width
    depth: int = 2  # Transformer blocks (after the cross-attention + MLP of a cross-attention decoder)
    num_heads: int = 8
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    # cross_attention: MultiMAE's, one decoder per output; joint: M3AE's, one self-attention
    # decoder over every position of all outputs.
    kind: str = "cross_attention"
    act: str = "gelu"  # as EncoderConfig.act
    # joint: the order of the 2-D sin-cos table's halves, rows first (ours, MultiMAE's) or columns first
    # (MAE's and M3AE's JAX code)
    pos_2d: str = "rows_first"

    def __post_init__(self) -> None:
        if self.kind not in DECODER_KINDS:
            raise ValueError(f"decoder kind must be one of {DECODER_KINDS}, got {self.kind!r}")
        check_act(self.act, "decoder")
        if self.pos_2d not in ("rows_first", "columns_first"):
            raise ValueError(f"decoder pos_2d must be rows_first or columns_first, got {self.pos_2d!r}")


@dataclass
class MultiMAEConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    inputs: tuple[str, ...] = DEFAULT_INPUTS  # modalities the encoder accepts
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS  # one decoder each
    # Per-modality spec field overrides, e.g. {"semseg": {"num_channels": 40}}.
    modality_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    # User-defined modalities by name (a spec, or a dict of spec fields from a config file).
    custom_modalities: dict[str, ModalitySpec] = field(default_factory=dict)

    def modality_specs(self) -> dict[str, ModalitySpec]:
        """Specs of every input and output modality, in first-use order."""
        names = list(dict.fromkeys([*self.inputs, *self.outputs]))
        specs = resolve_modalities(names, self.custom_modalities, self.modality_overrides)
        for name in self.inputs:
            if not specs[name].is_input:
                raise ValueError(f"modality {name!r} cannot be an input (it is output-only)")
        for name in self.outputs:
            if not specs[name].is_output:
                raise ValueError(f"modality {name!r} cannot be an output")
        if not self.inputs:
            raise ValueError("a MultiMAE needs at least one input modality")
        return specs

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MultiMAEConfig:
        kwargs = modality_config_fields(cls, data, "model")
        if "encoder" in kwargs:
            kwargs["encoder"] = _sub(EncoderConfig, kwargs["encoder"], "encoder")
        if "decoder" in kwargs:
            kwargs["decoder"] = _sub(DecoderConfig, kwargs["decoder"], "decoder")
        return cls(**kwargs)


def modality_config_fields(cls: type, data: Mapping[str, Any], what: str) -> dict[str, Any]:
    """The keyword arguments of a model config ``cls`` (MultiMAE's or 4M's) from plain data: unknown keys
    refused (naming ``what``), ``inputs`` / ``outputs`` as tuples, ``custom_modalities`` as specs."""
    from multimae.modalities.registry import spec_from_dict

    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {what} config key(s) {sorted(unknown)}; known: {sorted(known)}")
    kwargs = dict(data)
    for key in ("inputs", "outputs"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    if "custom_modalities" in kwargs:
        kwargs["custom_modalities"] = {
            name: spec if isinstance(spec, ModalitySpec) else spec_from_dict({"name": name, **spec})
            for name, spec in kwargs["custom_modalities"].items()
        }
    return kwargs


def _sub(cls: type, data: Any, where: str) -> Any:
    if isinstance(data, cls):
        return data
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {where} config key(s) {sorted(unknown)}; known: {sorted(known)}")
    return cls(**data)


# Named sizes: encoder (width, depth, heads) and decoder (width, heads). Base is the paper's ViT-B/16.
_SIZES: dict[str, tuple[EncoderConfig, DecoderConfig]] = {
    "tiny": (EncoderConfig(dim=192, depth=12, num_heads=3), DecoderConfig(dim=128, num_heads=4)),
    "small": (EncoderConfig(dim=384, depth=12, num_heads=6), DecoderConfig(dim=256, num_heads=8)),
    "base": (EncoderConfig(dim=768, depth=12, num_heads=12), DecoderConfig(dim=256, num_heads=8)),
    "large": (EncoderConfig(dim=1024, depth=24, num_heads=16), DecoderConfig(dim=256, num_heads=8)),
}

MODEL_SIZES: tuple[str, ...] = tuple(_SIZES)


def model_config(size: str = "base", **overrides: Any) -> MultiMAEConfig:
    """The named configuration ``size`` with top-level or nested overrides.

    ``model_config("tiny", encoder={"image_size": 64, "patch_size": 8}, inputs=("rgb", "depth"))``
    """
    if size not in _SIZES:
        raise ValueError(f"unknown model size {size!r}; choose one of {MODEL_SIZES}")
    enc, dec = _SIZES[size]
    data: dict[str, Any] = {"encoder": dataclasses.asdict(enc), "decoder": dataclasses.asdict(dec)}
    for key, value in overrides.items():
        if key in ("encoder", "decoder"):
            data[key] = {**data[key], **(dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value)}
        else:
            data[key] = value
    return MultiMAEConfig.from_dict(data)
