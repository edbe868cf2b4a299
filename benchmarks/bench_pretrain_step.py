"""One pre-training step of MultiMAE (forward, losses, backward, AdamW) on the CPU.

Prints, for each precision, the step time, images/s, the step's FLOPs (torch's flop counter)
and the achieved FLOP/s as a fraction of this machine's measured matmul peak in that precision.
Where bf16 is emulated (a small bf16 matmul slower than fp32: CPUs without avx512_bf16 / amx_bf16),
the bf16 peak is measured on that small matmul only and the bf16 steps are skipped (--slow-bf16
times one), instead of spending minutes on 2048^2 bf16 matmuls at 0.3 GFLOP/s.

    .venv/bin/python benchmarks/bench_pretrain_step.py                 # base, 224 px, batch 8
    .venv/bin/python benchmarks/bench_pretrain_step.py --size tiny --image-size 64 --patch-size 8 --num-visible 32
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from multimae.engine.precision import autocast, set_fused_attention, small_check
from multimae.losses import MultiMAELoss
from multimae.model import MultiMAE, model_config


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best-of FLOP/s of an n x n matmul in ``dtype``."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def step_plan(precision: str, emulated: bool, args: argparse.Namespace) -> tuple[int, int] | None:
    """(warm-up steps, timed steps) for ``precision``; None (and a line saying why) when bf16 is
    emulated here and ``--slow-bf16`` was not given; with it, one timed step and no warm-up."""
    if precision == "bf16" and emulated:
        if not args.slow_bf16:
            print("bf16: steps skipped, bf16 is emulated here (--slow-bf16 times one step)")
            return None
        return 0, 1
    return args.warmup, args.steps


def make_batch(batch: int, size: int, num_classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "rgb": torch.randn(batch, 3, size, size, generator=g),
        "depth": torch.randn(batch, 1, size, size, generator=g),
        "semseg": torch.randint(0, num_classes, (batch, size // 4, size // 4), generator=g),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="base")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--num-visible", type=int, default=98)
    parser.add_argument("--num-classes", type=int, default=133)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--quick", action="store_true", help="2 timed steps after 1 warm-up: a smoke run")
    parser.add_argument("--slow-bf16", action="store_true", help="where bf16 is emulated, time one bf16 step anyway")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.warmup = 2, 1
    torch.set_num_threads(args.threads)

    small = small_check()
    emulated = small.bf16_s > small.fp32_s
    bf16_side = small.shape[0] if emulated else 2048
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16, bf16_side)}
    print(f"threads={args.threads}  matmul peak: fp32 {peaks['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s"
          f"{f' ({bf16_side}^3 only: bf16 is emulated here, small {small.describe()})' if emulated else ''}")
    torch.manual_seed(0)
    cfg = model_config(
        args.size,
        encoder={"image_size": args.image_size, "patch_size": args.patch_size},
        modality_overrides={"semseg": {"num_channels": args.num_classes}},
    )
    model = MultiMAE(cfg)
    loss_fn = MultiMAELoss(model.output_specs, args.patch_size)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05, fused=True)
    inputs = make_batch(args.batch, args.image_size, args.num_classes)
    targets = {**inputs, "norm_rgb": inputs["rgb"]}
    g = torch.Generator().manual_seed(0)
    encoder = getattr(model, "backbone", model)  # commits before the composition: the model is the encoder
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model {args.size}: {n_params / 1e6:.1f} M parameters, {args.image_size} px, patch {args.patch_size}, "
          f"batch {args.batch}, {args.num_visible} visible tokens, inputs rgb/depth/semseg, outputs {list(model.output_adapters)}")

    def step(precision: str) -> None:
        masks = encoder.sample_masks(inputs, args.num_visible, generator=g)
        with autocast(model, "cpu", precision):
            out = model(inputs, masks)
            loss = loss_fn(out.preds, targets, out.masks).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    # Count FLOPs once, in fp32 (fast everywhere), through the explicit-attention path: the counter
    # does not see inside the fused CPU attention kernels, and the model computes the same thing.
    counter = FlopCounterMode(display=False)
    with counter:
        masks = encoder.sample_masks(inputs, args.num_visible, generator=g)
        set_fused_attention(model, False)
        out = model(inputs, masks)
        loss_fn(out.preds, targets, out.masks).total.backward()
    opt.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    for precision in args.precision:
        plan = step_plan(precision, emulated, args)
        if plan is None:
            continue
        warmup, steps = plan
        for _ in range(warmup):
            step(precision)
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            step(precision)
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        print(
            f"{precision}: step {med:.3f} s (min {min(times):.3f}, max {max(times):.3f}), "
            f"{args.batch / med:.2f} images/s, {flops / 1e9:.1f} GFLOP/step, "
            f"{flops / med / 1e9:.1f} GFLOP/s = {100 * flops / med / peaks[precision]:.0f} % of the {precision} matmul peak"
        )


if __name__ == "__main__":
    main()
