"""Wiring of a pre-training run: config -> model, data streams, task, trainer; final evaluation
and pictures. The loop itself is `multimae.engine.trainer`."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from multimae.config.schema import RunConfig
from multimae.data.collate import batch_rows
from multimae.data.folder import FolderDataset
from multimae.data.stream import LoaderStream
from multimae.data.transforms import Resize
from multimae.engine.distributed import DistInfo
from multimae.masking.build import build_mask_sampler
from multimae.modalities.registry import DEFAULT_IMAGE_MODALITY
from multimae.engine.file_table import FileEntry
from multimae.model import MultiMAE
from multimae.model.config import MultiMAEConfig
from multimae.text.tokenizer import TextTokenizer
from multimae.tasks.job import (
    evaluating,
    finish_run,
    make_trainer,
    micro_batch,
    open_run,
    run_precision,
    start_process,
    train_transform,
)
from multimae.tasks.pretrain import PretrainTask, mean_baseline, transfer_metrics
from multimae.tasks.world_data import pool_stream, resized_batches, world_pool


log = logging.getLogger(__name__)
HELD_OUT_FRACTION = 0.1  # of a folder's training samples, validated on when there is no data.val_root
HELD_OUT_MAX = 64


def needed_modalities(config: MultiMAEConfig) -> tuple[str, ...]:
    """The data modalities a model of ``config`` reads: its inputs and its outputs' sources."""
    specs = config.modality_specs()
    return tuple(dict.fromkeys([*config.inputs, *(specs[n].source_name for n in config.outputs)]))


def text_modalities(config: MultiMAEConfig) -> list[str]:
    """The modalities of ``config`` stored as text (captions): each needs a tokenizer."""
    return [n for n, s in config.modality_specs().items() if s.stored_as == "text"]


def run_tokenizers(cfg: RunConfig, run_dir: Path, info: DistInfo, progress: bool
                   ) -> tuple[dict[str, TextTokenizer], dict[str, FileEntry]]:
    """(the run's tokenizer of each text modality, their files-table entries). The main process
    trains (on the training captions) or fetches them first; the others then read the files it
    saved. `with_vocabularies` puts their sizes into the model config."""
    from multimae.data.text_sources import read_captions
    from multimae.text.run import run_tokenizer

    d = cfg.data
    config = cfg.model.build()
    tokenizers: dict[str, TextTokenizer] = {}
    files: dict[str, FileEntry] = {}

    def captions(name: str) -> list[str]:
        if d.source == "world":
            return world_pool(d, "train", d.world_train_scenes, needed_modalities(config), progress, info)[name]
        return read_captions(d.root, name, "train", d.on_error).texts  # type: ignore[arg-type]

    def make() -> None:
        for name in text_modalities(config):
            tok, entry = run_tokenizer(run_dir, name, lambda n=name: captions(n), d.tokenizer, d.tokenizer_vocab_size)
            tokenizers[name] = tok
            files.update(entry)

    if info.is_main:
        make()
    if info.enabled:  # the other processes read what the main one saved
        torch.distributed.barrier()
        if not info.is_main:
            make()
    if info.is_main:
        for name, tok in tokenizers.items():
            print(f"{name} tokenizer: {tok!r}")
    return tokenizers, files


def with_vocabularies(config: MultiMAEConfig, tokenizers: Mapping[str, TextTokenizer]) -> MultiMAEConfig:
    """``config`` whose text modalities take each tokenizer's vocabulary size and padding id (the
    run config keeps what was asked; checkpoints store the resolved specs)."""
    overrides = {n: dict(o) for n, o in config.modality_overrides.items()}
    for name, tok in tokenizers.items():
        overrides[name] = {**overrides.get(name, {}), "num_channels": tok.vocab_size, "pad_id": tok.pad_id}
    return dataclasses.replace(config, modality_overrides=overrides)


def _without_label(pool: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v for k, v in pool.items() if k != "label"}


def build_streams(cfg: RunConfig, model: MultiMAE, info: DistInfo, micro_batch: int, progress: bool
                  ) -> tuple[Any, list[dict[str, Tensor]], list[dict[str, Tensor]], str]:
    """(training stream, validation raw batches, a few training batches for baselines, where the
    validation data comes from)."""
    d, seed = cfg.data, cfg.train.seed
    mods = needed_modalities(model.model_config)
    if d.source == "world":
        pool = _without_label(world_pool(d, "train", d.world_train_scenes, mods, progress, info))
        stream = with_unpaired_text(cfg, model, pool_stream(d, pool, micro_batch, seed, info), info, progress)
        val = resized_batches(_without_label(world_pool(d, "val", d.world_val_scenes, mods, progress, info)), d.image_size)
        train_sample = resized_batches({k: v[:1024] for k, v in pool.items()}, d.image_size)
        return stream, val, train_sample, f"{d.world_val_scenes} val scenes of the world"
    transform = train_transform(d)
    if d.source in ("folder", "jsonl"):
        if d.source == "folder":
            dataset: Any = FolderDataset(d.root, "train", mods, transform=transform, seed=seed,  # type: ignore[arg-type]
                                         on_error=d.on_error, allow_missing=d.allow_missing)
            warn_if_incomplete(dataset.root)
        else:
            dataset = jsonl_dataset(cfg, model, transform)
        if not d.val_root:
            held = set(held_out_keys(dataset.keys, seed))
            dataset.keys = [k for k in dataset.keys if k not in held]
    else:
        from multimae.data.shards import ShardDataset, list_shards

        warn_if_incomplete(Path(str(d.root)))
        shards = list_shards(d.root)  # type: ignore[arg-type]
        train_shards = shards[:-1] if not d.val_root and len(shards) > 1 else shards
        dataset = ShardDataset(train_shards, mods, transform=transform, shuffle=True, seed=seed,
                               rank=info.rank, world_size=info.world_size, on_error=d.on_error,
                               allow_missing=d.allow_missing)
    stream = with_unpaired_text(cfg, model, LoaderStream(dataset, micro_batch, seed, info.rank, info.world_size,
                                                         d.num_workers), info, progress)
    vset, where = val_set(cfg, model)
    batch = min(64, len(vset)) if hasattr(vset, "__len__") else 64
    vstream = LoaderStream(vset, batch, seed, num_workers=0)
    count = min(cfg.train.num_val_batches, len(vset) // batch) if hasattr(vset, "__len__") else 1
    return stream, [next(vstream) for _ in range(count)], [], where


def with_unpaired_text(cfg: RunConfig, model: MultiMAE, stream: Any, info: DistInfo, progress: bool) -> Any:
    """``stream`` with ``data.unpaired_text`` of every batch text-only (`multimae.data.unpaired`): captions
    of ``data.text_corpus``, or on the world those of the text split's scenes."""
    from multimae.data.text_sources import read_captions
    from multimae.data.unpaired import UnpairedText

    d = cfg.data
    if not d.unpaired_text:
        return stream
    texts = text_modalities(model.model_config)
    if len(texts) != 1:
        raise ValueError(f"data.unpaired_text needs exactly one text modality among the model's, got {texts}")
    name = texts[0]
    if d.text_corpus:
        corpus = read_captions(d.text_corpus, name, "train", d.on_error).texts
    else:
        corpus = world_pool(d, "text", d.world_text_scenes, (name,), progress, info)[name]
    if info.is_main:
        print(f"unpaired text: {round(d.unpaired_text * d.batch_size)} of every {d.batch_size} samples are "
              f"{name} alone, from {len(corpus)} captions of {d.text_corpus or 'the world text split'}")
    return UnpairedText(stream, corpus, name, d.unpaired_text, d.batch_size, cfg.train.seed)


def jsonl_dataset(cfg: RunConfig, model: MultiMAE, transform: Any, path: str | None = None) -> Any:
    """The image-caption pairs of ``path`` (default ``data.root``), read as the model's image input and
    text modality (the first of each it reads)."""
    from multimae.data.jsonl import JsonlDataset

    config = model.model_config
    specs = config.modality_specs()
    mods = needed_modalities(config)
    texts = [m for m in mods if specs[m].stored_as == "text"]
    images = [m for m in mods if specs[m].stored_as not in ("text",)]
    if len(texts) != 1 or len(images) != 1:
        raise ValueError(f"data.source=jsonl holds one image and one caption per sample; the model reads {list(mods)}")
    return JsonlDataset(path or cfg.data.root, image_modality=images[0], text_modality=texts[0],  # type: ignore[arg-type]
                        transform=transform, on_error=cfg.data.on_error, seed=cfg.train.seed)


def held_out_keys(keys: Sequence[str], seed: int) -> list[str]:
    """The training samples held out for validation when a folder run has no ``data.val_root``:
    10 % (at least 1, at most 64, and never all of them), drawn with ``seed``."""
    if len(keys) < 2:
        raise ValueError(f"only {len(keys)} training sample(s) and no data.val_root: nothing can be held out for "
                         "validation; add samples or set data.val_root")
    count = min(HELD_OUT_MAX, max(1, round(len(keys) * HELD_OUT_FRACTION)), len(keys) - 1)
    order = torch.randperm(len(keys), generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(keys[i] for i in order[:count])


def warn_if_incomplete(root: Path) -> None:
    """Warn when the data's manifest says a split is still being written (e.g. a pseudolabel run
    that stopped early): training would see only part of it."""
    from multimae.data.manifest import read_manifest

    manifest = read_manifest(root) or {}
    partial = sorted(n for n, s in manifest.get("splits", {}).items() if isinstance(s, dict) and s.get("complete") is False)
    if partial:
        message = (f"{root}: the manifest says split(s) {partial} are not complete (complete: false): an interrupted "
                   "or still running `generate` / `pseudolabel`; training sees only the samples written so far. "
                   "Rerun that command to finish them.")
        log.warning(message)
        print(f"warning: {message}")


def val_set(cfg: RunConfig, model: MultiMAE) -> tuple[Any, str]:
    """(validation data resized (not cropped) to the training size, where it comes from): the
    ``val`` split under ``data.val_root``; without one, for a folder the samples `held_out_keys`
    takes out of training, for shards the last shard (not trained on) or, with a single shard,
    its first samples (also trained on: the report says so)."""
    d = cfg.data
    mods, size = needed_modalities(model.model_config), d.image_size
    if d.val_root:
        if d.source == "jsonl":
            return jsonl_dataset(cfg, model, Resize(size), d.val_root), f"the pairs of {d.val_root}"
        return (FolderDataset(d.val_root, "val", mods, transform=Resize(size), allow_missing=d.allow_missing),
                f"the val split of {d.val_root}")
    if d.source in ("folder", "jsonl"):
        if d.source == "folder":
            vset: Any = FolderDataset(d.root, "train", mods, transform=Resize(size),  # type: ignore[arg-type]
                                      allow_missing=d.allow_missing)
        else:
            vset = jsonl_dataset(cfg, model, Resize(size))
        vset.keys = held_out_keys(vset.keys, cfg.train.seed)
        n = len(vset)
        return vset, f"{n} sample{'s' if n != 1 else ''} held out of {d.root} (not trained on; no data.val_root)"
    from multimae.data.shards import ShardDataset, list_shards

    shards = list_shards(d.root)  # type: ignore[arg-type]
    if len(shards) > 1:
        return (ShardDataset(shards[-1:], mods, transform=Resize(size), allow_missing=d.allow_missing),
                f"the last shard {shards[-1]} held out (not trained on; no data.val_root)")
    return (ShardDataset(shards, mods, transform=Resize(size), allow_missing=d.allow_missing),
            f"the first samples of the only shard {shards[0]}, which is also trained on (no data.val_root: "
            "these numbers are not held-out ones; set data.val_root)")


def class_labels(cfg: RunConfig) -> tuple[Sequence[str] | None, Sequence[Sequence[int]] | None]:
    """(class names, palette) of the run's semseg classes, when known."""
    if cfg.data.source == "world":
        from multimae.data.world import CLASS_NAMES, PALETTE

        return CLASS_NAMES, PALETTE
    return None, None


def held_out_batch(cfg: RunConfig, model: MultiMAE, count: int) -> dict[str, Tensor]:
    """``count`` held-out samples of the run's data as one raw batch."""
    if cfg.data.source == "world":
        pool = world_pool(cfg.data, "val", max(count, cfg.data.world_val_scenes), needed_modalities(model.model_config))
        return resized_batches({k: v[:count] for k, v in _without_label(pool).items()}, cfg.data.image_size, count)[0]
    vset, _ = val_set(cfg, model)
    size = min(count, len(vset)) if hasattr(vset, "__len__") else count
    return next(LoaderStream(vset, size, cfg.train.seed, num_workers=0))


def save_pictures(model: MultiMAE, cfg: RunConfig, raw: dict[str, Any], out_dir: Path, tag: str = "",
                  num_masks: int = 3, num_visible: int | None = None, seed: int = 0,
                  tokenizers: Mapping[str, TextTokenizer] | None = None) -> list[Path]:
    """``reconstructions<tag>.png`` (random masks: the run's sampler unless MultiMAE's Dirichlet)
    and ``cross_modal<tag>.png`` (one modality in); captions (text, tokenised here with
    ``tokenizers``, or ids) are written under the rows."""
    from multimae.text.batch import tokenize_texts
    from multimae.viz.reconstruction import cross_modal_figure, masked_reconstruction_figure

    names, palette = class_labels(cfg)
    g = torch.Generator().manual_seed(seed)
    raw, _ = tokenize_texts(raw, tokenizers or {}, {**model.output_specs, **model.input_specs})
    n = next(v for v in raw.values() if isinstance(v, Tensor)).shape[0]
    pieces = {m: t.pieces for m, t in tokenizers.items()} if tokenizers else None
    sampler = None
    if cfg.masking.sampler != "dirichlet":
        sampler = build_mask_sampler(cfg.masking, [m for m in model.input_specs if m in raw])
    figures = {
        f"reconstructions{tag}.png": masked_reconstruction_figure(
            model, raw, num_masks=num_masks, num_visible=num_visible or cfg.masking.num_visible,
            alpha=cfg.masking.concentrations(list(model.input_specs)), generator=g, class_names=names, palette=palette,
            max_samples=n, sampler=sampler, pieces=pieces),
        f"cross_modal{tag}.png": cross_modal_figure(model, raw, class_names=names, palette=palette, max_samples=n,
                                                    pieces=pieces),
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
    """The model's predictions from the full image (`DEFAULT_IMAGE_MODALITY`) alone, scored (empty
    without that input)."""
    if DEFAULT_IMAGE_MODALITY not in model.input_specs:
        return {}
    return transfer_metrics(lambda x: model(x).preds, model, val, (DEFAULT_IMAGE_MODALITY,), object_classes(cfg))


def val_record(losses: dict[str, float], rgb_metrics: dict[str, float]) -> dict[str, float]:
    """One validation line of the log: the masked losses and the ``from_rgb/``-prefixed metrics."""
    return {**losses, **{f"from_rgb/{k}": v for k, v in rgb_metrics.items()}}


def final_report(task: PretrainTask, model: MultiMAE, cfg: RunConfig, val: list[dict[str, Tensor]],
                 train_sample: list[dict[str, Tensor]]) -> dict[str, Any]:
    """Masked-reconstruction losses on held-out and on training scenes (fixed masks, no
    augmentation) and from-RGB transfer metrics, of the model and of the mean baseline."""
    report: dict[str, Any] = {"val": task.validate(val)}
    if DEFAULT_IMAGE_MODALITY in model.input_specs:
        report["from_rgb"] = from_rgb(model, cfg, val)
    if train_sample:
        base = mean_baseline(model, train_sample)
        report["train"] = task.validate(train_sample)
        report["baseline_train"] = task.validate(train_sample, baseline=base)
        report["baseline_val"] = task.validate(val, baseline=base)
        report["baseline_from_rgb"] = transfer_metrics(lambda x: base, model, val, (DEFAULT_IMAGE_MODALITY,),
                                                       object_classes(cfg))
    return report


def run_pretraining(cfg: RunConfig, resume: str | Path | None = None, progress: bool = True, trusted: bool = False,
                    overwrite: bool = False) -> Path:
    """Run (or resume, from a run folder or checkpoint) a pre-training run; returns its folder.

    When resuming, pass the run's own config (its ``config.yaml``), possibly with more steps (see
    `multimae.tasks.runs.RESUMABLE_KEYS`). ``trusted``: unpickle anything in the checkpoint (only
    for files you trust); ``overwrite``: replace an existing run of the same name.
    """
    if resume is None:
        cfg.validate_new_run()
    device, info = start_process(cfg.train)
    micro = micro_batch(cfg, info)
    run_dir, state, ckpt = open_run(cfg, resume, overwrite, trusted, info.is_main)
    tokenizers, files = run_tokenizers(cfg, run_dir, info, progress)
    torch.manual_seed(cfg.train.seed)
    model = MultiMAE(with_vocabularies(cfg.model.build(), tokenizers))
    stream, val, train_sample, val_data = build_streams(cfg, model, info, micro, progress)
    if cfg.data.source != "world" and not cfg.data.val_root and info.is_main:
        print(f"validation data: {val_data}")
    task = PretrainTask(model, cfg.masking, cfg.loss, cfg.train.seed, tokenizers=tokenizers,
                        caption_dropout=cfg.data.caption_dropout)
    val = [task.tokenize(b) for b in val]
    train_sample = [task.tokenize(b) for b in train_sample]
    validate = evaluating(model, lambda: val_record(task.validate(val), from_rgb(model, cfg, val)))
    pictured = batch_rows(val[0], slice(0, 4)) if val else None

    def picture(step: int) -> Path | None:
        if not info.is_main or pictured is None:
            return None
        return save_pictures(model, cfg, pictured, run_dir, f"-{step:08d}", seed=cfg.train.seed,
                             tokenizers=tokenizers)[0]

    # this process's micro-batch of visible tokens
    precision = run_precision(cfg.train, device, micro // info.world_size * cfg.masking.num_visible, model.backbone.config.dim)
    trainer = make_trainer(cfg, model, task, stream, run_dir, info, device, precision,
                           on_validate=validate if val else None, on_picture=picture, progress=progress)
    trainer.files.update(files)
    wall = trainer.run(state, ckpt)
    with trainer.gathered():  # FSDP: every process gathers the weights, the main one reports alone
        if info.is_main:
            model.eval()
            report = {"steps": trainer.step, "train_wall_s": round(wall, 1), **trainer.setup_report(),
                      **final_report(task, model, cfg, val, train_sample)}
            if cfg.data.source != "world":
                report["val_data"] = val_data
            if tokenizers:  # which vocabulary, and how many captions did not fit (this process, since the start)
                report["text"] = {"tokenizers": {m: {"vocab_size": t.vocab_size, "sha256": t.content_hash}
                                                 for m, t in tokenizers.items()},
                                  "captions_truncated": task.truncated}
            finish_run(trainer, run_dir, report, val_record(report["val"], report.get("from_rgb", {})),
                       lambda: save_pictures(model, cfg, pictured, run_dir, seed=cfg.train.seed, tokenizers=tokenizers)
                       if pictured is not None else [])
    trainer.close()
    return run_dir
