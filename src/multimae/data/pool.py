"""A rendered pool of world scenes held in memory (and cached on disk), for fast training.

Rendering costs about 5 ms a scene at 64 px on one core, which is as much as a training step's
share of the CPU: the default pre-training run therefore renders its training scenes once (in
parallel, with a progress bar), keeps them as compact tensors and augments whole batches at once
(`multimae.data.batch_augment`). Shapes: N scenes, H W pixels.

Stored form: rgb uint8 (N, 3, H, W) and depth uint16 millimetres (N, 1, H, W), 0 = invalid,
encoded as the files are, by the same functions (`multimae.data.codecs.rgb_to_storage`,
`depth_to_storage` and their inverses); semseg / instance uint8 (N, H, W) (int16 for more than
256 classes); label int64 (N,); text (captions) a list of N str, tokenised when batches are
prepared (after augmentation, which may mirror them). Normals differ from their files (uint8 ``(n + 1) / 2``): the pool
holds int8 ``round(127 n)`` (N, 3, H, W), renormalised when read. That form stays because pools
cached on disk are found by a key that does not name the storage form (an old cache read with
another rule would be wrong), and reading a pool must keep giving the numbers it gives today.
Channel-first batches rather than one ``(H, W, C)`` array a file: whole batches are augmented at once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from multimae.data.codecs import STORED, TEXT, depth_from_storage, depth_to_storage, rgb_from_storage, rgb_to_storage
from multimae.data.collate import collate
from multimae.data.generated import WORLD_MODALITIES, WorldDataset
from multimae.data.transforms import unit_vectors
from multimae.data.world import GENERATOR_VERSION, NUM_CLASSES
from multimae.engine.checkpoint import load_torch_file
from multimae.engine.files import save_atomic
from multimae.modalities.registry import DEFAULT_INPUTS

POOL_MODALITIES = (*WORLD_MODALITIES, *TEXT)
PoolValue = torch.Tensor | list  # tensors of N rows, or a list of N captions


def default_cache_dir() -> Path:
    return Path(os.environ.get("MULTIMAE_CACHE", Path.home() / ".cache" / "multimae"))


def _to_storage(batch: dict[str, object], modalities: Sequence[str]) -> dict[str, PoolValue]:
    out: dict[str, PoolValue] = {}
    for m in modalities:
        x = batch[m]
        if STORED[m] == "text":
            out[m] = list(x)  # type: ignore[call-overload]
            continue
        assert isinstance(x, torch.Tensor)
        if STORED[m] == "rgb8":
            out[m] = rgb_to_storage(x)
        elif STORED[m] == "depth16":
            out[m] = depth_to_storage(x)
        elif STORED[m] == "unit_vectors8":
            out[m] = (x * 127).round().to(torch.int8)
        else:
            out[m] = x.to(torch.uint8 if NUM_CLASSES <= 256 else torch.int16)
    out["label"] = batch["label"]  # type: ignore[assignment]
    return out


def render_pool(
    split: str,
    count: int,
    size: int,
    difficulty: float = 1.0,
    class_colors: float = 0.0,
    modalities: Sequence[str] = DEFAULT_INPUTS,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, PoolValue]:
    """Render scenes 0..count-1 of ``split`` into stored-form tensors (see the module docstring)."""
    unknown = set(modalities) - set(POOL_MODALITIES)
    if unknown:
        raise ValueError(f"the world pool has no modality {sorted(unknown)}; it has {POOL_MODALITIES}")
    maps = tuple(m for m in modalities if m not in TEXT)  # every sample carries its caption
    dataset = WorldDataset(split, size=size, length=count, difficulty=difficulty, class_colors=class_colors,
                           modalities=maps)
    loader = DataLoader(dataset, batch_size=64, num_workers=workers, collate_fn=collate)
    parts: list[dict[str, torch.Tensor]] = []
    with tqdm(total=count, desc=f"rendering {count} {split} scenes at {size} px", unit="scene",
              disable=not progress, dynamic_ncols=True) as bar:
        for batch in loader:
            parts.append(_to_storage(batch, modalities))
            bar.update(len(batch["label"]))  # type: ignore[arg-type]
    return {k: sum((p[k] for p in parts), []) if k in TEXT else torch.cat([p[k] for p in parts])  # type: ignore[misc]
            for k in parts[0]}


def load_or_render_pool(
    split: str,
    count: int,
    size: int,
    difficulty: float = 1.0,
    class_colors: float = 0.0,
    modalities: Sequence[str] = DEFAULT_INPUTS,
    workers: int = 2,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, PoolValue]:
    """`render_pool`, cached on disk by (generator version, split, count, size, world settings, modalities)."""
    world = f"{difficulty}" + (f"-cc{class_colors}" if class_colors else "")  # keys of class_colors=0 unchanged
    key = f"{GENERATOR_VERSION}-{split}-{count}-{size}-{world}-{'+'.join(sorted(modalities))}"
    name = f"world-{split}-{size}px-{count}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.pt"
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    file = path / name
    if file.exists():
        try:
            return load_torch_file(file)
        except Exception as err:  # a damaged cache is rebuilt, not trusted
            print(f"warning: ignoring unreadable pool cache {file}: {err}")
    pool = render_pool(split, count, size, difficulty, class_colors, modalities, workers, progress)
    save_atomic(pool, file, unique=True)
    return pool


def pool_to_raw(pool: dict[str, PoolValue], index: torch.Tensor) -> dict[str, PoolValue]:
    """Rows ``index`` (B,) of a pool as a raw batch (sample conventions of `multimae.data`)."""
    out: dict[str, PoolValue] = {}
    for m, x in pool.items():
        if isinstance(x, list):
            out[m] = [x[i] for i in index.tolist()]
            continue
        rows = x[index]
        if STORED.get(m) == "rgb8":
            out[m] = rgb_from_storage(rows)
        elif STORED.get(m) == "depth16":
            out[m] = depth_from_storage(rows)
        elif STORED.get(m) == "unit_vectors8":
            out[m] = unit_vectors(rows.float())
        else:
            out[m] = rows.long()
    return out
