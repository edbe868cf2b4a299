"""Load a trained MultiMAE from a run folder, a checkpoint or exported safetensors weights."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from multimae.config import RunConfig, build_dataclass, load_config
from multimae.engine.checkpoint import latest_checkpoint
from multimae.model import MultiMAE


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
