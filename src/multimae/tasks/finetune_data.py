"""Data of a fine-tuning run: a resumable training stream and evaluation batches, with the
modalities (and scene labels) the task needs.

Sources (``data.source``): ``world`` (rendered pools, cached; the scene ``label`` is the shape of
the largest visible object), ``folder`` (``root/<split>/<modality>/[<class>/]<name>.<ext>``: class
folders give classification labels) and ``shards`` (training only; validation from a folder).
Evaluation batches are resized, never cropped or flipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from multimae.config.finetune import FinetuneConfig
from multimae.data.collate import PRESENT_KEY, collate
from multimae.data.folder import FolderDataset
from multimae.data.stream import LoaderStream
from multimae.data.transforms import Resize
from multimae.engine.distributed import DistInfo
from multimae.modalities.registry import DEFAULT_INPUTS
from multimae.tasks.job import train_transform
from multimae.tasks.world_data import pool_stream, resized_batches, world_pool

EVAL_BATCH = 64
_WORLD_SHARED = DEFAULT_INPUTS  # rendered together (as for pre-training), so that every task shares one cached pool


def _world_pool(cfg: FinetuneConfig, split: str, count: int, progress: bool,
                info: DistInfo = DistInfo()) -> dict[str, Tensor]:
    mods = tuple(sorted(set(cfg.data_modalities) | set(_WORLD_SHARED)))
    return world_pool(cfg.data, split, count, mods, progress, info)


def _folder(cfg: FinetuneConfig, split: str, transform: Any) -> FolderDataset:
    d = cfg.data
    root = d.root if split == "train" or not d.val_root else d.val_root
    return FolderDataset(root, split, cfg.data_modalities, transform=transform, seed=cfg.train.seed,
                         on_error=cfg.data.on_error, allow_missing=cfg.data.allow_missing)  # type: ignore[arg-type]


def train_stream(cfg: FinetuneConfig, info: DistInfo, micro_batch: int, progress: bool) -> Any:
    """This process's rows of every global training batch (augmented as ``data`` says)."""
    d, seed = cfg.data, cfg.train.seed
    if d.source == "world":
        return pool_stream(d, _world_pool(cfg, "train", d.world_train_scenes, progress, info), micro_batch, seed, info)
    transform = train_transform(d)
    if d.source == "folder":
        dataset: Any = _folder(cfg, "train", transform)
    else:
        from multimae.data.shards import ShardDataset

        dataset = ShardDataset(d.root, cfg.data_modalities, transform=transform, shuffle=True, seed=seed,  # type: ignore[arg-type]
                               rank=info.rank, world_size=info.world_size, on_error=d.on_error,
                               allow_missing=d.allow_missing)
    return LoaderStream(dataset, micro_batch, seed, info.rank, info.world_size, d.num_workers)


def eval_batches(cfg: FinetuneConfig, split: str = "val", progress: bool = False,
                 max_samples: int | None = None) -> list[dict[str, Tensor]]:
    """Every sample of ``split`` (at most ``max_samples``) as raw batches at the training size.

    World: ``data.world_val_scenes`` scenes of the split. Folder / shards: the split's folder under
    ``data.val_root`` (or ``data.root``).
    """
    d = cfg.data
    if d.source == "world":
        pool = _world_pool(cfg, split, d.world_val_scenes, progress)
        if max_samples is not None:
            pool = {k: v[:max_samples] for k, v in pool.items()}
        return resized_batches(pool, d.image_size, EVAL_BATCH)
    if d.source == "shards" and not d.val_root:
        raise ValueError("data.source=shards evaluates on a folder: set data.val_root")
    dataset = _folder(cfg, split, Resize(d.image_size))
    if max_samples is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(max_samples, len(dataset))))  # type: ignore[assignment]
    loader = DataLoader(dataset, batch_size=EVAL_BATCH, shuffle=False, collate_fn=collate, num_workers=0)
    return [{k: v for k, v in b.items() if isinstance(v, Tensor) or k == PRESENT_KEY} for b in loader]


def data_num_labels(cfg: FinetuneConfig) -> tuple[int | None, Sequence[str] | None]:
    """(number of scene classes, their names) the data defines, when it does."""
    if cfg.data.source == "world":
        from multimae.data.world import LABEL_NAMES

        return len(LABEL_NAMES), LABEL_NAMES
    if cfg.data.source == "folder":
        names = _folder(cfg, "train", None).class_names
        return (len(names), names) if names else (None, None)
    return None, None


def data_num_segment_classes(cfg: FinetuneConfig) -> int | None:
    """The number of pixel classes the data defines, when it says: the built-in world's, or a
    folder's ``num_classes`` in its manifest (an imported dataset's); else None (the reader then
    checks each map's ids against the task's class count)."""
    if cfg.data.source == "world":
        from multimae.data import CLASS_NAMES

        return len(CLASS_NAMES)
    if cfg.data.source == "folder":
        return _folder(cfg, "train", None).num_classes
    return None


def class_palette(cfg: FinetuneConfig, num_classes: int) -> tuple[Sequence[str], Sequence[Sequence[int]]]:
    """(names, colours) of the segmentation classes."""
    if cfg.data.source == "world":
        from multimae.data.world import CLASS_NAMES, PALETTE

        if num_classes == len(CLASS_NAMES):
            return CLASS_NAMES, PALETTE
    from multimae.viz.colormaps import distinct_colors

    return [str(i) for i in range(num_classes)], distinct_colors(num_classes).tolist()
