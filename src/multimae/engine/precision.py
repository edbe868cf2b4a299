"""Mixed precision: autocast contexts and the attention implementation that suits them.

On the CPU, the fused scaled-dot-product-attention kernels are 2-4x slower in bf16 than plain
matmul + softmax for ViT-sized heads (measured with torch 2.14 on 2 cores: a 99-token, 12-head
encoder attention forward+backward takes 24 ms fused vs 7 ms explicit), while on GPUs the fused
kernels win. `autocast` therefore switches attention modules to the explicit path when it runs
bf16/fp16 on the CPU, and back to fused otherwise.

`choose_precision` resolves ``precision: auto``: bf16 where the device computes it natively (CUDA
with bf16; a CPU with avx512_bf16 or amx_bf16 whose bf16 matmuls, timed at the run's sizes, beat
fp32), fp16 (with a GradScaler, see the trainer) on GPUs without bf16, fp32 otherwise. Without
native bf16, torch emulates it: 1024^2 matmuls on an AVX2-only EPYC ran at 0.7 GFLOP/s in bf16
against 66.7 in fp32. The timing first runs one small matmul and stops there when bf16 is slow, so
the check itself never crawls; its result is cached per machine in ``$MULTIMAE_CACHE`` (default
``~/.cache/multimae``) ``/precision.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from multimae.engine.files import write_text_atomic

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CHOICES = ("auto", *PRECISIONS)  # the values of `train.precision` and the --precision options
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of CPUs that compute bf16 natively
MIN_SPEEDUP = 1.2  # auto takes bf16 when its matmuls run at least this much faster than fp32 (margin for casts)
SMALL = 256  # side of the first, small matmul that detects emulated bf16 before any run-sized one
MAX_ROWS = 2048  # run-sized check: at most this many rows, to keep it well under a second
# The checks run on one thread: the question is whether the instructions exist, and a busy neighbour
# makes multi-thread timings wrong by several times (measured here under load: bf16 at 2 threads
# timed 1.19x slower than fp32, where idle at 1 thread it is several times faster).
CHECK_THREADS = 1


def set_fused_attention(model: nn.Module, enabled: bool) -> None:
    """Choose fused SDPA (True) or explicit matmul attention (False) in every attention module."""
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = enabled


def prefers_fused_attention(device_type: str, precision: str) -> bool:
    return not (device_type == "cpu" and precision in ("bf16", "fp16"))


@contextlib.contextmanager
def autocast(model: nn.Module, device_type: str, precision: str = "fp32") -> Iterator[None]:
    """Run the forward pass in ``precision`` ('fp32', 'bf16', 'fp16') on ``device_type``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    set_fused_attention(model, prefers_fused_attention(device_type, precision))
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type, dtype=PRECISIONS[precision]):
        yield


# --------------------------------------------------------------------------- choosing the precision

@dataclass(frozen=True)
class MatmulTiming:
    """Best-of seconds of one ``(m, k) x (k, n)`` matmul in fp32 and in bf16."""

    shape: tuple[int, int, int]  # (m, k, n)
    fp32_s: float
    bf16_s: float
    small_only: bool = False  # True: stopped after the small matmul (bf16 was slow there)

    @property
    def speedup(self) -> float:
        """bf16 speed over fp32 speed (2.0: bf16 twice as fast; 0.01: 100x slower)."""
        return self.fp32_s / max(self.bf16_s, 1e-12)

    def describe(self) -> str:
        m, k, n = self.shape
        return (f"bf16 matmul {_ratio(self.speedup)} measured ({m}x{k} @ {k}x{n}, {CHECK_THREADS} thread"
                f"{', small check only' if self.small_only else ''})")


@dataclass(frozen=True)
class PrecisionChoice:
    """What a run computes in and why (written to the run log and report.json)."""

    precision: str  # fp32 | bf16 | fp16
    requested: str  # auto | fp32 | bf16 | fp16
    reason: str  # e.g. "bf16: amx_bf16, bf16 matmul 7.1x fp32 measured (1024x192 @ 192x768)"
    speedup: float | None = None  # measured bf16 / fp32 matmul speed; None when not measured

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.speedup is not None:
            out["speedup"] = round(self.speedup, 3)
        return out


def _ratio(speedup: float) -> str:
    return f"{speedup:.2g}x fp32" if speedup >= 1 else f"{1 / speedup:.3g}x slower than fp32"


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; elsewhere those torch reports)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.partition(":")[2].split())
    except OSError:
        pass
    flags = set()
    for flag, probe in (("avx512_bf16", "_is_avx512_bf16_supported"), ("amx_bf16", "_is_amx_tile_supported")):
        if getattr(torch.cpu, probe, lambda: False)():
            flags.add(flag)
    return flags


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def native_bf16_feature(flags: set[str]) -> str | None:
    """The flag by which this CPU computes bf16 natively (amx_bf16 first), or None."""
    return next((f for f in NATIVE_BF16_FLAGS if f in flags), None)


@contextlib.contextmanager
def _threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_matmul(m: int, k: int, n: int, dtype: torch.dtype, repeats: int = 5,
                clock: Callable[[], float] = time.perf_counter) -> float:
    """Best-of seconds of an ``(m, k) x (k, n)`` CPU matmul in ``dtype`` (after one warm-up): the
    minimum, as other processes' load only ever adds time."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=g).to(dtype), torch.randn(k, n, generator=g).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = clock()
        a @ b
        best = min(best, clock() - t)
    return best


def probe_shape(rows: int, dim: int) -> tuple[int, int, int]:
    """The run-sized check: ``(rows, dim) x (dim, 4 dim)``, as a ViT's MLP, rows capped at MAX_ROWS."""
    return (max(1, min(rows, MAX_ROWS)), dim, 4 * dim)


def measure_bf16(shape: tuple[int, int, int], timer: Callable[..., float] = time_matmul) -> MatmulTiming:
    """fp32 vs bf16 at ``shape``, after a small ``SMALL``-cube check that stops early when bf16 is
    slower than fp32 there (emulated bf16: a run-sized bf16 matmul would take seconds)."""
    first = small_check(timer)
    if first.bf16_s > first.fp32_s:
        return first
    with _threads(CHECK_THREADS):
        return MatmulTiming(shape, timer(*shape, torch.float32), timer(*shape, torch.bfloat16))


def small_check(timer: Callable[..., float] = time_matmul) -> MatmulTiming:
    """fp32 vs bf16 on a ``SMALL``-cube matmul (milliseconds even where bf16 is emulated)."""
    small = (SMALL, SMALL, SMALL)
    with _threads(CHECK_THREADS):
        return MatmulTiming(small, timer(*small, torch.float32), timer(*small, torch.bfloat16), small_only=True)


def cache_path() -> Path:
    from multimae.data.pool import default_cache_dir

    return default_cache_dir() / "precision.json"


def machine_key(shape: tuple[int, int, int], threads: int, model: str | None = None,
                flags: set[str] | None = None) -> str:
    """What the timing depends on: CPU model and flags, torch version, threads and sizes."""
    flags = cpu_flags() if flags is None else flags
    digest = hashlib.sha1(" ".join(sorted(flags)).encode()).hexdigest()[:12]
    m, k, n = shape
    return f"{model or cpu_model()} | flags {digest} | torch {torch.__version__} | {threads} threads | {m}x{k}x{n}"


def cached_measure(shape: tuple[int, int, int], path: Path | None = None, key: str | None = None,
                   measure: Callable[[tuple[int, int, int]], MatmulTiming] = measure_bf16) -> tuple[MatmulTiming, bool]:
    """(timing, whether it came from the cache): ``measure(shape)`` once per machine key."""
    path = cache_path() if path is None else path
    key = machine_key(shape, CHECK_THREADS) if key is None else key
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        entries = {}
    if not isinstance(entries, dict):
        entries = {}
    hit = entries.get(key)
    if isinstance(hit, dict):
        try:
            return MatmulTiming(tuple(hit["shape"]), float(hit["fp32_s"]), float(hit["bf16_s"]),  # type: ignore[arg-type]
                                bool(hit.get("small_only", False))), True
        except (KeyError, TypeError, ValueError):
            pass
    timing = measure(shape)
    entries[key] = {**asdict(timing), "shape": list(timing.shape)}
    try:
        write_text_atomic(path, json.dumps(entries, indent=1), unique=True)
    except OSError:  # a read-only cache: measure again next time
        pass
    return timing, False


def choose_precision(
    requested: str,
    device: torch.device | str,
    shape: tuple[int, int, int] = (1024, 768, 3072),
    *,
    flags: set[str] | None = None,
    cuda_bf16: bool | None = None,
    measure: Callable[[tuple[int, int, int]], tuple[MatmulTiming, bool]] | None = None,
) -> PrecisionChoice:
    """Resolve ``requested`` (auto | fp32 | bf16 | fp16) for ``device``; ``shape`` is the run-sized
    matmul to time. ``flags`` (CPU flags), ``cuda_bf16`` and ``measure`` (shape -> (timing, cached))
    default to this machine's; tests inject them. An explicit bf16 on a CPU where bf16 matmuls are
    slower than fp32 warns with the measured ratio (and is kept)."""
    if requested not in CHOICES:
        raise ValueError(f"precision must be one of {list(CHOICES)}, got {requested!r}")
    kind = torch.device(device).type
    if requested in ("fp32", "fp16") or (requested == "bf16" and kind != "cpu"):
        return PrecisionChoice(requested, requested, f"{requested}: requested")
    if kind == "cuda":
        if torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16:
            return PrecisionChoice("bf16", requested, "bf16: the GPU supports bf16")
        return PrecisionChoice("fp16", requested, "fp16 with loss scaling: the GPU lacks bf16")
    if kind != "cpu":
        return PrecisionChoice("fp32", requested, f"fp32: auto on {kind}")
    feature = native_bf16_feature(cpu_flags() if flags is None else flags)
    if requested == "auto" and feature is None:
        return PrecisionChoice("fp32", requested, f"fp32: the CPU has no {' or '.join(NATIVE_BF16_FLAGS)} "
                               "(torch would emulate bf16)")
    timing, cached = (measure or cached_measure)(shape)
    measured = timing.describe() + (", cached" if cached else "")
    if requested == "bf16":
        if timing.speedup < 1:
            warnings.warn(f"precision bf16 on this CPU: {measured}; precision auto or fp32 would be faster",
                          RuntimeWarning, stacklevel=2)
        return PrecisionChoice("bf16", requested, f"bf16: requested; {measured}", timing.speedup)
    if timing.speedup >= MIN_SPEEDUP:
        return PrecisionChoice("bf16", requested, f"bf16: {feature}, {measured}", timing.speedup)
    return PrecisionChoice("fp32", requested, f"fp32: {feature} present but {measured} "
                           f"(auto needs {MIN_SPEEDUP}x)", timing.speedup)
