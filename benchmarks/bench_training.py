"""Training throughput (images/s) of a preset through the real engine, and the data share of it.

Uses a synthetic in-memory pool (random images) so it measures the model, the engine and the
batch pipeline (pool -> raw batch -> crop/flip), not rendering.

    .venv/bin/python benchmarks/bench_training.py                     # cpu preset
    .venv/bin/python benchmarks/bench_training.py --config paper-vitb data.batch_size=8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from multimae.config import RunConfig, load_config
from multimae.configs import preset_path
from multimae.data.batch_augment import BatchRandomResizedCropFlip
from multimae.data.stream import PoolStream
from multimae.engine.distributed import DistInfo
from multimae.engine.trainer import Trainer
from multimae.model import MultiMAE
from multimae.tasks.pretrain import PretrainTask


def synthetic_pool(n: int, size: int, num_classes: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "rgb": torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),
        "depth": torch.randint(500, 20000, (n, 1, size, size), generator=g, dtype=torch.int32).to(torch.uint16),
        "semseg": torch.randint(0, num_classes, (n, size, size), generator=g, dtype=torch.uint8),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(RunConfig, preset_path(args.config), ["data.source=world", "data.root=null", *args.overrides])
    model = MultiMAE(cfg.model.build())
    size, B = cfg.data.image_size, cfg.data.batch_size
    classes = model.output_specs["semseg"].num_channels if "semseg" in model.output_specs else 1
    pool = synthetic_pool(max(4 * B, 64), size, min(classes, 256))
    stream = PoolStream(pool, B, augment=BatchRandomResizedCropFlip(size))
    task = PretrainTask(model, cfg.masking, cfg.loss)
    cfg.train.steps = args.steps + args.warmup
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, task, stream, cfg.optim, cfg.train, B, Path(tmp), DistInfo(),
                          torch.device("cpu"), progress=False)
        for _ in range(args.warmup):
            trainer.train_step()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step()
        step_s = (time.perf_counter() - t0) / args.steps
        trainer.close()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        next(stream)
    data_s = (time.perf_counter() - t0) / args.steps
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{args.config} ({cfg.model.size}, {n_params:.1f} M params, {size} px, batch {B}, {cfg.train.precision}, "
          f"{args.threads} threads): {step_s:.3f} s/step, {B / step_s:.1f} images/s; "
          f"data pipeline {1e3 * data_s:.1f} ms/batch = {100 * data_s / step_s:.1f} % of a step "
          f"({B / data_s:.0f} images/s on one thread)")


if __name__ == "__main__":
    main()
