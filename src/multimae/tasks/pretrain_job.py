"""Wiring of a pre-training run: config -> model, data streams, task, trainer; final evaluation
and pictures. The loop itself is `multimae.engine.trainer`."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from multimae.config.loader import to_plain, to_yaml
from multimae.config.schema import RunConfig
from multimae.data.batch_augment import BatchRandomResizedCropFlip
from multimae.data.folder import FolderDataset
from multimae.data.stream import LoaderStream, PoolStream
from multimae.data.transforms import RandomResizedCropFlip, Resize
from multimae.engine.checkpoint import latest_checkpoint
from multimae.engine.distributed import (
    DistInfo,
    from_rank0,
    init_distributed,
    local_threads,
    resolve_device,
)
from multimae.engine.trainer import Trainer
from multimae.model import MultiMAE
from multimae.tasks.pretrain import PretrainTask, mean_baseline, transfer_metrics
from multimae.tasks.world_data import resized_batches, world_pool


def needed_modalities(model: MultiMAE) -> tuple[str, ...]:
    names = [*model.input_specs, *(s.source_name for s in model.output_specs.values())]
    return tuple(dict.fromkeys(names))


def _without_label(pool: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v for k, v in pool.items() if k != "label"}


def build_streams(cfg: RunConfig, model: MultiMAE, info: DistInfo, micro_batch: int, progress: bool
                  ) -> tuple[Any, list[dict[str, Tensor]], list[dict[str, Tensor]]]:
    """(training stream, validation raw batches, a few training batches for baselines)."""
    d, seed = cfg.data, cfg.train.seed
    mods = needed_modalities(model)
    if d.source == "world":
        pool = _without_label(world_pool(d, "train", d.world_train_scenes, mods, progress, info))
        augment = BatchRandomResizedCropFlip(d.image_size, d.crop_scale, d.crop_ratio) if d.augment else None
        if augment is None and (d.world_render_size or d.image_size) != d.image_size:
            raise ValueError("data.world_render_size differs from data.image_size but data.augment is off")
        stream = PoolStream(pool, micro_batch, seed, info.rank, info.world_size, augment)
        val = resized_batches(_without_label(world_pool(d, "val", d.world_val_scenes, mods, progress, info)), d.image_size)
        train_sample = resized_batches({k: v[:1024] for k, v in pool.items()}, d.image_size)
        return stream, val, train_sample
    transform = RandomResizedCropFlip(d.image_size, d.crop_scale, d.crop_ratio) if d.augment else Resize(d.image_size)
    if d.source == "folder":
        dataset: Any = FolderDataset(d.root, "train", mods, transform=transform, seed=seed,  # type: ignore[arg-type]
                                     on_error=d.on_error)
    else:
        from multimae.data.shards import ShardDataset

        dataset = ShardDataset(d.root, mods, transform=transform, shuffle=True, seed=seed,  # type: ignore[arg-type]
                               rank=info.rank, world_size=info.world_size, on_error=d.on_error)
    stream = LoaderStream(dataset, micro_batch, seed, info.rank, info.world_size, d.num_workers)
    val: list[dict[str, Tensor]] = []
    if d.val_root:
        vset = _folder_val_set(cfg, model)
        batch = min(64, len(vset))
        vstream = LoaderStream(vset, batch, seed, num_workers=0)
        val = [next(vstream) for _ in range(min(cfg.train.num_val_batches, len(vset) // batch))]
    return stream, val, []


def _folder_val_set(cfg: RunConfig, model: MultiMAE) -> FolderDataset:
    """The ``val`` split under ``data.val_root``, resized (not cropped) to the training size."""
    return FolderDataset(cfg.data.val_root, "val", needed_modalities(model),  # type: ignore[arg-type]
                         transform=Resize(cfg.data.image_size))


def make_run_dir(cfg: RunConfig, resume: str | Path | None) -> tuple[Path, Path | None]:
    """(run folder, checkpoint to resume from or None)."""
    if resume is not None:
        path = Path(resume)
        ckpt = latest_checkpoint(path) if path.is_dir() else path
        if ckpt is None or not ckpt.exists():
            raise ValueError(f"--resume {resume}: no checkpoint found")
        return ckpt.parent, ckpt
    name = cfg.train.name or from_rank0(time.strftime("pretrain-%Y%m%d-%H%M%S"))
    run_dir = Path(cfg.train.out_dir) / name
    if latest_checkpoint(run_dir) is not None:
        raise ValueError(f"{run_dir} already holds checkpoints: pass --resume {run_dir} or choose another train.name")
    return run_dir, None


def class_labels(cfg: RunConfig) -> tuple[Sequence[str] | None, Sequence[Sequence[int]] | None]:
    """(class names, palette) of the run's semseg classes, when known."""
    if cfg.data.source == "world":
        from multimae.data.world import CLASS_NAMES, PALETTE

        return CLASS_NAMES, PALETTE
    return None, None


def held_out_batch(cfg: RunConfig, model: MultiMAE, count: int) -> dict[str, Tensor]:
    """``count`` held-out samples of the run's data as one raw batch."""
    if cfg.data.source == "world":
        pool = world_pool(cfg.data, "val", max(count, cfg.data.world_val_scenes), needed_modalities(model))
        return resized_batches({k: v[:count] for k, v in _without_label(pool).items()}, cfg.data.image_size, count)[0]
    if not cfg.data.val_root:
        raise ValueError("the run has no validation data (data.val_root) to draw pictures from")
    vset = _folder_val_set(cfg, model)
    return next(LoaderStream(vset, min(count, len(vset)), cfg.train.seed, num_workers=0))


def save_pictures(model: MultiMAE, cfg: RunConfig, raw: dict[str, Tensor], out_dir: Path, tag: str = "",
                  num_masks: int = 3, num_visible: int | None = None, seed: int = 0) -> list[Path]:
    """``reconstructions<tag>.png`` (random masks) and ``cross_modal<tag>.png`` (one modality in)."""
    from multimae.viz.reconstruction import cross_modal_figure, masked_reconstruction_figure

    names, palette = class_labels(cfg)
    g = torch.Generator().manual_seed(seed)
    n = next(iter(raw.values())).shape[0]
    figures = {
        f"reconstructions{tag}.png": masked_reconstruction_figure(
            model, raw, num_masks=num_masks, num_visible=num_visible or cfg.masking.num_visible,
            alpha=cfg.masking.alpha, generator=g, class_names=names, palette=palette, max_samples=n),
        f"cross_modal{tag}.png": cross_modal_figure(model, raw, class_names=names, palette=palette, max_samples=n),
    }
    paths = []
    for name, fig in figures.items():
        fig.save(out_dir / name)
        paths.append(out_dir / name)
    return paths


def object_classes(cfg: RunConfig) -> list[int] | None:
    if cfg.data.source != "world":
        return None
    from multimae.data.world import BACKGROUND_CLASSES, CLASS_NAMES

    return [i for i, n in enumerate(CLASS_NAMES) if n not in BACKGROUND_CLASSES]


def from_rgb(model: MultiMAE, cfg: RunConfig, val: list[dict[str, Tensor]]) -> dict[str, float]:
    """The model's predictions from the full RGB image alone, scored (empty without an rgb input)."""
    if "rgb" not in model.input_specs:
        return {}
    return transfer_metrics(lambda x: model(x).preds, model, val, ("rgb",), object_classes(cfg))


def val_record(losses: dict[str, float], rgb_metrics: dict[str, float]) -> dict[str, float]:
    """One validation line of the log: the masked losses and the ``from_rgb/``-prefixed metrics."""
    return {**losses, **{f"from_rgb/{k}": v for k, v in rgb_metrics.items()}}


def final_report(task: PretrainTask, model: MultiMAE, cfg: RunConfig, val: list[dict[str, Tensor]],
                 train_sample: list[dict[str, Tensor]]) -> dict[str, Any]:
    """Masked-reconstruction losses on held-out and on training scenes (fixed masks, no
    augmentation) and from-RGB transfer metrics, of the model and of the mean baseline."""
    report: dict[str, Any] = {"val": task.validate(val)}
    if "rgb" in model.input_specs:
        report["from_rgb"] = from_rgb(model, cfg, val)
    if train_sample:
        base = mean_baseline(model, train_sample)
        report["train"] = task.validate(train_sample)
        report["baseline_train"] = task.validate(train_sample, baseline=base)
        report["baseline_val"] = task.validate(val, baseline=base)
        report["baseline_from_rgb"] = transfer_metrics(lambda x: base, model, val, ("rgb",), object_classes(cfg))
    return report


def run_pretraining(cfg: RunConfig, resume: str | Path | None = None, progress: bool = True) -> Path:
    """Run (or resume, from a run folder or checkpoint) a pre-training run; returns its folder.

    When resuming, pass the run's own config (its ``config.yaml``), possibly with more steps.
    """
    if resume is None:
        cfg.validate_new_run()
    threads = local_threads(cfg.train.threads)
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(cfg.train.device)
    info = init_distributed(device)
    accum, world = cfg.optim.accum_steps, info.world_size
    if cfg.data.batch_size % (accum * world):
        raise ValueError(f"data.batch_size {cfg.data.batch_size} is not divisible by accum_steps x processes = {accum * world}")
    run_dir, ckpt = make_run_dir(cfg, resume)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
    torch.manual_seed(cfg.train.seed)
    model = MultiMAE(cfg.model.build())
    micro = cfg.data.batch_size // accum
    stream, val, train_sample = build_streams(cfg, model, info, micro, progress)
    task = PretrainTask(model, cfg.masking, cfg.loss, cfg.train.seed)

    def validate(step: int) -> dict[str, float]:
        model.eval()
        try:
            return val_record(task.validate(val), from_rgb(model, cfg, val))
        finally:
            model.train()

    pictured = {k: v[:4] for k, v in val[0].items()} if val else None

    def picture(step: int) -> Path | None:
        if not info.is_main or pictured is None:
            return None
        return save_pictures(model, cfg, pictured, run_dir, f"-{step:08d}", seed=cfg.train.seed)[0]

    trainer = Trainer(model, task, stream, cfg.optim, cfg.train, cfg.data.batch_size, run_dir, info, device,
                      config=to_plain(cfg), on_validate=validate if val else None, on_picture=picture, progress=progress)
    wall = trainer.run(ckpt)
    if info.is_main:
        model.eval()
        report = {"steps": trainer.step, "train_wall_s": round(wall, 1), **final_report(task, model, cfg, val, train_sample)}
        (run_dir / "report.json").write_text(json.dumps(report, indent=2))
        trainer.logger.log(trainer.step, val_record(report["val"], report.get("from_rgb", {})), kind="val")
        if pictured is not None:
            for path in save_pictures(model, cfg, pictured, run_dir, seed=cfg.train.seed):
                print(f"picture: {path}")
        print(json.dumps(report, indent=2))
        print(f"run folder: {run_dir}")
    trainer.close()
    return run_dir

