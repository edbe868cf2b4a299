"""Checkpoints: written atomically, the last K kept, the newest complete one found on resume.

A checkpoint is written to a temporary name in the same folder and renamed into place, so a
crash mid-write never leaves a truncated ``checkpoint-<step>.pt``: only renamed files count.

`load_torch_file` is the one place a pickled (``torch.save``) file is read: with
``torch.load(weights_only=True)``, which builds tensors and plain data (dicts, lists, tuples,
numbers, strings) and runs no code. Our checkpoints hold nothing else; a file that needs more
(an old or a foreign one) is refused unless the user trusts it (``trusted=True``, CLI ``--trust``).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from multimae.engine.files import atomic_path, save_atomic

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


def save_checkpoint(state: dict[str, Any], run_dir: Path, step: int, keep_last: int) -> Path:
    """Write ``state`` as the checkpoint of ``step`` and delete all but the newest ``keep_last``."""
    path = checkpoint_path(run_dir, step)
    save_atomic(state, path)
    for old in list_checkpoints(run_dir)[: -max(1, keep_last)]:
        old.unlink()
    return path


def load_torch_file(path: str | Path, trusted: bool = False, allowed: Sequence[type] = ()) -> Any:
    """The contents of a ``torch.save`` file, read safely: tensors and plain data only (plus the
    classes in ``allowed``); ``trusted=True`` unpickles anything (only for files you trust)."""
    if trusted:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        named = re.search(r"GLOBAL (\S+)", str(err))
        found = named.group(1) if named else str(err).strip().splitlines()[0][:200]
        raise ValueError(
            f"{path}: holds Python objects beyond tensors and plain data ({found}), which safe loading refuses "
            "(unpickling them could run code); nothing was run. If you trust the file, pass --trust "
            "(API: trusted=True)."
        ) from None


def load_checkpoint(path: Path, trusted: bool = False) -> dict[str, Any]:
    """A training checkpoint (see `load_torch_file`)."""
    state = load_torch_file(path, trusted)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path}: not a multimae training checkpoint")
    return state


def export_safetensors(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """The model's weights (state-dict key names) as a safetensors file, written atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
