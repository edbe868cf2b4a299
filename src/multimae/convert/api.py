"""One entry point for every supported checkpoint: load as our model, save as ours or as timm.

Formats: ``multimae`` (our run folders, training checkpoints and converted files, which carry
their config), ``official`` (official MultiMAE / MultiViT ``.pth`` files and state dicts with its
key layout) and ``timm`` (timm ``VisionTransformer`` and MAE weights).
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
    build_finetune, encoder_config, finetune_to_model, head_from_dict, head_names, head_to_dict,
)
from multimae.convert.io import Checkpoint, from_state_dict, read_checkpoint
from multimae.convert.official import SPATIAL_DECODER_KEYS, build_model, load_matching, official_to_multimae
from multimae.convert.report import ConversionReport
from multimae.convert.timm_vit import TIMM_ARCH, multimae_to_timm, timm_to_multimae
from multimae.engine.files import atomic_path, save_atomic
from multimae.model.config import MultiMAEConfig
from multimae.model.encoder import MultiModalViT
from multimae.model.finetune import FineTuneModel
from multimae.model.multimae import MultiMAE
from multimae.tasks.loading import load_run_model

SOURCES = ("auto", "multimae", "official", "timm")
_CHECKPOINT_NAME = re.compile(r"^checkpoint-\d+\.pt$")  # a training run's checkpoints
TARGETS = ("multimae", "timm")


def _is_run_output(path: Path) -> bool:
    """A run folder, a training checkpoint, or weights exported by a run (config.yaml beside them)."""
    if path.is_dir() or _CHECKPOINT_NAME.match(path.name):
        return True
    return path.suffix == ".safetensors" and (path.parent / "config.yaml").exists() and _no_config_metadata(path)


def _no_config_metadata(path: Path) -> bool:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return "model_config" not in (f.metadata() or {})


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
) -> tuple[MultiModalViT, ConversionReport]:
    """Our model (eval mode) from any supported checkpoint, and what the conversion did: a
    `MultiMAE` (pre-training checkpoints; encoder-only ones have no decoders) or a `FineTuneModel`
    (fine-tuned checkpoints: encoder + one head).

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
    if isinstance(source, (str, Path)) and _is_run_output(Path(source)):
        model = load_run_model(Path(source), trusted)
        return _check_fmt(model, ConversionReport("multimae run", "multimae"), "multimae", fmt, source)
    if isinstance(source, Checkpoint):
        ckpt = source
    elif isinstance(source, (str, Path)):
        ckpt = read_checkpoint(source, trusted)
    else:
        ckpt = from_state_dict(source)
    where = ckpt.path or "state dict"
    if fmt not in ("auto", ckpt.format):
        raise ValueError(f"{where}: looks like a {ckpt.format!r} checkpoint, not {fmt!r}")
    if ckpt.format == "multimae":
        assert ckpt.config is not None
        config = MultiMAEConfig.from_dict(ckpt.config)
        model: MultiModalViT
        if ckpt.head is not None:
            name, head = head_from_dict(ckpt.head)
            model = build_finetune(config, head, name, ckpt.state)
        else:
            model = build_model(lambda: MultiMAE(config), ckpt.state)
        report = ConversionReport("multimae", "multimae")
        load_matching(model, ckpt.state, report, "not in the model its config describes")
        if report.dropped or report.missing:
            raise ValueError(f"{where}: weights do not match the config they carry "
                             f"(extra {list(report.dropped)[:5]}, missing {report.missing[:5]})")
        return model.eval(), report
    if ckpt.format == "official":
        heads = head_names(ckpt.state)
        decoders = [k for k in ckpt.state if k.startswith("output_adapters.") and k.endswith(SPATIAL_DECODER_KEYS[0])]
        if heads and not decoders:
            return finetune_to_model(ckpt.state, num_heads=num_heads, args=ckpt.args, head_modalities=head_modalities,
                                     hooks=hooks, input_order=input_order)
        return official_to_multimae(ckpt.state, num_heads=num_heads, decoder_num_heads=decoder_num_heads,
                                    args=ckpt.args, input_order=input_order)
    return timm_to_multimae(ckpt.state, num_heads=num_heads, metadata=ckpt.metadata)


def _check_fmt(model: MultiModalViT, report: ConversionReport, found: str, wanted: str, where: object
               ) -> tuple[MultiModalViT, ConversionReport]:
    if wanted not in ("auto", found):
        raise ValueError(f"{where}: looks like a {found!r} checkpoint, not {wanted!r}")
    return model, report


def save_multimae(model: MultiModalViT, path: str | Path) -> Path:
    """Our weights with their config in the metadata: a self-contained ``.safetensors`` file that
    `load_any` (and ``multimae predict --checkpoint``) reads back exactly. ``model`` is a
    `MultiMAE` or a `FineTuneModel` (whose head config is stored too)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: multimae weights are written as .safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if isinstance(model, FineTuneModel):
        meta = {"format": "multimae", "model_config": json.dumps(encoder_config(model).to_dict()),
                "head": json.dumps(head_to_dict(model))}
    elif isinstance(model, MultiMAE):
        meta = {"format": "multimae", "model_config": json.dumps(model.model_config.to_dict())}
    else:
        raise ValueError(f"cannot save a {type(model).__name__}: expected a MultiMAE or a FineTuneModel")
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def save_timm(model: MultiModalViT, path: str | Path) -> tuple[Path, dict[str, Any], ConversionReport]:
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
