"""Checkpoints: written atomically, the last K kept, the newest complete one found on resume.

A checkpoint is written to a temporary name in the same folder and renamed into place, so a
crash mid-write never leaves a truncated ``checkpoint-<step>.pt``: only renamed files count.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

_NAME = re.compile(r"^checkpoint-(\d{8})\.pt$")


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / f"checkpoint-{step:08d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints in ``run_dir``, oldest first."""
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(state: dict[str, Any], run_dir: Path, step: int, keep_last: int) -> Path:
    """Write ``state`` as the checkpoint of ``step`` and delete all but the newest ``keep_last``."""
    path = checkpoint_path(run_dir, step)
    save_atomic(state, path)
    for old in list_checkpoints(run_dir)[: -max(1, keep_last)]:
        old.unlink()
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def export_safetensors(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """The model's weights (state-dict key names) as a safetensors file, written atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
