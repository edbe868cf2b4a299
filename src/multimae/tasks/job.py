"""What every training job (`multimae.tasks.pretrain_job`, `multimae.tasks.finetune_job`) does the
same way: the process set-up (threads, device, process group), the run folder and the checkpoint to
resume from (with the guards of `multimae.tasks.runs`), the micro-batch and the training transform,
the precision, the `Trainer`, and the end of a run (``report.json`` written atomically, the final
validation line, pictures, the printout). What differs (model, data, task, the report's contents)
stays in each job."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from multimae.config.loader import to_plain, to_yaml
from multimae.config.schema import DataConfig, TrainConfig
from multimae.data.transforms import RandomResizedCropFlip, Resize
from multimae.engine.checkpoint import latest_checkpoint, load_checkpoint
from multimae.engine.files import write_text_atomic
from multimae.engine.distributed import DistInfo, from_rank0, init_distributed, local_threads, resolve_device
from multimae.engine.logger import drop_metrics_after, dump_json
from multimae.engine.precision import PrecisionChoice, choose_precision, probe_shape
from multimae.engine.trainer import Trainer
from multimae.tasks.runs import check_resume, config_kind, is_run_folder, resume_point


def start_process(train: TrainConfig) -> tuple[torch.device, DistInfo]:
    """(this process's device, its place in the process group): intra-op threads set first (see
    `local_threads`), then the device resolved and the group joined when launched by torchrun."""
    threads = local_threads(train.threads)
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(train.device)
    return device, init_distributed(device)


def micro_batch(cfg: Any, info: DistInfo) -> int:
    """One accumulation step's batch on this process's share of the data loading:
    ``data.batch_size // optim.accum_steps``; a ValueError when the batch does not split evenly
    over accumulation steps and processes."""
    accum, world = cfg.optim.accum_steps, info.world_size
    if cfg.data.batch_size % (accum * world):
        raise ValueError(f"data.batch_size {cfg.data.batch_size} is not divisible by accum_steps x processes = {accum * world}")
    return int(cfg.data.batch_size // accum)


def train_transform(data: DataConfig) -> RandomResizedCropFlip | Resize:
    """The per-sample transform of a folder or shard training stream: a random resized crop and
    flip when ``data.augment``, else a resize to ``data.image_size``."""
    if data.augment:
        return RandomResizedCropFlip(data.image_size, data.crop_scale, data.crop_ratio, caption_flip=data.caption_flip)
    return Resize(data.image_size)


def make_run_dir(cfg: Any, resume: str | Path | None, overwrite: bool = False) -> tuple[Path, Path | None]:
    """(run folder, checkpoint to resume from or None), decided on rank 0 for the whole group.

    A resume continues the given checkpoint or the folder's latest one; a run stopped before its
    first checkpoint starts again from step 0 with its saved config. A new run refuses an existing,
    non-empty folder unless ``overwrite`` (and then only a run folder, which is emptied).
    """
    try:
        outcome: Any = _run_dir(cfg, resume, overwrite)
    except ValueError as err:
        outcome = str(err)
    outcome = from_rank0(outcome)
    if isinstance(outcome, str):
        raise ValueError(outcome)
    run_dir, ckpt, replace = outcome
    if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
        if replace:
            shutil.rmtree(run_dir)
        elif resume is not None and ckpt is None:  # stopped before its first checkpoint: from step 0
            drop_metrics_after(run_dir, 0)
    return run_dir, ckpt


def _run_dir(cfg: Any, resume: str | Path | None, overwrite: bool) -> tuple[Path, Path | None, bool]:
    if resume is not None:
        return (*resume_point(resume), False)
    name = cfg.train.name or time.strftime(f"{config_kind(to_plain(cfg))}-%Y%m%d-%H%M%S")
    run_dir = Path(cfg.train.out_dir) / name
    if not run_dir.exists():
        return run_dir, None, False
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: exists and is not a folder; choose another train.name")
    if not any(run_dir.iterdir()):
        return run_dir, None, False
    if not is_run_folder(run_dir):
        raise ValueError(f"{run_dir}: exists and holds files that are not a run's; choose another train.name "
                         "(--overwrite replaces only run folders)")
    if overwrite:
        return run_dir, None, True
    what = "already holds checkpoints" if latest_checkpoint(run_dir) is not None else "already holds a run"
    raise ValueError(f"{run_dir} {what}: pass --resume {run_dir} to continue it, --overwrite to replace it, "
                     "or choose another train.name")


def read_resume_state(ckpt: Path, cfg: Any, trusted: bool) -> dict[str, Any]:
    """The checkpoint's contents, read safely (unless ``trusted``) and checked against ``cfg``
    (`check_resume`: same run kind, only resumable settings changed, steps still ahead)."""
    state = load_checkpoint(ckpt, trusted)
    check_resume(ckpt, state, cfg)
    return state


def write_run_config(run_dir: Path, cfg: Any, is_main: bool) -> None:
    """The run folder made and its ``config.yaml`` (re)written atomically, on the main process."""
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / "config.yaml", to_yaml(cfg))


def open_run(cfg: Any, resume: str | Path | None, overwrite: bool, trusted: bool, is_main: bool
             ) -> tuple[Path, dict[str, Any] | None, Path | None]:
    """(run folder, the checkpoint's contents or None, its path): the checkpoint read safely (unless
    ``trusted``) and checked against ``cfg`` before the folder's ``config.yaml`` is (re)written."""
    run_dir, ckpt = make_run_dir(cfg, resume, overwrite)
    state = read_resume_state(ckpt, cfg, trusted) if ckpt is not None else None
    write_run_config(run_dir, cfg, is_main)
    return run_dir, state, ckpt


def run_precision(train: TrainConfig, device: torch.device, tokens: int, dim: int) -> PrecisionChoice:
    """``train.precision`` resolved (``auto`` timed at the encoder's MLP size: ``tokens`` of this
    process's micro-batch x ``dim``); rank 0's choice for every process."""
    return from_rank0(choose_precision(train.precision, device, probe_shape(tokens, dim)))  # type: ignore[no-any-return]


def evaluating(model: torch.nn.Module, evaluate: Callable[[], dict[str, float]]) -> Callable[[int], dict[str, float]]:
    """A trainer's ``on_validate``: ``evaluate()`` with the model in eval mode, back in training mode after."""
    def validate(step: int) -> dict[str, float]:
        model.eval()
        try:
            return evaluate()
        finally:
            model.train()

    return validate


def make_trainer(cfg: Any, model: torch.nn.Module, task: Any, stream: Any, run_dir: Path, info: DistInfo,
                 device: torch.device, precision: PrecisionChoice, **kwargs: Any) -> Trainer:
    """The `Trainer` of a run config (its ``optim``, ``train`` and ``data.batch_size``; the resolved
    config saved with every checkpoint); ``kwargs`` as `Trainer` takes them."""
    return Trainer(model, task, stream, cfg.optim, cfg.train, cfg.data.batch_size, run_dir, info, device,
                   config=to_plain(cfg), precision=precision, **kwargs)


def finish_run(trainer: Trainer, run_dir: Path, report: dict[str, Any], val_line: dict[str, float],
               pictures: Callable[[], Iterable[Path]]) -> None:
    """The end of a run, on the main process: ``report.json`` written atomically, ``val_line`` logged as
    the last validation, the final ``pictures()`` drawn, the report and the run folder printed."""
    write_text_atomic(run_dir / "report.json", dump_json(report, indent=2))
    trainer.logger.log(trainer.step, val_line, kind="val")
    for path in pictures():
        print(f"picture: {path}")
    print(dump_json(report, indent=2))
    print(f"run folder: {run_dir}")
