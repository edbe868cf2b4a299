"""Map tokenizer speed: training steps/s and encode / decode throughput (images/s) per modality, with
a preset's architecture (default ``tok-world``, 64 px -> 8x8 tokens). Prints numbers; asserts nothing
about time.

    python benchmarks/bench_tokenizers.py [--config tok-world] [--modalities rgb depth normals semseg]
                                          [--batch 32] [--steps 10] [--threads 1]

Inputs are world scenes rendered once (a small pool, cached like a training run's). Numbers depend on
the machine and on whatever else runs on it: state both when quoting them.
"""

from __future__ import annotations

import argparse
import time

import torch

from multimae.config.loader import load_config
from multimae.configs import PRESET_DIR, preset_path
from multimae.tokenizers import SpatialTokenizer, fit_statistics
from multimae.tokenizers.config import TokenizerRunConfig
from multimae.tokenizers.training import world_maps


def config_for(preset: str, modality: str) -> TokenizerRunConfig:
    own = f"{preset}-{modality}"
    name = own if (PRESET_DIR / f"{own}.yaml").exists() else preset
    return load_config(TokenizerRunConfig, preset_path(name), [f"modality={modality}"])


def bench(config: TokenizerRunConfig, batch: int, steps: int) -> dict[str, float]:
    raw = world_maps(config.data, config.modality, "val", max(batch, 64), progress=False)
    tok = SpatialTokenizer(fit_statistics(config.spec(), raw), config.tokenizer)
    opt = torch.optim.AdamW(tok.net.parameters(), lr=1e-3)
    x = raw[:batch]
    tok.net.train()

    def step() -> None:
        _, _, loss = tok.reconstruct(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up (and a VQ codebook's k-means)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    train = steps / (time.perf_counter() - start)
    tok.encode(x)
    start = time.perf_counter()
    for _ in range(steps):
        tokens = tok.encode(x)
    encode = steps * batch / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(steps):
        tok.decode(tokens)
    decode = steps * batch / (time.perf_counter() - start)
    return {"train_steps_per_s": train, "encode_images_per_s": encode, "decode_images_per_s": decode,
            "parameters": sum(p.numel() for p in tok.net.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tok-world", help="preset (tok-world-<modality> when it exists)")
    parser.add_argument("--modalities", nargs="+", default=["rgb", "depth", "normals", "semseg"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, {args.steps} timed steps")
    print(f"{'modality':<10}{'quantizer':>10}{'vocab':>7}{'params':>9}{'train steps/s':>15}{'encode img/s':>14}"
          f"{'decode img/s':>14}")
    for modality in args.modalities:
        config = config_for(args.config, modality)
        r = bench(config, args.batch, args.steps)
        q = config.tokenizer.quantizer
        print(f"{modality:<10}{q.kind:>10}{q.vocab_size:>7}{r['parameters']:>9}{r['train_steps_per_s']:>15.2f}"
              f"{r['encode_images_per_s']:>14.1f}{r['decode_images_per_s']:>14.1f}")


if __name__ == "__main__":
    main()
