"""Checkpoints of a ``train.parallel=fsdp`` run: the sharded state in a `torch.distributed.checkpoint`
(DCP) folder, the whole model in the usual ``checkpoint-<step>.pt``.

A checkpoint at step k is two things in the run folder:

* ``checkpoint-<k>.dcp/``: the model and the optimizer state as
  `torch.distributed.checkpoint.state_dict.get_state_dict` gives them (every rank writes its own
  shards, ``__<rank>_0.distcp``, rank 0 the ``.metadata``). Keyed by state-dict names, not by
  rank, so it loads into any number of processes (DCP reshards), one included. Written as
  ``checkpoint-<k>.dcp.tmp/`` and renamed when every rank has finished, so a crash mid-save leaves
  only a ``.tmp`` folder, which nothing reads and the next save removes.
* ``checkpoint-<k>.pt``: what a DDP run's checkpoint holds (the whole model gathered to rank 0, its
  description, scaler, step, stream, RNG, config), except the optimizer, with ``sharded`` naming the
  DCP folder. It is written after the folder is complete, and only a ``.pt`` makes a checkpoint:
  every reader (predict, convert, finetune, resume) finds it as it finds a DDP run's.

`prune_sharded` keeps the DCP folders of the checkpoints `keep_last` kept and deletes the others.
The folders must be on a file system every rank writes to (one machine, or a shared one).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.optim import Optimizer

from multimae.engine.fsdp import is_sharded
from multimae.model.state_keys import checkpoint_names

__all__ = ["full_model_state", "list_sharded", "load_sharded", "prune_sharded", "save_sharded", "sharded_path",
           "sharded_state"]

_NAME = re.compile(r"^checkpoint-(\d{8})\.dcp$")
_TMP = re.compile(r"^checkpoint-(\d{8})\.dcp\.tmp$")


def sharded_path(run_dir: Path, step: int) -> Path:
    return run_dir / f"checkpoint-{step:08d}.dcp"


def list_sharded(run_dir: Path) -> list[Path]:
    """Complete DCP folders in ``run_dir``, oldest first (``.tmp`` ones are not complete)."""
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def _optimizer_by_state_keys(model: nn.Module, state: dict[str, Any]) -> dict[str, Any]:
    """``state`` (`get_state_dict`'s optimizer state) keyed by the model's state-dict names.

    torch names the optimizer state by module path (``backbone.encoder.0...``) but, loading, looks
    it up by state-dict name (``encoder.0...``, where the model lists a child's entries without its
    prefix: `multimae.model.state_keys`); renamed here, both sides use the state-dict names."""
    names = checkpoint_names(model)
    rename = {path: names.get(id(p), path) for path, p in model.named_parameters()}
    return {
        "state": {rename.get(k, k): v for k, v in state["state"].items()},
        "param_groups": [{**g, "params": [rename.get(k, k) for k in g["params"]]} for g in state["param_groups"]],
    }


def sharded_state(model: nn.Module, optimizer: Optimizer) -> dict[str, Any]:
    """``{"model": ..., "optimizer": ...}``: this rank's shards (DTensors) of a sharded model, the
    whole tensors of one that is not; every rank calls it. An optimizer that has not stepped gets
    its state made (a step at lr 0), so the result is also a template to load into."""
    model_state, optim_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optimizer": _optimizer_by_state_keys(model, optim_state)}


def _grouped() -> bool:
    return dist.is_available() and dist.is_initialized()


def _barrier() -> None:
    if _grouped():
        dist.barrier()


def _is_main() -> bool:
    return not _grouped() or dist.get_rank() == 0


@contextlib.contextmanager
def _one_process_quietly() -> Iterator[None]:
    """DCP warns on every save and load without a process group, even when told so (``no_dist``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        yield


def save_sharded(model: nn.Module, optimizer: Optimizer, run_dir: Path, step: int) -> Path:
    """Write ``checkpoint-<step>.dcp`` (every rank calls it; see the module docstring); returns it."""
    path = sharded_path(run_dir, step)
    tmp = path.with_name(f"{path.name}.tmp")
    if _is_main():
        if tmp.exists():
            shutil.rmtree(tmp)  # left by a crash
        tmp.mkdir(parents=True)
    _barrier()
    with _one_process_quietly():
        dcp.save(sharded_state(model, optimizer), checkpoint_id=tmp, no_dist=not _grouped())
    _barrier()  # every rank's shards are written
    if _is_main():
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    _barrier()
    return path


def load_sharded(model: nn.Module, optimizer: Optimizer, path: Path) -> None:
    """Load ``path`` (a DCP folder of `save_sharded`) into ``model`` and ``optimizer``, sharded or
    not, with any number of processes (every rank calls it)."""
    if not (path / ".metadata").is_file():
        raise ValueError(f"{path}: the sharded model and optimizer state this checkpoint names is missing or "
                         "incomplete")
    state = sharded_state(model, optimizer)
    with _one_process_quietly():
        dcp.load(state, checkpoint_id=path, no_dist=not _grouped())
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def full_model_state(model: nn.Module) -> dict[str, Tensor]:
    """The model's whole state dict (state-dict names, as an unsharded model gives it): for a
    sharded model gathered to rank 0 on the CPU (every rank calls it; the others get ``{}``), else
    ``model.state_dict()``."""
    if not is_sharded(model):
        return model.state_dict()
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def prune_sharded(run_dir: Path, keep_steps: set[int]) -> None:
    """Delete the DCP folders whose step is not in ``keep_steps`` and any ``.tmp`` one (call it
    between saves: a ``.tmp`` folder then is a crashed save's)."""
    for p in run_dir.iterdir() if run_dir.is_dir() else ():
        m = _NAME.match(p.name)
        if (m and int(m.group(1)) not in keep_steps) or _TMP.match(p.name):
            shutil.rmtree(p)
