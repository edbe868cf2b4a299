"""`multimae finetune`: fine-tune an encoder with a task head on any subset of its inputs."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune for classification, segmentation, depth or dense regression (default: on the built-in world)",
        description="Fine-tune a pre-trained MultiMAE (or a timm ViT, or from scratch) with a task head. Settings "
        "come from a preset or YAML file plus key=value overrides, e.g. `multimae finetune --task segmentation "
        "--inputs rgb,depth --checkpoint runs/pretrain-x optim.lr=5e-4`.",
    )
    parser.add_argument("--config", default="finetune-cpu", help="preset name or YAML file [finetune-cpu]")
    parser.add_argument("--task", choices=("classification", "segmentation", "depth", "regression"),
                        help="task kind (sets task.kind)")
    parser.add_argument("--inputs", help="comma-separated input modalities, e.g. rgb,depth (sets task.inputs)")
    parser.add_argument("--checkpoint", help="initial weights: multimae run folder / checkpoint-*.pt / .safetensors, "
                        "a timm ViT weights file, timm:<model name>, or 'scratch' (sets init.checkpoint)")
    parser.add_argument("--resume", metavar="RUN", help="continue a run: its folder (latest checkpoint) or a checkpoint file")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
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
    from multimae.config import FinetuneConfig, load_config, to_yaml
    from multimae.configs import preset_path

    overrides = [*flag_overrides(args), *args.overrides]
    try:
        if args.resume:
            resume = Path(args.resume)
            run_dir = resume if resume.is_dir() else resume.parent
            if not (run_dir / "config.yaml").exists():
                raise ValueError(f"{run_dir} has no config.yaml: not a run folder")
            cfg = load_config(FinetuneConfig, run_dir / "config.yaml", overrides)
        else:
            cfg = load_config(FinetuneConfig, preset_path(args.config), overrides)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    from multimae.engine.trainer import DivergenceError
    from multimae.tasks.finetune_job import run_finetuning

    try:
        run_finetuning(cfg, args.resume, progress=not args.quiet)
    except DivergenceError as err:
        print(f"error: {err}")
        return 1
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    return 0
