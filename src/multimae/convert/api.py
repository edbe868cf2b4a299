"""One entry point for every supported checkpoint: load as our model, save as ours or as timm.

Formats: ``multimae`` (our run folders, training checkpoints and converted files, which carry
their config), ``official`` (official MultiMAE / MultiViT ``.pth`` files and state dicts with its
key layout), ``timm`` (timm ``VisionTransformer`` and MAE weights) and ``m3ae`` (official M3AE and
MAE-JAX checkpoints: Flax ``.msgpack`` files or pickled ``model.pkl``; `multimae.convert.m3ae_jax`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor

from multimae.convert.finetune import (
    finetune_to_model, head_names,
)
from multimae.convert.io import from_state_dict
from multimae.convert.io import read_checkpoint as read_io_checkpoint
from multimae.convert.official import SPATIAL_DECODER_KEYS, official_to_multimae
from multimae.convert.report import ConversionReport
from multimae.convert.timm_vit import TIMM_ARCH, multimae_to_timm, timm_to_multimae
from multimae.engine.checkpoint import (
    Checkpoint, build_model_from_checkpoint, export_safetensors, read_checkpoint,
)
from multimae.engine.files import atomic_path, save_atomic
from multimae.model.finetune import FineTuneModel
from multimae.model.multimae import MultiMAE

SOURCES = ("auto", "multimae", "official", "fourm", "timm", "m3ae")
JAX_SUFFIXES = (".msgpack", ".pkl", ".pickle")  # JAX checkpoints (m3ae)
_CHECKPOINT_NAME = re.compile(r"^checkpoint-\d+\.pt$")  # a training run's checkpoints
TARGETS = ("multimae", "timm")


def _is_run_folder_or_checkpoint(path: Path) -> bool:
    """A run folder or a training run's checkpoint: read as ours (never as a foreign format)."""
    return path.is_dir() or bool(_CHECKPOINT_NAME.match(path.name))


def load_any(
    source: str | Path | Mapping[str, Tensor] | Checkpoint,
    *,
    fmt: str = "auto",
    num_heads: int | None = None,
    decoder_num_heads: int | None = None,
    head_modalities: Sequence[str] | None = None,
    hooks: Sequence[int] | None = None,
    input_order: Sequence[str] | None = None,
    trusted: bool = False,
) -> tuple[MultiMAE | FineTuneModel, ConversionReport]:
    """Our model (eval mode) from any supported checkpoint, and what the conversion did: a
    `MultiMAE` (pre-training checkpoints; encoder-only ones have no decoders) or a `FineTuneModel`
    (fine-tuned checkpoints: encoder + one head). Files of ours are rebuilt by
    `multimae.engine.checkpoint.build_model_from_checkpoint` (their config and stored specs; the
    foreign-format arguments below do not apply to them).

    Args:
        source: a path (run folder, ``.pth``/``.pt``/``.safetensors``), a state dict or a `Checkpoint`.
        fmt: ``auto`` (recognise from the keys) or the format the source must be.
        num_heads, decoder_num_heads: attention head counts for foreign formats (not stored in weights).
        head_modalities, hooks: for official fine-tuned dense heads, the modalities whose tokens the
            head reads and the encoder blocks a DPT head reads (not stored in weights; see
            `multimae.convert.finetune` for the defaults).
        input_order: for official checkpoints, the order of the input modalities (it sets the
            token order). Needed only when the file stores its keys sorted (safetensors), where
            the original order is lost and the built-in order (rgb, depth, semseg, ...) is assumed.
        trusted: allow arbitrary pickled objects in ``.pth`` files (only for files you trust).
    """
    if fmt not in SOURCES:
        raise ValueError(f"unknown source format {fmt!r}; choose one of {SOURCES}")
    if isinstance(source, (str, Path)) and (Path(source).suffix in JAX_SUFFIXES or fmt == "m3ae"):
        if fmt not in ("auto", "m3ae"):
            raise ValueError(f"{source}: a JAX checkpoint (m3ae format), not {fmt!r}")
        from multimae.convert.m3ae_jax import read_m3ae_jax

        return read_m3ae_jax(str(source), num_heads=num_heads, decoder_num_heads=decoder_num_heads)
    if isinstance(source, (str, Path)) and _is_run_folder_or_checkpoint(Path(source)):
        ckpt = read_checkpoint(source, trusted)
    elif isinstance(source, Checkpoint):
        ckpt = source
    elif isinstance(source, (str, Path)):
        ckpt = read_io_checkpoint(source, trusted)
    else:
        ckpt = from_state_dict(source)
    where = ckpt.path or "state dict"
    if fmt not in ("auto", ckpt.format):
        raise ValueError(f"{where}: looks like a {ckpt.format!r} checkpoint, not {fmt!r}")
    if ckpt.format == "multimae":
        return build_model_from_checkpoint(ckpt), ConversionReport("multimae", "multimae")
    if ckpt.format == "fourm":
        from multimae.convert.fourm import fourm_to_ours

        return fourm_to_ours(ckpt.state, num_heads=num_heads)
    if ckpt.format == "official":
        heads = head_names(ckpt.state)
        decoders = [k for k in ckpt.state if k.startswith("output_adapters.") and k.endswith(SPATIAL_DECODER_KEYS[0])]
        if heads and not decoders:
            return finetune_to_model(ckpt.state, num_heads=num_heads, args=ckpt.args, head_modalities=head_modalities,
                                     hooks=hooks, input_order=input_order)
        return official_to_multimae(ckpt.state, num_heads=num_heads, decoder_num_heads=decoder_num_heads,
                                    args=ckpt.args, input_order=input_order)
    return timm_to_multimae(ckpt.state, num_heads=num_heads, metadata=ckpt.metadata)


def save_multimae(model: MultiMAE | FineTuneModel, path: str | Path) -> Path:
    """Our weights with their config, resolved modality specs (and a fine-tuned model's head) in
    the metadata (`multimae.engine.checkpoint.model_record`): a self-contained ``.safetensors``
    file that `load_any` (and ``multimae predict --checkpoint``) reads back exactly. ``model`` is a
    `MultiMAE` or a `FineTuneModel`."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: multimae weights are written as .safetensors")
    from multimae.model.fourm import FourM

    if not isinstance(model, (MultiMAE, FineTuneModel, FourM)):
        raise ValueError(f"cannot save a {type(model).__name__}: expected a MultiMAE, a FineTuneModel or a FourM")
    export_safetensors(model, path)
    return path


def save_timm(model: MultiMAE | FineTuneModel, path: str | Path) -> tuple[Path, dict[str, Any], ConversionReport]:
    """The RGB encoder as timm ``VisionTransformer`` weights (``.safetensors``, or ``.pth``).

    Load them with ``timm.create_model(TIMM_ARCH, pretrained=True,
    pretrained_cfg_overlay=dict(file=path), **kwargs)``; the kwargs are returned and stored in the
    file's metadata (safetensors) so that `load_any` reads the head count back.
    """
    path = Path(path)
    state, kwargs, report = multimae_to_timm(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        with atomic_path(path) as tmp:
            save_file(state, str(tmp), metadata={"format": "timm", "timm_kwargs": json.dumps(kwargs)})
    elif path.suffix in (".pth", ".pt", ".bin"):
        save_atomic(state, path)
    else:
        raise ValueError(f"{path}: timm weights are written as .safetensors or .pth")
    return path, kwargs, report


def timm_usage(path: Path, kwargs: Mapping[str, Any]) -> str:
    """The Python lines that load an exported file into timm."""
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return (f"import timm\nmodel = timm.create_model({TIMM_ARCH!r}, pretrained=True, "
            f"pretrained_cfg_overlay=dict(file={str(path)!r}), {args})")


def convert_file(
    src: str | Path,
    dst: str | Path,
    *,
    src_format: str = "auto",
    dst_format: str = "multimae",
    num_heads: int | None = None,
    decoder_num_heads: int | None = None,
    head_modalities: Sequence[str] | None = None,
    hooks: Sequence[int] | None = None,
    input_order: Sequence[str] | None = None,
    trusted: bool = False,
) -> ConversionReport:
    """Read ``src`` in any supported format and write ``dst`` as ours or as timm weights."""
    if dst_format not in TARGETS:
        raise ValueError(f"unknown target format {dst_format!r}; choose one of {TARGETS}")
    model, report = load_any(src, fmt=src_format, num_heads=num_heads, decoder_num_heads=decoder_num_heads,
                             head_modalities=head_modalities, hooks=hooks, input_order=input_order,
                             trusted=trusted)
    if dst_format == "multimae":
        save_multimae(model, dst)
        return report
    path, kwargs, export = save_timm(model, dst)
    # One report from the source to timm: the import's architecture and drops, then the export's.
    export.source_format = report.source_format
    export.inferred = {**report.inferred, **export.inferred}
    export.dropped = {**report.dropped, **export.dropped}
    export.notes = report.notes + export.notes + [f"load with:\n{timm_usage(path, kwargs)}"]
    return export
