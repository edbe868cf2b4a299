"""`multimae pretrain`: pre-train a MultiMAE (default: a tiny one on the built-in world)."""

from __future__ import annotations

import argparse

from multimae.cli.training import add_run_arguments, launch, resolve_run_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="pre-train a MultiMAE (default: tiny model on the built-in world, ~10 min on 2 cores)",
        description="Pre-train a MultiMAE. Settings come from a preset or YAML file plus key=value "
        "overrides, e.g. `multimae pretrain --config cpu train.steps=500 optim.lr=5e-4`.",
    )
    add_run_arguments(parser, "cpu", "cpu, cpu-long, paper-vitb, m3ae-cpu")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from multimae.config import RunConfig
    from multimae.tasks.pretrain_job import run_pretraining

    return launch(run_pretraining, resolve_run_config(RunConfig, args, args.overrides), args)
