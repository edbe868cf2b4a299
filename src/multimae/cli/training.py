"""What `multimae pretrain` and `multimae finetune` share: the run arguments, the resolved config
(preset or YAML plus overrides, or a run's own config when resuming) and the guarded launch."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def add_run_arguments(parser: argparse.ArgumentParser, default_preset: str, presets: str) -> None:
    parser.add_argument("--config", help=f"preset name ({presets}) or YAML file [{default_preset}]")
    parser.add_argument("--resume", metavar="RUN", help="continue a run: its folder (latest checkpoint) or a checkpoint "
                        "file, with its own config; overrides may change only steps, logging, checkpoint cadence "
                        "and how it runs")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing run of the same name (default: refuse a non-empty run folder)")
    parser.add_argument("--trust", action="store_true",
                        help="allow arbitrary pickled objects in checkpoints read (trusted files only)")
    parser.set_defaults(default_preset=default_preset)
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")


def resolve_run_config(cls: type[T], args: argparse.Namespace, overrides: Sequence[str]) -> T:
    """``args.config`` plus ``overrides``; with ``--resume``, the run's own ``config.yaml`` instead,
    where overrides may change only `RESUMABLE_KEYS` (checked here, before anything is written).
    A bad key or value ends the command with a message naming it."""
    from multimae.config.loader import load_config
    from multimae.configs import preset_path

    try:
        if args.resume:
            return _resume_config(cls, args, overrides)
        return load_config(cls, preset_path(args.config or args.default_preset), overrides)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None


def _resume_config(cls: type[T], args: argparse.Namespace, overrides: Sequence[str]) -> T:
    from multimae.config.loader import load_config, to_plain
    from multimae.tasks.runs import (
        check_kind, check_resume_changes, config_kind, read_run_config, resume_point,
    )

    if args.config:
        raise ValueError(f"--resume continues {args.resume} with its own config.yaml: --config {args.config} cannot "
                         "be combined with it (give the keys that may change as overrides)")
    run_dir, _ = resume_point(args.resume)
    expected = config_kind({f.name: f.default if f.name == "family" else None for f in dataclasses.fields(cls)})  # type: ignore[arg-type]
    check_kind(run_dir, read_run_config(run_dir), expected)
    saved = to_plain(load_config(cls, run_dir / "config.yaml"))  # defaults filled in, as in the overridden one
    cfg = load_config(cls, run_dir / "config.yaml", overrides)
    check_resume_changes(run_dir, saved, to_plain(cfg))  # the checkpoint itself is checked when it is read
    return cfg


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
        job(cfg, args.resume, progress=not args.quiet, trusted=args.trust, overwrite=args.overwrite)
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
        spawn_local(cfg.train.processes, _group_member, job, cfg, args.resume, not args.quiet, args.trust,
                    args.overwrite)
    except ProcessExitedException as err:
        return err.exit_code or 1
    return 0


def _group_member(job: Callable[..., Any], cfg: Any, resume: str | None, progress: bool, trusted: bool,
                  overwrite: bool) -> None:
    """One process of `_launch_group`: as `launch`, with its failures as exit statuses (rank 0
    says why)."""
    from multimae.engine.trainer import DivergenceError

    try:
        job(cfg, resume, progress=progress, trusted=trusted, overwrite=overwrite)
    except (DivergenceError, ValueError) as err:
        if os.environ.get("RANK") == "0":
            print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
