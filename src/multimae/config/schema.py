"""The run configuration, one dataclass per component. Defaults are the paper's (Table 5);
presets (``multimae/configs/*.yaml``) and ``key=value`` overrides change them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from multimae.model.config import MultiMAEConfig, model_config


@dataclass
class ModelSection:
    size: str = "base"  # tiny | small | base | large
    encoder: dict[str, Any] = field(default_factory=dict)  # EncoderConfig overrides
    decoder: dict[str, Any] = field(default_factory=dict)  # DecoderConfig overrides
    inputs: tuple[str, ...] = ("rgb", "depth", "semseg")
    outputs: tuple[str, ...] = ("rgb", "depth", "semseg", "norm_rgb")
    modality_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    custom_modalities: dict[str, dict[str, Any]] = field(default_factory=dict)  # spec fields by name

    def build(self) -> MultiMAEConfig:
        return model_config(
            self.size, encoder=self.encoder, decoder=self.decoder, inputs=self.inputs, outputs=self.outputs,
            modality_overrides=self.modality_overrides, custom_modalities=self.custom_modalities,
        )

    def validate(self) -> None:
        self.build().modality_specs()


@dataclass
class DataConfig:
    source: Literal["world", "folder", "shards"] = "world"
    root: str | None = None  # folder root or shard directory (folder / shards)
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

    def validate(self) -> None:
        if self.source != "world" and not self.root:
            raise ValueError(f"data.root is required for data.source={self.source!r}")
        if self.batch_size < 1 or self.image_size < 1:
            raise ValueError("data.batch_size and data.image_size must be positive")
        for name in ("world_difficulty", "world_class_colors"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"data.{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass
class MaskingConfig:
    num_visible: int = 98  # visible tokens per sample, over all input modalities
    alpha: float = 1.0  # symmetric Dirichlet concentration; .inf for an equal split


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

    def peak_lr(self, batch_size: int) -> float:
        return self.lr if self.lr is not None else self.base_lr * batch_size / 256


@dataclass
class LossConfig:
    all_patches: bool = False  # count visible patches too (default: masked only)
    weights: dict[str, float] = field(default_factory=dict)  # per output modality (default 1)


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


@dataclass
class RunConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataConfig = field(default_factory=DataConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
