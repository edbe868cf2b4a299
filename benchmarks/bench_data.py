"""Data pipeline throughput: world generation, folder reading and shard reading (with the joint
augmentation), at 64 and 224 px. Prints samples/s; asserts nothing about time.

    python benchmarks/bench_data.py [--sizes 64 224] [--count 200] [--workers 2]

Single-process numbers use one thread (`torch.set_num_threads(1)`), i.e. per core. The last
section runs the on-the-fly world through a DataLoader with ``--workers`` processes. (The
pre-training default does not render on the fly: it renders a pool once and augments whole
batches, see `benchmarks/bench_training.py` for its share of a step.)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from multimae.data.collate import collate
from multimae.data.folder import FolderDataset
from multimae.data.generated import WorldDataset
from multimae.data.shards import ShardDataset
from multimae.data.transforms import RandomResizedCropFlip
from multimae.data.world import render, sample_scene, scene_rng
from multimae.data.writer import GenerateConfig, generate

MODALITIES = ("rgb", "depth", "normals", "semseg", "instance", "caption")


def rate(fn: Callable[[], int]) -> float:
    start = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - start)


def bench_size(size: int, count: int, root: Path) -> None:
    aug = RandomResizedCropFlip(size)
    scenes = [sample_scene(scene_rng("train", i)) for i in range(count)]
    print(f"\n== {size} px, {count} samples, one core ==")
    print(f"render only (rgb+depth+normals+semseg+instance): "
          f"{rate(lambda: sum(1 for s in scenes if render(s, size))):8.1f} scenes/s")
    world = WorldDataset("train", size=size, length=count, transform=aug)
    print(f"WorldDataset + augmentation (render, caption, decode): "
          f"{rate(lambda: sum(1 for i in range(count) if world[i])):8.1f} samples/s")
    for fmt in ("folder", "shards"):
        out = root / f"{fmt}{size}"
        t = rate(lambda: generate(out, GenerateConfig(count=count, size=size, fmt=fmt, shard_size=100),
                                  progress=False)["splits"]["train"]["count"])
        print(f"generate --format {fmt:<7}: {t:8.1f} samples/s")
    folder = FolderDataset(root / f"folder{size}", "train", MODALITIES, transform=aug)
    print(f"folder read + augmentation: {rate(lambda: sum(1 for i in range(len(folder)) if folder[i])):8.1f} samples/s")
    shards = ShardDataset(root / f"shards{size}" / "train", MODALITIES, transform=aug, shuffle=True)
    print(f"shard read + augmentation:  {rate(lambda: sum(1 for _ in shards)):8.1f} samples/s")


def bench_loader(size: int, workers: int, batches: int, batch_size: int) -> None:
    ds = WorldDataset("train", size=size, length=batches * batch_size, transform=RandomResizedCropFlip(size))
    loader = DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                        persistent_workers=False)
    it = iter(loader)
    next(it)  # worker start-up
    n = rate(lambda: sum(len(b["caption"]) for b in it))
    print(f"\n== on-the-fly world through a DataLoader, {workers} workers, batch {batch_size}, {size} px ==")
    print(f"{n:8.1f} samples/s  ({n / batch_size:.2f} batches/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--count", type=int, default=200, help="samples at 64 px (fewer at larger sizes)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            bench_size(size, max(20, args.count * 64 * 64 // (size * size)), Path(tmp))
    bench_loader(64, args.workers, batches=20, batch_size=32)


if __name__ == "__main__":
    main()
