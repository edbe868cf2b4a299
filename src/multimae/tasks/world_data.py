"""The built-in world as the training jobs read it: rendered pools cached on disk (rank 0 renders,
the other ranks of a process group read its cache), a pool as a training stream, and whole pools
as resized evaluation batches."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from multimae.config.schema import DataConfig
from multimae.data.batch_augment import BatchRandomResizedCropFlip
from multimae.data.pool import load_or_render_pool, pool_to_raw
from multimae.data.stream import PoolStream
from multimae.engine.distributed import DistInfo, main_process_first


def world_pool(data: DataConfig, split: str, count: int, modalities: Sequence[str], progress: bool = False,
               info: DistInfo = DistInfo()) -> dict[str, Tensor]:
    """``count`` scenes of ``split`` at ``data``'s render size and world settings: (N, ...) tensors per
    modality, plus the scene ``label``."""
    with main_process_first(info):
        return load_or_render_pool(split, count, data.world_render_size or data.image_size, data.world_difficulty,
                                   data.world_class_colors, modalities, data.num_workers, data.cache_dir,
                                   progress and info.is_main)


def pool_stream(data: DataConfig, pool: dict[str, Tensor], micro_batch: int, seed: int, info: DistInfo) -> PoolStream:
    """This process's rows of every training batch drawn from ``pool``, cropped and flipped per
    sample on the batch when ``data.augment`` (without it the pool must be rendered at the
    training size)."""
    augment = (BatchRandomResizedCropFlip(data.image_size, data.crop_scale, data.crop_ratio,
                                          caption_flip=data.caption_flip) if data.augment else None)
    if augment is None and (data.world_render_size or data.image_size) != data.image_size:
        raise ValueError("data.world_render_size differs from data.image_size but data.augment is off")
    return PoolStream(pool, micro_batch, seed, info.rank, info.world_size, augment)


def resized_batches(pool: dict[str, Tensor], size: int, batch: int = 64) -> list[dict[str, Tensor]]:
    """A whole pool as raw batches of ``batch`` samples, resized (not cropped) to ``size`` x ``size``."""
    resize = BatchRandomResizedCropFlip(size)
    n = len(next(iter(pool.values())))
    out = []
    for start in range(0, n, batch):
        raw = pool_to_raw(pool, torch.arange(start, min(n, start + batch)))
        H, W = next(v for v in raw.values() if v.dim() >= 3).shape[-2:]
        if (H, W) != (size, size):
            B = min(batch, n - start)
            raw = resize.apply(raw, torch.tensor([[0.0, 0.0, H, W]]).expand(B, 4), torch.zeros(B, dtype=torch.bool))
        out.append(raw)
    return out
