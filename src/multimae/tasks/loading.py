"""Load a trained MultiMAE (or a fine-tuned model) from a run folder, a checkpoint or exported
safetensors weights."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file

from multimae.config import RunConfig, build_dataclass, load_config
from multimae.engine.checkpoint import latest_checkpoint
from multimae.model import MultiMAE

if TYPE_CHECKING:
    from multimae.config.finetune import FinetuneConfig
    from multimae.model import FineTuneModel


def load_pretrained(path: str | Path) -> tuple[MultiMAE, RunConfig]:
    """``path``: a run folder (its ``model.safetensors``, else its latest checkpoint), a
    ``checkpoint-*.pt`` file, or a ``.safetensors`` file with ``config.yaml`` beside it."""
    path = Path(path)
    if path.is_dir():
        weights = path / "model.safetensors"
        path = weights if weights.exists() else (latest_checkpoint(path) or path / "model.safetensors")
    if not path.exists():
        raise ValueError(f"{path}: no such checkpoint or weights file")
    if path.suffix == ".safetensors":
        config_file = path.parent / "config.yaml"
        if not config_file.exists():
            raise ValueError(f"{path}: weights need the run's config.yaml beside them")
        cfg = load_config(RunConfig, config_file)
        state = load_file(str(path))
    else:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if "model" not in ckpt or "config" not in ckpt:
            raise ValueError(f"{path}: not a multimae checkpoint (no 'model' and 'config' entries)")
        cfg = build_dataclass(RunConfig, ckpt["config"])
        state = ckpt["model"]
    model = MultiMAE(cfg.model.build())
    model.load_state_dict(state, strict=True)
    return model.eval(), cfg


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file, or of a ``.pt`` / ``.pth`` file (its ``model`` or
    ``state_dict`` entry when it has one)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_file(str(path))
    obj = torch.load(path, map_location="cpu", weights_only=False)
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a state dict")
    return obj


def load_finetuned(path: str | Path) -> tuple[FineTuneModel, FinetuneConfig]:
    """A fine-tuned model and its run config from a fine-tuning run folder (its ``model.safetensors``,
    else its latest checkpoint), a ``checkpoint-*.pt`` or a ``.safetensors`` file with the run's
    ``config.yaml`` beside it."""
    from multimae.config.finetune import FinetuneConfig
    from multimae.tasks.finetune_model import build_model

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
        cfg = load_config(FinetuneConfig, config_file)
        state = load_file(str(path))
    else:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if "model" not in ckpt or "config" not in ckpt:
            raise ValueError(f"{path}: not a multimae checkpoint (no 'model' and 'config' entries)")
        if "task" not in ckpt["config"]:
            raise ValueError(f"{path}: a pre-training checkpoint, not a fine-tuned one")
        cfg = build_dataclass(FinetuneConfig, ckpt["config"])
        state = ckpt["model"]
    model = build_model(cfg)
    model.load_state_dict(state, strict=True)
    return model.eval(), cfg
