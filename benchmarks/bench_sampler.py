"""4M generation latency: our sampler next to the official 4M `GenerationSampler` (apple/ml-4m), on the
same model in the same process.

The official tiny model is built as in `bench_fourm_step.py` (its own factory and embeddings, the same
two import shims; see that script's docstring) and converted into ours (`fourm_to_ours`), so both
samplers drive the same function. Conditions: a random picture (``rgb@<px>``, fully given). Targets,
one at a time, batch ``--batch``:

* ``tok_semseg``: every token of the map by MaskGIT (cosine schedule, ``--steps`` steps, temperature 1);
* ``caption``: ``--caption-tokens`` ids autoregressively (temperature 1; ours with its KV cache, the
  official sampler recomputes the prefix at every id, which is what it does).

Precisions: fp32 for both; where the CPU computes bf16 natively (avx512_bf16 / amx_bf16; elsewhere torch
emulates it ~100x slower and bf16 is skipped), also ours with ``precision="bf16"`` (the passes under
`multimae.engine.precision.autocast`, logits sampled in fp32: what ``multimae generate --precision auto``
picks there) and the official sampler run under ``torch.autocast("cpu", bfloat16)``, which its code
never does.

Rounds alternate between the samplers (and reverse their order every round), so all see the machine's
load of the moment; the ratios are what to read. Printed: the median seconds per image and tokens/s of
each, and the ratios official / ours: fp32 against fp32, ours in bf16 against the official sampler as it
runs (fp32), and bf16 against bf16 (issue #19's target: >= 2x). The samplers draw from different
random streams, so their outputs are not compared here (`tests/generation/test_fixture.py` replays the
official sampler step by step on the fixture's model).

    .venv/bin/python benchmarks/bench_sampler.py --official /tmp/ml-4m            # tiny, fp32, 1 thread
    .venv/bin/python benchmarks/bench_sampler.py --official /tmp/ml-4m --quick    # seconds: a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_fourm_step as step_bench  # noqa: E402  (the official model, its shims and our conversion)

from multimae.convert.fourm import fourm_to_ours  # noqa: E402
from multimae.engine.precision import cpu_flags, native_bf16_feature  # noqa: E402
from multimae.generation import TargetSchedule  # noqa: E402
from multimae.generation.generate import generate  # noqa: E402
from multimae.generation.state import condition  # noqa: E402


def load_sampler(root: Path) -> types.ModuleType:
    """The official ``fourm.models.generate``, after `bench_fourm_step.load_official` (its two helpers
    from ``fourm.utils`` bound on the bare package)."""
    package = types.ModuleType("fourm.utils.tokenizer")  # bare, as `load_official` registers the others
    package.__path__ = [str(root / "fourm" / "utils" / "tokenizer")]
    sys.modules["fourm.utils.tokenizer"] = package
    import fourm.utils.tokenizer.text_tokenizer as text

    utils = sys.modules["fourm.utils"]
    utils.get_sentinel_to_id_mapping = text.get_sentinel_to_id_mapping
    utils.merge_span_masking = text.merge_span_masking
    import fourm.models.generate as gen

    return gen


class SpecialIds:
    """What the official sampler asks of a text tokenizer when it merges a generated sequence: the ids of
    [PAD], [EOS] and the sentinels, in the official layout ([PAD] 0, [EOS] 3, [S_k] 4 + k)."""

    def __init__(self, sentinels: int = 200) -> None:
        self.vocab = {"[PAD]": 0, "[UNK]": 1, "[SOS]": 2, "[EOS]": 3, **{f"[S_{k}]": 4 + k for k in range(sentinels)}}

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    def token_to_id(self, token: str) -> int:
        return self.vocab[token]


def official_info(args: argparse.Namespace) -> dict[str, dict]:
    """The modality table the official sampler reads (type, id, vocabulary, token counts)."""
    info = {}
    for i, (name, m) in enumerate(step_bench.modalities(args).items()):
        entry = {"id": i, "type": m["type"]}
        if m["type"] == "seq":
            entry.update(vocab_size=m["vocab"], max_tokens=m["length"], max_length=m["length"])
        else:
            side = args.image_size // m["patch"]
            entry.update(patch_size=m["patch"], input_size=args.image_size, max_tokens=side * side)
            if "vocab" in m:
                entry["vocab_size"] = m["vocab"]
        info[name] = entry
    return info


def official_run(gen: types.ModuleType, sampler, info: dict, picture: torch.Tensor, target: str, scheme: str,
                 tokens: int, steps: int, seed: int) -> None:
    rgb = next(n for n in info if n.startswith("rgb"))
    mod_dict = {rgb: {"tensor": picture.clone()}}
    mod_dict = gen.init_full_input_modality(mod_dict, info, rgb, picture.device)
    mod_dict = gen.init_empty_target_modality(mod_dict, info, target, picture.shape[0], tokens, picture.device)
    schedule = gen.build_chained_generation_schedules(
        cond_domains=[rgb], target_domains=[target], tokens_per_target=[tokens], autoregression_schemes=[scheme],
        decoding_steps=[steps], token_decoding_schedules=["cosine"], temps=[1.0], temp_schedules=["constant"],
        cfg_scales=[1.0], cfg_schedules=["constant"], cfg_grow_conditioning=False, modality_info=info)
    sampler.generate(mod_dict, schedule, top_k=0.0, top_p=0.0, text_tokenizer=SpecialIds(), seed=seed)


def ours_run(model, picture: torch.Tensor, target: str, scheme: str, tokens: int, steps: int, seed: int,
             precision: str = "fp32") -> None:
    schedule = TargetSchedule(target, scheme, steps=steps, num_tokens=tokens if scheme == "autoregressive" else None,
                              temperature=1.0)
    generate(model, {"rgb": condition(model, "rgb", picture)}, [schedule], seed=seed, precision=precision)


def official_in(precision: str):
    """The context the official sampler runs in: nothing for fp32, CPU autocast for bf16."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def time_pair(runs: dict, rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {w: [] for w in runs}
    for r in range(rounds + 1):  # round 0 warms up
        for which in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            t = time.perf_counter()
            runs[which](r)
            if r:
                times[which].append(time.perf_counter() - t)
    return {w: statistics.median(ts) for w, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True, help="root of an apple/ml-4m checkout (holds fourm/)")
    parser.add_argument("--size", default="tiny", choices=list(step_bench.FACTORIES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8, help="MaskGIT steps of the token map")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="batch 2, 1 round: checks that both run")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--token-stride", type=int, default=16)
    parser.add_argument("--depth-vocab", type=int, default=8192)
    parser.add_argument("--semseg-vocab", type=int, default=4096)
    parser.add_argument("--caption-vocab", type=int, default=30522)
    parser.add_argument("--caption-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.batch, args.rounds = 2, 1
    torch.set_num_threads(args.threads)
    code = step_bench.load_official(args.official)
    gen = load_sampler(args.official)
    torch.manual_seed(args.seed)
    official = step_bench.build_official(code, args.size, args).eval()
    ours, report = fourm_to_ours(official.state_dict(), num_heads=official.encoder[0].attn.num_heads)
    if report.missing:
        raise SystemExit(f"converter left {report.missing} unfilled")
    ours.eval()
    info = official_info(args)
    official.modality_info = {**official.modality_info, **info}
    sampler = gen.GenerationSampler(official)
    picture = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=torch.Generator().manual_seed(0))
    side = args.image_size // args.token_stride
    semseg = next(n for n in info if n.startswith("tok_semseg"))
    print(f"CPU: {step_bench.cpu_model()}; torch {torch.__version__}, threads={args.threads}; official 4M "
          f"{args.official} (model files sha256 {code.digest})")
    print(f"{args.size}: {sum(p.numel() for p in ours.parameters()) / 1e6:.1f} M parameters; conditions rgb@"
          f"{args.image_size}; batch {args.batch}; median of {args.rounds} rounds")
    cases = [(semseg, "tok_semseg", "maskgit", side * side, args.steps, f"tok_semseg, {side * side} tokens, MaskGIT "
              f"{args.steps} steps"),
             ("caption", "caption", "autoregressive", args.caption_tokens, 1,
              f"caption, {args.caption_tokens} ids, autoregressive")]
    native = native_bf16_feature(cpu_flags())
    precisions = ["fp32", "bf16"] if native else ["fp32"]
    print(f"precisions: {', '.join(precisions)}" + (f" ({native})" if native else
                                                     " (no native bf16 on this CPU: bf16 skipped)"))
    for off_name, our_name, scheme, tokens, steps, label in cases:
        runs = {}
        for p in precisions:
            runs[f"ours {p}"] = (lambda r, p=p: ours_run(ours, picture, our_name, scheme, tokens, steps,
                                                         args.seed + r, p))
            runs[f"official {p}"] = (lambda r, p=p: _official_in(p, gen, sampler, info, picture, off_name, scheme,
                                                                 tokens, steps, args.seed + r))
        with torch.no_grad():
            med = time_pair(runs, args.rounds)
        for which, t in med.items():
            print(f"  {label}: {which:13s} {t / args.batch:.4f} s / image, {tokens * args.batch / t:.0f} tokens/s")
        ratios = [("fp32 / fp32", "official fp32", "ours fp32")]
        if "bf16" in precisions:
            ratios += [("official fp32 / ours bf16", "official fp32", "ours bf16"),
                       ("bf16 / bf16", "official bf16", "ours bf16")]
        for what, off, our in ratios:
            print(f"  {label}: official / ours latency, {what}: {med[off] / med[our]:.2f}x (target >= 2x: "
                  f"{'met' if med[off] >= 2 * med[our] else 'NOT met'})")


def _official_in(precision: str, *run_args) -> None:
    with official_in(precision):
        official_run(*run_args)

if __name__ == "__main__":
    main()
