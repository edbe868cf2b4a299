"""`multimae tokenizer`: train and evaluate tokenizers.

``train --modality caption --data ...``: a WordPiece tokenizer trained on the captions of a data source,
saved as ``DIR/tokenizer.json`` (what a run or checkpoint carries), with the truncation count a given
``--max-length`` would have. ``train --modality depth`` (any map modality): a map tokenizer trained on
the built-in world from a ``tok-world*`` preset (`multimae.tokenizers.training`), resumable, ending with
``report.json`` and ``reconstructions.png``; with ``--data`` (a folder-layout root or tar shards) it
trains on that data instead (`multimae.tokenizers.maps`). ``eval --tokenizer DIR``: a map tokenizer's
round-trip metrics on its run's held-out maps, next to the baseline. ``train --modality feature --data
DIR`` (any vector modality): an MLP vector tokenizer on pseudo-labelled vectors from the ``tok-feature``
preset (`multimae.tokenizers.vector_training`), ending with its report and picture next to a product
k-means baseline; ``eval`` measures it again. ``train --sequences``: the 4M
sequence tokenizer (WordPiece in 4M's layout, `multimae.tokenizers.sequence`) shared by every sequence
modality, trained on the world's captions, boxes, metadata and palettes (or on ``--data`` texts), with a
report of tokens per text, cuts, ``[UNK]`` and exact round trips on held-out texts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from multimae.modalities.registry import BUILTIN_MODALITIES, DEFAULT_TEXT_MODALITY

MAP_PRESET = "tok-world"  # map tokenizers' base preset; tok-world-<modality> when it exists
VECTOR_PRESET = "tok-feature"  # vector (feature) tokenizers' preset


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tokenizer", help="train and evaluate tokenizers (captions, maps)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = actions.add_parser("train", help="train a tokenizer: WordPiece for a text modality (on --data), a map "
                                             "tokenizer for a map modality (on the built-in world or --data)")
    train.add_argument("--modality", default=None,
                       help=f"the modality to tokenise: a text modality (read from --data), a map, or a vector (feature: "
                            f"pseudo-labelled vectors in --data) [{DEFAULT_TEXT_MODALITY}; "
                            "with --resume, the run's own]")
    train.add_argument("--out", type=Path, required=True,
                       help="folder to write the tokenizer into (a map tokenizer's run folder)")
    train.add_argument("--data", type=Path,
                       help="text: a folder-layout root, tar shards (a .tar or a folder of them), a .jsonl of "
                            "image-caption pairs, a .txt with one caption per line, or a folder of .txt files; maps "
                            "(data.source, default the built-in world): a folder-layout root (its train and val "
                            "splits) or tar shards (the last shard held out), maps resized to data.image_size")
    text = train.add_argument_group("text modalities (WordPiece)")
    text.add_argument("--split", default="train", help="split of a folder-layout root [train]")
    text.add_argument("--vocab-size", type=int, default=1000, help="vocabulary size at most [1000]")
    text.add_argument("--min-frequency", type=int, default=1, help="least count of a merged piece [1]")
    text.add_argument("--max-length", type=int, default=None,
                      help="report how many captions are longer than this many tokens (truncated in training)")
    text.add_argument("--skip-bad", action="store_true", help="skip (and count) empty, non-UTF-8 or over-long captions")
    seq = train.add_argument_group("4M sequences (one WordPiece vocabulary in 4M's layout for every sequence)")
    seq.add_argument("--sequences", action="store_true",
                     help="train the sequence tokenizer: on the world's captions, boxes, metadata and palettes, or on "
                          "the --modality texts of --data (--vocab-size and --min-frequency apply)")
    seq.add_argument("--scenes", type=int, default=2000, help="world train scenes (held out: a quarter as many val) [2000]")
    seq.add_argument("--image-size", type=int, default=64,
                     help="world image size; coordinates get one bin per pixel [64]")
    seq.add_argument("--sentinels", type=int, default=200, help="span-masking sentinels [S_0].. [200, as 4M]")
    seq.add_argument("--length", type=int, default=64, help="tokens per sequence, [EOS] included [64]")
    maps = train.add_argument_group("map modalities")
    maps.add_argument("--config", help=f"preset or YAML file [{MAP_PRESET}-<modality> if it exists, else {MAP_PRESET}]")
    maps.add_argument("--resume", action="store_true",
                      help="continue the run in --out with its own config.yaml (overrides may change train.steps)")
    maps.add_argument("--quiet", action="store_true", help="no progress bar")
    maps.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides (train.steps=200)")
    train.set_defaults(func=run_train)

    ev = actions.add_parser("eval", help="round-trip metrics of a trained map tokenizer on its run's held-out maps "
                                         "(world val scenes, or the data's val split or last shard)")
    ev.add_argument("--tokenizer", type=Path, required=True, help="folder of a trained map tokenizer")
    ev.add_argument("--val-scenes", type=int, default=None, help="held-out scenes [the training run's data.val_scenes]")
    ev.add_argument("--baseline-scenes", type=int, default=None,
                    help="training scenes the baseline is fitted on, 0 for none [the run's train.baseline_scenes]")
    ev.add_argument("--json", action="store_true", help="print the report as JSON")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    ev.set_defaults(func=run_eval)


def _kind(modality: str) -> str | None:
    spec = BUILTIN_MODALITIES.get(modality)
    return None if spec is None else spec.kind


def _is_text(modality: str) -> bool:
    return _kind(modality) == "tokens"


def run_train(args: argparse.Namespace) -> int:
    from multimae.errors import UserError, check_out_dir

    check_out_dir(args.out, "--out")
    if args.sequences:
        return _train_sequences(args)
    if args.modality is None:
        args.modality = _resumed_modality(args.out) if args.resume else DEFAULT_TEXT_MODALITY
    if _is_text(args.modality):
        if args.config or args.resume or args.overrides:
            raise UserError(f"--config, --resume and overrides are for map tokenizers; {args.modality} is a text "
                            "modality (WordPiece: --vocab-size, --min-frequency)")
        return _train_text(args)
    if _kind(args.modality) == "vector":
        return _train_vector(args)
    if args.data is not None:
        if args.resume:
            raise UserError("--resume continues the run with its own data.source: drop --data")
        if not args.data.exists():
            raise UserError(f"--data {args.data}: no such file or folder")
        args.overrides = [*args.overrides, f"data.source={args.data}"]
    return _train_map(args)


def _resumed_modality(out: Path) -> str:
    from multimae.errors import UserError
    from multimae.tokenizers.training import RUN_CONFIG_FILE

    try:
        import yaml

        return str(yaml.safe_load((out / RUN_CONFIG_FILE).read_text())["modality"])
    except (OSError, KeyError, TypeError):
        raise UserError(f"{out}: nothing to resume (no {RUN_CONFIG_FILE} naming a modality)") from None


def _map_config(args: argparse.Namespace):
    from multimae.config.loader import load_config
    from multimae.configs import PRESET_DIR, preset_path
    from multimae.errors import UserError
    from multimae.tokenizers.config import TokenizerRunConfig
    from multimae.tokenizers.training import RUN_CONFIG_FILE

    overrides = [*args.overrides, f"modality={args.modality}"]
    try:
        if args.resume:
            if args.config:
                raise UserError("--resume continues the run in --out with its own config.yaml: drop --config")
            if not (args.out / RUN_CONFIG_FILE).is_file():
                raise UserError(f"{args.out}: nothing to resume (no {RUN_CONFIG_FILE})")
            return load_config(TokenizerRunConfig, args.out / RUN_CONFIG_FILE, overrides)
        own = f"{MAP_PRESET}-{args.modality}"
        preset = args.config or (own if (PRESET_DIR / f"{own}.yaml").exists() else MAP_PRESET)
        return load_config(TokenizerRunConfig, preset_path(preset), overrides)
    except ValueError as err:
        raise UserError(str(err)) from None


def _train_map(args: argparse.Namespace) -> int:
    from multimae.errors import UserError
    from multimae.tokenizers.training import train_tokenizer

    config = _map_config(args)
    try:
        train_tokenizer(config, args.out, resume=args.resume, progress=not args.quiet)
    except ValueError as err:
        raise UserError(str(err)) from None
    print(f"wrote the tokenizer, report.json and reconstructions.png to {args.out}")
    return 0


def _train_vector(args: argparse.Namespace) -> int:
    from multimae.config.loader import load_config
    from multimae.configs import preset_path
    from multimae.errors import UserError
    from multimae.tokenizers.config import VectorRunConfig
    from multimae.tokenizers.vector_training import train_vector_run

    if args.resume:
        raise UserError(f"a {args.modality} tokenizer trains in seconds to a minute: train it again instead of --resume")
    if args.data is None:
        raise UserError(f"a {args.modality} tokenizer is trained on pseudo-labelled vectors: give --data DIR "
                        f"(multimae pseudolabel --tasks {args.modality} writes them)")
    if not args.data.exists():
        raise UserError(f"--data {args.data}: no such file or folder")
    try:
        config = load_config(VectorRunConfig, preset_path(args.config or VECTOR_PRESET),
                             [*args.overrides, f"modality={args.modality}", f"source={args.data}"])
        train_vector_run(config, args.out, progress=not args.quiet)
    except ValueError as err:
        raise UserError(str(err)) from None
    print(f"wrote the tokenizer, report.json and reconstructions.png to {args.out}")
    return 0


def _eval_vector(args: argparse.Namespace, tokenizer) -> dict:
    from multimae.errors import UserError
    from multimae.tokenizers.config import VectorRunConfig
    from multimae.tokenizers.training import RUN_CONFIG_FILE, run_config_of
    from multimae.tokenizers.vector_training import ProductKMeans, disk_vectors, vector_report

    run = run_config_of(args.tokenizer, VectorRunConfig)
    if run is None:
        raise UserError(f"{args.tokenizer}: no {RUN_CONFIG_FILE} naming the data the tokenizer was trained on")
    _, val = disk_vectors(run.source, tokenizer.spec, "val", args.val_scenes or run.val_vectors)
    fit_count = run.train.baseline_scenes if args.baseline_scenes is None else args.baseline_scenes
    baseline = None
    if fit_count:
        _, train = disk_vectors(run.source, tokenizer.spec, "train", fit_count)
        baseline = ProductKMeans.fit(tokenizer, train, seed=run.train.seed)
    return vector_report(tokenizer, val, baseline)[0]


def run_eval(args: argparse.Namespace) -> int:
    from multimae.errors import UserError, check_positive
    from multimae.tokenizers import VectorTokenizer, load_tokenizer
    from multimae.tokenizers.baseline import PooledKMeans
    from multimae.tokenizers.config import TokenizerRunConfig
    from multimae.tokenizers.evaluation import report, summary_lines
    from multimae.tokenizers.maps import training_maps
    from multimae.tokenizers.training import run_config_of
    from multimae.tokenizers.vector_training import summary_lines as vector_lines

    check_positive(args.val_scenes, "--val-scenes")
    check_positive(args.baseline_scenes, "--baseline-scenes", least=0)
    try:
        tokenizer = load_tokenizer(args.tokenizer)
        if isinstance(tokenizer, VectorTokenizer):
            rep = _eval_vector(args, tokenizer)
            print(json.dumps(rep, indent=2) if args.json else "\n".join(vector_lines(rep)))
            return 0
        run = run_config_of(args.tokenizer) or TokenizerRunConfig(modality=tokenizer.spec.name)
        val = training_maps(run.data, tokenizer.spec.name, "val", args.val_scenes or run.data.val_scenes, not args.quiet)
        fit_count = run.train.baseline_scenes if args.baseline_scenes is None else args.baseline_scenes
        baseline = None
        if fit_count:
            train = training_maps(run.data, tokenizer.spec.name, "train", fit_count, not args.quiet)
            baseline = PooledKMeans.fit(tokenizer.format, train, tokenizer.patch, tokenizer.vocab_size,
                                        seed=run.train.seed)
        rep, _, _ = report(tokenizer, val, baseline, run.train.eval_batch_size)
    except ValueError as err:
        raise UserError(str(err)) from None
    print(json.dumps(rep, indent=2) if args.json else "\n".join(summary_lines(rep)))
    return 0


def _train_text(args: argparse.Namespace) -> int:
    from multimae.data.text_sources import read_captions
    from multimae.errors import UserError, check_positive
    from multimae.text import TextTokenizer

    if args.data is None:
        raise UserError(f"a {args.modality} tokenizer is trained on captions: give --data")
    check_positive(args.vocab_size, "--vocab-size")
    check_positive(args.min_frequency, "--min-frequency")
    check_positive(args.max_length, "--max-length")
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


def _train_sequences(args: argparse.Namespace) -> int:
    from multimae.engine.files import write_text_atomic
    from multimae.errors import UserError, check_positive
    from multimae.tokenizers.sequence_training import (
        report_lines,
        sequence_report,
        train_sequence_tokenizer,
        world_texts,
    )
    from multimae.tokenizers.training import REPORT_FILE

    if args.config or args.resume or args.overrides:
        raise UserError("--config, --resume and overrides are for map tokenizers, not --sequences")
    for value, option in ((args.scenes, "--scenes"), (args.image_size, "--image-size"),
                          (args.sentinels, "--sentinels"), (args.length, "--length"),
                          (args.vocab_size, "--vocab-size"), (args.min_frequency, "--min-frequency")):
        check_positive(value, option)
    try:
        if args.data is None:
            from multimae.data.world import SEQUENCE_WORDS

            words: tuple[str, ...] = SEQUENCE_WORDS
            train = world_texts("train", args.scenes, args.image_size, progress=not args.quiet)
            held = world_texts("val", max(1, args.scenes // 4), args.image_size, progress=not args.quiet)
        else:
            from multimae.data.text_sources import read_captions

            modality, words = args.modality or DEFAULT_TEXT_MODALITY, ()
            read = read_captions(args.data, modality, args.split, "skip" if args.skip_bad else "raise")
            cut = max(1, len(read.texts) // 10) if len(read.texts) > 1 else 0  # the last tenth held out
            train, held = {modality: read.texts[:len(read.texts) - cut]}, {modality: read.texts[-cut:] or read.texts}
        tokenizer = train_sequence_tokenizer(train, words, args.vocab_size, args.image_size, args.sentinels,
                                             args.length, args.min_frequency)
        report = sequence_report(tokenizer, held)
    except ValueError as err:
        raise UserError(str(err)) from None
    tokenizer.save(args.out)
    write_text_atomic(args.out / REPORT_FILE, json.dumps(report, indent=2) + "\n")
    print("\n".join(report_lines(report)))
    print(f"wrote the tokenizer and report.json (held-out texts) to {args.out}")
    return 0
