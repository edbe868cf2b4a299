"""Where a map tokenizer's training and held-out maps come from (``data.source``): the built-in world
(scenes rendered once and cached) or a data source on disk.

Shapes: B maps, C channels, H W pixels (``data.image_size``).

A source on disk is a folder-layout root (train: its ``train`` split; val: its ``val`` split) or tar
shards (`multimae.data.sources.open_source`; train: every shard but the last; val: the last one). Its
first ``count`` samples of the split are taken (all of them when it has fewer), each map cropped to
its central square and resized to ``data.image_size`` (nearest for class maps, NaN-aware for depth).
"""

from __future__ import annotations

import torch
from torch import Tensor

from multimae.tokenizers.config import TokenizerDataConfig

WORLD = "world"


def world_maps(data: TokenizerDataConfig, modality: str, split: str, count: int, progress: bool = True) -> Tensor:
    """Raw maps of ``modality`` of scenes 0..count-1 of a world split (B, ...), rendered once and cached."""
    from multimae.data.pool import POOL_MODALITIES, load_or_render_pool, pool_to_raw

    if modality not in POOL_MODALITIES:
        raise ValueError(f"the built-in world has no map {modality!r}; it has {POOL_MODALITIES}")
    pool = load_or_render_pool(split, count, data.image_size, data.difficulty, data.class_colors, (modality,),
                               data.workers, data.cache_dir, progress)
    return pool_to_raw(pool, torch.arange(count))[modality]  # type: ignore[return-value]


def source_samples(source: str, modality: str, split: str):
    """The samples of the ``train`` or ``val`` split of a source on disk (see the module docstring)."""
    from multimae.data.folder import FolderDataset
    from multimae.data.sources import IndexedShards, shard_paths

    if split not in ("train", "val"):
        raise ValueError(f"a tokenizer's split is 'train' or 'val', got {split!r}")
    shards = shard_paths(source, "train")
    if shards is None:
        return FolderDataset(source, split, (modality,))
    if len(shards) < 2:
        raise ValueError(f"{source}: {len(shards)} shard; a tokenizer needs two or more (the last is held out)")
    return IndexedShards(shards[:-1] if split == "train" else shards[-1:], (modality,))


def disk_maps(data: TokenizerDataConfig, modality: str, split: str, count: int) -> Tensor:
    """Raw maps (B, ...) of the first ``count`` samples of a source on disk, ``data.image_size`` square."""
    from multimae.data.transforms import central_square, resized_crop

    samples = source_samples(data.source, modality, split)
    if len(samples) == 0:
        raise ValueError(f"{data.source}: no {split} samples")
    maps = []
    for i in range(min(count, len(samples))):
        value = samples[i][modality]
        if not isinstance(value, Tensor) or value.ndim < 2:
            raise ValueError(f"{data.source}: {modality} is not a map; map tokenizers take dense or categorical maps")
        box = central_square(*value.shape[-2:])
        maps.append(resized_crop({modality: value}, box, data.image_size)[modality])
    return torch.stack(maps)


def training_maps(data: TokenizerDataConfig, modality: str, split: str, count: int, progress: bool = True) -> Tensor:
    """Raw maps (B, ...) of ``modality`` for a tokenizer's ``split`` from ``data.source``."""
    if data.source == WORLD:
        return world_maps(data, modality, split, count, progress)
    return disk_maps(data, modality, split, count)
