"""`multimae evaluate`: the metrics of a fine-tuned checkpoint on a split of its data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="metrics of a fine-tuned model on a data split (top-1/5, mIoU, delta1/abs-rel/RMSE, L1)",
        description="Evaluates a fine-tuned run (folder, checkpoint-*.pt or model.safetensors) on a split of its "
        "data (the built-in world's val or test scenes, or the split folder of folder data) and prints the "
        "metrics as JSON.",
    )
    parser.add_argument("--checkpoint", required=True, help="fine-tuning run folder, checkpoint-*.pt or model.safetensors")
    parser.add_argument("--split", default="val", help="data split [val]; the world also has test")
    parser.add_argument("--max-samples", type=int, help="evaluate on the first N samples only")
    parser.add_argument("--out", help="also write the metrics to this JSON file")
    parser.add_argument("--picture", help="dense tasks: write inputs / prediction / truth of 4 samples to this PNG")
    parser.add_argument("--trust", action="store_true", help="allow arbitrary pickled objects in the checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar while rendering world scenes")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from multimae.data.collate import batch_rows
    from multimae.engine.files import write_text_atomic
    from multimae.errors import check_positive, reading
    from multimae.tasks.finetune_data import eval_batches
    from multimae.tasks.finetune_job import make_task, save_prediction_picture
    from multimae.tasks.loading import load_finetuned
    from multimae.tasks.runs import check_output_file
    from multimae.tokenizers.run_files import run_tokenizers

    check_positive(args.max_samples, "--max-samples")
    for option, path in (("--out", args.out), ("--picture", args.picture)):
        if path:
            check_output_file(path, [args.checkpoint], option)
    try:
        with reading(args.checkpoint, "checkpoint"):
            model, cfg = load_finetuned(args.checkpoint, args.trust)
        batches = eval_batches(cfg, args.split, progress=not args.quiet, max_samples=args.max_samples)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    if not batches:
        raise SystemExit(f"error: split {args.split!r} holds no samples")
    try:
        task = make_task(cfg, model, run_tokenizers(args.checkpoint))
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    metrics = {"split": args.split, "samples": sum(len(next(iter(b.values()))) for b in batches),
               "task": cfg.task.kind, "inputs": list(cfg.task.inputs), **task.evaluate(batches)}
    text = json.dumps(metrics, indent=2)
    print(text)
    if args.out:
        write_text_atomic(Path(args.out), text + "\n")
    if args.picture:
        save_prediction_picture(task, cfg, batch_rows(batches[0], slice(0, 4)), Path(args.picture))
    return 0
