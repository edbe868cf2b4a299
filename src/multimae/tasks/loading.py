"""Load a trained MultiMAE (or a fine-tuned model) and its run config from a run folder, a
checkpoint or exported safetensors weights: thin callers of the one reader,
`multimae.engine.checkpoint.read_checkpoint` / `build_model_from_checkpoint`."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from multimae.config import RunConfig, build_dataclass
from multimae.config.finetune import FinetuneConfig
from multimae.engine.checkpoint import Checkpoint, build_model_from_checkpoint, read_checkpoint
from multimae.model import FineTuneModel, MultiMAE
from multimae.tasks.runs import check_kind, check_run_kind, read_run_config
from multimae.text.tokenizer import TextTokenizer

T = TypeVar("T")


def read_run_checkpoint(path: str | Path, kind: str | None, trusted: bool = False) -> Checkpoint:
    """The checkpoint of ``path``: a run folder (its ``model.safetensors``, else its latest
    checkpoint), a ``checkpoint-*.pt`` file, or a ``.safetensors`` file (self-contained, or with the
    run's ``config.yaml`` beside it). ``kind``: ``pretrain`` or ``finetune``, the kind expected
    (another is refused, saying what it is), or None for either. Checkpoints are read safely (see
    `multimae.engine.checkpoint.load_torch_file`) unless ``trusted``."""
    path = Path(path)
    if kind is not None and path.is_dir() and (path / "config.yaml").exists():
        check_kind(path, read_run_config(path), kind)  # before reading any weights
    ckpt = read_checkpoint(path, trusted)
    if kind is not None and ckpt.kind != kind:
        check_run_kind(ckpt.where, ckpt.kind or "pretrain", kind)
    return ckpt


def _run_config(cls: type[T], ckpt: Checkpoint) -> T:
    if ckpt.run_config is None:
        raise ValueError(f"{ckpt.where}: holds no run config (a converted model file?); this command needs a "
                         "run's checkpoint, or its weights with the run's config.yaml beside them")
    return build_dataclass(cls, ckpt.run_config)


def load_pretrained(path: str | Path, trusted: bool = False) -> tuple[MultiMAE, RunConfig]:
    """A pre-trained MultiMAE and its run config; ``path`` and ``trusted`` as in `read_run_checkpoint`."""
    ckpt = read_run_checkpoint(path, "pretrain", trusted)
    model = build_model_from_checkpoint(ckpt)
    assert isinstance(model, MultiMAE)
    return model, _run_config(RunConfig, ckpt)


def load_tokenizers(path: str | Path, model: MultiMAE | FineTuneModel, trusted: bool = False) -> dict[str, TextTokenizer]:
    """``{text modality: its tokenizer}`` of the model a run's checkpoint holds (each file's SHA-256
    checked against the checkpoint's files table); empty for a model without text."""
    from multimae.text.run import from_checkpoint

    names = [n for n, s in {**model.input_specs, **getattr(model, "output_specs", {})}.items() if s.stored_as == "text"]
    if not names:
        return {}
    ckpt = read_run_checkpoint(path, None, trusted)
    return {n: from_checkpoint(ckpt, n) for n in names}


def load_run_model(path: str | Path, trusted: bool = False) -> MultiMAE | FineTuneModel:
    """The model of a run of either kind; ``path`` as in `read_run_checkpoint`."""
    model = build_model_from_checkpoint(read_run_checkpoint(path, None, trusted))
    assert isinstance(model, (MultiMAE, FineTuneModel))
    return model


def load_finetuned(path: str | Path, trusted: bool = False) -> tuple[FineTuneModel, FinetuneConfig]:
    """A fine-tuned model and its run config from a fine-tuning run folder (its ``model.safetensors``,
    else its latest checkpoint), a ``checkpoint-*.pt`` or a ``.safetensors`` file with the run's
    ``config.yaml`` beside it."""
    ckpt = read_run_checkpoint(path, "finetune", trusted)
    model = build_model_from_checkpoint(ckpt)
    assert isinstance(model, FineTuneModel)
    return model, _run_config(FinetuneConfig, ckpt)
