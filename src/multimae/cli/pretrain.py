"""`multimae pretrain`: pre-train a MultiMAE (default: a tiny one on the built-in world), an M3AE, or
a 4M (a preset or run whose config says ``family: 4m``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from multimae.cli.training import add_run_arguments, launch, resolve_run_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="pre-train a MultiMAE (default: tiny model on the built-in world, ~10 min on 2 cores), M3AE or 4M",
        description="Pre-train a MultiMAE, M3AE or 4M. Settings come from a preset or YAML file plus key=value "
        "overrides, e.g. `multimae pretrain --config cpu train.steps=500 optim.lr=5e-4`.",
    )
    add_run_arguments(parser, "cpu", "cpu, cpu-long, paper-vitb, m3ae-cpu, 4m-cpu, 4m-b")
    parser.set_defaults(func=run)


def family(args: argparse.Namespace) -> str | None:
    """The ``family`` the run's config names (``4m``), None for MultiMAE / M3AE configs."""
    from multimae.config.loader import read_yaml
    from multimae.configs import preset_path

    path = Path(args.resume) if args.resume else None
    if path is not None:
        folder = path if path.is_dir() else path.parent
        data = read_yaml(folder / "config.yaml") if (folder / "config.yaml").is_file() else {}
    else:
        data = read_yaml(Path(preset_path(args.config or args.default_preset)))
    return data.get("family")


def run(args: argparse.Namespace) -> int:
    from multimae.config import RunConfig

    try:
        kind = family(args)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    if kind == "4m":
        from multimae.config.fourm import FourMRunConfig
        from multimae.tasks.fourm_job import run_fourm_pretraining

        return launch(run_fourm_pretraining, resolve_run_config(FourMRunConfig, args, args.overrides), args)
    from multimae.tasks.pretrain_job import run_pretraining

    return launch(run_pretraining, resolve_run_config(RunConfig, args, args.overrides), args)



