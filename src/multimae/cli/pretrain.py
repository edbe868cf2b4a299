"""`multimae pretrain`: pre-train a MultiMAE (default: a tiny one on the built-in world)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="pre-train a MultiMAE (default: tiny model on the built-in world, ~10 min on 2 cores)",
        description="Pre-train a MultiMAE. Settings come from a preset or YAML file plus key=value "
        "overrides, e.g. `multimae pretrain --config cpu train.steps=500 optim.lr=5e-4`.",
    )
    parser.add_argument("--config", default="cpu", help="preset name (cpu, paper-vitb) or YAML file [cpu]")
    parser.add_argument("--resume", metavar="RUN", help="continue a run: its folder (latest checkpoint) or a checkpoint file")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from multimae.config import RunConfig, load_config, to_yaml
    from multimae.configs import preset_path

    if args.resume:
        resume = Path(args.resume)
        run_dir = resume if resume.is_dir() else resume.parent
        if not (run_dir / "config.yaml").exists():
            raise SystemExit(f"error: {run_dir} has no config.yaml: not a run folder")
        cfg = load_config(RunConfig, run_dir / "config.yaml", args.overrides)
    else:
        try:
            cfg = load_config(RunConfig, preset_path(args.config), args.overrides)
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    from multimae.engine.trainer import DivergenceError
    from multimae.tasks.pretrain_job import run_pretraining

    try:
        run_pretraining(cfg, args.resume, progress=not args.quiet)
    except DivergenceError as err:
        print(f"error: {err}")
        return 1
    return 0
