"""Run configuration: typed sections, YAML presets and dotted command-line overrides."""

from multimae.config.finetune import FinetuneConfig
from multimae.config.loader import apply_overrides, build_dataclass, load_config, to_yaml
from multimae.config.schema import (
    DataConfig, LossConfig, MaskingComponent, MaskingConfig, OptimConfig, RunConfig, TrainConfig,
)

__all__ = [
    "DataConfig", "FinetuneConfig", "LossConfig", "MaskingComponent", "MaskingConfig", "OptimConfig", "RunConfig",
    "TrainConfig",
    "apply_overrides", "build_dataclass", "load_config", "to_yaml",
]
