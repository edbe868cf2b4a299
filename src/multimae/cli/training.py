"""What `multimae pretrain` and `multimae finetune` share: the run arguments, the resolved config
(preset or YAML plus overrides, or a run's own config when resuming) and the guarded launch."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def add_run_arguments(parser: argparse.ArgumentParser, default_preset: str, presets: str) -> None:
    parser.add_argument("--config", default=default_preset, help=f"preset name ({presets}) or YAML file [{default_preset}]")
    parser.add_argument("--resume", metavar="RUN", help="continue a run: its folder (latest checkpoint) or a checkpoint file")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")


def resolve_run_config(cls: type[T], args: argparse.Namespace, overrides: Sequence[str]) -> T:
    """``args.config`` plus ``overrides``; with ``--resume``, the run's own ``config.yaml`` instead.
    A bad key or value ends the command with a message naming it."""
    from multimae.config import load_config
    from multimae.configs import preset_path

    try:
        if args.resume:
            resume = Path(args.resume)
            run_dir = resume if resume.is_dir() else resume.parent
            if not (run_dir / "config.yaml").exists():
                raise ValueError(f"{run_dir} has no config.yaml: not a run folder")
            return load_config(cls, run_dir / "config.yaml", overrides)
        return load_config(cls, preset_path(args.config), overrides)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None


def launch(job: Callable[..., Any], cfg: Any, args: argparse.Namespace) -> int:
    """Print the config (``--print-config``) or run ``job(cfg, resume, progress=...)``, in
    ``cfg.train.processes`` local processes when more than one: a diverged run returns 1, a
    configuration error ends the command with its message."""
    from multimae.config import to_yaml
    from multimae.engine.trainer import DivergenceError

    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    if cfg.train.processes > 1 and "WORLD_SIZE" not in os.environ:
        return _launch_group(job, cfg, args)
    try:
        job(cfg, args.resume, progress=not args.quiet)
    except DivergenceError as err:
        print(f"error: {err}")
        return 1
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    return 0


def _launch_group(job: Callable[..., Any], cfg: Any, args: argparse.Namespace) -> int:
    from torch.multiprocessing import ProcessExitedException

    from multimae.engine.distributed import spawn_local

    try:
        spawn_local(cfg.train.processes, _group_member, job, cfg, args.resume, not args.quiet)
    except ProcessExitedException as err:
        return err.exit_code or 1
    return 0


def _group_member(job: Callable[..., Any], cfg: Any, resume: str | None, progress: bool) -> None:
    """One process of `_launch_group`: as `launch`, with its failures as exit statuses (rank 0
    says why)."""
    from multimae.engine.trainer import DivergenceError

    try:
        job(cfg, resume, progress=progress)
    except (DivergenceError, ValueError) as err:
        if os.environ.get("RANK") == "0":
            print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
