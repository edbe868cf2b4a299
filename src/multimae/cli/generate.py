"""`multimae generate`: any-to-any generation with a 4M run (MaskGIT / ROAR / autoregressive, guidance)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from multimae.generation.schedule import TEMPERATURE_SCHEDULES, TOKEN_SCHEDULES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate", help="generate modalities from any given ones with a 4M run",
        description="Tokenises each --cond with the run's tokenizers, generates every --target one after another "
        "(each finished target is given to the next ones, unless --independent), decodes them with the run's "
        "tokenizers and writes <modality>.npy / .png (a sequence: .txt), figure.png (conditions and every generated "
        "modality), summary.json, and with --steps-picture steps.png (the tokens decoded so far after each step). "
        "--inpaint NAME=MASK regenerates the marked part of the map given as --cond NAME=FILE and keeps the rest "
        "(inpaint.png: original, regenerated tokens, the original's tokens decoded, result).")
    parser.add_argument("--checkpoint", required=True, help="a 4M run folder (or its checkpoint)")
    parser.add_argument("--cond", action="append", default=[], metavar="NAME=VALUE",
                        help="a condition: an image / .npy file for a map (rgb=a.png), the text (or a .txt file) for "
                        "a sequence (caption=\"a red sphere\"); repeatable")
    parser.add_argument("--inpaint", action="append", default=[], metavar="NAME=MASK",
                        help="in-paint the map given as --cond NAME=FILE (NAME must also be a --target): MASK is a "
                        "picture (white = regenerate) or a .npy array (nonzero = regenerate) at the model's frame "
                        "(image_size pixels, the map as resized) or at its token grid; a token is regenerated when "
                        "any of its pixels is marked, the others are kept; repeatable")
    parser.add_argument("--target", required=True, help="modalities to generate, comma-separated, in order "
                        "(tok_depth,tok_semseg or depth,semseg)")
    parser.add_argument("--scheme", default="maskgit", choices=("maskgit", "roar"),
                        help="how token maps are decoded (sequences: autoregressive) [maskgit]")
    parser.add_argument("--steps", type=int, default=8, help="decoding steps per token map [8]")
    parser.add_argument("--token-schedule", default="cosine", choices=TOKEN_SCHEDULES, help="MaskGIT [cosine]")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature, 0 = argmax [1.0]")
    parser.add_argument("--temperature-schedule", default="constant", choices=TEMPERATURE_SCHEDULES, help="[constant]")
    parser.add_argument("--top-k", type=float, default=0, help="keep the k most likely tokens (k < 1: a fraction "
                        "of the vocabulary); 0 = off [0]")
    parser.add_argument("--top-p", type=float, default=0.0, help="nucleus filtering; 0 = off [0]")
    parser.add_argument("--max-new", type=int, help="most ids of a generated sequence [the model's default]")
    parser.add_argument("--guidance", action="append", default=[], metavar="COND=WEIGHT",
                        help="classifier-free guidance weight of a condition, negative steers away; repeatable or "
                        "comma-separated (caption=3,rgb=-1)")
    parser.add_argument("--independent", action="store_true",
                        help="generate each target from the conditions alone (default: chained)")
    parser.add_argument("--samples", type=int, default=1, help="samples per condition set [1]")
    parser.add_argument("--batch-size", type=int, help="samples decoded at once [all]")
    parser.add_argument("--seed", type=int, default=0, help="step i draws from seed + i [0]")
    parser.add_argument("--steps-picture", action="store_true", help="also write steps.png")
    parser.add_argument("--crop", action="store_true", help="centre-crop pictures to a square before resizing")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                        help="the passes' autocast; auto: bf16 where the device computes it natively and faster "
                        "(timed once per machine), else fp32 [auto]")
    parser.set_defaults(func=run)


def _pairs(items: list[str], option: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value:
            raise ValueError(f"{option} expects NAME=VALUE, got {item!r}")
        out.append((name.strip(), value))
    return out


def _guidance(items: list[str]) -> dict[str, float]:
    pairs = _pairs([p for item in items for p in item.split(",") if p], "--guidance")
    try:
        return {n: float(w) for n, w in pairs}
    except ValueError:
        raise ValueError(f"--guidance weights must be numbers, got {items}") from None


def _raw_conditions(gen: Any, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """``({condition: raw batch}, {condition: picture value or text})`` from --cond."""
    from multimae.inference.inputs import fit_size, read_input
    from multimae.modalities.registry import get_modality

    texts, files = {}, {}
    for name, value in _pairs(args.cond, "--cond"):
        spec = gen.model.input_specs[gen.input(name)]
        if spec.kind == "tokens":
            path = Path(value)
            texts[name] = path.read_text().strip() if value.endswith(".txt") and path.is_file() else value
        else:
            path = Path(value)
            if not path.is_file():
                raise ValueError(f"--cond {name}={value}: no such file")
            source = spec.source_name if spec.kind == "token_map" else spec.name
            files[name] = read_input(get_modality(source), path).value
    if not texts and not files:
        raise ValueError("give at least one --cond NAME=VALUE")
    maps, _ = fit_size(files, gen.model.config.image_size, 1, "crop" if args.crop else "resize") if files else ({}, "")
    S = args.samples
    raw = {n: v.unsqueeze(0).expand(S, *v.shape).contiguous() for n, v in maps.items()}
    raw.update({n: [t] * S for n, t in texts.items()})
    return raw, {**maps, **texts}


def _read_mask(path: Path, option: str) -> Any:
    """(H, W) bool, True = regenerate: a picture (white, grey > 127 = regenerate) or a .npy array (nonzero)."""
    import numpy as np
    import torch
    from PIL import Image

    from multimae.errors import reading

    if not path.is_file():
        raise ValueError(f"{option}: no such file")
    if path.suffix == ".npy":
        with reading(path, ".npy mask", option):
            array = np.load(path, allow_pickle=False)
    else:
        with reading(path, "mask picture", option), Image.open(path) as im:
            array = np.asarray(im.convert("L")) > 127
    if array.ndim != 2 or not (array.dtype == bool or np.issubdtype(array.dtype, np.number)):
        raise ValueError(f"{option}: a mask is one (H, W) array, got {array.dtype} {array.shape}")
    return torch.from_numpy(array != 0)


def _inpaint(gen: Any, args: argparse.Namespace, raw: dict[str, Any], targets: list[str]
             ) -> tuple[dict[str, Any], dict[str, str]]:
    """``({model target: in-paint record}, {model target: its --cond name})`` from --inpaint; the in-painted
    maps are taken out of ``raw``."""
    from multimae.generation.editing import check_inpaintable, is_sequence

    records, names = {}, {}
    for name, value in _pairs(args.inpaint, "--inpaint"):
        option = f"--inpaint {name}={value}"
        target = gen.output(name)
        check_inpaintable(gen.model, target)
        if target in records:
            raise ValueError(f"{option}: {target} is in-painted twice")
        if target not in targets:
            raise ValueError(f"{option}: name {name} in --target too (where in the order it is generated)")
        if is_sequence(gen.model, target):  # its text with sentinels
            if any(c == name or gen.input(c) == target for c in raw):
                raise ValueError(f"{option}: {name} is a sequence; its text with sentinels is the in-paint, "
                                 f"not a --cond")
            path = Path(value)
            text = path.read_text().strip() if value.endswith(".txt") and path.is_file() else value
            try:
                records[target] = gen.inpaint({name: [text] * args.samples})[target]
            except ValueError as err:
                raise ValueError(f"{option}: {err}") from None
            names[target] = text
            continue
        given = [c for c in raw if c == name or gen.input(c) == target]
        if not given or isinstance(raw[given[0]], list):
            raise ValueError(f"{option}: give the map to in-paint as --cond {name}=FILE")
        mask = _read_mask(Path(value), option)
        original = raw.pop(given[0])
        try:
            record = gen.inpaint({name: (original, mask[None].expand(original.shape[0], *mask.shape))})[target]
        except ValueError as err:
            raise ValueError(f"{option}: {err}") from None
        left = int((~record.encoded[0]).sum())
        if left == 0:
            print(f"note: {option} marks nothing: every token is kept, nothing is generated for {name} "
                  f"(its result is its tokens decoded)")
        elif left == record.num_tokens:
            print(f"note: {option} marks every token: the original {name} is not used (plain generation)")
        records[target], names[target] = record, given[0]
    return records, names


def run(args: argparse.Namespace) -> int:
    from multimae.engine.distributed import resolve_device
    from multimae.errors import check_seed, reading
    from multimae.generation.runs import RunGenerator, load_run
    from multimae.generation.schedule import TargetSchedule
    from multimae.tasks.runs import check_output_folder

    try:
        check_seed(args.seed, "--seed")
        if args.samples < 1 or (args.batch_size is not None and args.batch_size < 1):
            raise ValueError("--samples and --batch-size must be >= 1")
        device = resolve_device(args.device, key="--device")
        check_output_folder(args.out, [args.checkpoint])
        with reading(args.checkpoint, "checkpoint"):
            model, tokenizers = load_run(args.checkpoint)
        gen = RunGenerator(model.to(device), tokenizers)
        guidance = _guidance(args.guidance)
        guidance = {gen.input(n): w for n, w in guidance.items()}
        raw, shown = _raw_conditions(gen, args)
        targets = [gen.output(t.strip()) for t in args.target.split(",") if t.strip()]
        schedules = []
        for t in targets:
            seq = model.output_specs[t].kind == "tokens"
            schedules.append(TargetSchedule(
                t, "autoregressive" if seq else args.scheme, steps=args.steps, token_schedule=args.token_schedule,
                num_tokens=args.max_new if seq else None, temperature=args.temperature,
                temperature_schedule=args.temperature_schedule, top_k=args.top_k, top_p=args.top_p,
                guidance=guidance))
        for t in targets:  # every target's tokenizer exists before anything is generated
            gen.tokenizer(model.output_specs[t])
        inpaint, inpainted = _inpaint(gen, args, raw, targets)
        conditions = gen.conditions(raw)
        precision = _precision(args.precision, model, device, args.batch_size or args.samples)
        print(f"precision: {precision.reason}")
        start = time.perf_counter()
        steps, finals = _generate(gen, conditions, schedules, args, inpaint, precision.precision)
        seconds = time.perf_counter() - start
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    return _write(gen, args, shown, schedules, steps, finals, seconds, inpaint, inpainted, precision.as_dict())


def _precision(requested: str, model: Any, device: Any, batch: int) -> Any:
    """``--precision`` resolved for ``device``, timed at the encoder's size (``batch`` samples of a full
    encoder budget)."""
    from multimae.engine.precision import choose_precision, probe_shape

    cfg = model.config
    return choose_precision(requested, device, probe_shape(batch * cfg.num_encoder_tokens, cfg.dim))


def _generate(gen: Any, conditions: dict[str, Any], schedules: list[Any], args: argparse.Namespace,
              inpaint: dict[str, Any], precision: str) -> tuple[list[Any], dict[str, Any]]:
    """The targets' final records (in batches of --batch-size) and, for the steps picture, every step of the
    first batch."""
    from multimae.generation.generate import generate

    first: list[Any] = []

    def keep(start: int, step: Any) -> None:
        if start == 0 and args.steps_picture:
            first.append(step)

    finals = generate(gen.model, conditions, schedules, args.seed, not args.independent, args.batch_size, on_step=keep,
                      inpaint=inpaint, precision=precision)
    return first, finals


def _write(gen: Any, args: argparse.Namespace, shown: dict[str, Any], schedules: list[Any], steps: list[Any],
           finals: dict[str, Any], seconds: float, inpaint: dict[str, Any], inpainted: dict[str, str],
           precision: dict[str, Any]) -> int:
    import dataclasses

    import numpy as np
    from PIL import Image

    from multimae.generation.autoregressive import rows_of
    from multimae.generation.editing import is_sequence
    from multimae.modalities.registry import get_modality
    from multimae.viz.colormaps import draw_spec
    from multimae.viz.grid import image_grid

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    decoded = gen.decode(finals, schedules)
    pictures: dict[str, list[np.ndarray]] = {}
    written = []

    def picture(name: str, value: Any) -> np.ndarray:
        return draw_spec(get_modality(name), np.asarray(value))

    for name, value in decoded.items():
        if isinstance(value, list):
            (out / f"{name}.txt").write_text("\n".join(value) + "\n")
            written.append(f"{name}.txt")
            continue
        array = value.detach().cpu().numpy()
        np.save(out / f"{name}.npy", array)
        pictures[name] = [picture(name, a) for a in array]
        for i, pic in enumerate(pictures[name]):
            file = f"{name}.png" if len(array) == 1 else f"{name}_{i}.png"
            Image.fromarray(pic).save(out / file)
            written.append(file)
        written.append(f"{name}.npy")
    for name, value in decoded.items():  # boxes: also drawn, on the given (else the generated) picture
        if isinstance(value, list) and get_modality(name).stored_as == "box_text":
            pictures[name] = _boxes_pictures(gen, shown, pictures, value, name)
            for i, pic in enumerate(pictures[name]):
                file = f"{name}.png" if len(value) == 1 else f"{name}_{i}.png"
                Image.fromarray(pic).save(out / file)
                written.append(file)
    sequences = {t: inpainted[t] for t in inpaint if is_sequence(gen.model, t)}  # their texts
    spans = {t: rows_of(gen.model, t, inpaint, 1)[0].spans for t in sequences}
    inpaint = {t: r for t, r in inpaint.items() if t not in sequences}  # the maps
    inpainted = {t: n for t, n in inpainted.items() if t not in sequences}
    inpaint_sources = {gen.model.output_specs[t].source_name for t in inpaint}
    masks = {gen.output(n): v for n, v in _pairs(args.inpaint, "--inpaint")}
    given = {n: v for n, v in shown.items() if not isinstance(v, str)}
    sources = {}
    for n in given:
        spec = gen.model.input_specs[gen.input(n)]
        sources[n] = spec.source_name if spec.kind == "token_map" else spec.name
    originals = set(inpainted.values())
    titles = ([f"{n} ({'original' if n in originals else 'given'})" for n in given]
              + [f"{n} ({'in-painted' if n in inpaint_sources else 'generated'})" for n in pictures])
    texts = {n: v for n, v in decoded.items() if isinstance(v, list)}
    rows, notes = [], []
    for i in range(args.samples):
        rows.append([picture(sources[n], v.cpu().numpy()) for n, v in given.items()] + [pictures[n][i] for n in pictures])
        notes.append("; ".join([*(f"{n} given: {t}" for n, t in shown.items() if isinstance(t, str)),
                                *(f"{t} in-painted from: {text}" for t, text in sequences.items()),
                                *(f"{n}: {t[i]}" for n, t in texts.items())]))
    if titles:
        image_grid(rows, titles, notes).save(out / "figure.png")
        written.append("figure.png")
    if steps:
        _steps_picture(gen, steps).save(out / "steps.png")
        written.append("steps.png")
    if inpaint:
        drawn = {n: picture(sources[n], shown[n].cpu().numpy()) for n in inpainted.values()}
        tokens = {t: [picture(sources[inpainted[t]], a) for a in gen.decode_record(t, r).cpu().numpy()]
                  for t, r in inpaint.items()}  # the original's tokens decoded
        _inpaint_picture(gen, inpaint, inpainted, drawn, tokens, pictures).save(out / "inpaint.png")
        written.append("inpaint.png")
    summary = {"checkpoint": str(args.checkpoint), "conditions": {n: (v if isinstance(v, str) else "map")
                                                                    for n, v in shown.items()},
               "inpaint": {t: {"original": inpainted[t], "mask": masks[t], "regenerated_tokens":
                               int((~r.encoded[0]).sum()), "tokens": r.num_tokens} for t, r in inpaint.items()}
               | {t: {"given": text, "spans": spans[t]} for t, text in sequences.items()},
               "chained": not args.independent, "seed": args.seed, "samples": args.samples,
               "schedules": [dataclasses.asdict(s) for s in schedules], "texts": texts,
               "seconds": round(seconds, 3), "precision": precision, "tokenizers": {m: t.content_hash for m, t in gen.tokenizers.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    written.append("summary.json")
    for name, t in texts.items():
        for line in t:
            print(f"{name}: {line}")
    print(f"generated {', '.join(s.target for s in schedules)} in {seconds:.2f} s "
          f"({'independently' if args.independent else 'chained'}); wrote {len(written)} files to {out}")
    return 0


def _boxes_pictures(gen: Any, shown: dict[str, Any], pictures: dict[str, list[Any]], texts: list[str],
                    name: str) -> list[Any]:
    """Each sample's generated boxes drawn on the picture given as a condition, else on the generated one
    (else on grey)."""
    from multimae.modalities.registry import DEFAULT_IMAGE_MODALITY
    from multimae.viz.boxes import draw_box_text
    from multimae.viz.colormaps import rgb_to_uint8

    size = gen.model.config.image_size
    bins = getattr(gen.tokenizers.get(name), "coord_bins", size)
    given = next((v for n, v in shown.items()
                  if not isinstance(v, str) and gen.model.input_specs[gen.input(n)].source_name == DEFAULT_IMAGE_MODALITY),
                 None)
    bases = ([rgb_to_uint8(given.cpu())] * len(texts) if given is not None
             else pictures.get(DEFAULT_IMAGE_MODALITY, [None] * len(texts)))
    return [draw_box_text(base, text, bins, size) for base, text in zip(bases, texts)]


def _inpaint_picture(gen: Any, inpaint: dict[str, Any], inpainted: dict[str, str], originals: dict[str, Any],
                     tokens: dict[str, list[Any]], pictures: dict[str, list[Any]]) -> Any:
    """inpaint.png: per in-painted map (``originals``: its --cond name -> the picture given; ``tokens``: its
    model name -> its tokens decoded, per sample), the original, its regenerated tokens marked on it, its
    tokens decoded and the result of every sample."""
    from multimae.generation.editing import token_grid
    from multimae.viz.inpaint import InPainted, inpaint_figure

    panels = {}
    for target, record in inpaint.items():
        name = inpainted[target]
        result = pictures[gen.model.output_specs[target].source_name]
        panels[name] = InPainted([originals[name]] * len(result), tokens[target], result, record.encoded.cpu(),
                                 token_grid(gen.model, target))
    return inpaint_figure(panels)


def _steps_picture(gen: Any, steps: list[Any]) -> Any:
    """One row per token-map step: every token-map target's codes decoded so far (first sample), pending black."""
    import numpy as np

    from multimae.viz.colormaps import distinct_colors
    from multimae.viz.grid import image_grid

    maps = [s.target for s in steps if s.scheme != "autoregressive"]
    names = list(dict.fromkeys(maps))
    rows, notes = [], []
    for s in steps:
        if s.scheme == "autoregressive":
            continue
        row = []
        for name in names:
            record = s.state[name]
            side = gen.model.decoder_embeddings[name].side
            colors = distinct_colors(gen.model.output_specs[name].num_channels)
            codes = record.data[0].view(side, side).cpu().numpy()
            shown = record.encoded[0].view(side, side).cpu().numpy()
            row.append(np.where(shown[..., None], colors[codes], 0).astype(np.uint8))
        rows.append(row)
        notes.append(f"step {s.index}: {s.target} {s.scheme} {s.step + 1}/{s.num_steps}, "
                     f"{s.result.positions.shape[1]} tokens, T={s.temperature:.3g}")
    return image_grid(rows, [f"{n} tokens" for n in names], notes)
