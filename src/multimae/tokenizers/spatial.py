"""`SpatialTokenizer`: a map (rgb, depth, normals, semseg, any dense or categorical modality) <-> a
grid of token ids, by a small conv autoencoder with an FSQ or VQ bottleneck.

Shapes: B samples, C channels, H W pixels, P pixels per token side, h w token grid (H / P, W / P),
N = h * w tokens.

The tokenizer is built from the modality's spec (`MapFormat`: checks, normalisation, loss) and an
architecture (`MapTokenizerConfig`); nothing depends on the modality's name.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from multimae.config.loader import build_dataclass, to_plain
from multimae.modalities.registry import spec_from_dict
from multimae.modalities.spec import ModalitySpec
from multimae.tokenizers.base import Tokenizer, TokenIds
from multimae.tokenizers.network import MapAutoencoder, MapTokenizerConfig
from multimae.tokenizers.raw import MapFormat


@contextmanager
def evaluating(module: torch.nn.Module) -> Iterator[None]:
    """``module`` in eval mode without gradients, its mode restored afterwards (encoding never
    updates a VQ codebook)."""
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was)


class SpatialTokenizer(Tokenizer):
    """A map of one modality <-> (B, h * w) token ids on a grid of P x P pixel cells.

    Attributes:
        format: the modality's `MapFormat` (spec and normalisation statistics).
        config: the architecture.
        net: the `MapAutoencoder` (trained by `multimae.tokenizers.training`).
    """

    type_name = "spatial"

    def __init__(self, format: MapFormat, config: MapTokenizerConfig, net: MapAutoencoder | None = None) -> None:
        config.validate()
        self.format, self.config = format, config
        self.net = net if net is not None else MapAutoencoder(format.in_channels, format.out_channels, config)

    @classmethod
    def create(cls, spec: ModalitySpec, config: MapTokenizerConfig, mean: tuple[float, ...] = (),
               std: tuple[float, ...] = ()) -> SpatialTokenizer:
        """An untrained tokenizer of ``spec`` (dense maps with non-fixed statistics need mean / std:
        `multimae.tokenizers.raw.fit_statistics`)."""
        return cls(MapFormat.for_spec(spec, mean, std), config)

    @property
    def spec(self) -> ModalitySpec:
        return self.format.spec

    @property
    def vocab_size(self) -> int:
        return self.config.quantizer.vocab_size

    @property
    def placement(self) -> str:
        return "grid"

    @property
    def patch(self) -> int:
        """Pixels per token side."""
        return self.config.patch

    # ------------------------------------------------------------------ ids

    def encode(self, raw: Tensor) -> TokenIds:
        """Raw maps (B, C, H, W) float or (B, H, W) int class ids -> `TokenIds` (B, h * w) on grid
        (h, w); a token is valid when its cell has a valid pixel. A ValueError names bad input."""
        self.format.check(raw)
        self.format.check_size(raw, self.patch)
        x = self.format.network_input(raw)
        with evaluating(self.net):
            _, ids, _ = self.net.encode(x)
        valid = F.max_pool2d(self.format.valid(raw)[:, None].float(), self.patch)[:, 0] > 0  # (B, h, w)
        b, h, w = ids.shape
        return TokenIds(ids.reshape(b, h * w), valid.reshape(b, h * w), "grid", (h, w))

    def _grid_ids(self, tokens: TokenIds | Tensor) -> Tensor:
        if isinstance(tokens, TokenIds):
            if tokens.grid is None:
                raise ValueError("a spatial tokenizer decodes grid placements, got a sequence")
            return tokens.grid_ids
        if not isinstance(tokens, Tensor) or tokens.ndim not in (2, 3):
            raise ValueError(f"expected ids of shape (B, N) or (B, h, w), got "
                             f"{tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__}")
        if tokens.ndim == 3:
            return tokens
        side = math.isqrt(tokens.shape[1])
        if side * side != tokens.shape[1]:
            raise ValueError(f"{tokens.shape[1]} ids per sample are not a square grid: pass TokenIds or (B, h, w) ids")
        return tokens.reshape(tokens.shape[0], side, side)

    def decode(self, tokens: TokenIds | Tensor) -> Tensor:
        """Ids -> raw maps (B, C, h * P, w * P) float, or (B, h * P, w * P) int64 class ids."""
        ids = self._grid_ids(tokens)
        self.check_ids(ids)
        with evaluating(self.net):
            out = self.net.decode_ids(ids.long())
        return self.format.denormalize(self.format.finish(out))

    def code_vectors(self) -> Tensor:
        """(vocab_size, code_dim) float32: each id's quantised code, as the decoder reads it."""
        V = self.vocab_size
        ids = torch.arange(V, device=next(self.net.parameters()).device).reshape(1, V, 1)
        with torch.no_grad(), evaluating(self.net):
            codes = self.net.quantizer.codes(ids)  # (1, D, V, 1)
        return codes[0, :, :, 0].t().float().cpu().contiguous()

    def reconstruct(self, raw: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Training forward (the net's current mode, with gradients): raw -> (`MapFormat.finish`ed
        output (B, C_out, H, W) in normalised units, ids (B, h, w), loss scalar = reconstruction +
        quantizer auxiliary loss)."""
        self.format.check(raw)
        self.format.check_size(raw, self.patch)
        out, ids, aux = self.net(self.format.network_input(raw))
        out = self.format.finish(out)
        return out, ids, self.format.loss(out, raw) + aux

    # ------------------------------------------------------------------ saving

    def config_dict(self) -> dict[str, Any]:
        return {"spec": to_plain(dataclasses.asdict(self.spec)), "mean": list(self.format.mean),
                "std": list(self.format.std), "architecture": to_plain(self.config)}

    def state_tensors(self) -> dict[str, Tensor]:
        return dict(self.net.state_dict())

    @classmethod
    def from_saved(cls, config: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> SpatialTokenizer:
        spec = spec_from_dict(config["spec"])
        fmt = MapFormat(spec, tuple(config["mean"]), tuple(config["std"]))
        tokenizer = cls(fmt, build_dataclass(MapTokenizerConfig, config["architecture"], "architecture"))
        tokenizer.net.load_state_dict(dict(tensors), strict=True)
        return tokenizer
