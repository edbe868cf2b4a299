"""Semantic-segmentation head with ConvNeXt blocks (paper App. B.2, official ``ConvNeXtAdapter``).

Shapes: B batch, h w token grid, D encoder width, M modalities read, E up-projected width,
S = sqrt(preds_per_patch) sub-positions per patch side, C = E / S^2 map channels, K classes,
H W output pixels.

1. the tokens of ``modalities`` (concatenated along features: M * D) -> ``proj_dec`` Linear -> E;
2. each token's E features become an S x S block of C-channel vectors (feature index
   ``(sh * S + sw) * C + c``) -> a (B, C, S * h, S * w) map (H/4 for the paper's patch 16 and S = 4);
3. ``depth`` ConvNeXt blocks (depthwise 7x7 conv, LayerNorm over channels, Linear C -> 4C, GELU,
   Linear 4C -> C, residual; no layer scale);
4. ``final_layer`` 1x1 conv C -> K, then interpolation (bilinear, align_corners=False) to (H, W).

State-dict keys (as official checkpoints): ``proj_dec.*``, ``blocks.<i>.{dwconv,norm,pwconv1,pwconv2}.*``,
``final_layer.*``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from multimae.modalities.registry import DEFAULT_IMAGE_MODALITY
from multimae.model.encoder import EncoderOutput
from multimae.model.heads.tokens import select_tokens


@dataclass(frozen=True)
class ConvNeXtHeadConfig:
    dim: int  # encoder width D
    num_classes: int  # K
    modalities: tuple[str, ...] = (DEFAULT_IMAGE_MODALITY,)  # tokens read; several are concatenated along features
    embed_dim: int = 6144  # E, width after proj_dec (official: 8 * 768)
    preds_per_patch: int = 16  # S^2 sub-positions per token (a square number; 16 -> H/4 at patch 16)
    depth: int = 4  # ConvNeXt blocks
    interpolate_mode: str = "bilinear"  # final upsampling to the image size

    def __post_init__(self) -> None:
        side = math.isqrt(self.preds_per_patch)
        if self.preds_per_patch < 1 or side * side != self.preds_per_patch:
            raise ValueError(f"ConvNeXtHeadConfig: preds_per_patch must be a square number, got {self.preds_per_patch}")
        if self.embed_dim % self.preds_per_patch:
            raise ValueError(
                f"ConvNeXtHeadConfig: embed_dim {self.embed_dim} is not divisible by preds_per_patch {self.preds_per_patch}"
            )
        if not self.modalities:
            raise ValueError("ConvNeXtHeadConfig: the head must read the tokens of at least one modality")
        if min(self.dim, self.num_classes, self.embed_dim, self.depth + 1) < 1:
            raise ValueError(f"ConvNeXtHeadConfig: sizes must be positive: {self}")

    @property
    def map_dim(self) -> int:
        """C, channels of the feature map the ConvNeXt blocks work on."""
        return self.embed_dim // self.preds_per_patch

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor], prefix: str = "",
                        modalities: Sequence[str] = (DEFAULT_IMAGE_MODALITY,), interpolate_mode: str = "bilinear") -> ConvNeXtHeadConfig:
        """The config of the head whose weights are ``state[prefix + ...]``.

        Everything but ``modalities`` (which only sets D = input width / M) is read from shapes.
        """
        embed_dim, in_dim = state[f"{prefix}proj_dec.weight"].shape
        num_classes, map_dim = state[f"{prefix}final_layer.weight"].shape[:2]
        depth = len({k[len(prefix):].split(".")[1] for k in state if k.startswith(f"{prefix}blocks.")})
        if in_dim % len(modalities):
            raise ValueError(f"proj_dec takes {in_dim} features, not a multiple of {len(modalities)} modalities")
        return cls(dim=int(in_dim) // len(modalities), num_classes=int(num_classes), modalities=tuple(modalities),
                   embed_dim=int(embed_dim), preds_per_patch=int(embed_dim) // int(map_dim), depth=depth,
                   interpolate_mode=interpolate_mode)


class ConvNeXtBlock(nn.Module):
    """(B, C, H, W) -> (B, C, H, W): x + pwconv2(GELU(pwconv1(LN(dwconv7x7(x))))), no layer scale."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # (B, H, W, C): LayerNorm and Linears act on channels
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtHead(nn.Module):
    """(encoded tokens) -> (B, K, H, W) class logits."""

    return_layers: tuple[int, ...] = ()  # needs only the final encoder output

    def __init__(self, config: ConvNeXtHeadConfig) -> None:
        super().__init__()
        self.config = config
        C = config.map_dim
        self.blocks = nn.Sequential(*[ConvNeXtBlock(C) for _ in range(config.depth)])
        self.final_layer = nn.Conv2d(C, config.num_classes, kernel_size=1)
        self.proj_dec = nn.Linear(config.dim * len(config.modalities), config.embed_dim)

    def forward(self, enc: EncoderOutput, image_size: tuple[int, int]) -> Tensor:
        """Logits (B, K, H, W) at ``image_size`` = (H, W)."""
        cfg = self.config
        x = self.proj_dec(select_tokens(enc, cfg.modalities))  # (B, h*w, E)
        B = x.shape[0]
        h, w = enc.layout.grid
        S, C = math.isqrt(cfg.preds_per_patch), cfg.map_dim
        x = x.reshape(B, h, w, S, S, C)  # E = (sh, sw, c), sub-position major
        x = x.permute(0, 5, 1, 3, 2, 4).reshape(B, C, h * S, w * S)  # (B, C, h*S, w*S)
        x = self.final_layer(self.blocks(x))  # (B, K, h*S, w*S)
        return F.interpolate(x, size=tuple(image_size), mode=cfg.interpolate_mode,
                             align_corners=False if cfg.interpolate_mode in ("bilinear", "bicubic") else None)
