"""`multimae finetune`: fine-tune an encoder with a task head on any subset of its inputs."""

from __future__ import annotations

import argparse

from multimae.cli.training import add_run_arguments, launch, resolve_run_config
from multimae.config.finetune import TASK_KINDS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune for classification, segmentation, depth or dense regression (default: on the built-in world)",
        description="Fine-tune a pre-trained MultiMAE or 4M encoder (or a timm ViT, or from scratch) with a task head. "
        "A 4M encoder reads rgb / depth / ... as token maps of the 4M run's tokenizers (kept in the run). Settings "
        "come from a preset or YAML file plus key=value overrides, e.g. `multimae finetune --task segmentation "
        "--inputs rgb,depth --checkpoint runs/pretrain-x optim.lr=5e-4`.",
    )
    parser.add_argument("--task", choices=TASK_KINDS,
                        help="task kind (sets task.kind)")
    parser.add_argument("--inputs", help="comma-separated input modalities, e.g. rgb,depth (sets task.inputs)")
    parser.add_argument("--checkpoint", help="initial weights: multimae or 4M run folder / checkpoint-*.pt / .safetensors, "
                        "a timm ViT weights file, timm:<model name>, or 'scratch' (sets init.checkpoint)")
    add_run_arguments(parser, "finetune-cpu", "finetune-cpu")
    parser.set_defaults(func=run)


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """The shortcut flags as dotted overrides (given before the explicit ones, which win)."""
    out = []
    if args.task:
        out.append(f"task.kind={args.task}")
    if args.inputs:
        out.append(f"task.inputs=[{args.inputs}]")
    if args.checkpoint:
        out.append("init.checkpoint=null" if args.checkpoint == "scratch" else f"init.checkpoint='{args.checkpoint}'")
    return out


def run(args: argparse.Namespace) -> int:
    from multimae.config import FinetuneConfig
    from multimae.tasks.finetune_job import run_finetuning

    cfg = resolve_run_config(FinetuneConfig, args, [*flag_overrides(args), *args.overrides])
    return launch(run_finetuning, cfg, args)
