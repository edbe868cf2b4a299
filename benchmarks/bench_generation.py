"""Generation speed of a random 4M model on this machine: a caption decoded with and without the KV
cache, and a token map by MaskGIT, median of --rounds; prints, never asserts. Times depend on the
machine's load; the cache / recomputation ratio is measured in alternating rounds.

    .venv/bin/python benchmarks/bench_generation.py --dim 256 --depth 4 --tokens 64 --batch 4
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from multimae.generation import TargetSchedule, condition, generate
from multimae.generation.autoregressive import autoregressive_step
from multimae.model.fourm import FourM, fourm_config


def build(dim: int, depth: int, heads: int, max_length: int) -> FourM:
    torch.manual_seed(0)
    cfg = fourm_config("tiny", dim=dim, num_heads=heads, encoder_depth=depth, decoder_depth=depth, image_size=128,
                       patch_size=16, inputs=("rgb", "tok_depth", "caption"), outputs=("tok_depth", "caption"),
                       modality_overrides={"caption": {"max_length": max_length}})
    return FourM(cfg).eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--tokens", type=int, default=64, help="caption ids generated")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=8, help="MaskGIT steps of the token map")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = build(args.dim, args.depth, args.heads, 2 * args.tokens + 2)
    state = {"rgb": condition(model, "rgb", torch.randn(args.batch, 3, 128, 128))}
    sched = TargetSchedule("caption", "autoregressive", temperature=1.0)
    never_stop = -1  # no id is -1: with the closing sentinel at -1 too, every row decodes all --tokens ids
    times: dict[str, list[float]] = {"kv cache": [], "recompute": []}
    with torch.no_grad():
        for _ in range(args.rounds):
            for name, cache in (("kv cache", True), ("recompute", False)):
                start = time.perf_counter()
                autoregressive_step(model, state, sched, args.tokens, 1.0, torch.Generator().manual_seed(0), cache,
                                    sentinel=lambda i: 5 if i == 1 else never_stop, eos_id=never_stop)
                times[name].append(time.perf_counter() - start)
        maskgit = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            generate(model, state, [TargetSchedule("tok_depth", steps=args.steps)])
            maskgit.append(time.perf_counter() - start)
    n = args.batch * args.tokens
    for name, t in times.items():
        m = statistics.median(t)
        print(f"caption, {name}: {m:.3f} s for {args.batch} x {args.tokens} ids ({n / m:.0f} ids/s)")
    ratio = statistics.median(times["recompute"]) / statistics.median(times["kv cache"])
    print(f"kv cache speed-up: {ratio:.2f}x")
    m = statistics.median(maskgit)
    N = model.decoder_embeddings["tok_depth"].side ** 2
    print(f"tok_depth by MaskGIT, {args.steps} steps: {m:.3f} s for {args.batch} x {N} tokens "
          f"({args.batch * N / m:.0f} tokens/s)")


if __name__ == "__main__":
    main()
