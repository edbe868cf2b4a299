"""Classification head (paper App. B.1): pool the encoded tokens, LayerNorm, linear.

Shapes: B batch, T tokens (all encoded patch tokens and the global tokens), D width, K classes.
State-dict keys (official ``LinearOutputAdapter``): ``norm.{weight,bias}``, ``head.{weight,bias}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from multimae.model.encoder import EncoderOutput


@dataclass(frozen=True)
class LinearHeadConfig:
    dim: int  # encoder width D
    num_classes: int  # K
    pooling: Literal["mean", "global"] = "mean"  # mean of all tokens (global ones included), or the last global token

    def __post_init__(self) -> None:
        if self.dim < 1 or self.num_classes < 1:
            raise ValueError(f"LinearHeadConfig: dim and num_classes must be positive, got {self.dim}, {self.num_classes}")
        if self.pooling not in ("mean", "global"):
            raise ValueError(f"LinearHeadConfig: pooling must be 'mean' or 'global', got {self.pooling!r}")

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor], prefix: str = "",
                        pooling: Literal["mean", "global"] = "mean") -> LinearHeadConfig:
        """The config of the head whose weights are ``state[prefix + ...]``."""
        weight = state[f"{prefix}head.weight"]
        return cls(dim=int(weight.shape[1]), num_classes=int(weight.shape[0]), pooling=pooling)


class LinearHead(nn.Module):
    """(encoded tokens) -> (B, K) class logits."""

    return_layers: tuple[int, ...] = ()  # needs only the final encoder output

    def __init__(self, config: LinearHeadConfig) -> None:
        super().__init__()
        self.config = config
        self.norm = nn.LayerNorm(config.dim, eps=1e-6)
        self.head = nn.Linear(config.dim, config.num_classes)

    def forward(self, enc: EncoderOutput, image_size: tuple[int, int] | None = None) -> Tensor:
        """``enc.tokens`` (B, T, D) -> logits (B, K). ``image_size`` is not used."""
        x = enc.tokens
        if x.shape[-1] != self.config.dim:
            raise ValueError(f"the head expects {self.config.dim}-wide tokens, got {tuple(x.shape)}")
        if self.config.pooling == "mean":
            if enc.padding is not None:
                raise ValueError("mean pooling needs an unpadded encoding (encode without masks)")
            pooled = x.mean(dim=1)
        else:
            pooled = x[:, -1]
        return self.head(self.norm(pooled))
