"""`multimae visualize`: pictures of what a pre-trained model predicts on held-out scenes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "visualize",
        help="masked-reconstruction and single-modality-to-all pictures of a trained model",
        description="Writes reconstructions.png (several random masks per sample: masked input, "
        "prediction, ground truth) and cross_modal.png (one full modality in, every output predicted) "
        "for held-out samples of the run's data.",
    )
    parser.add_argument("--checkpoint", required=True, help="run folder, checkpoint-*.pt or model.safetensors")
    parser.add_argument("--out", default=".", help="output folder [current directory]")
    parser.add_argument("--samples", type=int, default=4, help="number of held-out samples [4]")
    parser.add_argument("--masks", type=int, default=3, help="random masks per sample [3]")
    parser.add_argument("--num-visible", type=int, help="visible tokens (default: the run's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--caption", metavar="TEXT", help="models with captions: give every sample this caption "
                        "instead of its own; words written [MASK] are predicted and printed per sample, e.g. "
                        "\"a red sphere [MASK] of a blue cube\"")
    parser.add_argument("--trust", action="store_true", help="allow arbitrary pickled objects in the checkpoint")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from multimae.tasks.loading import load_pretrained, load_tokenizers
    from multimae.errors import check_positive, check_seed, reading
    from multimae.tasks.pretrain_job import held_out_batch, save_pictures
    from multimae.tasks.runs import check_output_folder

    check_positive(args.samples, "--samples")
    check_positive(args.masks, "--masks")
    check_positive(args.num_visible, "--num-visible")
    check_seed(args.seed, "--seed")
    check_output_folder(args.out, [args.checkpoint])
    try:
        with reading(args.checkpoint, "checkpoint"):
            model, cfg = load_pretrained(args.checkpoint, args.trust)
            tokenizers = load_tokenizers(args.checkpoint, model, args.trust)
        raw = held_out_batch(cfg, model, args.samples)
        if args.caption is not None:
            raw = with_caption(model, raw, args.caption, tokenizers)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in save_pictures(model, cfg, raw, out, num_masks=args.masks, num_visible=args.num_visible, seed=args.seed,
                              tokenizers=tokenizers):
        print(path)
    return 0


def with_caption(model: Any, raw: dict[str, Any], caption: str, tokenizers: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with every sample's caption replaced by ``caption`` (without its ``[MASK]`` words: the
    pictures hide words of their own); prints, per sample, the words the model predicts at the ``[MASK]`` positions from the
    sample's images and the rest of the caption."""
    from multimae.inference import predict
    from multimae.inference.captions import MASK_WORD

    texts = [n for n in model.input_specs if n in tokenizers]
    if not texts:
        raise ValueError(f"--caption: this model reads no caption (inputs {list(model.input_specs)})")
    name = texts[0]
    maps = {k: v for k, v in raw.items() if k in model.input_specs and k not in tokenizers}
    n = len(raw[name]) if isinstance(raw.get(name), list) else next(iter(maps.values())).shape[0]
    for i in range(n):
        pred = predict(model, {**{k: v[i] for k, v in maps.items()}, name: caption}, tokenizers=tokenizers)
        c = pred.captions.get(name)
        if c is not None:
            print(f"sample {i}: {c.marked}" + (f"  (predicted: {', '.join(c.words)})" if c.words else ""))
    shown = " ".join(w for w in caption.split() if w != MASK_WORD) or caption  # the pictures mask words themselves
    return {**raw, name: [shown] * n}
