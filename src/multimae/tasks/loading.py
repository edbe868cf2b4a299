"""Load a trained MultiMAE (or a fine-tuned model) from a run folder, a checkpoint or exported
safetensors weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file

from multimae.config import RunConfig, build_dataclass, load_config
from multimae.config.finetune import FinetuneConfig
from multimae.engine.checkpoint import latest_checkpoint, load_torch_file
from multimae.model import FineTuneModel, MultiMAE
from multimae.tasks.finetune_arch import build_model
from multimae.tasks.runs import check_kind, config_kind, read_run_config

T = TypeVar("T")


def _read_run_weights(path: str | Path, kind: str | None, trusted: bool = False
                      ) -> tuple[dict[str, torch.Tensor], Path | dict[str, Any]]:
    """(the state dict, the run's config: its ``config.yaml`` path or the checkpoint's config dict).

    ``path``: a run folder (its ``model.safetensors``, else its latest checkpoint), a
    ``checkpoint-*.pt`` file, or a ``.safetensors`` file with the run's ``config.yaml`` beside it.
    ``kind``: ``pretrain`` or ``finetune``, the run kind expected (another is refused, saying what it
    is), or None for either. Checkpoints are read safely (see `load_torch_file`) unless ``trusted``.
    """
    path = Path(path)
    if kind is not None and path.is_dir() and (path / "config.yaml").exists():
        check_kind(path, read_run_config(path), kind)
    if path.is_dir():
        weights = path / "model.safetensors"
        path = weights if weights.exists() else (latest_checkpoint(path) or weights)
    if not path.exists():
        raise ValueError(f"{path}: no such checkpoint or weights file")
    if path.suffix == ".safetensors":
        config_file = path.parent / "config.yaml"
        if not config_file.exists():
            raise ValueError(f"{path}: weights need the run's config.yaml beside them")
        if kind is not None:
            check_kind(path, read_run_config(path.parent), kind)
        return load_file(str(path)), config_file
    ckpt = load_torch_file(path, trusted)
    if not isinstance(ckpt, dict) or "model" not in ckpt or not isinstance(ckpt.get("config"), dict):
        raise ValueError(f"{path}: not a multimae checkpoint (no 'model' and 'config' entries)")
    if kind is not None:
        check_kind(path, ckpt["config"], kind)
    return ckpt["model"], ckpt["config"]


def _build_config(cls: type[T], source: Path | dict[str, Any]) -> T:
    return load_config(cls, source) if isinstance(source, Path) else build_dataclass(cls, source)


def load_pretrained(path: str | Path, trusted: bool = False) -> tuple[MultiMAE, RunConfig]:
    """A pre-trained MultiMAE and its run config; ``path`` and ``trusted`` as in `_read_run_weights`."""
    return _pretrained(*_read_run_weights(path, "pretrain", trusted))


def load_run_model(path: str | Path, trusted: bool = False) -> MultiMAE | FineTuneModel:
    """The model of a run of either kind (told apart by its config); ``path`` as in `_read_run_weights`."""
    state, source = _read_run_weights(path, None, trusted)
    config = read_run_config(source.parent) if isinstance(source, Path) else source
    return (_finetuned if config_kind(config) == "finetune" else _pretrained)(state, source)[0]


def _pretrained(state: dict[str, torch.Tensor], source: Path | dict[str, Any]) -> tuple[MultiMAE, RunConfig]:
    cfg = _build_config(RunConfig, source)
    model = MultiMAE(cfg.model.build())
    model.load_state_dict(state, strict=True)
    return model.eval(), cfg


def load_finetuned(path: str | Path, trusted: bool = False) -> tuple[FineTuneModel, FinetuneConfig]:
    """A fine-tuned model and its run config from a fine-tuning run folder (its ``model.safetensors``,
    else its latest checkpoint), a ``checkpoint-*.pt`` or a ``.safetensors`` file with the run's
    ``config.yaml`` beside it."""
    return _finetuned(*_read_run_weights(path, "finetune", trusted))


def _finetuned(state: dict[str, torch.Tensor], source: Path | dict[str, Any]) -> tuple[FineTuneModel, FinetuneConfig]:
    cfg = _build_config(FinetuneConfig, source)
    model = build_model(cfg)
    model.load_state_dict(state, strict=True)
    return model.eval(), cfg
