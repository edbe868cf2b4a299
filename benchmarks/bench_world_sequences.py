"""Statistics of the world's sequence texts (boxes, metadata, palette) over the first scenes of a
split: words per text (to choose a sequence tokenizer's max_length) and each metadata field's bin
(min / max / mean / distinct bins, to check that its range spreads the values). Asserts nothing.

    python benchmarks/bench_world_sequences.py [--split train] [--count 200] [--size 64] [--bins 64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from multimae.data.world import METADATA_FIELDS, parse_metadata, world_sample, world_sequences


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", default="train")
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--bins", type=int, default=64)
    args = p.parse_args(argv)

    words: dict[str, list[int]] = {}
    bins: dict[str, list[int]] = {f.name: [] for f in METADATA_FIELDS}
    start = time.perf_counter()
    for i in range(args.count):
        texts = world_sequences(world_sample(args.split, i, args.size), args.bins)
        for name, text in texts.items():
            words.setdefault(name, []).append(len(text.split()))
        for name, b in parse_metadata(texts["metadata"]).items():
            bins[name].append(b)
    seconds = time.perf_counter() - start
    print(f"{args.count} {args.split} scenes at {args.size} px, bins={args.bins} ({seconds:.1f} s)")
    print(f"{'sequence':<12} {'mean words':>10} {'max words':>10}")
    for name, n in words.items():
        print(f"{name:<12} {np.mean(n):>10.1f} {max(n):>10d}")
    print(f"{'field':<13} {'min':>4} {'max':>4} {'mean':>6} {'distinct':>8}")
    for name, b in bins.items():
        print(f"{name:<13} {min(b):>4d} {max(b):>4d} {np.mean(b):>6.1f} {len(set(b)):>8d}")


if __name__ == "__main__":
    main()
