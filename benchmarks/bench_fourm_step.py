"""One 4M training step of our `FourM` next to the official 4M model code (apple/ml-4m), in one process.

Both models hold the same weights: the official model is built first (its own factory,
``fm_<size>_..._swiglu_nobias``, and its own embedding classes), then its state dict goes through
our converter (`multimae.convert.fourm.fourm_to_ours`), so both compute the same function; the
script checks that on the first batch in fp32 (losses and gradient norm) before timing anything.
The modalities are 4M's kinds at a CPU-sized scale: ``rgb@<px>`` raw patches (encoder only),
``tok_depth@<px>`` and ``tok_semseg@<px>`` token maps and a ``caption`` sequence (input and
output), in the sorted order 4M's loader produces. Each batch is one draw of our `UnifiedMasking`
(4M's mixture: all-to-all and rgb-to-all, alpha 0.5), given to our model as ``ModalityBatch``
records and to the official one as its mod dicts (``official_masks``: ``input_mask``,
``target_mask``, ``decoder_attention_mask``); drawing happens before timing (it is the data
pipeline's job in both codes).

A step is forward, loss, backward and an AdamW step (the same torch AdamW settings for both).
Rounds alternate between the two models (and swap which goes first every round), so both see the
machine's load of the moment: the ratio is what to read, not the absolute times. Printed per size
and precision: the median step time, images/s and tokens/s (tokens = encoder inputs + predicted
targets of the step's batch), and the throughput ratio ours / official; then the targets of issue
#18: >= 1.0x in fp32, and >= 1.5x comparing each code in its fastest precision on this CPU. bf16 is
CPU autocast (ours through `multimae.engine.precision.autocast`; the official code is run under
``torch.autocast("cpu", bfloat16)`` too, which its training script never does; if that fails the
error is printed and its fp32 counts as its fastest). Where the CPU lacks avx512_bf16 / amx_bf16,
torch emulates bf16 (~100x slower on an AVX2-only EPYC): bf16 is then skipped unless
``--slow-bf16`` (one step each).

Getting the official code (kept outside this repository, never committed):

    git clone https://github.com/apple/ml-4m /tmp/ml-4m          # any checkout; --official is its root
    pip install einops                                           # its model code needs torch + einops

Running the official model under Python 3.11 (two shims, applied in this process only; the files
are imported unchanged):

* imports: ``fourm``, ``fourm.utils``, ``fourm.utils.timm``, ``fourm.data`` are registered as bare
  packages (their folders, without running their ``__init__.py``), because those pull in the data
  pipeline and training utilities (boto3, webdataset, ...) that the model does not use. The model
  files ``fourm/models/{fm,fm_utils,encoder_embeddings,decoder_embeddings}.py`` and
  ``fourm/utils/timm/registry.py`` are the official ones; ``fourm.data.modality_info`` is replaced
  by a module whose ``MODALITY_INFO`` is empty: only the hub wrapper ``FM`` reads it, and the
  ``FourM`` built here gets its own modality table (id and type per modality) as an argument.
* ``random.sample``: the official ``FourM.cat_decoder_tensors`` shuffles the decoder modality order
  with ``random.sample(mod_dict.items(), ...)``; Python 3.11 rejects a dict view there. The name
  ``random`` inside the official ``fm`` module is bound to a stand-in whose ``sample`` does what
  Python 3.10 did (a set-like population that is not a sequence becomes ``tuple(population)``;
  the rest of ``random.sample`` is line for line the same in 3.10 and 3.11, so the same draws from
  the same global generator give the same order); every other attribute is the real module's.
  The computation is unchanged: same order as under 3.10 for the same seed, and the order does not
  change the result anyway (the decoder's per-modality attention mask).

    .venv/bin/python benchmarks/bench_fourm_step.py --official /tmp/ml-4m              # tiny and base, fp32 and bf16
    .venv/bin/python benchmarks/bench_fourm_step.py --official /tmp/ml-4m --quick      # seconds: a smoke run
    .venv/bin/python benchmarks/bench_fourm_step.py --official /tmp/ml-4m --sizes base --profile 2
"""

from __future__ import annotations

import argparse
import collections.abc
import contextlib
import hashlib
import random
import statistics
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from multimae.convert.fourm import fourm_to_ours, our_name
from multimae.engine.precision import autocast, cpu_flags, cpu_model, native_bf16_feature, small_check
from multimae.masking import (
    BudgetDirichlet, DirichletInputTargetMasking, SequenceMasking, UnifiedMasking, official_masks,
    teacher_forced_slots,
)
from multimae.modalities.batch import ModalityBatch

FACTORIES = {"tiny": "fm_tiny_6e_6d_swiglu_nobias", "small": "fm_small_8e_8d_swiglu_nobias",
             "base": "fm_base_12e_12d_swiglu_nobias"}
DEFAULT_BATCH = {"tiny": 16, "small": 8, "base": 4}
FIRST_WORD = 204  # 4M's caption layout: [PAD] [UNK] [SOS] [EOS] = 0..3, [S_0]..[S_199] = 4..203
EOS = 3
OFFICIAL_FILES = ("models/fm.py", "models/fm_utils.py", "models/encoder_embeddings.py", "models/decoder_embeddings.py")


# ----------------------------------------------------------------------------- the official code

class Py310Sample:
    """The official ``fm`` module's ``random``: ``sample`` accepts a set-like view as Python <= 3.10
    did (as a tuple, then the same draws); everything else is the real ``random`` module."""

    def __init__(self, module: types.ModuleType) -> None:
        self._module = module

    def sample(self, population, k, **kwargs):
        # Python 3.10's random.sample, the one line 3.11 removed (3.10 also warned DeprecationWarning)
        if not isinstance(population, collections.abc.Sequence) and isinstance(population, collections.abc.Set):
            population = tuple(population)
        return self._module.sample(population, k, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._module, name)


def load_official(root: Path) -> types.SimpleNamespace:
    """The official model modules from a checkout at ``root`` (see the docstring: two shims)."""
    pkg = root / "fourm"
    if not (pkg / "models" / "fm.py").is_file():
        raise SystemExit(f"--official {root}: no fourm/models/fm.py there (give the root of an apple/ml-4m checkout)")
    for name, folder in (("fourm", pkg), ("fourm.utils", pkg / "utils"), ("fourm.utils.timm", pkg / "utils" / "timm"),
                         ("fourm.data", pkg / "data"), ("fourm.models", pkg / "models")):
        module = types.ModuleType(name)
        module.__path__ = [str(folder)]  # a package whose __init__.py is not run
        sys.modules[name] = module
    info = types.ModuleType("fourm.data.modality_info")
    info.MODALITY_INFO = {}  # read only by the hub wrapper FM, not by FourM
    sys.modules["fourm.data.modality_info"] = info
    import fourm.models.decoder_embeddings as dec  # the checkout's files, through the packages above
    import fourm.models.encoder_embeddings as enc
    import fourm.models.fm as fm

    fm.random = Py310Sample(random)
    digest = hashlib.sha256(b"".join((pkg / f).read_bytes() for f in OFFICIAL_FILES)).hexdigest()[:12]
    return types.SimpleNamespace(fm=fm, enc=enc, dec=dec, digest=digest)


# ----------------------------------------------------------------------------- models and batches

@dataclass
class Setup:
    """One size: the two models (same weights) and a pool of pre-drawn batches."""

    size: str
    ours: torch.nn.Module
    official: torch.nn.Module
    batches: list[tuple[dict[str, ModalityBatch], dict[str, dict[str, torch.Tensor]], int, int]]
    # (our records, official mod dicts, input tokens, target tokens) per batch
    names: dict[str, str]  # official modality -> ours


def modalities(args: argparse.Namespace) -> dict[str, dict]:
    """``{official name: what it is}``, sorted as 4M's loader sorts them."""
    px = args.image_size
    mods = {
        "caption": {"type": "seq", "vocab": args.caption_vocab, "length": 2 * (args.caption_tokens + 1)},
        f"rgb@{px}": {"type": "img", "patch": args.patch_size},
        f"tok_depth@{px}": {"type": "img", "vocab": args.depth_vocab, "patch": args.token_stride},
        f"tok_semseg@{px}": {"type": "img", "vocab": args.semseg_vocab, "patch": args.token_stride},
    }
    return dict(sorted(mods.items()))


def build_official(code: types.SimpleNamespace, size: str, args: argparse.Namespace) -> torch.nn.Module:
    """The official FourM of ``size`` with its own embeddings (tied heads, as its training builds them)."""
    enc, dec = {}, {}
    for name, m in modalities(args).items():
        if m["type"] == "seq":
            enc[name] = code.enc.SequenceEncoderEmbedding(vocab_size=m["vocab"], max_length=m["length"])
            dec[name] = code.dec.SequenceDecoderEmbedding(vocab_size=m["vocab"], max_length=m["length"],
                                                          share_embedding=True)
        elif "vocab" in m:
            enc[name] = code.enc.ImageTokenEncoderEmbedding(vocab_size=m["vocab"], patch_size=m["patch"],
                                                            image_size=args.image_size)
            dec[name] = code.dec.ImageTokenDecoderEmbedding(vocab_size=m["vocab"], patch_size=m["patch"],
                                                            image_size=args.image_size, share_embedding=True)
        else:
            enc[name] = code.enc.ImageEncoderEmbedding(num_channels=3, patch_size=m["patch"],
                                                       image_size=args.image_size)
    info = {name: {"id": i, "type": m["type"]} for i, (name, m) in enumerate(modalities(args).items())}
    return getattr(code.fm, FACTORIES[size])(encoder_embeddings=enc, decoder_embeddings=dec, modality_info=info)


def make_masking(names: dict[str, str], args: argparse.Namespace) -> UnifiedMasking:
    """4M's mixture over our modality names: all-to-all (alpha 0.5) and rgb-to-all; rgb is never a target."""
    ours = list(names.values())
    target = {n: (0.0 if n == "rgb" else 0.5) for n in ours}
    rgb_only = {n: (1.0 if n == "rgb" else 0.0) for n in ours}
    budgets = DirichletInputTargetMasking(args.num_encoder_tokens, args.num_decoder_tokens,
                                          [BudgetDirichlet(0.5, target), BudgetDirichlet(rgb_only, target)])
    return UnifiedMasking(budgets, {"caption": SequenceMasking(args.caption_tokens)})


def raw_records(names: dict[str, str], B: int, args: argparse.Namespace, g: torch.Generator) -> dict:
    """Random data for every modality: pixels, token maps, captions of varied length ending in [EOS]."""
    records = {}
    for official, m in modalities(args).items():
        name = names[official]
        if m["type"] == "seq":
            T = args.caption_tokens
            ids = torch.randint(FIRST_WORD, m["vocab"], (B, T), generator=g)
            lengths = torch.randint(T // 2, T, (B,), generator=g)  # words, then [EOS]
            pos = torch.arange(T).unsqueeze(0)
            ids = torch.where(pos < lengths[:, None], ids, torch.where(pos == lengths[:, None], EOS, 0))
            records[name] = (ids, None)
        elif "vocab" in m:
            side = args.image_size // m["patch"]
            records[name] = (torch.randint(0, m["vocab"], (B, side * side), generator=g), None)
        else:
            side = args.image_size // m["patch"]
            records[name] = (torch.randn(B, 3, args.image_size, args.image_size, generator=g),
                             torch.ones(B, side * side, dtype=torch.bool))
    return records


def to_official(batch: dict[str, ModalityBatch], names: dict[str, str]) -> dict[str, dict[str, torch.Tensor]]:
    """The same draw as the official code's mod dicts, in its (sorted) modality order."""
    return {official: {"tensor": batch[ours].data, **official_masks(batch[ours], ours == "caption")}
            for official, ours in names.items()}


def token_counts(batch: dict[str, ModalityBatch]) -> tuple[int, int]:
    """(encoder input tokens, predicted target tokens) of a batch (a caption's targets: teacher-forced slots)."""
    given = sum(int(r.encoded.sum()) for r in batch.values())
    target = sum(int((teacher_forced_slots(r.counted) if n == "caption" else r.counted).sum())
                 for n, r in batch.items() if n != "rgb")
    return given, target


def build(code: types.SimpleNamespace, size: str, args: argparse.Namespace) -> Setup:
    torch.manual_seed(args.seed)
    official = build_official(code, size, args)
    ours, report = fourm_to_ours(official.state_dict(), num_heads=official.encoder[0].attn.num_heads)
    if report.missing:
        raise SystemExit(f"converter left {report.missing} unfilled")
    names = {o: our_name(o) for o in modalities(args)}
    masking = make_masking(names, args)
    g = torch.Generator().manual_seed(args.seed)
    batches = []
    for _ in range(args.pool):
        drawn = masking(raw_records(names, args.batch, args, g), g)
        batches.append((drawn, to_official(drawn, names), *token_counts(drawn)))
    return Setup(size, ours.train(), official.train(), batches, names)


# ----------------------------------------------------------------------------- steps and timing

def fresh(mod_dict: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, torch.Tensor]]:
    """A shallow copy: the official embeddings write x / emb / ids into the dicts they get."""
    return {m: dict(d) for m, d in mod_dict.items()}


def forward_loss(setup: Setup, which: str, i: int, precision: str, args: argparse.Namespace) -> torch.Tensor:
    """The training loss of batch ``i`` by ``which`` model at ``precision``."""
    slots = args.num_encoder_tokens, args.num_decoder_tokens
    if which == "ours":
        with autocast(setup.ours, "cpu", precision):
            return setup.ours(setup.batches[i][0], *slots).loss
    bf16 = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    with bf16:
        loss, _ = setup.official(fresh(setup.batches[i][1]), *slots)
    return loss.sum()  # the official 'mod' loss is (1,)-shaped when a modality has no target


def grad_norm(model: torch.nn.Module) -> float:
    return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None])))


def check_same_function(setup: Setup, args: argparse.Namespace) -> None:
    """Loss, per-modality losses and gradient norm of both models on the first batch in fp32."""
    slots = args.num_encoder_tokens, args.num_decoder_tokens
    out = setup.ours(setup.batches[0][0], *slots)
    theirs, their_losses = setup.official(fresh(setup.batches[0][1]), *slots)
    out.loss.backward()
    theirs.sum().backward()
    a, b = out.loss.item(), theirs.sum().item()
    ga, gb = grad_norm(setup.ours), grad_norm(setup.official)
    per_mod = max(abs(out.losses[setup.names[m]].item() - v.sum().item()) for m, v in their_losses.items())
    rel, grel = abs(a - b) / abs(b), abs(ga - gb) / gb
    verdict = "same function" if rel < 1e-5 and grel < 1e-4 else "MISMATCH: the timings below compare different work"
    print(f"  check (fp32, batch 0): loss ours {a:.7f} official {b:.7f} (rel diff {rel:.1e}, largest per-modality "
          f"diff {per_mod:.1e}); gradient norm ours {ga:.6f} official {gb:.6f} (rel diff {grel:.1e}): {verdict}",
          flush=True)
    for model in (setup.ours, setup.official):
        model.zero_grad(set_to_none=True)


def make_step(setup: Setup, which: str, args: argparse.Namespace) -> Callable[[int, str], None]:
    """One training step of ``which`` on batch ``i``: forward, loss, backward, AdamW."""
    model = setup.ours if which == "ours" else setup.official
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05, fused=True)

    def step(i: int, precision: str) -> None:
        loss = forward_loss(setup, which, i, precision, args)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def plan(precision: str, emulated: bool, args: argparse.Namespace) -> tuple[int, int] | None:
    """(warm-up, timed rounds) for ``precision``; None (and a line saying why) where bf16 is emulated
    and ``--slow-bf16`` was not given; with it, one timed round and no warm-up."""
    if precision == "bf16" and emulated:
        if not args.slow_bf16:
            print("  bf16: skipped, this CPU has no native bf16 (torch emulates it, ~100x slower than fp32 on an "
                  "AVX2-only EPYC; --slow-bf16 times one step each)")
            return None
        return 0, 1
    return args.warmup, args.steps


def time_precision(setup: Setup, steps: dict[str, Callable[[int, str], None]], precision: str, emulated: bool,
                   args: argparse.Namespace) -> dict[str, float]:
    """Median step seconds per model at ``precision``, alternating rounds; if the official step
    raises, it is dropped from the comparison with a line saying why (ours raising is a bug: raised)."""
    rounds = plan(precision, emulated, args)
    if rounds is None:
        return {}
    warmup, timed = rounds
    alive = dict(steps)
    times: dict[str, list[float]] = {w: [] for w in alive}
    for r in range(warmup + timed):
        order = list(alive) if r % 2 == 0 else list(alive)[::-1]  # neither always runs first
        for which in order:
            t = time.perf_counter()
            try:
                alive[which](r % len(setup.batches), precision)
            except Exception as err:  # the official code was never meant to run under CPU autocast
                if which == "ours":
                    raise
                print(f"  {precision} {which}: its step fails ({type(err).__name__}: "
                      f"{str(err).splitlines()[0][:200] if str(err) else ''})")
                del alive[which], times[which]
                continue
            if r >= warmup:
                times[which].append(time.perf_counter() - t)
    return {w: statistics.median(ts) for w, ts in times.items() if ts}


def report_precision(setup: Setup, precision: str, med: dict[str, float], args: argparse.Namespace) -> dict[str, float]:
    """One line per model and the ratio; returns images/s per model."""
    B = args.batch
    n_in = statistics.mean(b[2] for b in setup.batches)
    n_tgt = statistics.mean(b[3] for b in setup.batches)
    speed = {}
    for which, t in med.items():
        speed[which] = B / t
        print(f"  {precision} {which:8s}: step {t:.3f} s, {B / t:.2f} images/s, {(n_in + n_tgt) / t:.0f} tokens/s "
              f"({n_in:.0f} input + {n_tgt:.0f} target tokens per step)")
    if len(med) == 2:
        ratio = med["official"] / med["ours"]
        goal = f" (target >= 1.0x in fp32: {'met' if ratio >= 1.0 else 'NOT met'})" if precision == "fp32" else ""
        print(f"  {precision}: ours / official throughput {ratio:.2f}x{goal}")
    return speed


def profile(setup: Setup, steps: dict[str, Callable[[int, str], None]], precision: str, args: argparse.Namespace) -> None:
    """The top ops by self CPU time of ``args.profile`` steps of each model (after one step)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for which, step in steps.items():
        step(0, precision)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(args.profile):
                step(i % len(setup.batches), precision)
        print(f"--- {setup.size} {precision} {which}: top ops by self CPU time over {args.profile} steps")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


def run_size(code: types.SimpleNamespace, size: str, emulated: bool, args: argparse.Namespace) -> None:
    setup = build(code, size, args)
    cfg = setup.ours.config
    n_params = sum(p.numel() for p in setup.ours.parameters())
    n_official = sum(p.numel() for p in setup.official.parameters())
    grid = (args.image_size // args.patch_size) ** 2, (args.image_size // args.token_stride) ** 2
    print(f"{size}: dim {cfg.dim}, {cfg.encoder_depth} + {cfg.decoder_depth} blocks, {cfg.num_heads} heads, "
          f"{n_params / 1e6:.1f} M parameters (official {n_official / 1e6:.1f} M); {args.image_size} px: rgb "
          f"{grid[0]} patches, tok_depth / tok_semseg {grid[1]} tokens (vocab {args.depth_vocab} / {args.semseg_vocab}), "
          f"caption {2 * (args.caption_tokens + 1)} (vocab {args.caption_vocab}); batch {args.batch}, "
          f"{args.num_encoder_tokens} encoder / {args.num_decoder_tokens} decoder slots", flush=True)
    check_same_function(setup, args)
    steps = {which: make_step(setup, which, args) for which in ("ours", "official")}
    if args.profile:
        for precision in args.precision:
            profile(setup, steps, precision, args)
        return
    speeds = {}
    for precision in args.precision:
        med = time_precision(setup, steps, precision, emulated, args)
        if med:
            speeds[precision] = report_precision(setup, precision, med, args)
        sys.stdout.flush()
    summarise(size, speeds)


def summarise(size: str, speeds: dict[str, dict[str, float]]) -> None:
    """Ours in its fastest precision against the official code as it trains on a CPU (fp32: its
    training script autocasts through ``torch.cuda.amp`` only), and against the official model
    under the CPU autocast this script adds (the stricter comparison)."""
    ours = max(((s["ours"], p) for p, s in speeds.items() if "ours" in s), default=None)
    if ours is None:
        return
    a, pa = ours
    theirs = {"as it trains on a CPU (fp32)": ("fp32", speeds.get("fp32", {}).get("official"))}
    best = max(((s["official"], p) for p, s in speeds.items() if "official" in s), default=None)
    if best is not None and best[1] != "fp32":
        theirs["in its fastest precision here, under our CPU autocast"] = (best[1], best[0])
    for what, (pb, b) in theirs.items():
        if b:
            print(f"{size}: ours in its fastest precision ({pa}, {a:.2f} images/s) / official {what} ({pb}, {b:.2f} "
                  f"images/s): {a / b:.2f}x (target >= 1.5x: {'met' if a / b >= 1.5 else 'NOT met'})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, required=True, help="root of an apple/ml-4m checkout (holds fourm/)")
    parser.add_argument("--sizes", nargs="+", default=None, choices=list(FACTORIES), help="default: tiny base")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--batch", type=int, help=f"default per size: {DEFAULT_BATCH}")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--patch-size", type=int, default=16, help="rgb patches")
    parser.add_argument("--token-stride", type=int, default=16, help="pixels per token of the token maps")
    parser.add_argument("--depth-vocab", type=int, default=8192)
    parser.add_argument("--semseg-vocab", type=int, default=4096)
    parser.add_argument("--caption-vocab", type=int, default=30522)
    parser.add_argument("--caption-tokens", type=int, default=32, help="T: caption ids kept (layout 2 (T + 1))")
    parser.add_argument("--num-encoder-tokens", type=int, default=64)
    parser.add_argument("--num-decoder-tokens", type=int, default=64)
    parser.add_argument("--pool", type=int, default=4, help="pre-drawn batches, cycled through")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed rounds (one step of each model per round)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny at 64 px, batch 4, 2 rounds: a smoke run")
    parser.add_argument("--slow-bf16", action="store_true", help="where bf16 is emulated, time one bf16 step anyway")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="instead of timing, profile N steps of each model (torch.profiler) per precision")
    args = parser.parse_args()
    if args.quick:
        args.sizes = args.sizes or ["tiny"]
        args.image_size, args.steps, args.warmup, args.pool = 64, 2, 1, 2
        args.num_encoder_tokens = args.num_decoder_tokens = 32
        args.caption_tokens = 16
        args.batch = args.batch or 4
    sizes = args.sizes or ["tiny", "base"]
    torch.set_num_threads(args.threads)
    random.seed(args.seed)  # the official decoder-order shuffle
    flags = cpu_flags()
    feature = native_bf16_feature(flags)
    small = small_check()
    emulated = feature is None
    print(f"CPU: {cpu_model()}; avx512_bf16: {'yes' if 'avx512_bf16' in flags else 'no'}, amx_bf16: "
          f"{'yes' if 'amx_bf16' in flags else 'no'} ({small.describe()}); bf16 "
          f"{'native' if not emulated else 'EMULATED by torch'}; torch {torch.__version__}, threads={args.threads}")
    code = load_official(args.official.resolve())
    print(f"official 4M: {args.official} (model files sha256 {code.digest}); Python {sys.version.split()[0]} with "
          f"the import and random.sample shims of this script's docstring")
    batch = args.batch
    for size in sizes:
        args.batch = batch or DEFAULT_BATCH[size]
        run_size(code, size, emulated, args)

if __name__ == "__main__":
    main()
