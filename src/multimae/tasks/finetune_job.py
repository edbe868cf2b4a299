"""Wiring of a fine-tuning run: config -> resolved architecture and initial weights, data, task,
trainer; final evaluation, report and prediction picture. The loop is `multimae.engine.trainer`."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from multimae.config.finetune import FinetuneConfig
from multimae.data.collate import batch_rows
from multimae.engine.distributed import from_rank0
from multimae.engine.file_table import FileEntry
from multimae.model import FineTuneModel
from multimae.tasks.finetune import FinetuneTask
from multimae.tasks.finetune_arch import build_model
from multimae.tasks.finetune_data import class_palette, eval_batches, train_stream
from multimae.tasks.finetune_model import load_encoder_weights, resolve
from multimae.tokenizers.base import Tokenizer, load_tokenizer
from multimae.tokenizers.run_files import keep_tokenizers, tokenizer_folders
from multimae.tasks.job import (
    evaluating,
    finish_run,
    make_run_dir,
    make_trainer,
    micro_batch,
    read_resume_state,
    run_precision,
    start_process,
    write_run_config,
)


def make_task(cfg: FinetuneConfig, model: FineTuneModel, tokenizers: Mapping[str, Tokenizer] | None = None) -> FinetuneTask:
    """The task of a resolved config (segmentation ignores the target spec's ignore index by default);
    ``tokenizers`` ``{stored modality: tokenizer}`` encode the model's token-map inputs (a 4M encoder's)."""
    ignore = -100
    if cfg.task.kind == "segmentation":
        spec = cfg.model.specs((cfg.task.target_name,))[cfg.task.target_name]  # type: ignore[index]
        ignore = cfg.task.ignore_index if cfg.task.ignore_index is not None else (
            spec.ignore_index if spec.ignore_index is not None else _data_ignore_index(cfg))
    return FinetuneTask(model, cfg.task, cfg.train.seed, ignore_index=ignore, tokenizers=dict(tokenizers or {}))


def input_tokenizers(model: FineTuneModel, source: str | Path | None, run_dir: Path, is_main: bool
                     ) -> tuple[dict[str, Tokenizer], dict[str, FileEntry]]:
    """The tokenizers of the model's token-map inputs, read (checked) from the checkpoint ``source``
    (the 4M run a new run starts from, or the run's own checkpoint when it resumes), kept in the run
    folder; (tokenizers by stored modality, their files-table entries). Empty for other models."""
    needed = sorted({s.source_name for s in model.input_specs.values() if s.kind == "token_map"})
    if not needed:
        return {}, {}
    if source is None:
        raise ValueError(f"the token-map inputs {[n for n, s in model.input_specs.items() if s.kind == 'token_map']} "
                         "need the tokenizers of a 4M run: set init.checkpoint to it")
    folders = tokenizer_folders(source)
    missing = [m for m in needed if m not in folders]
    if missing:
        raise ValueError(f"{source}: keeps no tokenizer of {missing} (it has {sorted(folders)}), which the inputs "
                         f"{[n for n, s in model.input_specs.items() if s.source_name in missing]} need")
    kept = {m: folders[m] for m in needed}
    return {m: load_tokenizer(f) for m, f in kept.items()}, keep_tokenizers(kept, run_dir, is_main)


def _data_ignore_index(cfg: FinetuneConfig) -> int:
    """The folder manifest's ``<target>.ignore_index`` (imported datasets: 255 = unlabelled), else -100 (none)."""
    if cfg.data.source != "folder" or cfg.data.root is None:
        return -100
    from multimae.data.manifest import read_manifest

    value = ((read_manifest(Path(cfg.data.root)) or {}).get(cfg.task.target_name) or {}).get("ignore_index")
    return int(value) if value is not None else -100


def save_prediction_picture(task: FinetuneTask, cfg: FinetuneConfig, raw: Mapping[str, Tensor], path: Path) -> Path | None:
    """``path``: inputs, prediction and truth of a few held-out samples (dense tasks only)."""
    if cfg.task.kind == "classification":
        return None
    from multimae.viz.predictions import prediction_figure

    pred = task.predict(raw)
    names, palette = class_palette(cfg, task.model.head_config.num_classes) if cfg.task.kind == "segmentation" \
        else (None, [(0, 0, 0)])  # type: ignore[union-attr]
    prediction_figure(raw, cfg.input_data, cfg.task.target_name, pred, palette, names).save(path)  # type: ignore[arg-type]
    return path


def _default_name(cfg: FinetuneConfig) -> FinetuneConfig:
    if cfg.train.name:
        return cfg
    name = from_rank0(time.strftime(f"finetune-{cfg.task.kind}-%Y%m%d-%H%M%S"))
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, name=name))


def run_finetuning(cfg: FinetuneConfig, resume: str | Path | None = None, progress: bool = True,
                   trusted: bool = False, overwrite: bool = False) -> Path:
    """Run (or resume, from a run folder or checkpoint) a fine-tuning run; returns its folder.

    When resuming, pass the run's own (resolved) config, its ``config.yaml`` (see
    `multimae.tasks.runs.RESUMABLE_KEYS` for what may change). ``trusted``: unpickle anything in
    the checkpoints read (only for files you trust); ``overwrite``: replace a run of the same name.
    """
    device, info = start_process(cfg.train)
    if resume is None:
        cfg = _default_name(cfg)
    run_dir, ckpt = make_run_dir(cfg, resume, overwrite)
    state, notes, saved = None, [], None
    if ckpt is None:  # a new run, or one stopped before its first checkpoint: from the initial weights
        cfg, state, notes = resolve(cfg, trusted)
    else:
        saved = read_resume_state(ckpt, cfg, trusted)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg)  # before the run folder is made: an impossible architecture leaves none
    if state is not None:
        fresh = load_encoder_weights(model, state)
        if fresh:
            notes.append(f"input adapters without pre-trained weights (trained from scratch): {fresh}")
    micro = micro_batch(cfg, info)
    write_run_config(run_dir, cfg, info.is_main)
    if info.is_main:
        for note in notes:
            print(note)
    tokenizers, files = input_tokenizers(model, ckpt or cfg.init.checkpoint, run_dir, info.is_main)
    stream = train_stream(cfg, info, micro, progress)
    val = eval_batches(cfg, "val", progress and info.is_main)
    task = make_task(cfg, model, tokenizers)
    if ckpt is None:  # a fresh run: dense regression starts from the mean training target
        position = stream.state_dict()
        mean = task.init_output_bias(next(stream) for _ in range(4))
        stream.load_state_dict(position)
        if mean is not None and info.is_main:
            print(f"output bias set to the mean training target {[round(v, 4) for v in mean.tolist()]}")

    # this process's micro-batch of all input tokens
    tokens = len(cfg.task.inputs) * (cfg.data.image_size // model.backbone.patch_size) ** 2
    precision = run_precision(cfg.train, device, micro // info.world_size * tokens, model.backbone.config.dim)
    trainer = make_trainer(cfg, model, task, stream, run_dir, info, device, precision,
                           on_validate=evaluating(model, lambda: task.evaluate(val)) if val else None,
                           progress=progress, desc="finetune", extra_specs=cfg.model.specs(cfg.modalities))
    trainer.files.update(files)
    wall = trainer.run(saved, ckpt)
    with trainer.gathered():  # FSDP: every process gathers the weights, the main one reports alone
        if info.is_main:
            model.eval()
            report: dict[str, Any] = {"steps": trainer.step, "train_wall_s": round(wall, 1), "task": cfg.task.kind,
                                      "inputs": list(cfg.task.inputs), "init": cfg.init.checkpoint,
                                      **trainer.setup_report(),
                                      "val": task.evaluate(val) if val else {}}

            def pictures() -> list[Path]:
                if not val:
                    return []
                picture = save_prediction_picture(task, cfg, batch_rows(val[0], slice(0, 4)), run_dir / "predictions.png")
                return [picture] if picture is not None else []

            finish_run(trainer, run_dir, report, report["val"], pictures)
    trainer.close()
    return run_dir
