"""The conv encoder / decoder of a map tokenizer, around its quantizer.

Shapes: B samples, C_in network input channels, C_out output channels, D code width, H W pixels,
h w token grid (h = H / P, P = 2 ** len(widths) pixels per token side).

Encoder: per width, a stride-2 4x4 convolution then a residual block, so P = 2 ** (number of widths)
(64 px at widths (16, 32, 64) -> 8x8 tokens, the model's 8-px patch grid); a 1x1 convolution to D.
Decoder: a 3x3 convolution and a residual block at the grid, then per stage nearest-neighbour 2x
upsampling, a 3x3 convolution and (below full resolution) a residual block.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from multimae.tokenizers.quantizers import Quantizer, QuantizerConfig


@dataclass
class MapTokenizerConfig:
    """Architecture of a map tokenizer (the part a preset chooses)."""

    widths: tuple[int, ...] = (16, 32, 64)  # channels per stride-2 stage; pixels per token = 2 ** len(widths)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)

    def validate(self) -> None:
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"tokenizer.widths must be one or more positive widths, got {self.widths}")
        self.quantizer.validate()

    @property
    def patch(self) -> int:
        """Pixels per token side."""
        return 2 ** len(self.widths)


def _norm(width: int) -> nn.GroupNorm:
    return nn.GroupNorm(8 if width % 8 == 0 else 1, width)


class ResBlock(nn.Module):
    """x + conv(act(norm(conv(act(norm(x)))))), shape-preserving (B, W, H, W)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_norm(width), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1),
                                  _norm(width), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _encoder(in_channels: int, widths: tuple[int, ...], code_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    prev = in_channels
    for w in widths:
        layers += [nn.Conv2d(prev, w, 4, stride=2, padding=1), ResBlock(w)]
        prev = w
    return nn.Sequential(*layers, _norm(prev), nn.SiLU(), nn.Conv2d(prev, code_dim, 1))


def _decoder(code_dim: int, widths: tuple[int, ...], out_channels: int) -> nn.Sequential:
    rev = widths[::-1]
    layers: list[nn.Module] = [nn.Conv2d(code_dim, rev[0], 3, padding=1), ResBlock(rev[0])]
    for i, w_in in enumerate(rev):
        last = i + 1 == len(rev)
        w_out = rev[-1] if last else rev[i + 1]
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w_in, w_out, 3, padding=1)]
        if not last:  # no residual block at full resolution: it would cost as much as the rest
            layers.append(ResBlock(w_out))
    return nn.Sequential(*layers, _norm(rev[-1]), nn.SiLU(), nn.Conv2d(rev[-1], out_channels, 3, padding=1))


class MapAutoencoder(nn.Module):
    """Conv encoder -> quantizer -> conv decoder."""

    def __init__(self, in_channels: int, out_channels: int, config: MapTokenizerConfig) -> None:
        super().__init__()
        config.validate()
        d = config.quantizer.code_dim
        self.encoder = _encoder(in_channels, config.widths, d)
        self.quantizer = Quantizer(config.quantizer)
        self.decoder = _decoder(d, config.widths, out_channels)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, C_in, H, W) -> (quantised (B, D, h, w), ids (B, h, w) int64, auxiliary loss)."""
        return self.quantizer(self.encoder(x))

    def decode_codes(self, codes: Tensor) -> Tensor:
        """codes (B, D, h, w) -> output (B, C_out, H, W)."""
        return self.decoder(codes)

    def decode_ids(self, ids: Tensor) -> Tensor:
        """ids (B, h, w) -> output (B, C_out, H, W)."""
        return self.decoder(self.quantizer.codes(ids))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, C_in, H, W) -> (output (B, C_out, H, W), ids (B, h, w), auxiliary loss)."""
        codes, ids, aux = self.encode(x)
        return self.decoder(codes), ids, aux
