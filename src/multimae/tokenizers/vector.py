"""`VectorTokenizer`: a global feature vector (an image embedding) <-> a few token ids, by an MLP
autoencoder with an FSQ or VQ bottleneck (4M tokenizes DINOv2 / ImageBind global embeddings so).

Shapes: B samples, G vectors per sample, C channels (G * C = F features), T tokens per sample,
D code width.

Raw values are those of a ``vector`` modality (`multimae.modalities.spec`): float (B, G, C), or
(B, C) when G = 1; every value finite. They are standardised per feature with statistics fitted on
training vectors (`fit_vector_statistics`, saved with the tokenizer). The encoder MLP maps the F
features to T codes of width D, each quantised independently (T ids per sample, one vocabulary);
the decoder MLP maps the T codes back to F features.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multimae.config.loader import build_dataclass, to_plain
from multimae.modalities.registry import spec_from_dict
from multimae.modalities.spec import ModalitySpec
from multimae.tokenizers.base import Tokenizer, TokenIds
from multimae.tokenizers.quantizers import Quantizer, QuantizerConfig
from multimae.tokenizers.spatial import evaluating

VectorLoss = Literal["mse", "cosine"]


@dataclass
class VectorTokenizerConfig:
    """Architecture of a vector tokenizer."""

    tokens: int = 4  # ids per sample (T); 4M uses 16 for a 768-d embedding
    hidden: int = 256  # width of the MLP layers
    layers: int = 2  # hidden layers of the encoder, and of the decoder
    loss: VectorLoss = "mse"  # mse: on standardised features; cosine: 1 - cos between raw vectors
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)

    def validate(self) -> None:
        if min(self.tokens, self.hidden, self.layers) < 1:
            raise ValueError(f"tokens, hidden and layers must be >= 1, got {self.tokens}, {self.hidden}, {self.layers}")
        if self.loss not in ("mse", "cosine"):
            raise ValueError(f"loss must be mse or cosine, got {self.loss!r}")
        self.quantizer.validate()


def _mlp(d_in: int, hidden: int, layers: int, d_out: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    prev = d_in
    for _ in range(layers):
        mods += [nn.Linear(prev, hidden), nn.LayerNorm(hidden), nn.GELU()]
        prev = hidden
    return nn.Sequential(*mods, nn.Linear(prev, d_out))


class VectorAutoencoder(nn.Module):
    """MLP encoder -> T quantised codes -> MLP decoder."""

    def __init__(self, features: int, config: VectorTokenizerConfig) -> None:
        super().__init__()
        config.validate()
        self.tokens, d = config.tokens, config.quantizer.code_dim
        self.encoder = _mlp(features, config.hidden, config.layers, self.tokens * d)
        self.quantizer = Quantizer(config.quantizer)
        self.decoder = _mlp(self.tokens * d, config.hidden, config.layers, features)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, F) -> (codes (B, T * D), ids (B, T) int64, auxiliary loss)."""
        b = x.shape[0]
        z = self.encoder(x).reshape(b, self.tokens, -1).permute(0, 2, 1)[..., None]  # (B, D, T, 1)
        codes, ids, aux = self.quantizer(z)
        return codes[..., 0].permute(0, 2, 1).reshape(b, -1), ids.reshape(b, self.tokens), aux

    def decode_ids(self, ids: Tensor) -> Tensor:
        """ids (B, T) -> output (B, F)."""
        b = ids.shape[0]
        codes = self.quantizer.codes(ids[..., None])  # (B, D, T, 1)
        return self.decoder(codes[..., 0].permute(0, 2, 1).reshape(b, -1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, F) -> (output (B, F), ids (B, T), auxiliary loss)."""
        codes, ids, aux = self.encode(x)
        return self.decoder(codes), ids, aux


def check_vectors(spec: ModalitySpec, raw: Tensor) -> Tensor:
    """Raw vectors (B, G, C), or (B, C) when G = 1, -> (B, G * C) float; a ValueError naming the
    modality and what is wrong (dtype, shape, non-finite values)."""
    g, c = spec.max_length or 1, spec.num_channels
    if not isinstance(raw, Tensor) or not raw.dtype.is_floating_point:
        what = raw.dtype if isinstance(raw, Tensor) else type(raw).__name__
        raise ValueError(f"{spec.name}: vectors must be a float tensor, got {what}")
    shapes = [(g, c)] + ([(c,)] if g == 1 else [])
    if raw.ndim < 2 or tuple(raw.shape[1:]) not in shapes:
        want = " or ".join(f"(B, {', '.join(map(str, s))})" for s in shapes)
        raise ValueError(f"{spec.name}: vectors must be {want}, got {tuple(raw.shape)}")
    if not torch.isfinite(raw).all():
        raise ValueError(f"{spec.name}: vectors hold non-finite values (NaN or inf)")
    return raw.reshape(raw.shape[0], g * c).float()


def fit_vector_statistics(spec: ModalitySpec, raw: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-feature (mean, std) of training vectors ``raw`` (std floored at 1e-6)."""
    x = check_vectors(spec, raw).double()
    return tuple(x.mean(0).tolist()), tuple(x.std(0, correction=0).clamp_min(1e-6).tolist())


class VectorTokenizer(Tokenizer):
    """Vectors of one ``vector`` modality <-> (B, T) token ids.

    Attributes:
        spec: the modality's spec (``max_length`` vectors of ``num_channels``).
        mean, std: per-feature statistics (F values each).
        config: the architecture; net: the `VectorAutoencoder`.
    """

    type_name = "vector"

    def __init__(self, spec: ModalitySpec, mean: tuple[float, ...], std: tuple[float, ...],
                 config: VectorTokenizerConfig, net: VectorAutoencoder | None = None) -> None:
        if spec.kind != "vector":
            raise ValueError(f"modality {spec.name!r} is a {spec.kind} modality: a vector tokenizer takes vectors")
        config.validate()
        features = (spec.max_length or 1) * spec.num_channels
        if len(mean) != features or len(std) != features:
            raise ValueError(f"{spec.name}: mean and std need {features} values each, got {len(mean)}, {len(std)}")
        self.spec, self.config = spec, config
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self.net = net if net is not None else VectorAutoencoder(features, config)

    @classmethod
    def fit(cls, spec: ModalitySpec, train_raw: Tensor, config: VectorTokenizerConfig) -> VectorTokenizer:
        """An untrained tokenizer normalising as the training vectors ``train_raw`` say."""
        return cls(spec, *fit_vector_statistics(spec, train_raw), config)

    @property
    def vocab_size(self) -> int:
        return self.config.quantizer.vocab_size

    @property
    def placement(self) -> str:
        return "global"

    def _stats(self) -> tuple[Tensor, Tensor]:
        return torch.tensor(self.mean), torch.tensor(self.std)

    def normalize(self, raw: Tensor) -> Tensor:
        """Raw vectors -> standardised (B, F)."""
        mean, std = self._stats()
        return (check_vectors(self.spec, raw) - mean) / std

    def denormalize(self, x: Tensor) -> Tensor:
        """Standardised (B, F) -> raw vectors (B, G, C)."""
        mean, std = self._stats()
        return (x * std + mean).reshape(x.shape[0], self.spec.max_length or 1, self.spec.num_channels)

    def encode(self, raw: Tensor) -> TokenIds:
        """Raw vectors (B, G, C) or (B, C) -> `TokenIds` (B, T), every token valid."""
        x = self.normalize(raw)
        with evaluating(self.net):
            _, ids, _ = self.net.encode(x)
        return TokenIds(ids, torch.ones_like(ids, dtype=torch.bool), "global")

    def decode(self, tokens: TokenIds | Tensor) -> Tensor:
        """Ids (B, T) -> raw vectors (B, G, C)."""
        ids = tokens.ids if isinstance(tokens, TokenIds) else tokens
        if not isinstance(ids, Tensor) or ids.ndim != 2 or ids.shape[1] != self.config.tokens:
            raise ValueError(f"{self.spec.name}: expected ids of shape (B, {self.config.tokens}), got "
                             f"{tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__}")
        self.check_ids(ids)
        with evaluating(self.net):
            return self.denormalize(self.net.decode_ids(ids.long()))

    def reconstruct(self, raw: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Training forward (the net's current mode, with gradients): raw -> (output (B, F)
        standardised, ids (B, T), loss scalar = reconstruction + quantizer auxiliary loss)."""
        x = self.normalize(raw)
        out, ids, aux = self.net(x)
        if self.config.loss == "mse":
            loss = F.mse_loss(out, x)
        else:
            mean, std = self._stats()
            loss = 1 - F.cosine_similarity(out * std + mean, x * std + mean, dim=1).mean()
        return out, ids, loss + aux

    def config_dict(self) -> dict[str, Any]:
        return {"spec": to_plain(dataclasses.asdict(self.spec)), "mean": list(self.mean), "std": list(self.std),
                "architecture": to_plain(self.config)}

    def state_tensors(self) -> dict[str, Tensor]:
        return dict(self.net.state_dict())

    @classmethod
    def from_saved(cls, config: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> VectorTokenizer:
        tokenizer = cls(spec_from_dict(config["spec"]), tuple(config["mean"]), tuple(config["std"]),
                        build_dataclass(VectorTokenizerConfig, config["architecture"], "architecture"))
        tokenizer.net.load_state_dict(dict(tensors), strict=True)
        return tokenizer
