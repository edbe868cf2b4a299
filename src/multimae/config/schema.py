"""The run configuration, one dataclass per component. Defaults are the paper's (Table 5);
presets (``multimae/configs/*.yaml``) and ``key=value`` overrides change them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any, Literal

from multimae.masking.samplers import require_each
from multimae.modalities.registry import DEFAULT_INPUTS, DEFAULT_OUTPUTS
from multimae.model.config import MultiMAEConfig, model_config


@dataclass
class ModelSection:
    size: str = "base"  # tiny | small | base | large
    encoder: dict[str, Any] = field(default_factory=dict)  # EncoderConfig overrides
    decoder: dict[str, Any] = field(default_factory=dict)  # DecoderConfig overrides
    inputs: tuple[str, ...] = DEFAULT_INPUTS
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS
    modality_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    custom_modalities: dict[str, dict[str, Any]] = field(default_factory=dict)  # spec fields by name

    def build(self) -> MultiMAEConfig:
        return model_config(
            self.size, encoder=self.encoder, decoder=self.decoder, inputs=self.inputs, outputs=self.outputs,
            modality_overrides=self.modality_overrides, custom_modalities=self.custom_modalities,
        )

    def validate(self) -> None:
        config = self.build()
        config.modality_specs()
        for part, section in (("encoder", config.encoder), ("decoder", config.decoder)):
            if min(section.dim, section.depth, section.num_heads) < 1 or section.dim % section.num_heads:
                raise ValueError(f"model.{part}: dim={section.dim} must be divisible by num_heads={section.num_heads} "
                                 f"(dim, depth and num_heads >= 1; depth={section.depth})")
        enc = config.encoder
        if enc.patch_size < 1 or enc.image_size < 1 or enc.image_size % enc.patch_size:
            raise ValueError(f"model.encoder: image_size={enc.image_size} must be a multiple of "
                             f"patch_size={enc.patch_size}")


@dataclass
class DataConfig:
    source: Literal["world", "folder", "shards", "jsonl"] = "world"
    root: str | None = None  # folder root, shard directory or .jsonl of image-caption pairs (folder / shards / jsonl)
    image_size: int = 224  # training resolution (crops are resized to it)
    batch_size: int = 2048  # global batch, over all processes and accumulation steps
    num_workers: int = 2  # DataLoader workers (folder / shards) or render processes (world)
    augment: bool = True  # RandomResizedCrop + horizontal flip, shared by all modalities
    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.3333333333333333)
    world_train_scenes: int = 20_000  # world: size of the rendered training pool (cached on disk)
    world_val_scenes: int = 256  # world: held-out scenes for validation
    world_difficulty: float = 1.0  # world: clutter, 0 (one object, plain room) to 1 (the full world)
    world_class_colors: float = 0.0  # world: chance that an object wears its class's colour (0: shape only)
    world_render_size: int | None = None  # world: render resolution (default: image_size)
    cache_dir: str | None = None  # where rendered pools are kept (default ~/.cache/multimae)
    val_root: str | None = None  # folder / shards: validation data (default: none)
    on_error: Literal["raise", "skip"] = "raise"  # folder / shards: an undecodable sample stops the run, or is skipped
    allow_missing: bool = False  # folder / shards: read samples lacking some modalities (batches record presence)
    # Text modalities (captions): a tokenizer by hub name (bert-base-uncased) or folder / tokenizer.json;
    # null trains a WordPiece vocabulary of tokenizer_vocab_size on the training captions (kept in the run).
    tokenizer: str | None = None
    tokenizer_vocab_size: int = 1000
    caption_dropout: float = 0.0  # chance that a training sample's caption is dropped (M3AE's random_drop_text)
    caption_flip: Literal["mirror", "skip", "keep"] = "mirror"  # a flipped captioned sample: swap left / right in
    # its caption, or do not flip captioned samples, or flip and keep the caption (false: a control)
    unpaired_text: float = 0.0  # share of every training batch that is text-only (captions of text_corpus)
    text_corpus: str | None = None  # unpaired captions: a text file (one per line), a folder of .txt, a .jsonl or
    # a folder / shard dataset's captions; world: null reads the captions of world_text_scenes scenes of the
    # world's text split, never rendered as training images
    world_text_scenes: int = 10_000

    def validate(self) -> None:
        if self.source != "world" and not self.root:
            raise ValueError(f"data.root is required for data.source={self.source!r}")
        if self.batch_size < 1 or self.image_size < 1:
            raise ValueError(f"data.batch_size and data.image_size must be positive, got {self.batch_size} "
                             f"and {self.image_size}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.world_render_size is not None and self.world_render_size < 8:
            raise ValueError(f"data.world_render_size must be >= 8 (or null: data.image_size), "
                             f"got {self.world_render_size}")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"data.crop_scale must be (min, max) with 0 < min <= max <= 1, "
                             f"got {list(self.crop_scale)}")
        lo, hi = self.crop_ratio
        if not 0.0 < lo <= hi < math.inf:
            raise ValueError(f"data.crop_ratio must be (min, max) with 0 < min <= max, got {list(self.crop_ratio)}")
        if self.tokenizer_vocab_size < 8:
            raise ValueError(f"data.tokenizer_vocab_size must be >= 8, got {self.tokenizer_vocab_size}")
        if self.unpaired_text and self.source != "world" and not self.text_corpus:
            raise ValueError(f"data.unpaired_text={self.unpaired_text} needs data.text_corpus (captions without "
                             f"images) for data.source={self.source!r}")
        if not 0.0 <= self.unpaired_text < 1.0:
            raise ValueError(f"data.unpaired_text must be in [0, 1) (a share of each batch), got {self.unpaired_text}")
        for name in ("world_difficulty", "world_class_colors", "caption_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"data.{name} must be in [0, 1], got {getattr(self, name)}")


SAMPLERS: tuple[str, ...] = ("dirichlet", "fixed_ratio", "input_target")


@dataclass
class MaskingComponent:
    """One component of ``masking.mixture`` (input_target): the input and target Dirichlet splits."""

    alpha: float | dict[str, float] = 1.0  # concentration of the input split: one value or {modality: value}; 0 = never
    target_alpha: float | dict[str, float] = 1.0  # the same for the target split
    weight: float = 1.0  # how often this component is picked, relative to the others


@dataclass
class MaskingConfig:
    # dirichlet: MultiMAE (num_visible tokens given, split by Dirichlet(alpha), every other input token predicted);
    # fixed_ratio: M3AE (a fixed fraction of each named input hidden and predicted);
    # input_target: 4M (an input and a target budget per sample, split by Dirichlet(alpha) and Dirichlet(target_alpha))
    sampler: Literal["dirichlet", "fixed_ratio", "input_target"] = "dirichlet"
    num_visible: int = 98  # visible tokens per sample, over all input modalities
    # Dirichlet concentration of the per-input token budgets: one for all inputs (symmetric; .inf for an
    # equal split), or one per input, e.g. {rgb: 1.0, depth: 0.5, semseg: 0.5} (every input named);
    # input_target: the input split, values >= 0 (0: never given), every sampled modality named
    alpha: float | dict[str, float] = 1.0
    ratios: dict[str, float] = field(default_factory=dict)  # fixed_ratio: {input: hidden fraction in [0, 1]}; others fully given
    input_budget: int | tuple[int, int] | None = None  # input_target: tokens given per sample, n or [min, max]; null = num_visible
    target_budget: int | tuple[int, int] | None = None  # input_target: tokens predicted per sample; null = all not given
    target_alpha: float | dict[str, float] = 1.0  # input_target: concentration of the target split, values >= 0
    mixture: list[MaskingComponent] = field(default_factory=list)  # input_target: several (alpha, target_alpha,
    # weight) components, one picked per sample; [] = the one component (alpha, target_alpha)
    min_tokens: int = 0  # input_target: redraw a split (up to 100 times) while a modality gets fewer tokens (0: off)

    def validate(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"masking.sampler must be one of {list(SAMPLERS)}, got {self.sampler!r}")
        if self.num_visible < 1:
            raise ValueError(f"masking.num_visible must be >= 1, got {self.num_visible}")
        if self.sampler == "input_target":
            _check_alphas("masking.alpha", self.alpha, zero_ok=True)
        else:
            _check_alphas("masking.alpha", self.alpha, zero_ok=False)
        for name, r in self.ratios.items():
            if not 0.0 <= r <= 1.0:  # NaN fails too
                raise ValueError(f"masking.ratios.{name} must be in [0, 1] (the hidden fraction), got {r}")
        for key in ("input_budget", "target_budget"):
            value = getattr(self, key)
            lo, hi = (value, value) if value is None or isinstance(value, int) else value
            if value is not None and not 0 <= lo <= hi:
                raise ValueError(f"masking.{key} must be n >= 0 or [min, max] with 0 <= min <= max, got {value}")
        _check_alphas("masking.target_alpha", self.target_alpha, zero_ok=True)
        for i, c in enumerate(self.mixture):
            _check_alphas(f"masking.mixture[{i}].alpha", c.alpha, zero_ok=True)
            _check_alphas(f"masking.mixture[{i}].target_alpha", c.target_alpha, zero_ok=True)
            if not (0.0 <= c.weight < math.inf):
                raise ValueError(f"masking.mixture[{i}].weight must be a finite number >= 0, got {c.weight}")
        if self.min_tokens < 0:
            raise ValueError(f"masking.min_tokens must be >= 0 (0: off), got {self.min_tokens}")
        if self.mixture and not any(c.weight > 0 for c in self.mixture):
            raise ValueError("masking.mixture: every component's weight is 0: none could be picked")
        if self.sampler == "fixed_ratio" and not self.ratios:
            raise ValueError("masking.ratios must name at least one input for masking.sampler=fixed_ratio "
                             "(with none, nothing is hidden and nothing predicted)")
        unused = {"ratios": self.sampler != "fixed_ratio" and bool(self.ratios),
                  "input_budget": self.sampler != "input_target" and self.input_budget is not None,
                  "target_budget": self.sampler != "input_target" and self.target_budget is not None,
                  "target_alpha": self.sampler != "input_target" and self.target_alpha != 1.0,
                  "mixture": self.sampler != "input_target" and bool(self.mixture),
                  "min_tokens": self.sampler != "input_target" and self.min_tokens != 0}
        for key, bad in unused.items():
            if bad:
                used_by = "fixed_ratio" if key == "ratios" else "input_target"
                raise ValueError(f"masking.{key} is only used by masking.sampler={used_by}, "
                                 f"but masking.sampler={self.sampler}: remove it or change the sampler")

    def concentrations(self, inputs: Sequence[str]) -> float | list[float]:
        """``alpha`` for the input modalities ``inputs``, in their order (what the sampler takes)."""
        if not isinstance(self.alpha, dict):
            return self.alpha
        require_each(self.alpha, list(inputs), "masking.alpha", each="input", outside="not inputs")
        return [self.alpha[n] for n in inputs]


def _check_alphas(key: str, alpha: float | dict[str, float], zero_ok: bool) -> None:
    """A ValueError naming ``key`` (``key.<modality>`` for a mapping) for a concentration out of range."""
    values = alpha.items() if isinstance(alpha, dict) else [("", alpha)]
    for name, value in values:
        where = f"{key}.{name}" if name else key
        if zero_ok and not 0.0 <= value < math.inf:  # NaN fails too
            raise ValueError(f"{where} must be a finite number >= 0 (0: never), got {value}")
        if not zero_ok and not value > 0:
            raise ValueError(f"{where} must be > 0 (.inf for an equal split), got {value}")


@dataclass
class OptimConfig:
    base_lr: float = 1e-4  # scaled by batch_size / 256 unless lr is given
    lr: float | None = None  # absolute peak learning rate (overrides base_lr scaling)
    warmup_lr: float = 1e-6
    min_lr: float = 0.0
    weight_decay: float = 0.05  # not applied to norms, biases, tokens, positional embeddings
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_fraction: float = 0.025  # 40 of 1600 epochs
    clip_grad: float | None = None  # max gradient norm (none by default)
    accum_steps: int = 1  # gradient accumulation: micro-batches per optimiser step
    layer_decay: float = 1.0  # layer-wise lr decay (lr x decay ** (L + 1 - layer)); 1 = off (fine-tuning: 0.65-0.75)

    def validate(self) -> None:
        def check(name: str, ok: bool, rule: str) -> None:
            if not ok:
                raise ValueError(f"optim.{name} must be {rule}, got {getattr(self, name)}")

        finite = math.isfinite
        if self.lr is not None:
            check("lr", finite(self.lr) and self.lr > 0, "a finite number > 0")
        check("base_lr", finite(self.base_lr) and self.base_lr > 0, "a finite number > 0")
        check("warmup_lr", finite(self.warmup_lr) and self.warmup_lr >= 0, "a finite number >= 0")
        check("min_lr", finite(self.min_lr) and self.min_lr >= 0, "a finite number >= 0")
        check("weight_decay", finite(self.weight_decay) and self.weight_decay >= 0, "a finite number >= 0")
        check("warmup_fraction", 0.0 <= self.warmup_fraction <= 1.0, "in [0, 1]")
        check("betas", all(0.0 <= b < 1.0 for b in self.betas), "two numbers in [0, 1)")
        if self.clip_grad is not None:
            check("clip_grad", finite(self.clip_grad) and self.clip_grad > 0, "a finite number > 0 (or null: off)")
        check("accum_steps", self.accum_steps >= 1, ">= 1")
        check("layer_decay", 0.0 < self.layer_decay <= 1.0, "in (0, 1]")

    def peak_lr(self, batch_size: int) -> float:
        return self.lr if self.lr is not None else self.base_lr * batch_size / 256


@dataclass
class LossConfig:
    all_patches: bool = False  # count visible patches too (default: masked only)
    weights: dict[str, float] = field(default_factory=dict)  # per output modality (default 1)

    def validate(self) -> None:
        for name, weight in self.weights.items():
            if not (math.isfinite(weight) and weight >= 0):
                raise ValueError(f"loss.weights.{name} must be a finite number >= 0, got {weight}")


@dataclass
class TrainConfig:
    steps: int = 1_000_000  # optimiser steps (1600 epochs of ImageNet at batch 2048 = 1,000,000)
    # auto: bf16 where the device computes it natively (CUDA with bf16; a CPU with avx512_bf16 / amx_bf16
    # whose bf16 matmuls, timed at start-up, beat fp32), fp16 + loss scaling on GPUs without bf16, else fp32
    # (see multimae.engine.precision; the choice and its reason go into the log and report.json)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    # torch intra-op threads. auto: on a one-process CPU run, all cores vs 1 timed over the first steps under
    # the load of the moment, the faster kept (multimae.engine.threads); otherwise as null. null: this
    # process's share of the cores (PyTorch's default for one process)
    threads: int | Literal["auto"] | None = "auto"
    # Processes this command starts on this machine as one data-parallel group, one per GPU, as
    # `torchrun --standalone --nproc-per-node N` would (ignored under torchrun). On the 2-core CPU
    # default, 2 one-thread processes ran 114 images/s against 116 for one process: the gloo
    # all-reduce costs what the single-thread processes gain.
    processes: int = 1
    # How the processes share the model (multimae.engine.trainer, docs/distributed.md). ddp: each holds all of
    # it (DistributedDataParallel). fsdp: each holds 1/N of the weights, gradients and optimizer state (FSDP2,
    # multimae.engine.fsdp), gathered block by block as it runs; checkpoints are a DCP folder (the shards)
    # beside the usual checkpoint-*.pt (the whole model). With one process fsdp trains the model whole and
    # still writes DCP checkpoints. fsdp runs bf16 or fp32 (not fp16) and not with train.compile.
    parallel: Literal["ddp", "fsdp"] = "ddp"
    out_dir: str = "runs"
    name: str | None = None  # run folder name (default: time stamp)
    log_every: int = 10
    val_every: int = 1000
    ckpt_every: int = 5000
    keep_last: int = 3  # checkpoints kept
    vis_every: int | None = None  # also write the reconstruction picture every N steps
    num_val_batches: int = 4
    compile: bool = False  # torch.compile the training forward pass (GPU runs; on the CPU default the
    # ~100 s of compilation costs more than the 1.35x faster steps give back in 10 minutes)

    def validate(self) -> None:
        if self.processes < 1:
            raise ValueError(f"train.processes must be >= 1, got {self.processes}")
        for name, least in (("steps", 1), ("log_every", 1), ("keep_last", 1), ("num_val_batches", 1),
                            ("val_every", 0), ("ckpt_every", 0)):
            if getattr(self, name) < least:
                raise ValueError(f"train.{name} must be >= {least}, got {getattr(self, name)}")
        if self.vis_every is not None and self.vis_every < 1:
            raise ValueError(f"train.vis_every must be >= 1 (or null: off), got {self.vis_every}")
        if not 0 <= self.seed < 2**63:  # torch.Generator.manual_seed takes a 64-bit value
            raise ValueError(f"train.seed must be in [0, 2**63 - 1], got {self.seed}")
        check_device(self.device, "train.device")
        if self.parallel not in ("ddp", "fsdp"):
            raise ValueError(f"train.parallel must be ddp or fsdp, got {self.parallel!r}")
        if self.parallel == "fsdp" and self.precision == "fp16":
            raise ValueError("train.parallel=fsdp does not run train.precision=fp16 (its loss scaler would have to "
                             "agree on overflow across shards); use bf16, fp32 or auto")
        if self.parallel == "fsdp" and self.compile:
            raise ValueError("train.parallel=fsdp with train.compile=true is not supported yet; set one of them off")


@dataclass
class RunConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataConfig = field(default_factory=DataConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        """What no section can check alone: the token budget and loss weights against the model."""
        model = self.model.build()
        size, patch = self.data.image_size, model.encoder.patch_size
        tokens = len(model.inputs) * (size // patch) ** 2
        if self.masking.sampler == "dirichlet" and self.masking.num_visible >= tokens:
            raise ValueError(
                f"masking.num_visible={self.masking.num_visible} must be below the {tokens} tokens of the inputs "
                f"({len(model.inputs)} x ({size}/{patch})^2): with none masked there is nothing to predict")
        from multimae.masking.build import build_mask_sampler  # masking imports no config: no cycle

        build_mask_sampler(self.masking, model.inputs)
        unknown = sorted(set(self.loss.weights) - set(model.outputs))
        if unknown:
            raise ValueError(f"loss.weights: {unknown} not among the outputs {list(model.outputs)}")
        if all(self.loss.weights.get(name, 1.0) == 0 for name in model.outputs):
            raise ValueError(f"loss.weights: every output's weight is 0 ({self.loss.weights}): "
                             "nothing would be learned")

    def validate_new_run(self) -> None:
        """What a new pre-training run must also satisfy (runs written before these checks still load)."""
        from pathlib import Path

        for key in ("root", "val_root"):
            path = getattr(self.data, key)
            if self.data.source != "world" and path and not Path(path).exists():
                raise ValueError(f"data.{key}={path}: no such folder or file")
        enc = self.model.build().encoder
        if self.data.image_size != enc.image_size:
            raise ValueError(
                f"data.image_size={self.data.image_size} differs from model.encoder.image_size={enc.image_size} "
                "(the size the positional tables are made for): set both to the training resolution")


def check_device(name: str, key: str) -> None:
    """A ValueError naming ``key`` unless ``name`` is auto, cpu, cuda, cuda:N or another torch device."""
    if name == "auto":
        return
    import torch

    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"{key}={name!r} is not a device: use auto, cpu, cuda or cuda:N") from None
