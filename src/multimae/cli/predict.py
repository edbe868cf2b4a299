"""`multimae predict`: run a model (ours, official or converted) on your own images."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from multimae.modalities.registry import BUILTIN_MODALITIES

BUILTIN_INPUTS = tuple(n for n, s in BUILTIN_MODALITIES.items() if s.is_input)  # each gets an --<name> option
TEXT_INPUTS = tuple(n for n in BUILTIN_INPUTS if BUILTIN_MODALITIES[n].stored_as == "text")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="predict every output modality from your own images (any inputs, any mask)",
        description="Loads CKPT (our run folder or weights, an official MultiMAE .pth, or a converted file), reads "
        "the given inputs (image files or .npy arrays), masks them (--visible N random tokens, or --mask), and "
        "writes every output as .npy and .png, the masked inputs, mask.npz, figure.png (side by side) and "
        "summary.json into --out. It prints how each input was read and normalised.",
    )
    parser.add_argument("--checkpoint", required=True, help="run folder, .safetensors, official .pth, ...")
    for name in BUILTIN_INPUTS:
        if name in TEXT_INPUTS:
            parser.add_argument(f"--{name}", metavar="TEXT", help=f"{name} input: the text (or a .txt file); each "
                                "word written [MASK] is hidden and predicted, e.g. \"a red sphere [MASK] of a blue cube\"")
        else:
            parser.add_argument(f"--{name}", type=Path, help=f"{name} input (image file or .npy)")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=PATH",
                        help="another input modality of the model (repeatable)")
    parser.add_argument("--tokenizer", help="the caption tokenizer, for files that do not carry one (a converted "
                        "M3AE: bert-base-uncased); a hub name or a folder [the checkpoint's]")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--visible", type=int, help="number of visible tokens over all inputs, drawn at random "
                     "[default: all visible]")
    how.add_argument("--mask", type=Path, help=".npz with one (h, w) array per input, or .npy (M, h, w) for the "
                     "M given inputs in the model's input order; 1 = masked. mask.npz of an earlier run works.")
    parser.add_argument("--alpha", type=float, default=1.0, help="Dirichlet concentration of the random split [1.0]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random mask [0]")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--native-size", action="store_true", help="keep the inputs' own size (a multiple of the "
                      "patch size) and interpolate the positional tables, instead of resizing")
    size.add_argument("--crop", action="store_true", help="centre-crop to a square before resizing (no stretching)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                        help="auto: bf16 where the device computes it natively, else fp32 (fp16 on GPUs without bf16) [auto]")
    parser.add_argument("--num-heads", type=int, help="encoder heads, for foreign checkpoints (see multimae convert)")
    parser.add_argument("--decoder-num-heads", type=int, help="decoder heads, for foreign checkpoints")
    parser.add_argument("--head-reads", help="fine-tuned dense heads: modalities whose tokens the head reads, "
                        "comma-separated (see multimae convert)")
    parser.add_argument("--dpt-hooks", help="fine-tuned DPT heads: the four encoder blocks read, e.g. 2,5,8,11")
    parser.add_argument("--inputs", dest="input_order", help="official checkpoints with sorted keys: the input "
                        "modalities in their original order, e.g. rgb,depth,semseg (see multimae convert)")
    parser.add_argument("--trust", action="store_true", help="allow arbitrary pickled objects in the checkpoint")
    parser.set_defaults(func=run)


def _tokenizers(args: argparse.Namespace, model: Any) -> dict[str, Any]:
    """``{text modality: tokenizer}`` of the model: ``--tokenizer``, else the checkpoint's own."""
    from multimae.tasks.loading import load_tokenizers
    from multimae.text.tokenizer import TextTokenizer

    specs = {**model.input_specs, **getattr(model, "output_specs", {})}
    texts = [n for n, s in specs.items() if s.stored_as == "text"]
    if not texts:
        return {}
    if args.tokenizer:
        tok = TextTokenizer.from_pretrained(args.tokenizer)
        return {n: tok for n in texts}
    try:
        return load_tokenizers(args.checkpoint, model, args.trust)
    except ValueError as err:
        raise ValueError(f"{err}; pass --tokenizer NAME|DIR") from None


def _inputs(args: argparse.Namespace) -> dict[str, Any]:
    inputs = {n: getattr(args, n) for n in BUILTIN_INPUTS if getattr(args, n) is not None}
    for item in args.input:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--input expects NAME=PATH, got {item!r}")
        inputs[name] = Path(path)
    if not inputs:
        raise ValueError("give at least one input (--rgb, --depth, --semseg, --normals or --input NAME=PATH)")
    return inputs


def _mask(path: Path, names: list[str]) -> dict[str, Any]:
    import numpy as np

    from multimae.errors import reading

    if not path.is_file():
        raise ValueError(f"--mask {path}: no such file")
    if path.suffix == ".npz":
        with reading(path, ".npz mask", f"--mask {path}"), np.load(path, allow_pickle=False) as data:
            masks = {k: data[k] for k in data.files}
        if not masks:
            raise ValueError(f"--mask {path}: holds no arrays (expected one (h, w) array per input {names})")
        return masks
    if path.suffix == ".npy":
        try:
            with reading(path, ".npy mask", f"--mask {path}"):
                array = np.load(path, allow_pickle=False)
        except ValueError as err:  # numpy's complaint about the header or a pickled array
            raise ValueError(f"--mask {path}: cannot read this .npy mask ({err})") from None
        if array.ndim != 3 or array.shape[0] != len(names):
            raise ValueError(f"{path}: shape {array.shape}, expected (M, h, w) with one entry per input {names}")
        return dict(zip(names, array))
    raise ValueError(f"--mask {path}: expected a .npz or .npy mask")


def _palette(num_classes: int) -> tuple[Any, Any, str | None]:
    """The built-in world's palette and class names when the class count is the world's."""
    from multimae.data.world import CLASS_NAMES, NUM_CLASSES, PALETTE

    if num_classes == NUM_CLASSES:
        return PALETTE, CLASS_NAMES, "class colours and names of the built-in world (same class count)"
    return None, None, None


def _precision(requested: str, model: Any, num_inputs: int) -> Any:
    """``--precision`` resolved for the model's device, timed at its encoder's size (all tokens)."""
    from multimae.engine.precision import choose_precision, probe_shape
    from multimae.model.encoder import encoder_of

    cfg = encoder_of(model).config
    tokens = num_inputs * (cfg.image_size // cfg.patch_size) ** 2
    return choose_precision(requested, next(model.parameters()).device, probe_shape(tokens, cfg.dim))


def run(args: argparse.Namespace) -> int:
    from multimae.cli.convert import head_list, hooks_list
    from multimae.convert import load_any
    from multimae.engine.distributed import resolve_device
    from multimae.errors import check_seed, reading
    from multimae.inference import predict, save_prediction
    from multimae.inference.inputs import peek_sizes
    from multimae.tasks.runs import check_output_folder

    try:
        inputs = _inputs(args)
        check_seed(args.seed, "--seed")
        if not args.alpha > 0:
            raise ValueError(f"--alpha must be > 0, got {args.alpha}")
        device = resolve_device(args.device, key="--device")
        fit = "native" if args.native_size else "crop" if args.crop else "resize"
        files = {n: v for n, v in inputs.items() if n not in TEXT_INPUTS}
        peek_sizes(files, fit)  # missing files, unreadable images, misaligned inputs: before the checkpoint loads
        check_output_folder(args.out, [*files.values(), *([args.mask] if args.mask else []), args.checkpoint])
        with reading(args.checkpoint, "checkpoint"):
            model, report = load_any(args.checkpoint, num_heads=args.num_heads,
                                     decoder_num_heads=args.decoder_num_heads, head_modalities=head_list(args.head_reads),
                                     hooks=hooks_list(args.dpt_hooks), input_order=head_list(args.input_order),
                                     trusted=args.trust)
        from multimae.model.fourm import FourM

        from multimae.model.fourm.encoder import FourMEncoder

        if isinstance(model, FourM):
            return _predict_fourm(args, model, files, fit)
        if isinstance(getattr(model, "backbone", None), FourMEncoder):
            raise ValueError("a model fine-tuned on a 4M encoder does not predict from pictures here yet; "
                             "`multimae evaluate --checkpoint RUN --picture P` scores and draws it on its data")
        model = model.to(device).eval()
        if report.source_format not in ("multimae run", "multimae"):  # a foreign file: say what was guessed
            print(f"checkpoint: {report.summary()}")
        tokenizers = _tokenizers(args, model)
        names = [n for n in model.input_specs if n in inputs and n not in tokenizers]
        mask = _mask(args.mask, names) if args.mask else None
        precision = _precision(args.precision, model, len(names))
        pred = predict(model, inputs, num_visible=args.visible, mask=mask, alpha=args.alpha, seed=args.seed, fit=fit,
                       precision=precision.precision, tokenizers=tokenizers)
        pred.notes.append(f"precision: {precision.reason}")
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    classes = max([int(v.shape[0]) for v in pred.logits.values()], default=0)
    palette, class_names, palette_note = _palette(classes)
    if palette_note:
        pred.notes.append(f"semseg pictures: {palette_note}")
    files = save_prediction(pred, args.out, palette, class_names)
    print(f"inputs used: {', '.join([*pred.inputs, *(n for n, c in pred.captions.items() if c.given is not None)])} "
          f"(model inputs: {', '.join(model.input_specs)})")
    for note in pred.notes:
        print(f"  {note}")
    print("outputs:")
    for name, units in pred.units.items():
        print(f"  {name}: {units}")
    for name, c in pred.captions.items():
        if c.given is not None:
            print(f"{name}: {c.marked}" + (f"  (predicted: {', '.join(c.words)})" if c.words else "  (no [MASK] word)"))
        else:
            print(f"{name} from the other inputs alone: {c.text}")
    print(f"wrote {len(files)} files to {args.out} (figure: {args.out / 'figure.png'})")
    return 0


def _predict_fourm(args: argparse.Namespace, model: Any, files: dict[str, Any], fit: str) -> int:
    """A 4M run: each given map tokenised by the run's tokenizer, every other token map predicted in one
    pass and decoded; ``<modality>.npy`` / ``.png`` per prediction, ``figure.png`` and ``summary.json``."""
    import json

    import numpy as np
    from PIL import Image

    from multimae.inference.fourm import predict_from_maps, predict_sequences
    from multimae.tokenizers.run_files import run_tokenizers
    from multimae.inference.inputs import fit_size, read_input
    from multimae.modalities.registry import get_modality
    from multimae.modalities.registry import DEFAULT_IMAGE_MODALITY
    from multimae.viz.boxes import draw_box_text
    from multimae.viz.colormaps import draw_spec, rgb_to_uint8
    from multimae.viz.grid import image_grid

    if args.visible is not None or args.mask is not None:
        raise ValueError("--visible / --mask: a 4M prediction gives every token of its inputs (conditions)")
    tokenizers = run_tokenizers(args.checkpoint)
    raw = {n: read_input(get_modality(n), p) for n, p in files.items()}
    maps, how = fit_size({n: r.value for n, r in raw.items()}, model.config.image_size, 1, fit)
    decoded, _ = predict_from_maps(model, tokenizers, {n: v.unsqueeze(0) for n, v in maps.items()})
    texts = {n: t[0] for n, t in predict_sequences(model, tokenizers, {n: v.unsqueeze(0) for n, v in maps.items()}).items()}
    args.out.mkdir(parents=True, exist_ok=True)
    pictures, titles = [], []
    for name, value in [*((n, v) for n, v in maps.items()), *((n, v[0]) for n, v in decoded.items())]:
        picture = draw_spec(get_modality(name), value.detach().cpu().numpy())
        pictures.append(picture)
        given = name in maps
        titles.append(f"{name} ({'given' if given else '4M, one pass'})")
        if not given:
            np.save(args.out / f"{name}.npy", value.detach().cpu().numpy())
            Image.fromarray(picture).save(args.out / f"{name}.png")
    for name, text in texts.items():
        (args.out / f"{name}.txt").write_text(text + "\n")
        if model.output_specs[name].stored_as == "box_text":  # boxes: also drawn on the picture
            given = maps.get(DEFAULT_IMAGE_MODALITY)
            picture = draw_box_text(rgb_to_uint8(given.detach().cpu()) if given is not None else None, text,
                                    getattr(tokenizers[name], "coord_bins", model.config.image_size),
                                    model.config.image_size)
            pictures.append(picture)
            titles.append(f"{name} (4M, greedy)")
            Image.fromarray(picture).save(args.out / f"{name}.png")
    notes = ["; ".join(f"{n} (4M, greedy token by token): {t}" for n, t in texts.items())] if texts else None
    image_grid([pictures], titles, notes, tile=192).save(args.out / "figure.png")
    summary = {"inputs": {n: {"file": str(files[n]), "read": raw[n].how} for n in files}, "fit": how,
               "predicted": sorted(decoded), "decoding": "one pass, argmax per token (4M's one-step decoding)",
               "sequences": texts, "sequence_decoding": "autoregressive, argmax per token, from the given maps",
               "tokenizers": {m: t.content_hash for m, t in tokenizers.items()}}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"inputs: {', '.join(f'{n} ({raw[n].how})' for n in files)}; {how}")
    print(f"predicted from them in one pass: {', '.join(sorted(decoded))}")
    for name, text in texts.items():
        print(f"{name} (autoregressive, greedy): {text}")
    print(f"wrote {2 * len(decoded) + len(texts) + 2} files to {args.out} (figure: {args.out / 'figure.png'})")
    return 0
