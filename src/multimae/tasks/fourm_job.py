"""Wiring of a 4M pre-training run: token shards -> model, masked batches, trainer; the final report
(per-modality cross-entropy and accuracy against a unigram baseline) and a picture of one-pass
predictions from RGB tokens. The loop itself is `multimae.engine.trainer`."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from multimae.config.fourm import FourMRunConfig
from multimae.data.boxes import Box, box_scores, parse_boxes, serialize_boxes, transform_boxes
from multimae.data.token_pool import TokenPool, TokenPoolStream, load_token_pool
from multimae.engine.file_table import FileEntry
from multimae.modalities.registry import DEFAULT_IMAGE_MODALITY, DEFAULT_TEXT_MODALITY
from multimae.model.fourm import FourM, FourMConfig
from multimae.model.fourm.model import init_token_embeddings_from_codes
from multimae.tasks.fourm import (
    FourMTask, build_masking, condition_use, pixel_record, stored_name, unigram_log_probs,
)
from multimae.tasks.job import evaluating, finish_run, make_trainer, micro_batch, open_run, run_precision, start_process
from multimae.tokenizers.base import Tokenizer, load_tokenizer
from multimae.tokenizers.run_files import keep_tokenizers

VAL_BATCH = 64


def token_grid(key: str, entry: Mapping[str, Any]) -> tuple[int, int]:
    """(h, w) a 4M token map lays a manifest entry's tokens on: a map tokenizer's grid, or for global
    tokens (a vector tokenizer's T ids, 4M's DINOv2 / ImageBind tokens) the square of T (positions
    learned, not placed on the image)."""
    if entry.get("grid"):
        h, w = entry["grid"]
        return int(h), int(w)
    T = entry.get("num_tokens")
    side = math.isqrt(T) if isinstance(T, int) and T > 0 else 0
    if entry.get("placement") != "global" or side * side != T:
        raise ValueError(f"{key} tokens ({entry.get('placement')}, {T} per sample) cannot be a 4M token map: it "
                         "needs a grid, or a square number of global tokens (a vector tokenizer's tokenizer.tokens)")
    return side, side


def with_token_data(config: FourMConfig, manifest: Mapping[str, Any]) -> FourMConfig:
    """``config`` whose modalities take the shards' vocabulary sizes and token grids (a token map's
    stride = image_size / grid side); a raw-pixel input needs the shards' pixels at the model's
    image size; a model modality the shards do not hold is an error."""
    recorded = manifest["tokenizers"]
    overrides = {n: dict(o) for n, o in config.modality_overrides.items()}
    for name, spec in config.modality_specs().items():
        key = stored_name(spec)
        if spec.kind == "dense":
            kept = manifest.get("pixels", {}).get(key)
            if kept is None:
                raise ValueError(f"model modality {name!r} reads {key} pixels, which the shards do not keep (they keep "
                                 f"{sorted(manifest.get('pixels', {})) or 'none'}): tokenize with --pixels {key}")
            if kept["size"] != config.image_size or kept["channels"] != spec.num_channels:
                raise ValueError(f"the shards keep {kept['channels']} x {kept['size']} px {key} pixels; model {name!r} "
                                 f"reads {spec.num_channels} x {config.image_size} px (model.image_size)")
            continue
        if key not in recorded:
            raise ValueError(f"model modality {name!r} reads {key!r} tokens, which the shards do not hold "
                             f"(they hold {sorted(recorded)}): tokenize it too, or leave it out of the model")
        entry = recorded[key]
        change: dict[str, Any] = {"num_channels": int(entry["vocab_size"])}
        if spec.kind == "token_map":
            h, w = token_grid(key, entry)
            if h != w or config.image_size % h:
                raise ValueError(f"{key} tokens lie on a {h}x{w} grid: a 4M token map needs a square grid that "
                                 f"divides model.image_size={config.image_size}")
            change["stride"] = config.image_size // h
        overrides[name] = {**overrides.get(name, {}), **change}
    return dataclasses.replace(config, modality_overrides=overrides)


def split_pool(pool: TokenPool, fraction: float) -> tuple[TokenPool, TokenPool]:
    """(training pool, held-out pool): the last ``fraction`` of the samples (by source index) held out."""
    n = pool.num_samples
    held = max(1, round(n * fraction))
    if held >= n:
        raise ValueError(f"the token shards hold {n} samples: too few to hold {fraction:.0%} out for validation")
    cut = n - held
    return pool.subset(slice(None, cut)), pool.subset(slice(cut, None))


def val_batches(pool: TokenPool, batch: int = VAL_BATCH) -> list[dict[str, dict[str, Tensor]]]:
    """The held-out pool's first crop of every sample (the central square), in batches."""
    n = pool.num_samples
    return [pool.rows(torch.arange(s, min(n, s + batch)), torch.zeros(min(batch, n - s), dtype=torch.long))
            for s in range(0, n, batch)]


def run_tokenizers(cfg: FourMRunConfig, run_dir: Path, manifest: Mapping[str, Any], is_main: bool
                   ) -> tuple[dict[str, Tokenizer], dict[str, FileEntry]]:
    """The tokenizers ``data.tokenizers`` names, checked against the shards, copied into the run folder
    (``tokenizers/<modality>/``) and listed in its files table."""
    tokenizers = {}
    for modality, folder in cfg.data.tokenizers.items():
        tok = load_tokenizer(folder)
        recorded = manifest["tokenizers"].get(modality)
        if recorded is None or recorded["content_hash"] != tok.content_hash:
            raise ValueError(f"data.tokenizers.{modality}={folder}: not the tokenizer the shards' {modality} tokens "
                             "were made with (content hashes differ, or the shards hold none)")
        tokenizers[modality] = tok
    files = keep_tokenizers(cfg.data.tokenizers, run_dir, is_main)
    return tokenizers, files


def run_fourm_pretraining(cfg: FourMRunConfig, resume: str | Path | None = None, progress: bool = True,
                          trusted: bool = False, overwrite: bool = False) -> Path:
    """Run (or resume) a 4M pre-training run on token shards; returns its folder."""
    cfg = cfg.with_token_schedule()
    cfg.validate()
    device, info = start_process(cfg.train)
    micro = micro_batch(cfg, info)
    run_dir, state, ckpt = open_run(cfg, resume, overwrite, trusted, info.is_main)
    pool = load_token_pool(cfg.data.root)  # type: ignore[arg-type]
    if cfg.data.val_root:
        train_pool, val_pool = pool, load_token_pool(cfg.data.val_root)
    else:
        train_pool, val_pool = split_pool(pool, cfg.data.val_fraction)
    tokenizers, files = run_tokenizers(cfg, run_dir, pool.manifest, info.is_main)
    torch.manual_seed(cfg.train.seed)
    model = FourM(with_token_data(cfg.model.build(), pool.manifest))
    if cfg.model.encoder_token_init == "codebook":
        init_token_embeddings_from_codes(model, input_codes(model, tokenizers), cfg.model.encoder_token_std)
    masking = build_masking(cfg.masking, {**model.input_specs, **model.output_specs}, model.input_specs,
                            model.output_specs, {n: tokenizers[stored_name(s)] for n, s in model.output_specs.items()
                                                 if stored_name(s) in tokenizers})
    task = FourMTask(model, masking, cfg.train.seed)
    stream = TokenPoolStream(train_pool, micro, cfg.train.seed, info.rank, info.world_size)
    val = val_batches(val_pool)[: cfg.train.num_val_batches]
    unigram = unigram_log_probs(task, val_batches(train_pool)[:8])
    validate = evaluating(model, lambda: task.validate(val, unigram))
    precision = run_precision(cfg.train, device, micro // info.world_size * model.config.num_encoder_tokens,
                              model.config.dim)
    trainer = make_trainer(cfg, model, task, stream, run_dir, info, device, precision,
                           on_validate=validate if val else None, progress=progress)
    trainer.files.update(files)
    wall = trainer.run(state, ckpt)
    with trainer.gathered():  # FSDP: every process gathers the weights, the main one reports alone
        if info.is_main:
            model.eval()
            report: dict[str, Any] = {"steps": trainer.step, "train_wall_s": round(wall, 1),
                                      "tokens_per_step": cfg.tokens_per_step, "tokens_seen": trainer.step * cfg.tokens_per_step,
                                      **trainer.setup_report(),
                                      "val": task.validate(val_batches(val_pool), unigram),
                                      "val_samples": val_pool.num_samples, "train_samples": train_pool.num_samples}
            report["conditions"] = condition_use(task, val_batches(val_pool)[:4], condition_pairs(model))
            if cfg.data.world_eval_scenes and pool.manifest["source"].get("kind") == "world":
                report["from_rgb"] = world_from_rgb(model, tokenizers, pool.manifest, cfg.data.world_eval_scenes,
                                                    cfg.data.compare_with)
            finish_run(trainer, run_dir, report, report["val"],
                       lambda: fourm_pictures(model, tokenizers, val_pool, run_dir))
    trainer.close()
    return run_dir


def input_codes(model: FourM, tokenizers: Mapping[str, Tokenizer]) -> dict[str, Tensor]:
    """{input read through a token table: its tokenizer's (V, d) code vectors}, for every input whose
    tokenizer has them (map tokenizers; texts have none). A ValueError when none has."""
    codes = {}
    for name, spec in model.input_specs.items():
        tok = tokenizers.get(stored_name(spec))
        vectors = tok.code_vectors() if tok is not None and hasattr(model.encoder_embeddings[name], "token_emb") else None
        if vectors is not None:
            codes[name] = vectors
    if not codes:
        raise ValueError("model.encoder_token_init=codebook: no input is read through a map tokenizer's codes "
                         f"(inputs {list(model.input_specs)}; data.tokenizers {list(tokenizers)})")
    return codes


def picture_input(model: FourM) -> str | None:
    """The model input reading the picture: its raw pixels (4M's RGB) or else its token map."""
    from multimae.inference.fourm import map_inputs

    return map_inputs(model).get(DEFAULT_IMAGE_MODALITY)


def condition_pairs(model: FourM) -> list[tuple[str, str]]:
    """Every (input, output) of two different modalities (not a map's pixels and its own tokens), the
    picture's first: the pairs the report checks the model reads."""
    image = picture_input(model)
    pairs = [(i, o) for i, si in model.input_specs.items() for o, so in model.output_specs.items()
             if si.source_name != so.source_name]
    return sorted(pairs, key=lambda pair: pair[0] != image)


def fourm_pictures(model: FourM, tokenizers: Mapping[str, Tokenizer], pool: TokenPool, run_dir: Path,
                   count: int = 4) -> list[Path]:
    """``predictions.png``: for ``count`` held-out samples, the RGB (its pixels, or its tokens decoded)
    and each other token map's truth and one-pass prediction from the RGB alone, decoded by the run's
    tokenizers (none without an RGB input and tokenizers)."""
    from multimae.inference.fourm import predict_token_maps
    from multimae.viz.fourm import prediction_grid

    image = picture_input(model)
    dense = image is not None and model.input_specs[image].kind == "dense"
    if image is None or not dense and stored_name(model.input_specs[image]) not in tokenizers:
        return []
    source = model.input_specs[image].source_name
    targets = [n for n, s in model.output_specs.items()  # maps only: global tokens (features) are not drawn
               if s.kind == "token_map" and s.source_name != source and stored_name(s) in tokenizers
               and tokenizers[stored_name(s)].placement == "grid"]
    rows = pool.rows(torch.arange(min(count, pool.num_samples)), torch.zeros(min(count, pool.num_samples),
                                                                             dtype=torch.long))
    given = pixel_record(model, image, rows["pixels"][source]) if dense else (rows["ids"][source], None)
    predicted = predict_token_maps(model, {image: given}, targets)
    figure = prediction_grid(model, tokenizers, rows, image, predicted)
    path = run_dir / "predictions.png"
    figure.save(path)
    return [path]


def world_from_rgb(model: FourM, tokenizers: Mapping[str, Tokenizer], manifest: Mapping[str, Any], scenes: int,
                   compare_with: str | None = None) -> dict[str, Any]:
    """Predictions from the RGB picture alone on ``scenes`` held-out world scenes (val split, at the
    model's image size, the world settings of the shards), against the exact truth: dense maps (one
    pass; with its tokenizers' ceiling, the truth's own tokens decoded, and, with ``compare_with``, a
    MultiMAE run's on the same scenes), and the caption and boxes generated greedily."""
    from multimae.data import WorldDataset
    from multimae.data.world import BACKGROUND_CLASSES, CLASS_NAMES
    from multimae.inference.fourm import predict_sequences, score_from_image

    image = picture_input(model)
    if image is None:
        return {}
    targets = [s.source_name for s in model.output_specs.values() if s.kind == "token_map"]
    maps = [m for m in dict.fromkeys([DEFAULT_IMAGE_MODALITY, *targets])  # the world renders maps, not features
            if m in tokenizers and tokenizers[m].placement == "grid"
            or m == DEFAULT_IMAGE_MODALITY and model.input_specs[image].kind == "dense"]
    if DEFAULT_IMAGE_MODALITY not in maps:
        return {}
    boxes = [n for n, s in model.output_specs.items() if s.stored_as == "box_text" and n in tokenizers]
    colors = float(manifest["source"].get("class_colors", 0.0))
    size = model.config.image_size  # the crops' size in the shards
    world = WorldDataset("val", size=size, length=scenes, modalities=(*maps, *boxes), class_colors=colors)
    samples = [world[i] for i in range(scenes)]
    batches = [{m: torch.stack([s[m] for s in samples[b : b + VAL_BATCH]]) for m in maps}
               for b in range(0, scenes, VAL_BATCH)]
    objects = [i for i, n in enumerate(CLASS_NAMES) if n not in BACKGROUND_CLASSES]
    scores: dict[str, Any] = score_from_image(model, tokenizers, batches, DEFAULT_IMAGE_MODALITY,
                                              {m: len(CLASS_NAMES) for m in maps}, objects)
    generated: dict[str, list[str]] = {}
    scored = [DEFAULT_TEXT_MODALITY, *boxes]  # the sequences scored here: the others are not generated
    for batch in batches:
        picture = {DEFAULT_IMAGE_MODALITY: batch[DEFAULT_IMAGE_MODALITY]}
        for name, texts in predict_sequences(model, tokenizers, picture, targets=scored).items():
            generated.setdefault(name, []).extend(texts)
    if DEFAULT_TEXT_MODALITY in generated:
        scores[DEFAULT_TEXT_MODALITY] = caption_scores(generated[DEFAULT_TEXT_MODALITY],
                                                       [str(s[DEFAULT_TEXT_MODALITY]) for s in samples])
    for name in boxes:
        bins = getattr(tokenizers[name], "coord_bins", size)
        truth = [transform_boxes(parse_boxes(str(s[name])), (0, 0, size, size), bins) for s in samples]
        scores[name] = world_box_scores(generated[name], truth)
    scores["scenes"] = f"world val 0..{scenes - 1} at {size} px, class colours {colors}"
    if compare_with:
        from multimae.convert import load_any
        from multimae.tasks.pretrain import transfer_metrics

        other, _ = load_any(compare_with)
        scores["multimae"] = transfer_metrics(lambda x: other(x).preds, other, batches, (DEFAULT_IMAGE_MODALITY,),
                                              objects)
        scores["multimae_run"] = str(compare_with)
    return scores


def caption_scores(texts: Sequence[str], truth: Sequence[str]) -> dict[str, Any]:
    """Captions generated from the picture alone against the world's true captions: per attribute the
    share of scenes where the generated caption states the true value
    (`multimae.data.world.caption_attributes`; unstated counts as wrong), the share of exact
    captions, and the majority baseline (always the most frequent true value)."""
    from multimae.data.world import CAPTION_ATTRIBUTES, caption_attributes

    said = [caption_attributes(t) for t in texts]
    true = [caption_attributes(t) for t in truth]
    out: dict[str, Any] = {"exact": sum(a.strip() == b.strip() for a, b in zip(texts, truth)) / len(truth)}
    for key in CAPTION_ATTRIBUTES:
        values = [t[key] for t in true]
        out[f"{key}_acc"] = sum(s[key] == t for s, t in zip(said, values)) / len(values)
        out[f"{key}_majority"] = max(values.count(v) for v in set(values)) / len(values)
    out["examples"] = [{"generated": g, "truth": t} for g, t in zip(texts[:3], truth[:3])]
    return out


def world_box_scores(texts: Sequence[str], truth: Sequence[Sequence[Box]]) -> dict[str, Any]:
    """Boxes generated from the picture alone (greedy) against the true boxes (`box_scores`), next to
    the baseline of another scene's true boxes (scene i scored with the boxes of scene i + 1)."""
    predicted = [parse_boxes(t) for t in texts]
    shifted = [truth[(i + 1) % len(truth)] for i in range(len(truth))]
    return {**box_scores(predicted, truth), "other_scene": box_scores(shifted, truth),
            "examples": [{"generated": g, "truth": serialize_boxes(t)} for g, t in zip(texts[:3], truth[:3])]}
