"""The fine-tuning run configuration: which task, which inputs, which initial weights, the head,
data, optimiser and training loop. Presets are ``multimae/configs/finetune-*.yaml``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from multimae.config.schema import DataConfig, OptimConfig, TrainConfig
from multimae.modalities.registry import (
    DEFAULT_IMAGE_MODALITY,
    DEFAULT_TASK_TARGETS,
    resolve_modalities,
    spec_from_dict,
)
from multimae.modalities.spec import ModalitySpec
from multimae.model.config import EncoderConfig, model_config
from multimae.model.fourm.config import FourMConfig, fourm_config

TaskKind = Literal["classification", "segmentation", "depth", "regression"]
TASK_KINDS: tuple[str, ...] = ("classification", "segmentation", "depth", "regression")
DEFAULT_TARGETS = DEFAULT_TASK_TARGETS  # the modality a dense task predicts by default, by kind
DEFAULT_LOSSES = {"classification": "cross_entropy", "segmentation": "cross_entropy", "depth": "berhu",
                  "regression": "l1"}


@dataclass
class TaskSection:
    kind: TaskKind = "classification"
    inputs: tuple[str, ...] = (DEFAULT_IMAGE_MODALITY,)  # modalities given to the encoder
    target: str | None = None  # dense tasks: the predicted modality (default semseg / depth / normals)
    num_classes: int | None = None  # classification: default from the data; segmentation: the target's classes
    loss: Literal["auto", "cross_entropy", "l1", "mse", "berhu"] = "auto"  # auto: CE, CE, berHu, L1 by kind
    ignore_index: int | None = None  # segmentation: class id left out of the loss and mIoU (default: the spec's)
    label_smoothing: float = 0.0  # classification
    mixup: float = 0.0  # classification: timm Mixup alpha (0 = off)
    cutmix: float = 0.0  # classification: timm CutMix alpha (0 = off)

    @property
    def target_name(self) -> str | None:
        return None if self.kind == "classification" else (self.target or DEFAULT_TARGETS[self.kind])

    @property
    def loss_name(self) -> str:
        return DEFAULT_LOSSES[self.kind] if self.loss == "auto" else self.loss

    def validate(self) -> None:
        if not self.inputs:
            raise ValueError("task.inputs: give at least one input modality")
        if len(set(self.inputs)) != len(self.inputs):
            raise ValueError(f"task.inputs lists a modality twice: {self.inputs}")
        if self.target_name is not None and self.target_name in self.inputs:
            raise ValueError(f"task.target {self.target_name!r} cannot also be an input")
        if self.kind in ("classification", "segmentation") and self.loss_name != "cross_entropy":
            raise ValueError(f"task.loss={self.loss!r} does not fit a {self.kind} task (cross_entropy)")
        if self.kind in ("depth", "regression") and self.loss_name == "cross_entropy":
            raise ValueError(f"task.loss=cross_entropy does not fit a {self.kind} task (l1, mse, berhu)")
        if (self.mixup > 0 or self.cutmix > 0) and self.kind != "classification":
            raise ValueError("task.mixup / task.cutmix apply to classification only")
        if self.num_classes is not None and self.num_classes < 2:
            raise ValueError(f"task.num_classes must be >= 2, got {self.num_classes}")
        for name in ("mixup", "cutmix"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"task.{name} must be >= 0 (0 = off), got {getattr(self, name)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"task.label_smoothing must be in [0, 1), got {self.label_smoothing}")


@dataclass
class HeadSection:
    modalities: tuple[str, ...] = ()  # dense heads: tokens read (several: concatenated); () = rgb if given, else the first input
    pooling: Literal["mean", "global"] = "mean"  # classification: mean of all tokens, or the global token
    embed_dim: int | None = None  # ConvNeXt: width after the up-projection (default preds_per_patch * D / 2)
    preds_per_patch: int | None = None  # ConvNeXt: sub-positions per token (default (patch / 4)^2: an H/4 map)
    depth: int = 4  # ConvNeXt blocks
    hooks: tuple[int, ...] = ()  # DPT: the four encoder blocks read (default evenly spaced, last block included)
    layer_dims: tuple[int, ...] = ()  # DPT: reassembled widths (default D/8, D/4, D/2, D)
    feature_dim: int | None = None  # DPT: fusion width (default D / 3: 256 for ViT-B)


@dataclass
class InitSection:
    # Initial encoder weights: a multimae pre-training run folder, checkpoint-*.pt or .safetensors; a timm
    # ViT weights file (.safetensors / .pth with timm key names); or `timm:<model name>` (downloaded by
    # timm). None = from scratch. Adapters of inputs the checkpoint lacks start from scratch.
    checkpoint: str | None = None


# The `FourMConfig` fields that shape a 4M model's encoder (what a fine-tuning run keeps of it).
FOURM_ENCODER_FIELDS = ("dim", "encoder_depth", "num_heads", "mlp_ratio", "mlp", "bias", "qk_norm",
                        "num_register_tokens", "patch_size", "drop_path_rate")
BACKBONE_FAMILIES = ("multimae", "4m")


@dataclass
class FinetuneModelSection:
    size: str = "tiny"  # tiny | small | base | large (from scratch)
    family: str = "multimae"  # the encoder: multimae (a MultiMAE / ViT encoder) or 4m (a 4M model's encoder);
    # set from init.checkpoint when there is one
    encoder: dict[str, Any] = field(default_factory=dict)  # EncoderConfig overrides (4m: FOURM_ENCODER_FIELDS);
    # with init.checkpoint the checkpoint's architecture is used and only drop_path_rate may be set here
    modality_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. {semseg: {num_channels: 9}}
    custom_modalities: dict[str, dict[str, Any]] = field(default_factory=dict)  # spec fields by name

    def __post_init__(self) -> None:
        if self.family not in BACKBONE_FAMILIES:
            raise ValueError(f"model.family must be one of {BACKBONE_FAMILIES}, got {self.family!r}")

    def encoder_config(self, image_size: int) -> EncoderConfig | FourMConfig:
        """The encoder, with positional tables stored for ``image_size`` (a `FourMConfig` for family
        4m: its encoder fields, no inputs or outputs of its own; the run's inputs are the task's)."""
        if self.family == "4m":
            unknown = sorted(set(self.encoder) - set(FOURM_ENCODER_FIELDS))
            if unknown:
                raise ValueError(f"model.encoder {unknown}: not fields of a 4M encoder {FOURM_ENCODER_FIELDS}")
            return fourm_config(self.size, **self.encoder, image_size=image_size, inputs=(), outputs=())
        enc = model_config(self.size, encoder=self.encoder, inputs=(DEFAULT_IMAGE_MODALITY,), outputs=(),
                           modality_overrides={}).encoder
        return dataclasses.replace(enc, image_size=image_size)

    def specs(self, names: tuple[str, ...]) -> dict[str, ModalitySpec]:
        """Specs of ``names`` with this section's overrides (those of unused modalities ignored)."""
        custom = {n: spec_from_dict({"name": n, **f}) for n, f in self.custom_modalities.items()}
        overrides = {n: o for n, o in self.modality_overrides.items() if n in names}
        return resolve_modalities(names, custom, overrides)


@dataclass
class FinetuneConfig:
    task: TaskSection = field(default_factory=TaskSection)
    head: HeadSection = field(default_factory=HeadSection)
    init: InitSection = field(default_factory=InitSection)
    model: FinetuneModelSection = field(default_factory=FinetuneModelSection)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        if self.data.source == "jsonl":
            raise ValueError("data.source=jsonl (image-caption pairs) is for pre-training; fine-tuning reads "
                             "world, folder or shards data with the task's target")
        specs = self.model.specs(self.modalities)
        for name in self.task.inputs:
            if not specs[name].is_input:
                raise ValueError(f"task.inputs: {name!r} cannot be an input")
        target = self.task.target_name
        if self.task.kind == "segmentation" and not specs[target].is_categorical:  # type: ignore[index]
            raise ValueError(f"segmentation needs a categorical target; {target!r} is {specs[target].kind}")  # type: ignore[index]
        if self.task.kind in ("depth", "regression") and specs[target].is_categorical:  # type: ignore[index]
            raise ValueError(f"{self.task.kind} needs a dense target; {target!r} is categorical")
        unknown = [m for m in self.head.modalities if m not in self.task.inputs]
        if unknown:
            raise ValueError(f"head.modalities {unknown} are not among task.inputs {self.task.inputs}")

    @property
    def modalities(self) -> tuple[str, ...]:
        """The task's inputs, then its target (when it has one)."""
        target = self.task.target_name
        return tuple(dict.fromkeys([*self.task.inputs, *([target] if target else [])]))

    @property
    def input_data(self) -> tuple[str, ...]:
        """The modality of the data each input is read from: itself, or for a token-map input the map
        it tokenizes (its spec's source: the run encodes it with the tokenizer it keeps)."""
        specs = self.model.specs(tuple(self.task.inputs))
        return tuple(dict.fromkeys(s.source_name if s.kind == "token_map" else n for n, s in specs.items()))

    @property
    def data_modalities(self) -> tuple[str, ...]:
        """What the data must hold: `input_data`, then the target (when the task has one)."""
        target = self.task.target_name
        return tuple(dict.fromkeys([*self.input_data, *([target] if target else [])]))

    @property
    def head_modalities(self) -> tuple[str, ...]:
        if self.head.modalities:
            return self.head.modalities
        image = DEFAULT_IMAGE_MODALITY
        return (image,) if image in self.task.inputs else self.task.inputs[:1]
