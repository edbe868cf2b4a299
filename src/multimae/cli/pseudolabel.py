"""`multimae pseudolabel`: label a folder of photos (or tar shards) with off-the-shelf networks."""

from __future__ import annotations

import argparse
import importlib

import yaml


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pseudolabel",
        help="pseudo-label images (depth, semseg) with off-the-shelf networks, as training data",
        description="Run off-the-shelf networks over a folder of images (or tar shards) and write aligned "
        "modality files in the layout `multimae pretrain` reads, with a manifest of which model made what. "
        "Resumable (rerun the same command); data-parallel under torchrun. Needs multimae[pseudolabel].",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--images", metavar="DIR", help="folder of images (flat, or one level of class folders)")
    source.add_argument("--shards", metavar="PATH", help="tar shards: a directory of *.tar, a glob or a file")
    parser.add_argument("--out", metavar="DIR", help="output root (use it as data.root)")
    parser.add_argument("--tasks", default="depth,semseg", help="modalities to label, comma-separated [depth,semseg]")
    parser.add_argument("--labeler", action="append", default=[], metavar="MODALITY=NAME",
                        help="labeler per modality (see --list; default depth=dpt-hybrid, "
                        "semseg=mask2former-coco-panoptic)")
    parser.add_argument("--model", action="append", default=[], metavar="MODALITY=NAME_OR_DIR",
                        help="hub model name or local directory (offline) replacing the labeler's default")
    parser.add_argument("--revision", action="append", default=[], metavar="MODALITY=REV",
                        help="hub revision (branch, tag or commit) to pin")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="MODALITY.KEY=VALUE",
                        help="labeler setting, e.g. depth.max_depth_ratio=50 or semseg.resolution=512")
    parser.add_argument("--split", default="train", help="split folder to write [train]")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass [8]")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N [auto]")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                        help="auto: bf16 where the device computes it natively, else fp32 (fp16 on GPUs without "
                        "bf16); a resumed run keeps its labels' precision [auto]")
    parser.add_argument("--workers", type=int, default=2, help="image-decoding processes [2]")
    parser.add_argument("--rgb", default="copy", choices=("copy", "symlink"),
                        help="folder output: copy the images or symlink to them [copy]")
    parser.add_argument("--rank", type=int, help="this process's slice (default: $RANK from torchrun, or 0)")
    parser.add_argument("--world-size", type=int, help="number of slices (default: $WORLD_SIZE, or 1)")
    parser.add_argument("--max-images", type=int, help="read at most this many of the images still to do, then stop (shards: whole shards)")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import a module that registers labelers of your own")
    parser.add_argument("--list", action="store_true", help="list the registered labelers and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _pairs(values: list[str], option: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key or not rest:
            raise SystemExit(f"error: {option} expects MODALITY=VALUE, got {value!r}")
        out[key.strip()] = rest.strip()
    return out


def _settings(values: list[str]) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for key, value in _pairs(values, "--set").items():
        modality, dot, name = key.partition(".")
        if not dot or not name:
            raise SystemExit(f"error: --set expects MODALITY.KEY=VALUE, got {key}={value}")
        out.setdefault(modality, {})[name] = yaml.safe_load(value)
    return out


def run(args: argparse.Namespace) -> int:
    from multimae.pseudolabel import PseudolabelConfig, list_labelers, run_pseudolabel

    for module in args.imports:
        importlib.import_module(module)
    if args.list:
        for name, cls in list_labelers().items():
            print(f"{name:<28} {cls.modality:<8} {cls.default_model or '(give --model)':<48} {cls.description}")
        return 0
    if not args.out or not (args.images or args.shards):
        raise SystemExit("error: give --images DIR (or --shards PATH) and --out DIR")
    from multimae.engine.distributed import resolve_device
    from multimae.errors import UserError, check_out_dir, check_positive

    try:
        resolve_device(args.device, key="--device")
    except ValueError as err:
        raise UserError(str(err)) from None
    check_positive(args.batch_size, "--batch-size")
    check_positive(args.workers, "--workers", 0)
    check_positive(args.max_images, "--max-images")
    check_out_dir(args.out, "--out")
    try:
        config = PseudolabelConfig(
            out=args.out, images=args.images, shards=args.shards,
            tasks=tuple(t.strip() for t in args.tasks.split(",") if t.strip()),
            labelers=_pairs(args.labeler, "--labeler"), models=_pairs(args.model, "--model"),
            revisions=_pairs(args.revision, "--revision"), settings=_settings(args.settings), split=args.split,
            batch_size=args.batch_size, device=args.device, precision=args.precision, workers=args.workers,
            rgb=args.rgb, rank=args.rank, world_size=args.world_size, max_images=args.max_images,
            progress=not args.quiet,
        )
        report = run_pseudolabel(config)
    except (ValueError, ImportError) as err:
        raise SystemExit(f"error: {err}") from None
    p = report.progress
    print(f"rank {report.rank}/{report.world_size}: {p.done} images labelled ({p.labelled} in this run), "
          f"{len(p.skipped)} unreadable skipped{': ' + ', '.join(p.skipped[:5]) if p.skipped else ''}"
          f"{' ...' if len(p.skipped) > 5 else ''}")
    if not p.complete:
        print("stopped early (--max-images): rerun the same command to continue")
    elif report.split_complete:
        print(f"manifest: {report.manifest}")
        print(_next_step(config, report.manifest))
    else:
        print("this slice is done; the manifest is completed by the last process to finish")
    return 0


def _next_step(config: object, manifest_path: object) -> str:
    import json
    from pathlib import Path

    manifest = json.loads(Path(str(manifest_path)).read_text())
    source = "folder" if manifest.get("format") == "folder" else "shards"
    root = config.out if source == "folder" else str(Path(config.out) / config.split)  # type: ignore[attr-defined]
    from multimae.modalities.registry import (
        BUILTIN_MODALITIES,
        DEFAULT_IMAGE_MODALITY,
        DEFAULT_INPUTS,
        DEFAULT_OUTPUTS,
    )
    from multimae.pseudolabel.base import LABELED_MODALITIES

    labelled = manifest.get("labelers", {})
    mods = [DEFAULT_IMAGE_MODALITY, *(m for m in LABELED_MODALITIES if m in labelled)]
    derived = [m for m in DEFAULT_OUTPUTS if m not in DEFAULT_INPUTS]  # norm_rgb
    extra = []
    if set(mods) != set(DEFAULT_INPUTS):
        extra.append(f"model.inputs={','.join(mods)} model.outputs={','.join(mods + derived)}")
    for m in (m for m in mods if BUILTIN_MODALITIES[m].is_categorical):  # the default preset (cpu) has
        # the 9 classes of the built-in world
        extra.append(f"'model.modality_overrides={{{m}: {{num_channels: {manifest['num_classes']}}}}}'")
    return f"pre-train on it: multimae pretrain data.source={source} data.root={root} {' '.join(extra)}".rstrip()
