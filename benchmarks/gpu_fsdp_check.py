"""FSDP2 + bf16 on NCCL through the real `Trainer`: a check for one GPU (H100 / H200; under 3 minutes).

Trains ViT-B/16 MultiMAE (the ``paper-vitb`` preset: 224 px, rgb + depth + semseg, 98 visible
tokens) on synthetic data three times from the same weights and batches:

1. ``ddp``: ``train.parallel=ddp``, bf16 autocast (on one GPU: the model unwrapped);
2. ``fsdp``: ``train.parallel=fsdp`` over a process group of this one GPU (the script makes it), the
   GPU policy: bf16 weights gathered, fp32 shards and gradient reduction;
3. ``resumed``: ``fsdp`` again, continued from the DCP checkpoint run 2 wrote halfway.

and prints, per run: step time (median after warm-up), images/s per GPU, peak GPU memory, the losses; then
the largest loss difference between runs 1 and 2 (bf16: expect below ~1e-2 relative; the CPU test
of the same policy measured 7e-4 after 4 steps) and between 2 and 3 over the steps after the
checkpoint (expect 0, or ~1e-6 where GPU kernels are not deterministic), the checkpoint's save
time and what it wrote. With one GPU sharding saves no memory (each "shard" is the whole model);
the check is that FSDP2, bf16, NCCL and DCP work together here, and what they cost. With N GPUs
(``torchrun --nproc-per-node N``) the same script shards over N.

    python benchmarks/gpu_fsdp_check.py                              # one GPU, ~1 minute on an H100
    torchrun --standalone --nproc-per-node 1 benchmarks/gpu_fsdp_check.py --steps 30 --batch 128
    python benchmarks/gpu_fsdp_check.py --config cpu --batch 16      # a smaller model
    python benchmarks/gpu_fsdp_check.py --cpu --config cpu --batch 8 --steps 4   # the script itself, gloo

(``--cpu`` runs the same on the CPU with gloo, fp32 policy and no memory numbers: a check of the
script, not of the GPU.)
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

from multimae.config import RunConfig, load_config
from multimae.configs import preset_path
from multimae.data.stream import PoolStream
from multimae.engine.checkpoint import latest_checkpoint, read_checkpoint
from multimae.engine.distributed import DistInfo, from_rank0
from multimae.engine.precision import PrecisionChoice
from multimae.engine.trainer import Trainer
from multimae.model import MultiMAE
from multimae.tasks.pretrain import PretrainTask

from bench_training import synthetic_pool  # the same synthetic world pool as the training benchmark


def join_group(cpu: bool) -> DistInfo:
    """This process's place in an NCCL (gloo: ``cpu``) group: torchrun's, or a group of one made here."""
    if "WORLD_SIZE" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    local = int(os.environ["LOCAL_RANK"])
    if cpu:
        dist.init_process_group("gloo")
    else:
        torch.cuda.set_device(local)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local)


def make_trainer(cfg: RunConfig, pool: dict[str, torch.Tensor], parallel: str, info: DistInfo, run_dir: Path,
                 steps: int, device: torch.device) -> Trainer:
    """A trainer of ``cfg`` in bf16 (fp32 on the CPU) whose global batch is ``data.batch_size`` per process."""
    torch.manual_seed(0)
    model = MultiMAE(cfg.model.build())
    B = cfg.data.batch_size * info.world_size  # the global batch; each process gets its rows
    stream = PoolStream(pool, B, seed=0, rank=info.rank, world_size=info.world_size)
    task = PretrainTask(model, cfg.masking, cfg.loss, seed=0)
    train = dataclasses.replace(cfg.train, steps=steps, parallel=parallel, ckpt_every=0, keep_last=1, threads=None,
                                compile=False)
    # With one process `info` is not `enabled`: DDP wraps nothing, and FSDP shards over the group of one.
    precision = "fp32" if device.type == "cpu" else "bf16"
    return Trainer(model, task, stream, cfg.optim, train, B, run_dir, info, device, progress=False,
                   precision=PrecisionChoice(precision, precision, f"{precision}: benchmark"))


def run(trainer: Trainer, steps: int, warmup: int, save_at: int | None = None) -> dict:
    """The optimiser steps up to ``steps``: their losses, step times after ``warmup``, peak memory,
    and the seconds of a checkpoint written after step ``save_at``."""
    cuda = trainer.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    losses, times, save_s = [], [], None
    while trainer.step < steps:
        sync()
        t = time.perf_counter()
        losses.append(trainer.train_step()["loss"])
        sync()
        times.append(time.perf_counter() - t)
        if trainer.step == save_at:
            t = time.perf_counter()
            trainer.save()
            save_s = time.perf_counter() - t
    timed = times[warmup:] or times
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return {"losses": losses, "step_s": statistics.median(timed), "peak_gib": peak, "save_s": save_s}


def report(name: str, result: dict, batch: int, first_step: int = 1) -> None:
    losses = ", ".join(f"{v:.4f}" for v in result["losses"])
    print(f"{name:>8}: {result['step_s'] * 1e3:7.1f} ms/step  {batch / result['step_s']:7.0f} img/s/process  "
          f"peak {result['peak_gib']:6.2f} GiB  losses (from step {first_step}) [{losses}]")


def largest_relative(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(a, b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="paper-vitb")
    parser.add_argument("--batch", type=int, default=64, help="images per GPU per step [64]")
    parser.add_argument("--steps", type=int, default=20, help="optimiser steps per run [20]")
    parser.add_argument("--warmup", type=int, default=3, help="first steps not timed [3]")
    parser.add_argument("--cpu", action="store_true", help="gloo on the CPU: a check of the script itself")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides")
    args = parser.parse_args()
    if not (args.cpu or torch.cuda.is_available()):
        raise SystemExit("no CUDA GPU: this check is for a GPU (--cpu runs the script on the CPU; the CPU tests "
                         "are tests/engine/test_fsdp.py)")
    info = join_group(args.cpu)
    device = torch.device("cpu") if args.cpu else torch.device("cuda", info.local_rank)
    main_process = info.rank == 0
    cfg = load_config(RunConfig, preset_path(args.config),
                      ["data.source=world", "data.root=null", f"data.batch_size={args.batch}", *args.overrides])
    size = cfg.data.image_size
    classes = cfg.model.build().modality_specs().get("semseg")
    pool = synthetic_pool(4 * args.batch * info.world_size, size, min(classes.num_channels if classes else 1, 256))
    half = args.steps // 2
    if main_process:
        where = "CPU (gloo)" if args.cpu else (f"{torch.cuda.get_device_name()}, NCCL "
                                               f"{'.'.join(map(str, torch.cuda.nccl.version()))}")
        print(f"{where} x {info.world_size}, torch {torch.__version__}; {args.config} at {size} px, batch "
              f"{args.batch} per process, {args.steps} steps ({args.warmup} untimed), checkpoint after step {half}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(from_rank0(tmp))  # rank 0's folder for every rank: DCP folders are written together
        ddp = run(make_trainer(cfg, pool, "ddp", info, root / "ddp", args.steps, device), args.steps, args.warmup)
        fsdp_trainer = make_trainer(cfg, pool, "fsdp", info, root / "fsdp", args.steps, device)
        fsdp = run(fsdp_trainer, args.steps, args.warmup, save_at=half)
        parallel = fsdp_trainer.parallel
        del fsdp_trainer  # its memory is not the resumed run's
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        resumed_trainer = make_trainer(cfg, pool, "fsdp", info, root / "fsdp", args.steps, device)
        resumed_trainer.resume(latest_checkpoint(root / "fsdp"))
        resumed = run(resumed_trainer, args.steps, 0)
        if main_process:
            n = sum(p.numel() for p in MultiMAE(cfg.model.build()).parameters()) / 1e6
            print(f"{n:.1f} M parameters; fsdp: {parallel}")
            report("ddp", ddp, args.batch)
            report("fsdp", fsdp, args.batch)
            report("resumed", resumed, args.batch, first_step=half + 1)
            why = "fp32 both" if args.cpu else "bf16 weights gathered vs bf16 autocast of fp32 weights"
            print(f"largest loss difference fsdp vs ddp:     {largest_relative(ddp['losses'], fsdp['losses']):.2e} "
                  f"relative ({why})")
            print(f"largest loss difference resumed vs fsdp: "
                  f"{largest_relative(fsdp['losses'][half:], resumed['losses']):.2e} relative (steps {half + 1}-{args.steps})")
            ckpt = latest_checkpoint(root / "fsdp")
            folder = root / "fsdp" / read_checkpoint(ckpt).trainer["sharded"]
            mib = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
            print(f"checkpoint after step {half}: {fsdp['save_s']:.2f} s for {folder.name}/ ({mib:.0f} MiB: "
                  f"weights + AdamW state) and {ckpt.name} ({ckpt.stat().st_size / 2**20:.0f} MiB: whole model)")
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
