"""`multimae tokenize`: pre-tokenise a data source into webdataset shards (4M trains on these).

Each sample is seen at ``--crops`` K crops (crop 0 the central square, unflipped; the others random
resized crops, each flipped with probability 1/2; the same for every modality of the sample), each
crop encoded by every ``--tokenizers`` tokenizer. Resumable shard by shard (``--resume``); under
torchrun, rank r writes shards r, r + W, .... The format: `multimae.data.token_shards`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tokenize", help="pre-tokenise a data source into webdataset shards with trained tokenizers",
        description="Encode every sample of a data source, at K crops, with saved tokenizers, into webdataset "
        "tar shards with a manifest of the tokenizers' hashes (multimae.data.token_shards). Resumable shard by "
        "shard; under torchrun each rank writes every W-th shard.")
    parser.add_argument("--data", required=True,
                        help="'world' (the built-in world), a folder-layout root, or tar shards (a .tar, a glob, a "
                             "folder of them, or a root holding <split>/*.tar)")
    parser.add_argument("--tokenizers", nargs="+", required=True, metavar="MODALITY=DIR",
                        help="a saved tokenizer per modality to encode, e.g. depth=runs/tok-depth")
    parser.add_argument("--pixels", nargs="+", default=[], metavar="MODALITY",
                        help="pictures also kept as uint8 pixels at each crop, for a 4M model that reads raw pixels "
                             "(4M's RGB input), e.g. --pixels rgb")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the token shards into")
    parser.add_argument("--crops", type=int, default=1, help="crops per sample, the first the central square [1]")
    parser.add_argument("--min-scale", type=float, default=0.8, help="least area fraction of a random crop [0.8]")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per shard [1000]")
    parser.add_argument("--image-size", type=int, default=None,
                        help="pixels a crop is resized to [each map tokenizer's training data.image_size]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the crops [0]")
    parser.add_argument("--resume", action="store_true", help="keep the finished shards in --out, write the others")
    parser.add_argument("--limit", type=int, default=None, help="tokenise only the first N samples of the source")
    parser.add_argument("--split", default="train", help="split of a folder or shard root, or of the world [train]")
    parser.add_argument("--world-scenes", type=int, default=1000, help="--data world: number of scenes [1000]")
    parser.add_argument("--class-colors", type=float, default=0.0, help="--data world: chance that an object "
                        "wears its class's colour, as data.world_class_colors of the pre-training presets (0.8) [0]")
    parser.add_argument("--render-size", type=int, default=None,
                        help="--data world: render size in pixels [the largest image size]")
    parser.add_argument("--batch-size", type=int, default=8, help="samples encoded at once, K crops each [8]")
    parser.add_argument("--rank", type=int, help="this process's shards (default: $RANK from torchrun, or 0)")
    parser.add_argument("--world-size", type=int, help="number of processes (default: $WORLD_SIZE, or 1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _tokenizer_folders(values: list[str]) -> dict[str, str]:
    from multimae.errors import UserError

    folders: dict[str, str] = {}
    for value in values:
        modality, sep, folder = value.partition("=")
        if not sep or not modality or not folder:
            raise UserError(f"--tokenizers expects MODALITY=DIR, got {value!r}")
        if modality in folders:
            raise UserError(f"--tokenizers names {modality} twice")
        folders[modality] = folder
    return folders


def run(args: argparse.Namespace) -> int:
    from multimae.errors import UserError, check_out_dir, check_seed
    from multimae.pretokenize import CropConfig, TokenizeConfig, run_tokenize

    check_out_dir(args.out, "--out")
    check_seed(args.seed, "--seed")
    try:
        config = TokenizeConfig(
            data=args.data, out=str(args.out), tokenizers=_tokenizer_folders(args.tokenizers),
            pixels=tuple(dict.fromkeys(args.pixels)),
            crops=CropConfig(num_crops=args.crops, scale=(args.min_scale, 1.0)), shard_size=args.shard_size,
            image_size=args.image_size, seed=args.seed, resume=args.resume, limit=args.limit, split=args.split,
            world_scenes=args.world_scenes, render_size=args.render_size, world_class_colors=args.class_colors, batch_size=args.batch_size,
            rank=args.rank, world_size=args.world_size, progress=not args.quiet)
        report = run_tokenize(config)
    except ValueError as err:
        raise UserError(str(err)) from None
    print(f"rank {report.rank}/{report.world_size}: wrote {len(report.written)} shard(s) ({report.samples} samples), "
          f"{len(report.skipped)} already complete")
    if report.complete:
        print(f"complete: {report.manifest}")
    else:
        print("this process's shards are done; the manifest is completed by the process that finishes last "
              "(or rerun with --resume)")
    return 0
