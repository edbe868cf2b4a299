"""Typed configuration of a 4M model and the named sizes (tiny, small, base, large, xl as 4M's).

A 4M model is one encoder-decoder over tokens of every modality (Mizrahi et al. 2023): which
modalities it reads and predicts come from the modality registry (`multimae.modalities`), like
every other model here; what 4M adds is the trunk's shape (below) and its token budgets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from multimae.modalities.registry import FOURM_MODALITIES, resolve_modalities
from multimae.modalities.spec import ModalitySpec

MLPS = ("swiglu", "gelu")
LOSS_REDUCTIONS = ("mod", "token")
# Which kinds 4M embeds: raw pixels and feature-vector sequences (encoder only), token maps, sequences.
FOURM_INPUT_KINDS = ("dense", "token_map", "tokens", "vector")
FOURM_OUTPUT_KINDS = ("token_map", "tokens")


@dataclass
class FourMConfig:
    dim: int = 768  # token width D, shared by encoder and decoder
    encoder_depth: int = 12
    decoder_depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0  # the gated MLP's hidden width is 2/3 of int(dim * mlp_ratio)
    mlp: str = "swiglu"  # swiglu (gated, SiLU; every official 4M training config) | gelu
    bias: bool = False  # biases of attention / MLP linears and LayerNorms (4M's "nobias": False)
    qk_norm: bool = False  # LayerNorm of queries and keys per head
    num_register_tokens: int = 0  # learned tokens prepended to every encoder input, always attended to
    drop_path_rate: float = 0.0  # stochastic depth of the encoder blocks, rising linearly to this (4M's default 0)
    # Std of the encoder's token embeddings at initialisation (4M's normal(0.02)); docs/fourm.md measures
    # larger values on short CPU runs, where 0.02 leaves the input tokens small beside their positions.
    encoder_token_std: float = 0.02
    patch_size: int = 16  # raw-pixel patches (rgb): P x P pixels per token
    image_size: int = 224  # the frame the grids' positional tables are made for
    inputs: tuple[str, ...] = FOURM_MODALITIES
    outputs: tuple[str, ...] = FOURM_MODALITIES
    num_encoder_tokens: int = 256  # encoder slots per sample (visible tokens beyond them are dropped)
    num_decoder_tokens: int = 256  # decoder slots per sample (targets beyond them are dropped)
    loss_reduction: str = "mod"  # mod: mean over modalities of each one's token mean (4M's); token: by tokens
    tie_output: bool = True  # output logits share the decoder's token embedding (4M's share_embedding)
    modality_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    custom_modalities: dict[str, ModalitySpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mlp not in MLPS:
            raise ValueError(f"4M mlp must be one of {MLPS}, got {self.mlp!r}")
        if self.loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(f"4M loss_reduction must be one of {LOSS_REDUCTIONS}, got {self.loss_reduction!r}")
        if min(self.dim, self.encoder_depth, self.decoder_depth, self.num_heads) < 1 or self.dim % self.num_heads:
            raise ValueError(f"4M: dim={self.dim} must be divisible by num_heads={self.num_heads} (dim, depths and "
                             f"num_heads >= 1; depths {self.encoder_depth}, {self.decoder_depth})")
        if self.dim % 4:
            raise ValueError(f"4M: dim must be divisible by 4 (2-D sin-cos positions), got {self.dim}")
        if self.image_size % self.patch_size:
            raise ValueError(f"4M: image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if not self.encoder_token_std > 0:
            raise ValueError(f"4M: encoder_token_std must be > 0, got {self.encoder_token_std}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"4M: drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if min(self.num_encoder_tokens, self.num_decoder_tokens) < 1 or self.num_register_tokens < 0:
            raise ValueError("4M: num_encoder_tokens and num_decoder_tokens must be >= 1, num_register_tokens >= 0")

    def modality_specs(self) -> dict[str, ModalitySpec]:
        """Specs of every input and output, in first-use order, checked against what 4M embeds."""
        names = list(dict.fromkeys([*self.inputs, *self.outputs]))
        specs = resolve_modalities(names, self.custom_modalities, self.modality_overrides)
        if not self.inputs:
            raise ValueError("a 4M model needs at least one input modality")
        for name in self.inputs:
            if specs[name].kind not in FOURM_INPUT_KINDS:
                raise ValueError(f"4M reads {name!r} ({specs[name].kind}) only once it is tokenized: inputs are raw "
                                 f"images, token maps or token sequences ({FOURM_INPUT_KINDS})")
        for name in self.outputs:
            if specs[name].kind not in FOURM_OUTPUT_KINDS:
                raise ValueError(f"4M predicts tokens: output {name!r} is a {specs[name].kind} modality "
                                 f"(outputs must be one of {FOURM_OUTPUT_KINDS})")
        return specs

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FourMConfig:
        from multimae.model.config import modality_config_fields

        return cls(**modality_config_fields(cls, data, "4M"))


# 4M's sizes (official fm_<size>_<e>e_<d>d factories): width, encoder depth, decoder depth, heads.
_SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (384, 6, 6, 6),
    "small": (512, 8, 8, 8),
    "base": (768, 12, 12, 12),
    "large": (1024, 24, 24, 16),
    "xl": (2048, 24, 24, 32),
}
FOURM_SIZES: tuple[str, ...] = tuple(_SIZES)


def fourm_config(size: str = "base", **overrides: Any) -> FourMConfig:
    """The named size with overrides, e.g. ``fourm_config("tiny", dim=64, image_size=64, patch_size=8)``."""
    if size not in _SIZES:
        raise ValueError(f"unknown 4M size {size!r}; choose one of {FOURM_SIZES}")
    dim, enc, dec, heads = _SIZES[size]
    return FourMConfig.from_dict({"dim": dim, "encoder_depth": enc, "decoder_depth": dec, "num_heads": heads,
                                  **overrides})
