"""Load a trained MultiMAE (or a fine-tuned model) from a run folder, a checkpoint or exported
safetensors weights."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from safetensors.torch import load_file

from multimae.config import RunConfig, build_dataclass, load_config
from multimae.engine.checkpoint import latest_checkpoint
from multimae.model import MultiMAE

T = TypeVar("T")

if TYPE_CHECKING:
    from multimae.config.finetune import FinetuneConfig
    from multimae.model import FineTuneModel


def _read_run_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], Path | dict[str, Any]]:
    """(the state dict, the run's config: its ``config.yaml`` path or the checkpoint's config dict).

    ``path``: a run folder (its ``model.safetensors``, else its latest checkpoint), a
    ``checkpoint-*.pt`` file, or a ``.safetensors`` file with the run's ``config.yaml`` beside it.
    """
    path = Path(path)
    if path.is_dir():
        weights = path / "model.safetensors"
        path = weights if weights.exists() else (latest_checkpoint(path) or weights)
    if not path.exists():
        raise ValueError(f"{path}: no such checkpoint or weights file")
    if path.suffix == ".safetensors":
        config_file = path.parent / "config.yaml"
        if not config_file.exists():
            raise ValueError(f"{path}: weights need the run's config.yaml beside them")
        return load_file(str(path)), config_file
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{path}: not a multimae checkpoint (no 'model' and 'config' entries)")
    return ckpt["model"], ckpt["config"]


def _build_config(cls: type[T], source: Path | dict[str, Any]) -> T:
    return load_config(cls, source) if isinstance(source, Path) else build_dataclass(cls, source)


def load_pretrained(path: str | Path) -> tuple[MultiMAE, RunConfig]:
    """A pre-trained MultiMAE and its run config; ``path`` as in `_read_run_weights`."""
    state, source = _read_run_weights(path)
    cfg = _build_config(RunConfig, source)
    model = MultiMAE(cfg.model.build())
    model.load_state_dict(state, strict=True)
    return model.eval(), cfg


def load_finetuned(path: str | Path) -> tuple[FineTuneModel, FinetuneConfig]:
    """A fine-tuned model and its run config from a fine-tuning run folder (its ``model.safetensors``,
    else its latest checkpoint), a ``checkpoint-*.pt`` or a ``.safetensors`` file with the run's
    ``config.yaml`` beside it."""
    from multimae.config.finetune import FinetuneConfig
    from multimae.tasks.finetune_model import build_model

    state, source = _read_run_weights(path)
    if isinstance(source, dict) and "task" not in source:
        raise ValueError(f"{path}: a pre-training checkpoint, not a fine-tuned one")
    cfg = _build_config(FinetuneConfig, source)
    model = build_model(cfg)
    model.load_state_dict(state, strict=True)
    return model.eval(), cfg
