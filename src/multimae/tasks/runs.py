"""What a folder on disk is to us: a pre-training or fine-tuning run, or data; and the guards that
keep commands from writing over what the user already has.

A *run folder* holds a ``config.yaml``, ``checkpoint-*.pt`` files or an exported
``model.safetensors``. Its kind is told by its config: fine-tuning configs have a ``task`` section.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from multimae.engine.checkpoint import list_checkpoints
from multimae.errors import UserError, check_out_dir, check_out_file

KINDS = {"pretrain": "pre-training run", "finetune": "fine-tuning run", "fourm": "4M pre-training run"}
_COMMANDS = {"pretrain": "multimae pretrain / visualize", "finetune": "multimae finetune / evaluate",
             "fourm": "multimae pretrain --resume / predict"}


def config_kind(config: Mapping[str, Any]) -> str:
    """``"finetune"`` for a fine-tuning config (it has a ``task`` section), ``"fourm"`` for a 4M run
    (``family: 4m``), else ``"pretrain"``."""
    if "task" in config:
        return "finetune"
    return "fourm" if config.get("family") == "4m" else "pretrain"


def check_kind(where: str | Path, config: Mapping[str, Any], expected: str) -> None:
    """A ValueError saying what ``where`` is when its config is not of kind ``expected``."""
    check_run_kind(where, config_kind(config), expected)


def check_run_kind(where: str | Path, kind: str, expected: str) -> None:
    """A ValueError saying what ``where`` is when its kind is not ``expected``."""
    if kind != expected:
        raise ValueError(f"{where}: this is a {KINDS[kind]}, not a {KINDS[expected]} "
                         f"(use it with {_COMMANDS[kind]})")


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The plain contents of ``run_dir/config.yaml``."""
    data = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{run_dir / 'config.yaml'}: not a run config (a mapping)")
    return data


def is_run_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "config.yaml").exists() or (path / "model.safetensors").exists()
                              or bool(list_checkpoints(path)))


def check_output_folder(out: str | Path, inputs: Iterable[str | Path] = (), what: str = "--out") -> Path:
    """``out`` as a folder a command may write into, checked before any work: not a file, under a
    writable folder, not a run folder, and neither one of ``inputs`` (the files or folders the
    command reads) nor their folder: nothing the user has is written over. A subfolder of a run
    (``runs/x/pictures``) is fine."""
    out = check_out_dir(out, what)
    if not out.exists():
        return out
    if is_run_folder(out):
        raise UserError(f"{what} {out}: is a run folder; write the outputs to another folder")
    target = out.resolve()
    for item in inputs:
        path = Path(item).resolve()
        if target in (path, path.parent):
            raise UserError(f"{what} {out}: holds the input {item}; write the outputs to another folder "
                            f"(a command never writes where its inputs are)")
    return out


def check_output_file(path: str | Path, inputs: Iterable[str | Path] = (), what: str = "output",
                      suffixes: tuple[str, ...] = ()) -> Path:
    """``path`` as a file a command may write, checked before any work: its folder exists, it is not
    a folder (with ``suffixes``, it ends in one of them), and it is neither one of ``inputs`` nor an
    existing file of a run folder (a new file beside a run's, such as ``runs/x/eval.json``, is fine)."""
    path = check_out_file(path, what, suffixes)
    for item in inputs:
        if Path(item).resolve() == path.resolve():
            raise UserError(f"{what} {path}: is an input of this command; write it somewhere else")
    if path.exists() and is_run_folder(path.parent):
        raise UserError(f"{what} {path}: is a file of the run in {path.parent}; write it somewhere else")
    return path


# Keys a resume may change: how long to train, how often to log / validate / save / draw, and how
# to run (threads, device, processes, loader workers). Everything else (the model, the data, the
# masking, the optimiser, the loss, the seed, the precision) is what the checkpoint was trained
# with: changing it would not continue the run but start another one.
RESUMABLE_KEYS = (
    "train.steps", "train.log_every", "train.val_every", "train.ckpt_every", "train.keep_last", "train.vis_every",
    "train.num_val_batches", "train.threads", "train.device", "train.processes", "train.compile",
    "data.num_workers",
)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping) and data:
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: list(data) if isinstance(data, tuple) else data}


def check_resume_changes(where: str | Path, saved: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """A ValueError naming every key of ``new`` (plain config data) that differs from the run's
    ``saved`` config and may not change on a resume (see `RESUMABLE_KEYS`)."""
    old, now = _flatten(saved), _flatten(new)
    changed = sorted(k for k in {*old, *now} if old.get(k) != now.get(k)
                     and not any(k == r or k.startswith(r + ".") for r in RESUMABLE_KEYS))
    if changed:
        shown = ", ".join(f"{k} ({old.get(k)!r} in the run, {now.get(k)!r} asked)" for k in changed[:6])
        raise ValueError(f"{where}: a resume continues the run with its own config; cannot change {shown}"
                         f"{' ...' if len(changed) > 6 else ''}. Keys a resume may change: {', '.join(RESUMABLE_KEYS)}. "
                         "Start a new run (another train.name) to change the others.")


def check_resume(ckpt: Path, state: Mapping[str, Any], cfg: Any) -> None:
    """Refuse to continue checkpoint ``ckpt`` (its loaded ``state``) with the config dataclass
    ``cfg`` when a non-resumable key differs from the checkpoint's config, or when ``cfg`` asks
    for fewer steps than the checkpoint has done. Both configs are compared with defaults filled
    in, so fields added since the checkpoint was written do not count as changes."""
    from multimae.config.loader import build_dataclass, to_plain

    saved: Any = state.get("config") or {}
    try:
        saved = to_plain(build_dataclass(type(cfg), saved))
    except ValueError:
        pass  # compared as written
    check_resume_changes(ckpt, saved, to_plain(cfg))
    done = int(state.get("step", 0))
    if cfg.train.steps < done:
        raise ValueError(f"{ckpt}: train.steps={cfg.train.steps} but the run is already at step {done}; "
                         "a resume continues to a later step")


def resume_point(resume: str | Path) -> tuple[Path, Path | None]:
    """(run folder, checkpoint to continue from: the given file, the folder's latest, or None when
    the run was stopped before its first checkpoint). A missing path or a folder that is not a run
    is refused, naming it."""
    from multimae.engine.checkpoint import latest_checkpoint

    path = Path(resume)
    if not path.exists():
        raise ValueError(f"--resume {resume}: no such run folder or checkpoint file")
    if path.is_dir():
        if not is_run_folder(path) or not (path / "config.yaml").exists():
            raise ValueError(f"--resume {resume}: not a run folder (no config.yaml)")
        return path, latest_checkpoint(path)
    if not (path.parent / "config.yaml").exists():
        raise ValueError(f"--resume {resume}: {path.parent} has no config.yaml: not a run folder")
    return path.parent, path
