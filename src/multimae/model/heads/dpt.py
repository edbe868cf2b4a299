"""Dense-prediction head on four encoder layers (paper App. B.3; official ``DPTOutputAdapter``).

Shapes: B batch, h w token grid, D encoder width, M modalities read, L_k reassembled widths
(``layer_dims``), F fusion width (``feature_dim``), K output channels, H W output pixels.

1. From the blocks ``hooks`` (four encoder layers) take the tokens of ``modalities``
   (concatenated along features, global tokens dropped) -> (B, M * D, h, w) maps.
2. Reassemble (``act_<k>_postprocess``): 1x1 conv to L_k, then resample: x4 (transposed conv
   4x4 stride 4), x2 (transposed conv 2x2 stride 2), x1, x1/2 (3x3 conv stride 2).
3. ``scratch.layer<k>_rn``: 3x3 conv (no bias) L_k -> F.
4. Fusion from the coarsest level (``scratch.refinenet4`` .. ``refinenet1``): add the previous path to
   a residual conv unit of the level (``resConfUnit1``), another unit (``resConfUnit2``), x2
   bilinear upsampling (align_corners=True), 1x1 ``out_conv``.
5. ``head``: 3x3 conv F -> F/2, bilinear resampling (align_corners=True) to H x W, 3x3 conv
   F/2 -> 32, ReLU, 1x1 conv 32 -> K. No final activation. The fused path is at 8 h = H / 2 for
   the paper's patch 16, where this resampling is the official x2 upsampling; for patch 8 it is
   already at H (no resampling), so smaller patches cost no extra resolution.

State-dict keys are the official ones. Official checkpoints also hold every reassemble and
``layer<k>_rn`` tensor a second time, under ``act_postprocess.<k-1>.*`` and
``scratch.layer_rn.<k-1>.*`` (the same modules registered twice in the official code); this head
stores each tensor once, under the first names, and accepts the alias names when loading (see
`DPT_KEY_ALIASES`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multimae.modalities.registry import DEFAULT_IMAGE_MODALITY
from multimae.model.encoder import EncoderOutput
from multimae.model.heads.tokens import select_tokens, tokens_to_map

# Alias prefix -> canonical prefix (relative to the head) of tensors official checkpoints hold twice.
DPT_KEY_ALIASES: dict[str, str] = {
    **{f"act_postprocess.{k}.": f"act_{k + 1}_postprocess." for k in range(4)},
    **{f"scratch.layer_rn.{k}.": f"scratch.layer{k + 1}_rn." for k in range(4)},
}


def default_hooks(depth: int) -> tuple[int, ...]:
    """Four evenly spaced block indices ending at the last block: (2, 5, 8, 11) for 12 blocks."""
    if depth < 4:
        raise ValueError(f"the DPT head reads four encoder layers; the encoder has only {depth} blocks")
    return tuple((k + 1) * depth // 4 - 1 for k in range(4))


@dataclass(frozen=True)
class DPTHeadConfig:
    dim: int  # encoder width D
    num_channels: int = 1  # K output channels (1 for depth, 3 for surface normals)
    modalities: tuple[str, ...] = (DEFAULT_IMAGE_MODALITY,)  # tokens read; several are concatenated along features
    # Encoder blocks read, shallow to deep (`default_hooks`); a block may repeat (e.g. (0, 1, 2, 2)
    # for a 3-block encoder), as the official DPTOutputAdapter allows.
    hooks: tuple[int, ...] = (2, 5, 8, 11)
    layer_dims: tuple[int, ...] = (96, 192, 384, 768)  # L_1..L_4, widths after reassembling
    feature_dim: int = 256  # F, width of the fusion path

    def __post_init__(self) -> None:
        if len(self.hooks) != 4 or len(self.layer_dims) != 4:
            raise ValueError(f"DPTHeadConfig: needs 4 hooks and 4 layer_dims, got {self.hooks} and {self.layer_dims}")
        if list(self.hooks) != sorted(self.hooks) or min(self.hooks) < 0:
            raise ValueError(f"DPTHeadConfig: hooks must be non-negative and non-decreasing, got {self.hooks}")
        if not self.modalities:
            raise ValueError("DPTHeadConfig: the head must read the tokens of at least one modality")
        if min(self.dim, self.num_channels, self.feature_dim, *self.layer_dims) < 1 or self.feature_dim < 2:
            raise ValueError(f"DPTHeadConfig: sizes must be positive: {self}")

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor], prefix: str = "", modalities: Sequence[str] = (DEFAULT_IMAGE_MODALITY,),
                        hooks: Sequence[int] = (2, 5, 8, 11)) -> DPTHeadConfig:
        """The config of the head whose weights are ``state[prefix + ...]`` (canonical or alias names).

        ``hooks`` are not stored in weights; ``modalities`` only set D = input width / M.
        """
        state = canonical_dpt_state(state, prefix)
        first = [state[f"{prefix}act_{k}_postprocess.0.weight"] for k in range(1, 5)]
        in_dim = int(first[0].shape[1])
        if in_dim % len(modalities):
            raise ValueError(f"the DPT head takes {in_dim} features, not a multiple of {len(modalities)} modalities")
        return cls(dim=in_dim // len(modalities), num_channels=int(state[f"{prefix}head.4.weight"].shape[0]),
                   modalities=tuple(modalities), hooks=tuple(hooks), layer_dims=tuple(int(w.shape[0]) for w in first),
                   feature_dim=int(state[f"{prefix}scratch.layer1_rn.weight"].shape[0]))


def canonical_dpt_state(state: Mapping[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """``state`` with the alias keys of a DPT head under ``prefix`` folded into the canonical ones.

    Raises ValueError when an alias and its canonical key hold different tensors.
    """
    out = dict(state)
    for alias, canonical in DPT_KEY_ALIASES.items():
        for key in [k for k in out if k.startswith(prefix + alias)]:
            value = out.pop(key)
            target = prefix + canonical + key[len(prefix + alias):]
            if target in out and not torch.equal(out[target], value):
                raise ValueError(f"{key} and {target} should hold the same tensor but differ")
            out.setdefault(target, value)
    return out


class ResidualConvUnit(nn.Module):
    """x + conv2(ReLU(conv1(ReLU(x)))), 3x3 convolutions with bias (no batch norm)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """(path, skip) -> out_conv(up2(resConfUnit2(path + resConfUnit1(skip)))); the coarsest level has no path."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, kernel_size=1)
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if skip is not None:
            if x.shape[-2:] != skip.shape[-2:]:  # odd token grids: the stride-2 level rounds up
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class _Scratch(nn.Module):
    """Projections to the fusion width and the four fusion blocks (official ``scratch``)."""

    def __init__(self, layer_dims: Sequence[int], features: int) -> None:
        super().__init__()
        for k, width in enumerate(layer_dims, start=1):
            self.add_module(f"layer{k}_rn", nn.Conv2d(width, features, kernel_size=3, padding=1, bias=False))
        for k in range(1, 5):
            self.add_module(f"refinenet{k}", FusionBlock(features))


def _reassemble(in_dim: int, width: int, level: int) -> nn.Sequential:
    """1x1 conv to ``width`` then x4, x2, x1 or x1/2 resampling for levels 1..4."""
    project = nn.Conv2d(in_dim, width, kernel_size=1)
    if level == 1:
        return nn.Sequential(project, nn.ConvTranspose2d(width, width, kernel_size=4, stride=4))
    if level == 2:
        return nn.Sequential(project, nn.ConvTranspose2d(width, width, kernel_size=2, stride=2))
    if level == 3:
        return nn.Sequential(project)
    return nn.Sequential(project, nn.Conv2d(width, width, kernel_size=3, stride=2, padding=1))


class DPTHead(nn.Module):
    """(four encoder layers) -> (B, K, H, W) dense regression."""

    def __init__(self, config: DPTHeadConfig) -> None:
        super().__init__()
        self.config = config
        F_ = config.feature_dim
        self.scratch = _Scratch(config.layer_dims, F_)
        self.head = nn.Sequential(
            nn.Conv2d(F_, F_ // 2, kernel_size=3, padding=1),
            nn.Identity(),  # resampling to the image size, done in forward (it depends on the patch size)
            nn.Conv2d(F_ // 2, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, config.num_channels, kernel_size=1),
        )
        in_dim = config.dim * len(config.modalities)
        for k, width in enumerate(config.layer_dims, start=1):
            self.add_module(f"act_{k}_postprocess", _reassemble(in_dim, width, k))
        # The coarsest fusion block has no skip input: its first unit is never used (as officially;
        # its weights stay in the state dict). Frozen so that optimisers and DDP ignore it.
        self.scratch.refinenet4.resConfUnit1.requires_grad_(False)
        self.register_load_state_dict_pre_hook(self._fold_aliases)

    @property
    def return_layers(self) -> tuple[int, ...]:
        """Encoder blocks whose outputs the head needs in ``EncoderOutput.intermediates`` (each once)."""
        return tuple(sorted(set(self.config.hooks)))

    @torch.no_grad()
    def set_output_bias(self, values: Tensor) -> None:
        """Start the predictions at ``values`` (K,) (e.g. the mean training target) through the last bias."""
        self.head[4].bias.copy_(values.to(self.head[4].bias))

    @staticmethod
    def _fold_aliases(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        folded = canonical_dpt_state(state_dict, prefix)
        state_dict.clear()
        state_dict.update(folded)

    def forward(self, enc: EncoderOutput, image_size: tuple[int, int]) -> Tensor:
        """Predictions (B, K, H, W) at ``image_size`` = (H, W); needs ``enc.intermediates`` of ``hooks``."""
        cfg = self.config
        blocks = self.return_layers
        if len(enc.intermediates) != len(blocks):
            raise ValueError(
                f"the DPT head needs the outputs of encoder blocks {blocks}; the encoding holds "
                f"{len(enc.intermediates)} intermediate layers (pass return_layers=head.return_layers)"
            )
        levels = []
        for k, hook in enumerate(cfg.hooks, start=1):
            tokens = enc.intermediates[blocks.index(hook)]
            x = tokens_to_map(select_tokens(enc, cfg.modalities, tokens), enc.layout.grid)  # (B, M*D, h, w)
            x = getattr(self, f"act_{k}_postprocess")(x)
            levels.append(getattr(self.scratch, f"layer{k}_rn")(x))  # (B, F, ., .)
        s = self.scratch
        path = s.refinenet4(levels[3])
        path = s.refinenet3(path, levels[2])
        path = s.refinenet2(path, levels[1])
        path = s.refinenet1(path, levels[0])
        x = self.head[0](path)
        if tuple(x.shape[-2:]) != tuple(image_size):
            x = F.interpolate(x, size=tuple(image_size), mode="bilinear", align_corners=True)
        return self.head[4](self.head[3](self.head[2](x)))
