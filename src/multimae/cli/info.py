"""`multimae info`: what this installation provides (modalities, model presets)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="list the built-in modalities and model presets")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from multimae.model.config import MODEL_SIZES, model_config
    from multimae.modalities.registry import BUILTIN_MODALITIES

    print("modalities:")
    for spec in BUILTIN_MODALITIES.values():
        roles = "/".join(r for r, on in (("input", spec.is_input), ("output", spec.is_output)) if on)
        print(
            f"  {spec.name:<10} {spec.kind:<12} channels={spec.num_channels:<4} stride={spec.stride} "
            f"norm={spec.normalization:<18} loss={spec.loss:<13} {roles}"
        )
    print("model sizes (encoder width/depth/heads, decoder width/depth/heads):")
    for size in MODEL_SIZES:
        cfg = model_config(size)
        e, d = cfg.encoder, cfg.decoder
        print(f"  {size:<6} {e.dim}/{e.depth}/{e.num_heads}  decoder {d.dim}/{d.depth}/{d.num_heads}  patch {e.patch_size}")
    return 0
