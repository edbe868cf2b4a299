"""`multimae data`: look at the built-in world (`show`), write it to disk (`generate`), and import
real datasets in their own formats (`import nyuv2 | ade20k | imagenet`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="show or generate the built-in multi-modal world")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    show = actions.add_parser("show", help="write a PNG grid of a few scenes with every modality")
    show.add_argument("--out", type=Path, default=Path("world.png"), help="PNG to write (default ./world.png)")
    show.add_argument("--count", type=int, default=4, help="number of scenes (rows)")
    show.add_argument("--size", type=int, default=128, help="render size in pixels")
    show.add_argument("--split", default="train", choices=("train", "val", "test"))
    show.add_argument("--start", type=int, default=0, help="index of the first scene")
    show.add_argument("--difficulty", type=float, default=1.0, help="0 (simple) to 1 (full world)")
    show.add_argument("--class-colors", type=float, default=0.0,
                      help="chance that an object wears its class's colour (0: only its shape tells the class)")
    show.add_argument("--tile", type=int, default=None, help="width of each picture (default: --size)")
    show.set_defaults(func=run_show)

    gen = actions.add_parser("generate", help="render the world into a folder tree or tar shards")
    gen.add_argument("--out", type=Path, required=True, help="output directory")
    gen.add_argument("--count", type=int, required=True, help="number of scenes")
    gen.add_argument("--size", type=int, default=64, help="render size in pixels")
    gen.add_argument("--format", dest="fmt", default="folder", choices=("folder", "shards"))
    gen.add_argument("--split", default="train", choices=("train", "val", "test"))
    gen.add_argument("--difficulty", type=float, default=1.0, help="0 (simple) to 1 (full world)")
    gen.add_argument("--class-colors", type=float, default=0.0,
                     help="chance that an object wears its class's colour (0: only its shape tells the class)")
    gen.add_argument("--shard-size", type=int, default=1000, help="samples per shard (shards format)")
    gen.add_argument("--workers", type=int, default=1, help="rendering processes")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(func=run_generate)
    _register_import(actions)


def _register_import(actions: argparse._SubParsersAction) -> None:
    imp = actions.add_parser("import", help="convert NYUv2, ADE20K or ImageNet into the folder layout "
                             "pretrain / finetune read, with a manifest (resumable: rerun to continue)")
    datasets = imp.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    nyu = datasets.add_parser("nyuv2", help="nyu_depth_v2_labeled.mat (MAT v7.3, needs h5py): the 1,449 labelled "
                              "frames as rgb, depth (metres) and semseg")
    nyu.add_argument("source", type=Path, metavar="MAT", help="nyu_depth_v2_labeled.mat")
    nyu.add_argument("--splits", type=Path, help="splits.mat with trainNdxs / testNdxs: the standard 795 / 654 split "
                     "(test -> val). Without it: a random split of the same sizes, marked as such")
    nyu.add_argument("--mapping", type=Path, help="the 894 -> 40 class table (classMapping40.mat with mapClass, or "
                     "894 integers in .npy / .txt / .json). Without it: the 894 raw labels")
    nyu.add_argument("--seed", type=int, default=0, help="seed of the random split without --splits [0]")
    ade = datasets.add_parser("ade20k", help="ADEChallengeData2016: images + annotations, 150 classes, 0 -> 255 "
                              "(ignored)")
    ade.add_argument("source", type=Path, metavar="DIR", help="the ADEChallengeData2016 folder")
    net = datasets.add_parser("imagenet", help="DIR/{train,val}/<class>/*.JPEG (class folders)")
    net.add_argument("source", type=Path, metavar="DIR")
    net.add_argument("--link", action="store_true", help="hard-link the images instead of copying them")
    net.add_argument("--skip-bad", action="store_true", help="skip (and list) files that are not images")
    for sub in (nyu, ade, net):
        sub.add_argument("--out", type=Path, required=True, help="output folder (use it as data.root)")
        sub.add_argument("--quiet", action="store_true", help="no progress bar")
        sub.set_defaults(func=run_import)


_NEXT = {
    "nyuv2": "multimae finetune --task depth --inputs rgb data.source=folder data.root={out}\n"
             "  or: multimae finetune --task segmentation --inputs rgb data.source=folder data.root={out} "
             "task.num_classes={num_classes}",
    "ade20k": "multimae finetune --task segmentation --inputs rgb data.source=folder data.root={out} "
              "task.num_classes={num_classes}",
    "imagenet": "multimae finetune --task classification --inputs rgb data.source=folder data.root={out}",
}


def run_import(args: argparse.Namespace) -> int:
    from multimae.data.importers import import_ade20k, import_imagenet, import_nyuv2

    try:
        if args.dataset == "nyuv2":
            manifest = import_nyuv2(args.source, args.out, splits=args.splits, mapping=args.mapping, seed=args.seed,
                                    progress=not args.quiet)
        elif args.dataset == "ade20k":
            manifest = import_ade20k(args.source, args.out, progress=not args.quiet)
        else:
            manifest = import_imagenet(args.source, args.out, link=args.link,
                                       on_error="skip" if args.skip_bad else "raise", progress=not args.quiet)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    counts = ", ".join(f"{s['count']} {name}" for name, s in manifest["splits"].items())
    print(f"wrote {counts} samples to {args.out} (manifest: {args.out / 'manifest.json'})")
    for key in ("split_source", "class_source"):
        if key in manifest:
            print(f"  {key.replace('_', ' ')}: {manifest[key]}")
    for name, s in manifest["splits"].items():
        if s.get("skipped"):
            print(f"  {name}: skipped {len(s['skipped'])} unreadable file(s), e.g. {s['skipped'][0]}")
    print("fine-tune on it: " + _NEXT[args.dataset].format(out=args.out, num_classes=manifest.get("num_classes")))
    return 0


PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MIN_SIZE = 8  # the world's smallest render size


def _check_world_args(args: argparse.Namespace) -> None:
    """The options both actions share, each named in its error (before anything is rendered)."""
    from multimae.errors import UserError, check_positive

    check_positive(args.count, "--count")
    check_positive(args.size, "--size", MIN_SIZE)
    for option, value in (("--difficulty", args.difficulty), ("--class-colors", args.class_colors)):
        if not 0.0 <= value <= 1.0:
            raise UserError(f"{option} must be in [0, 1], got {value}")


def run_show(args: argparse.Namespace) -> int:
    from multimae.data.generated import WorldDataset
    from multimae.data.world import CLASS_NAMES, PALETTE
    from multimae.errors import UserError, check_out_dir, check_positive
    from multimae.viz.samples import samples_figure

    _check_world_args(args)
    check_positive(args.start, "--start", 0)
    check_positive(args.tile, "--tile", MIN_SIZE)
    if args.out.suffix.lower() not in PICTURE_SUFFIXES:
        raise UserError(f"--out {args.out}: give a picture file name ending in {', '.join(PICTURE_SUFFIXES)}")
    if args.out.is_dir():
        raise UserError(f"--out {args.out}: is a folder, not a file")
    check_out_dir(args.out.parent, "--out")

    dataset = WorldDataset(args.split, size=args.size, length=args.start + args.count, difficulty=args.difficulty,
                           class_colors=args.class_colors)
    samples = [dataset[i] for i in range(args.start, args.start + args.count)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    samples_figure(samples, CLASS_NAMES, PALETTE, tile=args.tile or args.size).save(args.out)
    print(f"wrote {args.out} ({args.count} scenes of split {args.split!r} at {args.size} px)")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from multimae.data.writer import GenerateConfig, generate
    from multimae.errors import check_out_dir, check_positive

    _check_world_args(args)
    check_positive(args.shard_size, "--shard-size")
    check_positive(args.workers, "--workers")
    check_out_dir(args.out, "--out")
    config = GenerateConfig(
        count=args.count, size=args.size, fmt=args.fmt, split=args.split, difficulty=args.difficulty,
        class_colors=args.class_colors,
        shard_size=args.shard_size, workers=args.workers,
    )
    try:
        manifest = generate(args.out, config, progress=not args.quiet)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    print(f"wrote {manifest['splits'][args.split]['count']} {args.split} samples to {args.out} ({args.fmt})")
    return 0
