"""A fine-tuning run's model: its architecture resolved from the initial weights, and the loading
of pre-trained encoder weights (any subset of the checkpoint's input adapters).

A run's ``config.yaml`` holds the *resolved* model section (the checkpoint's encoder, the
fine-tuning image size, the class count), so `build_model` (`multimae.tasks.finetune_arch`)
rebuilds the network from the config alone, for resuming and evaluation, without the initial
checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from multimae.config.finetune import FOURM_ENCODER_FIELDS, FinetuneConfig, FinetuneModelSection
from multimae.convert.io import read_checkpoint
from multimae.engine.checkpoint import Checkpoint, build_model_from_checkpoint, spec_to_dict
from multimae.convert.timm_vit import TIMM_PREFIX, read_timm_source, timm_to_multimae
from multimae.errors import reading
from multimae.layers.pos_embed import resize_pos_embed
from multimae.modalities.spec import ModalitySpec
from multimae.model import FineTuneModel, MultiMAE
from multimae.model.fourm import FourM
from multimae.tasks.finetune_data import data_num_labels, data_num_segment_classes
from multimae.tasks.loading import read_run_checkpoint
from multimae.tasks.runs import check_run_kind, config_kind, read_run_config

__all__ = ["load_encoder_weights", "resolve"]

_ARCH_KEYS = ("dim", "depth", "num_heads", "mlp_ratio", "qkv_bias", "num_global_tokens", "patch_size")
# The state-dict names of an encoder (a MultiMAE's, a 4M model's) and of its per-modality embeddings.
_ENCODER_KEYS = ("encoder.", "global_tokens", "encoder_norm.", "register_tokens")
_ADAPTER_KEYS = ("input_adapters.", "encoder_embeddings.")


def _read_initial(source: str, cfg: FinetuneConfig, trusted: bool) -> tuple[dict[str, Tensor], FinetuneModelSection, str]:
    """(encoder weights in multimae names, the checkpoint's model section, a description)."""
    with reading(source, "checkpoint", f"init.checkpoint {source}"):
        return _read_initial_weights(source, cfg, trusted)


def _read_initial_weights(source: str, cfg: FinetuneConfig, trusted: bool) -> tuple[dict[str, Tensor], FinetuneModelSection, str]:
    timm_file = False
    if not source.startswith(TIMM_PREFIX):
        path = Path(source)
        if path.is_file() and path.suffix in (".safetensors", ".pth", ".bin"):
            timm_file = read_checkpoint(path, trusted).format == "timm"
    if source.startswith(TIMM_PREFIX) or timm_file:
        state, heads = read_timm_source(source)
        if heads is None and cfg.model.encoder.get("dim") == state["patch_embed.proj.weight"].shape[0]:
            heads = cfg.model.encoder.get("num_heads")  # a file does not store it: the config's, for this width
        vit, _ = timm_to_multimae(state, num_heads=heads)
        section = FinetuneModelSection(size="base", encoder=dataclasses.asdict(vit.backbone.config))
        return vit.state_dict(), section, f"timm ViT {source}"
    folder = Path(source)
    if folder.is_dir() and (folder / "config.yaml").exists():  # a run of the wrong kind: said before any weights are read
        kind = config_kind(read_run_config(folder))
        if kind != "fourm":
            check_run_kind(folder, kind, "pretrain")
    ckpt = read_run_checkpoint(source, None, trusted)
    if ckpt.kind == "fourm":
        return _fourm_initial(ckpt, source)
    check_run_kind(ckpt.where, ckpt.kind or "pretrain", "pretrain")
    model = build_model_from_checkpoint(ckpt)
    assert isinstance(model, MultiMAE)
    config = model.model_config  # the checkpoint's stored specs in force (`Checkpoint.config`)
    size = (ckpt.run_config or {}).get("model", {}).get("size", "base")
    section = FinetuneModelSection(size=size, encoder=dataclasses.asdict(config.encoder),
                                   modality_overrides=config.modality_overrides,
                                   custom_modalities={n: spec_to_dict(s) for n, s in config.custom_modalities.items()})
    return model.state_dict(), section, f"multimae {source} (inputs {list(model.input_specs)})"


def _fourm_initial(ckpt: Checkpoint, source: str) -> tuple[dict[str, Tensor], FinetuneModelSection, str]:
    """The encoder of a 4M run: its weights (the whole model's; the encoder's are read), its shape and
    its modalities' specs (token maps with the run's vocabularies)."""
    model = build_model_from_checkpoint(ckpt)
    assert isinstance(model, FourM)
    config = model.config
    size = (ckpt.run_config or {}).get("model", {}).get("size", "base")
    section = FinetuneModelSection(size=size, family="4m", encoder={k: getattr(config, k) for k in FOURM_ENCODER_FIELDS},
                                   modality_overrides=config.modality_overrides,
                                   custom_modalities={n: spec_to_dict(s) for n, s in config.custom_modalities.items()})
    return model.state_dict(), section, f"4M {source} (inputs {list(model.input_specs)})"


def fourm_inputs(cfg: FinetuneConfig, encoder_inputs: Mapping[str, ModalitySpec]) -> tuple[FinetuneConfig, list[str]]:
    """``cfg`` with each task input (and head modality) that a 4M encoder reads only as a token map
    replaced by that token map (``rgb`` -> the model's tokens of rgb), and a note of each change."""
    by_source = {s.source_name: n for n, s in encoder_inputs.items() if s.kind == "token_map"}
    swap = {n: by_source[n] for n in cfg.task.inputs if n not in encoder_inputs and n in by_source}
    if not swap:
        return cfg, []
    task = dataclasses.replace(cfg.task, inputs=tuple(swap.get(n, n) for n in cfg.task.inputs))
    head = dataclasses.replace(cfg.head, modalities=tuple(swap.get(n, n) for n in cfg.head.modalities))
    notes = [f"task.inputs: {a} -> {b} (the 4M encoder reads {a} as tokens of its {a} tokenizer)" for a, b in swap.items()]
    return dataclasses.replace(cfg, task=task, head=head), notes


def _check_class_count(cfg: FinetuneConfig, num_classes: int | None) -> None:
    """A ValueError when ``task.num_classes`` is below the classes the data holds."""
    task = cfg.task
    if task.num_classes is None or num_classes is None:
        return
    if task.kind == "classification":
        known = data_num_labels(cfg)[0]
        what = f"the data's {known} classes"
    elif task.kind == "segmentation":
        known = data_num_segment_classes(cfg)
        what = f"the data's {known} pixel classes"
    else:
        return
    if known is not None and num_classes < known:
        raise ValueError(f"task.num_classes={num_classes} is fewer than {what}")


def resolve(cfg: FinetuneConfig, trusted: bool = False) -> tuple[FinetuneConfig, dict[str, Tensor] | None, list[str]]:
    """(config with the architecture and class count filled in, initial encoder weights or None, notes);
    ``trusted``: unpickle anything in the initial checkpoint (only for files you trust)."""
    notes: list[str] = []
    task = cfg.task
    if task.kind == "classification" and task.num_classes is None:
        task = dataclasses.replace(task, num_classes=data_num_labels(cfg)[0])
    elif task.kind == "segmentation" and task.num_classes is None:
        task = dataclasses.replace(task, num_classes=cfg.model.specs((task.target_name,))[task.target_name].num_channels)  # type: ignore[index]
    _check_class_count(cfg, task.num_classes)
    cfg = dataclasses.replace(cfg, task=task)
    if cfg.init.checkpoint is None:
        return cfg, None, notes
    state, ckpt, what = _read_initial(cfg.init.checkpoint, cfg, trusted)
    ignored = {k: v for k, v in cfg.model.encoder.items() if k in _ARCH_KEYS and ckpt.encoder.get(k) != v}
    if ignored:
        notes.append(f"model.encoder {ignored} ignored: the checkpoint's encoder is used")
    encoder = {**ckpt.encoder, "drop_path_rate": cfg.model.encoder.get("drop_path_rate", 0.0)}
    if ckpt.family != "4m":  # a 4M encoder's frame is the run's image size (`encoder_config`)
        encoder["image_size"] = cfg.data.image_size
    overrides = {n: {**ckpt.modality_overrides.get(n, {}), **cfg.model.modality_overrides.get(n, {})}
                 for n in {*ckpt.modality_overrides, *cfg.model.modality_overrides}}
    model = FinetuneModelSection(size=ckpt.size, family=ckpt.family, encoder=encoder, modality_overrides=overrides,
                                 custom_modalities={**ckpt.custom_modalities, **cfg.model.custom_modalities})
    notes.append(f"initial weights: {what}")
    cfg = dataclasses.replace(cfg, model=model)
    if ckpt.family == "4m":
        cfg, swapped = fourm_inputs(cfg, cfg.model.specs(tuple(_fourm_encoder_inputs(state))))
        notes.extend(swapped)
    return cfg, state, notes


def _fourm_encoder_inputs(state: Mapping[str, Tensor]) -> list[str]:
    """The input modalities whose encoder embeddings a 4M state dict holds."""
    return list(dict.fromkeys(k.split(".")[1] for k in state if k.startswith("encoder_embeddings.")))


def load_encoder_weights(model: FineTuneModel, state: Mapping[str, Tensor]) -> list[str]:
    """Copy the encoder part of ``state`` into ``model``; returns the input adapters that the
    checkpoint lacks (they keep their fresh initialisation).

    Positional tables of another grid are resized (bicubic); a semseg class embedding one row
    short (the padding row of an ``ignore_index``) gets a zero row, as officially.
    """
    own = model.state_dict()
    keep: dict[str, Tensor] = {}
    for key, value in state.items():
        if not (key.startswith(_ENCODER_KEYS) or
                (key.startswith(_ADAPTER_KEYS) and key.split(".")[1] in model.input_specs)):
            continue
        if key not in own:
            raise ValueError(f"checkpoint tensor {key} has no place in the model (different adapter type?)")
        target = own[key]
        if key.endswith("pos_emb") and value.shape != target.shape:
            value = resize_pos_embed(value.float(), *target.shape[-2:], mode="bicubic")
        if key.endswith("class_emb.weight") and value.shape[0] + 1 == target.shape[0]:
            value = torch.cat([value, value.new_zeros(1, value.shape[1])])
        if value.shape != target.shape:
            raise ValueError(f"checkpoint tensor {key} has shape {tuple(value.shape)}, the model {tuple(target.shape)}")
        keep[key] = value
    result = model.load_state_dict(keep, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("output_adapters.")]
    fresh = sorted({k.split(".")[1] for k in missing if k.startswith(_ADAPTER_KEYS)})
    others = [k for k in missing if not k.startswith(_ADAPTER_KEYS)]
    if others:
        raise ValueError(f"the checkpoint lacks encoder weights: {others[:5]}")
    return fresh
