"""`multimae convert`: official MultiMAE / M3AE / timm / MAE checkpoints to ours, ours to timm."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert official MultiMAE, M3AE (JAX), timm or MAE checkpoints to ours, or ours to timm",
        description="Reads IN (official MultiMAE/MultiViT .pth, official M3AE / MAE-JAX .msgpack or model.pkl, "
        "timm or MAE ViT weights, or our run folder / weights), infers the architecture from the tensors and writes OUT: our self-contained .safetensors "
        "(--to multimae) or timm VisionTransformer weights of the RGB encoder (--to timm). Prints what was "
        "mapped, dropped and missing.",
    )
    parser.add_argument("src", metavar="IN", type=Path)
    parser.add_argument("dst", metavar="OUT", type=Path, help="a .safetensors file (or .pth for --to timm)")
    parser.add_argument("--from", dest="src_format", default="auto",
                        choices=("auto", "multimae", "official", "fourm", "timm", "m3ae"),
                        help="format of IN [auto: recognised from the suffix (.msgpack / .pkl: m3ae) and the key names]")
    parser.add_argument("--to", dest="dst_format", default="multimae", choices=("multimae", "timm"),
                        help="format of OUT [multimae]")
    parser.add_argument("--num-heads", type=int, help="encoder attention heads (not stored in weights; "
                        "default: the checkpoint's training arguments, else width / 64; m3ae: the official size of the width)")
    parser.add_argument("--decoder-num-heads", type=int, help="decoder attention heads (default: the checkpoint's "
                        "training arguments, else 8; m3ae: 16)")
    parser.add_argument("--head-reads", help="fine-tuned dense heads: comma-separated modalities whose tokens the "
                        "head reads (not stored in weights; default: the checkpoint's arguments, else rgb)")
    parser.add_argument("--dpt-hooks", help="fine-tuned DPT heads: the four encoder blocks read, e.g. 2,5,8,11 "
                        "(default: evenly spaced, the official 2,5,8,11 for 12 blocks)")
    parser.add_argument("--inputs", help="official checkpoints: the input modalities in their original order, "
                        "e.g. rgb,depth,semseg (needed only when the file's keys are sorted, as in safetensors; "
                        "default: the checkpoint's order, else rgb, depth, semseg, ...)")
    parser.add_argument("--trust", action="store_true",
                        help="allow arbitrary pickled objects in IN (trusted files only)")
    parser.add_argument("--report", type=Path, help="also write the full report (every key) as JSON here")
    parser.set_defaults(func=run)


def head_list(text: str | None) -> tuple[str, ...] | None:
    """``--head-reads rgb,depth`` -> ("rgb", "depth")."""
    return tuple(m for m in text.split(",") if m) if text else None


def hooks_list(text: str | None) -> tuple[int, ...] | None:
    """``--dpt-hooks 2,5,8,11`` -> (2, 5, 8, 11)."""
    if not text:
        return None
    try:
        return tuple(int(h) for h in text.split(","))
    except ValueError:
        raise ValueError(f"--dpt-hooks expects comma-separated block indices, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from multimae.convert import convert_file
    from multimae.errors import check_positive, reading
    from multimae.tasks.runs import check_output_file

    check_positive(args.num_heads, "--num-heads")
    check_positive(args.decoder_num_heads, "--decoder-num-heads")
    check_output_file(args.dst, [args.src], "OUT")
    if args.report:
        check_output_file(args.report, [args.src], "--report")
    try:
        with reading(args.src, "checkpoint"):
            report = convert_file(args.src, args.dst, src_format=args.src_format, dst_format=args.dst_format,
                                  num_heads=args.num_heads, decoder_num_heads=args.decoder_num_heads,
                                  head_modalities=head_list(args.head_reads), hooks=hooks_list(args.dpt_hooks),
                                  input_order=head_list(args.inputs), trusted=args.trust)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    print(report.summary())
    if args.report:
        args.report.write_text(json.dumps(report.to_dict(), indent=1))
    print(f"wrote {args.dst}")
    return 0
