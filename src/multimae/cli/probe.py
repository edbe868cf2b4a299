"""`multimae probe`: linear-probe accuracy of a checkpoint's frozen encoder on the built-in world."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "probe",
        help="linear-probe accuracy of a frozen encoder (scene label, object count, colour of the largest object)",
        description="Fits a linear classifier (BatchNorm without affine + linear, SGD with momentum) on the "
        "frozen encoder's features of the built-in world's train scenes and scores it on its val scenes, "
        "for each target; the same probe on a randomly initialised encoder of the same architecture and "
        "the most-frequent-class accuracy are printed beside it, as JSON.",
    )
    parser.add_argument("--checkpoint", required=True, help="run folder, checkpoint-*.pt, model.safetensors or "
                        "any file `multimae convert` reads")
    parser.add_argument("--target", default="label,objects,color",
                        help="comma-separated facts to probe [label,objects,color]")
    parser.add_argument("--train-scenes", type=int, default=2000, help="train-split scenes the probe is fitted on [2000]")
    parser.add_argument("--val-scenes", type=int, default=500, help="val-split scenes it is scored on [500]")
    parser.add_argument("--pooling", default="global", choices=("global", "mean"),
                        help="feature: the last global token, or the mean of the patch tokens [global]")
    parser.add_argument("--epochs", type=int, default=90, help="probe training epochs [90]")
    parser.add_argument("--lr", type=float, default=0.1, help="probe peak learning rate (cosine) [0.1]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-baseline", action="store_true", help="skip the randomly initialised encoder")
    parser.add_argument("--out", help="also write the result to this JSON file")
    parser.add_argument("--trust", action="store_true", help="allow arbitrary pickled objects in the checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar while rendering scenes")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from multimae.data.world import FACTS
    from multimae.engine.files import write_text_atomic
    from multimae.errors import check_positive, reading
    from multimae.inference.load import load_model
    from multimae.model.encoder import encoder_of
    from multimae.tasks.probe import ProbeSettings, majority_accuracy, probe_encoder, random_encoder_like, world_probe_data
    from multimae.tasks.runs import check_output_file

    if args.out:
        check_output_file(args.out, [args.checkpoint], "--out")
    check_positive(args.train_scenes, "--train-scenes")
    check_positive(args.val_scenes, "--val-scenes")
    check_positive(args.epochs, "--epochs")
    targets = [t.strip() for t in args.target.split(",") if t.strip()]
    unknown = [t for t in targets if t not in FACTS]
    if not targets or unknown:
        raise SystemExit(f"error: --target {args.target!r}: known targets are {', '.join(FACTS)}")
    try:
        settings = ProbeSettings(epochs=args.epochs, lr=args.lr, pooling=args.pooling, seed=args.seed)
        with reading(args.checkpoint, "checkpoint"):
            model = load_model(args.checkpoint, trusted=args.trust)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    size = encoder_of(model).config.image_size
    with tqdm(total=args.train_scenes + args.val_scenes, desc="rendering scenes", disable=args.quiet) as bar:
        train = world_probe_data("train", args.train_scenes, size, bar.update)
        val = world_probe_data("val", args.val_scenes, size, bar.update)
    result: dict = {"checkpoint": str(args.checkpoint), "train_scenes": args.train_scenes, "val_scenes": args.val_scenes,
                    "pooling": args.pooling, "optimizer": "SGD momentum 0.9, cosine, no weight decay",
                    "encoder": probe_encoder(model, train, val, FACTS, targets, settings)}
    if not args.no_baseline:
        fresh = random_encoder_like(model, args.seed)
        result["random_encoder"] = probe_encoder(fresh, train, val, FACTS, targets, settings)
    result["most_frequent_class"] = {t: majority_accuracy(train[1][t], val[1][t]) for t in targets}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        write_text_atomic(Path(args.out), text + "\n")
    return 0
