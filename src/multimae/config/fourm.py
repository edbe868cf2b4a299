"""The 4M pre-training run configuration (`multimae pretrain --config 4m-cpu`): the model, the
pre-tokenised data, the masking of inputs and targets, the optimiser and the loop. A preset says
``family: 4m`` at its top; everything else is as in MultiMAE's runs (`multimae.config.schema`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from multimae.config.schema import MaskingComponent, OptimConfig, TrainConfig
from multimae.modalities.registry import FOURM_MODALITIES
from multimae.model.fourm.config import FourMConfig, fourm_config


@dataclass
class FourMModelSection:
    size: str = "tiny"  # tiny | small | base | large | xl (4M's)
    dim: int | None = None  # None: the size's
    encoder_depth: int | None = None
    decoder_depth: int | None = None
    num_heads: int | None = None
    mlp: str = "swiglu"
    bias: bool = False
    qk_norm: bool = False
    patch_size: int = 16
    image_size: int = 224
    inputs: tuple[str, ...] = FOURM_MODALITIES
    outputs: tuple[str, ...] = FOURM_MODALITIES
    num_encoder_tokens: int = 256
    num_decoder_tokens: int = 256
    loss_reduction: str = "mod"
    encoder_token_std: float = 0.02  # the encoder's token embeddings at init (4M's 0.02; docs/fourm.md)
    # how the encoder's token tables of map inputs are drawn: "normal" (4M's i.i.d. noise) or "codebook"
    # (a random projection of the map tokenizers' code vectors, at encoder_token_std; docs/fourm.md)
    encoder_token_init: Literal["normal", "codebook"] = "normal"
    modality_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def build(self) -> FourMConfig:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in ("size", "encoder_token_init")}
        return fourm_config(self.size, **{k: v for k, v in fields.items() if v is not None})


@dataclass
class FourMDataConfig:
    root: str | None = None  # a token-shard folder (`multimae tokenize`); world presets name theirs
    val_root: str | None = None  # held-out token shards (default: the last val_fraction of root's samples)
    val_fraction: float = 0.1
    tokenizers: dict[str, str] = field(default_factory=dict)  # {stored modality: saved tokenizer folder},
    # checked against the shards' hashes and kept in the run folder (needed to see predictions as maps / text)
    batch_size: int = 256  # global batch
    # world token shards: predictions from the picture alone on this many held-out world scenes (the
    # world's val split, as the shards rendered it), scored against the exact truth; 0 = off
    world_eval_scenes: int = 256
    compare_with: str | None = None  # a MultiMAE run (folder or weights) scored on the same scenes

    def validate(self) -> None:
        if not self.root:
            raise ValueError("data.root: name the token-shard folder to train on (`multimae tokenize` writes one)")
        if self.batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {self.val_fraction}")


@dataclass
class FourMMaskingConfig:
    input_budget: int | tuple[int, int] = 128  # tokens given per sample, n or [min, max]
    target_budget: int | tuple[int, int] = 128  # tokens predicted per sample
    # the Dirichlet mixture: one component picked per sample (alpha: the input split, target_alpha: the
    # target split; a value per modality or one for all; 0 = never)
    mixture: list[MaskingComponent] = field(default_factory=lambda: [MaskingComponent(0.5, 0.5)])
    # per sequence: ids kept (default: what fits); per token map: at most this many given or predicted per sample
    max_tokens: dict[str, int] = field(default_factory=dict)
    min_tokens: dict[str, int] = field(default_factory=dict)  # per modality: a split giving it fewer is drawn again
    keep: Literal["random", "all", "binary"] = "random"  # a sequence's kept share: uniform, all, or all-or-none
    # sequences masked by chunks (a key with its values given or predicted together; 4M-21's metadata)
    chunked: list[str] = field(default_factory=list)
    # per sample and modality, the probability that its given tokens are withdrawn (a sequence keeps [S_1]):
    # trains the unconditional pass of classifier-free guidance (docs/generation.md); 0 = off
    condition_dropout: float = 0.0

    def validate(self) -> None:
        for key in ("input_budget", "target_budget"):
            value = getattr(self, key)
            lo, hi = (value, value) if isinstance(value, int) else value
            if not 0 <= lo <= hi:
                raise ValueError(f"masking.{key} must be n >= 0 or [min, max] with 0 <= min <= max, got {value}")
        if not self.mixture or not any(c.weight > 0 for c in self.mixture):
            raise ValueError("masking.mixture needs at least one component with weight > 0")
        for i, c in enumerate(self.mixture):
            for kind in ("alpha", "target_alpha"):
                value = getattr(c, kind)
                for name, a in (value.items() if isinstance(value, dict) else [("", value)]):
                    if not 0.0 <= a < math.inf:
                        where = f"masking.mixture[{i}].{kind}" + (f".{name}" if name else "")
                        raise ValueError(f"{where} must be a finite number >= 0, got {a}")
        for name, n in self.max_tokens.items():
            if n < 1:
                raise ValueError(f"masking.max_tokens.{name} must be >= 1, got {n}")
        for name, n in self.min_tokens.items():
            if n < 0:
                raise ValueError(f"masking.min_tokens.{name} must be >= 0, got {n}")
        if not 0.0 <= self.condition_dropout < 1.0:
            raise ValueError(f"masking.condition_dropout must be in [0, 1), got {self.condition_dropout}")


@dataclass
class FourMTokenSchedule:
    """The length of training and of its warm-up measured in tokens, as 4M's recipe gives them
    (``total_tokens``, ``warmup_tokens``): one step sees data.batch_size x (input budget + target
    budget) tokens (each budget's upper end). Unset: train.steps and optim.warmup_fraction apply."""

    total: float | None = None  # training tokens, e.g. 5.0e+11 (4M-B); sets train.steps
    warmup: float | None = None  # warm-up tokens, e.g. 1.0e+10; sets optim.warmup_fraction

    def validate(self) -> None:
        for name in ("total", "warmup"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"tokens.{name} must be a finite number > 0 (or null), got {value}")


def _most(budget: int | tuple[int, int]) -> int:
    return budget if isinstance(budget, int) else budget[1]


@dataclass
class FourMRunConfig:
    family: Literal["4m"] = "4m"
    model: FourMModelSection = field(default_factory=FourMModelSection)
    data: FourMDataConfig = field(default_factory=FourMDataConfig)
    masking: FourMMaskingConfig = field(default_factory=FourMMaskingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tokens: FourMTokenSchedule = field(default_factory=FourMTokenSchedule)

    @property
    def tokens_per_step(self) -> int:
        """Input + target tokens of one optimiser step (the budgets' upper ends x the global batch)."""
        return self.data.batch_size * (_most(self.masking.input_budget) + _most(self.masking.target_budget))

    def with_token_schedule(self) -> FourMRunConfig:
        """This config with train.steps and optim.warmup_fraction set from ``tokens`` (where given),
        rounded up to whole steps as 4M does."""
        self.tokens.validate()
        per_step = self.tokens_per_step
        train, optim = self.train, self.optim
        if self.tokens.total is not None:
            train = dataclasses.replace(train, steps=max(1, math.ceil(self.tokens.total / per_step)))
        if self.tokens.warmup is not None:
            optim = dataclasses.replace(optim, warmup_fraction=min(1.0, math.ceil(self.tokens.warmup / per_step) / train.steps))
        return dataclasses.replace(self, train=train, optim=optim)

    def validate(self) -> None:
        self.tokens.validate()
        specs = self.model.build().modality_specs()
        for key in ("max_tokens", "min_tokens"):
            unknown = sorted(set(getattr(self.masking, key)) - set(specs))
            if unknown:
                raise ValueError(f"masking.{key}: {unknown} are not modalities of the model ({list(specs)})")
        self.masking.validate()
        model = self.model
        for key, slots in (("input_budget", model.num_encoder_tokens), ("target_budget", model.num_decoder_tokens)):
            most = _most(getattr(self.masking, key))
            if most > slots:
                part = "encoder" if key == "input_budget" else "decoder"
                raise ValueError(f"masking.{key} reaches {most} tokens, more than model.num_{part}_tokens={slots}")
        self.data.validate()
