"""`multimae tokenizer train`: a WordPiece tokenizer trained on the captions of a data source,
saved as ``DIR/tokenizer.json`` (what a run or checkpoint carries), with the truncation count a
given ``--max-length`` would have."""

from __future__ import annotations

import argparse
from pathlib import Path

from multimae.modalities.registry import DEFAULT_TEXT_MODALITY


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tokenizer", help="train a caption tokenizer on a data source")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = actions.add_parser("train", help="train a WordPiece tokenizer on the captions of --data")
    train.add_argument("--data", type=Path, required=True,
                       help="a folder-layout root, tar shards (a .tar or a folder of them), a .jsonl of image-caption "
                            "pairs, a .txt with one caption per line, or a folder of .txt files")
    train.add_argument("--modality", default=DEFAULT_TEXT_MODALITY,
                       help=f"the text modality to read [{DEFAULT_TEXT_MODALITY}]")
    train.add_argument("--split", default="train", help="split of a folder-layout root [train]")
    train.add_argument("--vocab-size", type=int, default=1000, help="vocabulary size at most [1000]")
    train.add_argument("--min-frequency", type=int, default=1, help="least count of a merged piece [1]")
    train.add_argument("--max-length", type=int, default=None,
                       help="report how many captions are longer than this many tokens (truncated in training)")
    train.add_argument("--out", type=Path, required=True, help="folder to write tokenizer.json into")
    train.add_argument("--skip-bad", action="store_true", help="skip (and count) empty, non-UTF-8 or over-long captions")
    train.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from multimae.data.text_sources import read_captions
    from multimae.errors import UserError, check_out_dir, check_positive
    from multimae.text import TextTokenizer

    check_positive(args.vocab_size, "--vocab-size")
    check_positive(args.min_frequency, "--min-frequency")
    check_positive(args.max_length, "--max-length")
    check_out_dir(args.out, "--out")
    try:
        captions = read_captions(args.data, args.modality, args.split, "skip" if args.skip_bad else "raise")
        tokenizer = TextTokenizer.train(captions.texts, args.vocab_size, args.min_frequency)
    except ValueError as err:
        raise UserError(str(err)) from None
    tokenizer.save(args.out)
    counts = tokenizer.token_counts(captions.texts)
    skipped = f", {captions.num_skipped} bad ones skipped" if captions.num_skipped else ""
    print(f"read {len(captions.texts)} captions from {args.data} ({captions.kind}){skipped}")
    print(f"vocab size {tokenizer.vocab_size}; wrote {args.out / 'tokenizer.json'} "
          f"(sha256 {tokenizer.content_hash[:16]})")
    print(f"tokens per caption: longest {max(counts)}, mean {sum(counts) / len(counts):.1f}")
    if args.max_length is not None:
        truncated = sum(c > args.max_length for c in counts)
        print(f"max length {args.max_length}: {truncated} of {len(counts)} captions truncated "
              f"({100 * truncated / len(counts):.1f}%)")
    return 0
