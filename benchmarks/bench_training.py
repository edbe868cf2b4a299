"""Training step time of a preset through the real engine, per precision (fp32, bf16) and thread
count (1, all cores), as a fraction of the matmul peak measured for that precision and thread count
in this process; and what `precision: auto` picks here.

Uses a synthetic in-memory pool (random images) so it measures the model, the engine and the
batch pipeline (pool -> raw batch -> crop/flip), not rendering. Where bf16 is emulated (a small
bf16 matmul slower than fp32: CPUs without avx512_bf16 / amx_bf16), the bf16 peak is measured on
that small matmul only and the bf16 steps are skipped (--slow-bf16 times one step anyway), so the
benchmark does not crawl there. Run it alone on the machine: other processes change every number.

    .venv/bin/python benchmarks/bench_training.py                     # cpu preset, 1 and all threads
    .venv/bin/python benchmarks/bench_training.py --quick             # 3 timed steps: a smoke run
    .venv/bin/python benchmarks/bench_training.py --config paper-vitb data.batch_size=8 --threads 16
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from multimae.config import RunConfig, load_config
from multimae.configs import preset_path
from multimae.data.batch_augment import BatchRandomResizedCropFlip
from multimae.data.stream import PoolStream
from multimae.engine.distributed import DistInfo
from multimae.engine.precision import (
    PRECISIONS,
    PrecisionChoice,
    choose_precision,
    probe_shape,
    set_fused_attention,
    small_check,
    time_matmul,
)
from multimae.engine.threads import all_cores
from multimae.engine.trainer import Trainer
from multimae.model import MultiMAE
from multimae.tasks.pretrain import PretrainTask

PEAK_SIDE = 1024  # n of the n x n x n matmul whose speed is the peak (SMALL where bf16 is emulated)


def synthetic_pool(n: int, size: int, num_classes: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "rgb": torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),
        "depth": torch.randint(500, 20000, (n, 1, size, size), generator=g, dtype=torch.int32).to(torch.uint16),
        "semseg": torch.randint(0, num_classes, (n, size, size), generator=g, dtype=torch.uint8),
    }


def peak_flops(precision: str, side: int) -> float:
    """FLOP/s of the best of 3 ``side``-cube matmuls in ``precision``."""
    return 2 * side**3 / time_matmul(side, side, side, PRECISIONS[precision])


def step_flops(task: PretrainTask, model: MultiMAE, stream: PoolStream, batch: int) -> float:
    """FLOPs of one training step (forward + backward; AdamW's few are left out), counted in fp32
    through explicit attention: the counter does not see inside the fused CPU kernels."""
    set_fused_attention(model, False)
    counter = FlopCounterMode(display=False)
    with counter:
        task(model, next(stream), 0, batch, slice(0, batch)).total.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def time_steps(cfg: RunConfig, model: MultiMAE, task: PretrainTask, stream: PoolStream, precision: str,
               warmup: int, steps: int) -> list[float]:
    """Seconds of each of ``steps`` optimiser steps (after ``warmup``) of a fresh trainer."""
    B = cfg.data.batch_size
    choice = PrecisionChoice(precision, precision, f"{precision}: benchmark")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, task, stream, cfg.optim, cfg.train, B, Path(tmp), DistInfo(), torch.device("cpu"),
                          progress=False, precision=choice)
        for _ in range(warmup):
            trainer.train_step()
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            trainer.train_step()
            times.append(time.perf_counter() - t)
        trainer.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="cpu")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per precision and thread count [10]")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, nargs="+", help="thread counts [1 and all cores]")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--quick", action="store_true", help="3 timed steps after 1 warm-up: a smoke run")
    parser.add_argument("--slow-bf16", action="store_true", help="where bf16 is emulated, time one bf16 step anyway")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup = 3, 1
    cores = all_cores()
    thread_counts = args.threads or sorted({1, cores})
    cfg = load_config(RunConfig, preset_path(args.config), ["data.source=world", "data.root=null", "train.threads=null",
                                                           *args.overrides])
    torch.manual_seed(0)
    model = MultiMAE(cfg.model.build())
    size, B = cfg.data.image_size, cfg.data.batch_size
    classes = model.output_specs["semseg"].num_channels if "semseg" in model.output_specs else 1
    pool = synthetic_pool(max(4 * B, 64), size, min(classes, 256))
    stream = PoolStream(pool, B, augment=BatchRandomResizedCropFlip(size))
    task = PretrainTask(model, cfg.masking, cfg.loss)
    flops = step_flops(task, model, stream, B)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{args.config}: {cfg.model.size}, {n_params:.1f} M params, {size} px, batch {B}, "
          f"{cfg.masking.num_visible} visible tokens, {flops / 1e9:.1f} GFLOP/step (forward + backward); "
          f"{cores} cores; {torch.__version__}")

    small = small_check()  # on one thread (see engine/precision.py)
    emulated = small.bf16_s > small.fp32_s
    results: dict[tuple[str, int], float] = {}
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for precision in args.precision:
            slow = precision == "bf16" and emulated
            side = small.shape[0] if slow else PEAK_SIDE
            peak = peak_flops(precision, side)
            head = f"{precision} {threads:>2} thread{'s' if threads > 1 else ' '}: matmul peak {peak / 1e9:7.1f} GFLOP/s ({side}^3)"
            if slow and not args.slow_bf16:
                print(f"{head}; steps skipped: bf16 is emulated here (small {small.describe()}); --slow-bf16 times one")
                continue
            warmup, steps = (0, 1) if slow else (args.warmup, args.steps)
            times = time_steps(cfg, model, task, stream, precision, warmup, steps)
            med = statistics.median(times)
            results[(precision, threads)] = med
            print(f"{head}; step {med:.3f} s (min {min(times):.3f}, max {max(times):.3f}, {steps} steps), "
                  f"{B / med:.1f} images/s, {flops / med / 1e9:.1f} GFLOP/s = {100 * flops / med / peak:.0f} % of peak")
        data_t = time.perf_counter()
        for _ in range(args.steps):
            next(stream)
        data_s = (time.perf_counter() - data_t) / args.steps
        print(f"   data pipeline ({threads} thread{'s' if threads > 1 else ''}): {1e3 * data_s:.1f} ms/batch")

    shape = probe_shape(B * cfg.masking.num_visible, model.backbone.config.dim)
    auto = choose_precision("auto", "cpu", shape)
    print(f"precision auto picks {auto.reason} (cached per machine)")
    if results:
        (p, t), best = min(results.items(), key=lambda kv: kv[1])
        print(f"fastest measured: {p} with {t} thread{'s' if t > 1 else ''} ({best:.3f} s/step); threads auto measures "
              "1 vs all cores again in a run's first steps, under the load of that moment")


if __name__ == "__main__":
    main()
