"""`multimae demo`: a local web page on a checkpoint (paint masks, edit inputs, watch the predictions)."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path

from multimae.errors import UserError

LOOPBACK = "127.0.0.1"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="a local web page: paint masks, edit an input, watch every prediction follow",
        description="Loads CKPT and serves one page (plain JavaScript, everything from the package, nothing from the "
        "network) on HOST:PORT: pick a scene of the built-in world or upload images, paint the mask per input on the "
        "token grid, edit the inputs; every change re-runs the model. Needs the demo extra: "
        "pip install 'multimae[demo]'. See docs/demo.md.",
    )
    parser.add_argument("--checkpoint", required=True, help="run folder, .safetensors, official .pth, ...")
    parser.add_argument("--port", type=int, default=7860, help="port [7860]")
    parser.add_argument("--host", default=LOOPBACK, help=f"address to listen on [{LOOPBACK}: this machine only]")
    parser.add_argument("--device", default="cpu", help="device of the model [cpu]")
    parser.add_argument("--max-upload-mb", type=float, default=16.0, help="largest upload accepted, MiB [16]")
    parser.add_argument("--seed", type=int, default=0, help="seed of random scenes and masks [0]")
    parser.add_argument("--trust", action="store_true", help="allow arbitrary pickled objects in the checkpoint")
    parser.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be in [1, 65535], got {args.port}")
    if not args.max_upload_mb > 0:
        raise UserError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _tokenizers(args: argparse.Namespace, model: object) -> dict:
    """``{text modality: tokenizer}`` of a run's model with text (M3AE's caption); empty without text."""
    from multimae.tasks.loading import load_tokenizers

    specs = {**getattr(model, "input_specs", {}), **getattr(model, "output_specs", {})}
    if not any(s.stored_as == "text" for s in specs.values()):
        return {}
    try:
        return load_tokenizers(args.checkpoint, model, args.trust)  # type: ignore[arg-type]
    except ValueError as err:
        raise ValueError(f"{err}: the demo of a model with text needs the run folder (it holds the tokenizer)") from None


def run(args: argparse.Namespace) -> int:
    _check(args)
    try:
        import uvicorn

        from multimae.demo.app import create_app
    except ImportError as err:
        raise UserError(f"the demo needs its extra ({err.name} is missing): pip install 'multimae[demo]'") from None
    from multimae.convert import load_any
    from multimae.demo import DemoLimits, DemoSession
    from multimae.demo.uploads import UploadLimits
    from multimae.engine.distributed import resolve_device
    from multimae.errors import check_seed, reading

    check_seed(args.seed, "--seed")
    try:
        device = resolve_device(args.device, key="--device")
        with reading(args.checkpoint, "checkpoint"):
            model, _ = load_any(args.checkpoint, trusted=args.trust)
        tokenizers = _tokenizers(args, model)
    except ValueError as err:
        raise UserError(str(err)) from None
    limits = DemoLimits(uploads=UploadLimits(max_bytes=int(args.max_upload_mb * 2**20)))
    name = Path(args.checkpoint).resolve().name  # the run folder or file, as the page names it
    session = DemoSession(model.to(device), name, limits, seed=args.seed, tokenizers=tokenizers)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"multimae demo: {session.family} model from {args.checkpoint}")
    if not session.available:
        print(f"  {session.info()['message']}")
    if not _is_loopback(args.host):
        print(f"  warning: listening on {args.host}: other machines can reach this page (no authentication)")
    print(f"  open http://{shown}:{args.port}/  (Ctrl+C stops)", flush=True)
    uvicorn.run(create_app(session), host=args.host, port=args.port, log_level="warning")
    return 0
