"""The `multimae` entry point.

Each sub-command lives in its own module under `multimae.cli` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (a callable taking the parsed
namespace and returning an exit code). ``main(argv)`` is callable from tests.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from multimae import __version__

# Sub-command modules, in the order they are listed by `multimae --help`.
SUBCOMMANDS: tuple[str, ...] = (
    "info", "data", "tokenizer", "tokenize", "pseudolabel", "pretrain", "visualize", "finetune", "evaluate", "probe",
    "convert", "predict", "generate", "retrieve", "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multimae",
        description="Multi-modal, multi-task masked autoencoders for vision.",
    )
    parser.add_argument("--version", action="version", version=f"multimae {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"multimae.cli.{name}").register(subparsers)
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, except that ``KEY=VALUE`` overrides may also follow a flag
    (``pretrain a=1 --quiet b=2``): argparse takes one run of positionals only."""
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides = [*args.overrides, *extra]
        return args
    return parser.parse_args(argv) if extra else args  # argparse's own error for anything else


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``multimae argv``. A `UserError` (or a file-system error on a named path) ends it with one
    line on stderr and status 2; any other exception is a bug and keeps its traceback."""
    from multimae.errors import UserError

    parser = build_parser()
    args = parse(parser, argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        message = str(err)
    except OSError as err:
        if err.filename is None:
            raise
        message = f"{err.filename}: {err.strerror or err}"
    print(f"multimae {args.command}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
