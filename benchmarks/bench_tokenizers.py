"""Tokenizer speed: training steps/s and encode / decode throughput (images/s) per map modality, with
a preset's architecture (default ``tok-world``, 64 px -> 8x8 tokens); the same for the feature vector
tokenizer (preset ``tok-feature``, random 192-d vectors: speed does not depend on the values) and
encode / decode texts/s of the sequence tokenizer on world texts. Prints numbers; asserts nothing
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
from multimae.data.world import SEQUENCE_WORDS
from multimae.tokenizers import SpatialTokenizer, VectorTokenizer, fit_statistics
from multimae.tokenizers.config import TokenizerRunConfig, VectorRunConfig
from multimae.tokenizers.sequence_training import train_sequence_tokenizer, world_texts
from multimae.tokenizers.maps import world_maps


def config_for(preset: str, modality: str) -> TokenizerRunConfig:
    own = f"{preset}-{modality}"
    name = own if (PRESET_DIR / f"{own}.yaml").exists() else preset
    return load_config(TokenizerRunConfig, preset_path(name), [f"modality={modality}"])


def bench(config: TokenizerRunConfig, batch: int, steps: int) -> dict[str, float]:
    raw = world_maps(config.data, config.modality, "val", max(batch, 64), progress=False)
    return timed(SpatialTokenizer(fit_statistics(config.spec(), raw), config.tokenizer), raw, batch, steps)


def bench_vector(batch: int, steps: int) -> dict[str, float]:
    config = load_config(VectorRunConfig, preset_path("tok-feature"), ["source=unused"])
    raw = torch.randn(max(batch, 64), 1, config.spec().num_channels)
    tok = VectorTokenizer.fit(config.spec(), raw, config.tokenizer)
    return {**timed(tok, raw, batch, steps), "vocab": tok.vocab_size}


def bench_sequences(steps: int) -> dict[str, float]:
    texts = world_texts("val", 64, progress=False)
    tok = train_sequence_tokenizer(texts, SEQUENCE_WORDS)
    flat = [t for kind in texts.values() for t in kind]
    start = time.perf_counter()
    for _ in range(steps):
        ids = tok.encode(flat)
    encode = steps * len(flat) / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(steps):
        tok.decode(ids)
    return {"encode": encode, "decode": steps * len(flat) / (time.perf_counter() - start), "vocab": tok.vocab_size}


def timed(tok, raw: torch.Tensor, batch: int, steps: int) -> dict[str, float]:
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
    r = bench_vector(args.batch, args.steps)
    print(f"{'feature':<10}{'fsq':>10}{r['vocab']:>7}{r['parameters']:>9}{r['train_steps_per_s']:>15.2f}"
          f"{r['encode_images_per_s']:>14.1f}{r['decode_images_per_s']:>14.1f}")
    r = bench_sequences(args.steps)
    print(f"sequences (world texts, vocab {r['vocab']}): encode {r['encode']:.0f} texts/s, decode {r['decode']:.0f} texts/s")


if __name__ == "__main__":
    main()
