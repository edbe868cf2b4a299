"""The quantizer of a map tokenizer: `vector-quantize-pytorch`'s FSQ or VQ behind one small module.

Shapes: B samples, D code width, h w token grid.

``fsq`` (the default): finite scalar quantisation, each of D = len(levels) latent channels rounded to
one of ``levels[i]`` values; the vocabulary is their product; no codebook to learn, so none collapses.
``vq``: a learned codebook of ``codebook_size`` entries of width ``dim``, compared by cosine
similarity, updated by exponential moving averages, initialised by k-means on the first batch, and
with codes unused for a while restarted from the batch (4M's choice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

QuantizerKind = Literal["fsq", "vq"]


@dataclass
class QuantizerConfig:
    kind: QuantizerKind = "fsq"  # fsq | vq
    levels: tuple[int, ...] = (8, 5, 5, 5)  # fsq: values per latent channel; vocabulary = their product
    codebook_size: int = 512  # vq: number of codes
    dim: int = 32  # vq: code width
    decay: float = 0.99  # vq: EMA decay of the codebook
    kmeans_init: bool = True  # vq: initialise the codebook by k-means on the first batch
    dead_code_threshold: float = 2.0  # vq: restart codes whose EMA usage falls below this many hits
    commitment_weight: float = 0.25  # vq: weight of the commitment loss

    def validate(self) -> None:
        if self.kind not in ("fsq", "vq"):
            raise ValueError(f"quantizer.kind must be fsq or vq, got {self.kind!r}")
        if self.kind == "fsq" and (not self.levels or min(self.levels) < 3):
            raise ValueError(f"quantizer.levels must be one or more values >= 3, got {self.levels}")
        if self.kind == "vq" and (self.codebook_size < 2 or self.dim < 1 or not 0 < self.decay < 1):
            raise ValueError(f"quantizer: vq needs codebook_size >= 2, dim >= 1 and decay in (0, 1), got "
                             f"{self.codebook_size}, {self.dim}, {self.decay}")

    @property
    def vocab_size(self) -> int:
        return math.prod(self.levels) if self.kind == "fsq" else self.codebook_size

    @property
    def code_dim(self) -> int:
        """Width D of the encoder output the quantizer takes."""
        return len(self.levels) if self.kind == "fsq" else self.dim


class Quantizer(nn.Module):
    """Latent map -> (quantised map, ids, auxiliary loss); ids -> quantised map."""

    def __init__(self, config: QuantizerConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        if config.kind == "fsq":
            from vector_quantize_pytorch import FSQ

            self.inner = FSQ(levels=list(config.levels), dim=config.code_dim)
        else:
            from vector_quantize_pytorch import VectorQuantize

            self.inner = VectorQuantize(
                dim=config.dim, codebook_size=config.codebook_size, decay=config.decay, use_cosine_sim=True,
                kmeans_init=config.kmeans_init, threshold_ema_dead_code=config.dead_code_threshold,
                commitment_weight=config.commitment_weight, accept_image_fmap=True)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """z (B, D, h, w) -> (quantised (B, D, h, w), ids (B, h, w) int64, auxiliary loss scalar: the
        commitment loss of vq, 0 for fsq)."""
        if self.config.kind == "fsq":
            quantised, ids = self.inner(z)
            return quantised, ids.long(), z.new_zeros(())
        quantised, ids, commit = self.inner(z)
        return quantised, ids.long(), commit.sum()

    def codes(self, ids: Tensor) -> Tensor:
        """ids (B, h, w) -> quantised map (B, D, h, w), as `forward` gives for those ids."""
        if self.config.kind == "fsq":
            return self.inner.indices_to_codes(ids)
        return self.inner.get_output_from_indices(ids)
