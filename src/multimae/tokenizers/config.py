"""The configuration of a tokenizer training run (`multimae tokenizer train`), one dataclass per part;
presets are ``multimae/configs/tok-world*.yaml`` (maps) and ``tok-feature.yaml`` (vectors)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from multimae.modalities.registry import (
    DEFAULT_FEATURE_MODALITY,
    DEFAULT_MAP_MODALITY,
    resolve_modalities,
    spec_from_dict,
)
from multimae.modalities.spec import ModalitySpec
from multimae.tokenizers.network import MapTokenizerConfig
from multimae.tokenizers.vector import VectorTokenizerConfig


@dataclass
class TokenizerDataConfig:
    source: str = "world"  # the built-in world, or a folder-layout root or tar shards (`multimae.tokenizers.maps`)
    image_size: int = 64  # pixels (maps are resized to it); the token grid is image_size / 2 ** len(tokenizer.widths)
    train_scenes: int = 2000  # training pool: rendered scenes (cached on disk), or the first samples of a source
    val_scenes: int = 128  # held-out scenes (world val split; a source's val split or last shard) for the report
    difficulty: float = 1.0  # world clutter, 0 to 1
    class_colors: float = 0.0  # world: chance that an object wears its class's colour
    workers: int = 2  # render processes
    cache_dir: str | None = None  # where rendered pools are kept (default ~/.cache/multimae)

    def validate(self) -> None:
        if min(self.image_size, self.train_scenes, self.val_scenes) < 1:
            raise ValueError("data.image_size, data.train_scenes and data.val_scenes must be >= 1")
        if not self.source:
            raise ValueError("data.source must be 'world' or a path")


@dataclass
class TokenizerTrainConfig:
    steps: int = 1500
    batch_size: int = 32
    lr: float = 2e-3  # AdamW peak; linear warm-up, then cosine down to 10 %
    weight_decay: float = 0.0
    warmup_steps: int = 50
    grad_clip: float = 1.0
    seed: int = 0
    ckpt_every: int = 250  # steps between resumable checkpoints
    log_every: int = 25  # steps between loss records (log.jsonl)
    eval_batch_size: int = 64
    figure_samples: int = 6  # rows of reconstructions.png
    baseline_scenes: int = 1000  # training scenes the baseline's k-means is fitted on (0: no baseline)
    stats_scenes: int = 256  # training scenes normalisation statistics are fitted on

    def validate(self) -> None:
        if min(self.steps, self.batch_size, self.ckpt_every, self.log_every, self.eval_batch_size) < 1:
            raise ValueError("train.steps, batch_size, ckpt_every, log_every and eval_batch_size must be >= 1")
        if self.lr <= 0 or self.warmup_steps < 0 or self.baseline_scenes < 0 or self.stats_scenes < 1:
            raise ValueError("train.lr must be > 0, warmup_steps and baseline_scenes >= 0, stats_scenes >= 1")


@dataclass
class TokenizerRunConfig:
    modality: str = DEFAULT_MAP_MODALITY  # the map modality to tokenise (a built-in or a custom_modalities entry)
    modality_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # spec fields by modality
    custom_modalities: dict[str, dict[str, Any]] = field(default_factory=dict)  # user specs by name
    tokenizer: MapTokenizerConfig = field(default_factory=MapTokenizerConfig)
    data: TokenizerDataConfig = field(default_factory=TokenizerDataConfig)
    train: TokenizerTrainConfig = field(default_factory=TokenizerTrainConfig)

    def spec(self) -> ModalitySpec:
        """The modality's spec, with its overrides (overrides of other modalities are not used)."""
        custom = {n: spec_from_dict({"name": n, **f}) for n, f in self.custom_modalities.items()}
        overrides = {n: f for n, f in self.modality_overrides.items() if n == self.modality}
        return resolve_modalities([self.modality], custom, overrides)[self.modality]

    def validate(self) -> None:
        spec = self.spec()
        if spec.kind not in ("dense", "categorical"):
            raise ValueError(f"modality {spec.name!r} is a {spec.kind} modality: map tokenizers take dense or "
                             f"categorical maps (a caption's tokenizer is trained with --data)")
        if spec.source is not None:
            raise ValueError(f"modality {spec.name!r} is derived from {spec.source!r}: tokenise that one")
        if self.data.image_size % self.tokenizer.patch:
            raise ValueError(f"data.image_size {self.data.image_size} is not a multiple of the tokenizer's "
                             f"{self.tokenizer.patch} pixels per token (2 ** len(tokenizer.widths))")


@dataclass
class VectorRunConfig:
    """A vector tokenizer's run (`multimae tokenizer train --modality feature --data DIR`); preset
    ``tok-feature``. ``train.stats_scenes``, ``train.baseline_scenes`` and ``train.figure_samples``
    count vectors."""

    modality: str = DEFAULT_FEATURE_MODALITY  # a vector modality (its G and C are read from the data)
    source: str = ""  # a folder root (train / val splits) or tar shards (the last held out) holding it
    train_vectors: int = 100_000  # the first training samples used (all when there are fewer)
    val_vectors: int = 2000  # held-out samples the report is measured on
    tokenizer: VectorTokenizerConfig = field(default_factory=VectorTokenizerConfig)
    train: TokenizerTrainConfig = field(default_factory=TokenizerTrainConfig)

    def spec(self) -> ModalitySpec:
        return resolve_modalities([self.modality])[self.modality]

    def validate(self) -> None:
        if self.spec().kind != "vector":
            raise ValueError(f"modality {self.modality!r} is a {self.spec().kind} modality: a vector tokenizer "
                             "takes a vector modality")
        if not self.source:
            raise ValueError("source: give the data holding the vectors (--data DIR)")
        if min(self.train_vectors, self.val_vectors) < 1:
            raise ValueError("train_vectors and val_vectors must be >= 1")
        self.tokenizer.validate()
