"""Checkpoints and exported model files: what they hold, how they are written and the one reader.

Training checkpoints are written to a temporary name in the same folder and renamed into place, so
a crash mid-write never leaves a truncated ``checkpoint-<step>.pt``: only renamed files count.

`load_torch_file` is the one place a pickled (``torch.save``) file is read: with
``torch.load(weights_only=True)``, which builds tensors and plain data (dicts, lists, tuples,
numbers, strings) and runs no code. Our checkpoints hold nothing else; a file that needs more
(an old or a foreign one) is refused unless the user trusts it (``trusted=True``, CLI ``--trust``).

What every file of ours carries besides the weights (format version 2; `model_record`):

* ``format``: ``"multimae"``; ``format_version``: `FORMAT_VERSION`;
* ``kind``: ``"pretrain"`` (a `MultiMAE`), ``"finetune"`` (a `FineTuneModel`) or ``"fourm"`` (a 4M
  `FourM`);
* ``model_config``: `MultiMAEConfig.to_dict` (for a fine-tuned model: its encoder, without outputs;
  for 4M: `FourMConfig.to_dict`);
* ``specs``: every field of the resolved `ModalitySpec` of each input and output (and of a
  fine-tuning target), so a custom or overridden modality rebuilds without the original config
  file; where a stored spec differs from what the config resolves to, the stored one wins;
* ``head``: the fine-tuning head (name, kind, config), for fine-tuned models;
* ``files``: ``{name: {"path": path relative to the checkpoint's folder, "sha256": hex}}``, files
  that travel with the model (`attach_file`), checked on every read (`verify_files`);
* ``run_config``: the run's resolved config (plain data) when written by a run.

A training checkpoint (``torch.save`` dict) holds these as entries, beside ``model`` (the state
dict), ``config`` (the run config), ``optimizer``, ``scaler``, ``step``, ``stream`` and
``torch_rng``; a ``train.parallel=fsdp`` run's has ``sharded`` (the name of its DCP folder, which
holds the optimizer state) instead of ``optimizer`` (`multimae.engine.sharded_checkpoint`). A
``.safetensors`` file holds them in its metadata, each JSON-encoded. Files of version 1 (before
``specs`` and ``files``) still load: their specs are resolved from their config.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from multimae.engine.file_table import (
    FileEntry,
    attach_file,
    base_folder,
    files_table,
    verify_files,
)
from multimae.engine.files import atomic_path, save_atomic

if TYPE_CHECKING:
    from multimae.modalities.spec import ModalitySpec
    from multimae.model.config import MultiMAEConfig
    from multimae.model import Model

__all__ = [
    "FORMAT", "FORMAT_VERSION", "MODEL_KINDS", "TRAINER_KEYS", "Checkpoint", "FileEntry", "attach_file",
    "build_model_from_checkpoint", "checkpoint_file", "checkpoint_path", "export_safetensors", "files_table",
    "latest_checkpoint", "list_checkpoints", "load_checkpoint", "load_torch_file", "model_record",
    "read_checkpoint", "read_ours_safetensors", "read_ours_torch", "read_safetensors", "save_checkpoint",
    "spec_to_dict",
    "verify_files", "with_specs",
]

_NAME = re.compile(r"^checkpoint-(\d{8})\.pt$")
FORMAT = "multimae"
FORMAT_VERSION = 2  # 1: model config (and head) only; 2: + kind, resolved specs, files table
MODEL_KINDS = ("pretrain", "finetune", "fourm")
_RECORD_KEYS = ("format", "format_version", "kind", "model_config", "specs", "head", "files", "run_config")
# Entries of a training checkpoint that are the trainer's state (not the model's description).
TRAINER_KEYS = ("optimizer", "sharded", "scaler", "step", "stream", "torch_rng")


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / f"checkpoint-{step:08d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints in ``run_dir``, oldest first."""
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(state: dict[str, Any], run_dir: Path, step: int, keep_last: int) -> Path:
    """Write ``state`` as the checkpoint of ``step`` and delete all but the newest ``keep_last``."""
    path = checkpoint_path(run_dir, step)
    save_atomic(state, path)
    for old in list_checkpoints(run_dir)[: -max(1, keep_last)]:
        old.unlink()
    return path


def load_torch_file(path: str | Path, trusted: bool = False, allowed: Sequence[type] = ()) -> Any:
    """The contents of a ``torch.save`` file, read safely: tensors and plain data only (plus the
    classes in ``allowed``); ``trusted=True`` unpickles anything (only for files you trust)."""
    if trusted:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        named = re.search(r"GLOBAL (\S+)", str(err))
        found = named.group(1) if named else str(err).strip().splitlines()[0][:200]
        raise ValueError(
            f"{path}: holds Python objects beyond tensors and plain data ({found}), which safe loading refuses "
            "(unpickling them could run code); nothing was run. If you trust the file, pass --trust "
            "(API: trusted=True)."
        ) from None


def read_safetensors(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors, metadata) of a ``.safetensors`` file."""
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})  # noqa: SIM118 (not a dict)


def load_checkpoint(path: Path, trusted: bool = False) -> dict[str, Any]:
    """A training checkpoint's raw contents (see `load_torch_file`), its files table checked."""
    state = load_torch_file(path, trusted)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path}: not a multimae training checkpoint")
    verify_files(path, files_table(state.get("files"), path))
    return state


# --------------------------------------------------------------------------- what a file carries
@dataclass
class Checkpoint:
    """A checkpoint or model file as read (`read_checkpoint`; foreign files: `multimae.convert`).

    Attributes:
        state: the model's flat ``{key: tensor}`` state dict.
        format: ``"multimae"`` (ours), ``"official"`` (official MultiMAE / MultiViT key layout) or
            ``"timm"`` (timm ``VisionTransformer`` / MAE keys).
        model_config: our model config as plain data (`MultiMAEConfig.to_dict`; a fine-tuned
            model's encoder as a config without outputs); None for foreign files.
        head: the fine-tuning head (``{"name", "kind", "config"}``) of a fine-tuned model.
        args: the official training arguments (``ckpt["args"]``) as a dict, when present.
        metadata: the safetensors metadata (str -> str) as stored.
        path: where it was read from (None for in-memory state dicts).
        kind: ``"pretrain"`` or ``"finetune"`` for ours, None for foreign files.
        specs: the stored resolved specs by modality name (empty for version-1 files).
        run_config: the run's config (plain data) when the file or its run folder has one.
        trainer: a training checkpoint's trainer state (`TRAINER_KEYS`); empty for exports.
        files: the files table (`FileEntry` by name).
        version: the format version (0 for foreign files).
    """

    state: dict[str, Tensor]
    format: str
    model_config: dict[str, Any] | None = None
    head: dict[str, Any] | None = None
    args: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    kind: str | None = None
    specs: dict[str, ModalitySpec] = field(default_factory=dict)
    run_config: dict[str, Any] | None = None
    trainer: dict[str, Any] = field(default_factory=dict)
    files: dict[str, FileEntry] = field(default_factory=dict)
    version: int = 0

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else "checkpoint"

    def config(self) -> Any:
        """The model config (`MultiMAEConfig`, or `FourMConfig` for a 4M file), with the stored specs in
        force (`with_specs`)."""
        from multimae.model.config import MultiMAEConfig
        from multimae.model.fourm.config import FourMConfig

        if self.model_config is None:
            raise ValueError(f"{self.where}: carries no multimae model config (a {self.format!r} checkpoint)")
        # a fine-tuned 4M encoder is stored as a FourMConfig without outputs: its fields say so
        fourm = self.kind == "fourm" or (self.kind == "finetune" and "encoder_depth" in self.model_config)
        cls = FourMConfig if fourm else MultiMAEConfig
        return with_specs(cls.from_dict(self.model_config), self.specs)

    def modality_specs(self) -> dict[str, ModalitySpec]:
        """Every modality the file describes: the model's (stored specs winning), then any other
        stored one (a fine-tuning target)."""
        return {**self.config().modality_specs(), **self.specs}

    def file(self, name: str) -> Path:
        """The path of file ``name`` of the files table, its hash checked."""
        if name not in self.files:
            raise ValueError(f"{self.where}: no file named {name!r} in its files table (has {sorted(self.files)})")
        verify_files(self.path, {name: self.files[name]})
        return base_folder(self.path) / self.files[name].path


def spec_to_dict(spec: ModalitySpec) -> dict[str, Any]:
    """Every field of ``spec`` as plain data (new fields are included as they are added)."""
    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}


def with_specs(config: MultiMAEConfig, specs: Mapping[str, ModalitySpec]) -> MultiMAEConfig:
    """``config`` changed so that it resolves to ``specs`` wherever they name one of its modalities:
    a stored spec that differs from what the config (its overrides, custom modalities and the
    built-in registry) resolves to becomes a custom modality of that name, its override dropped."""
    if not specs:
        return config
    names = [n for n in dict.fromkeys([*config.inputs, *config.outputs]) if n in specs]
    try:
        resolved = config.modality_specs()
    except ValueError:  # a name the registry no longer knows: the stored spec describes it
        resolved = {}
    changed = [n for n in names if resolved.get(n) != specs[n]]
    if not changed:
        return config
    custom = {**config.custom_modalities, **{n: specs[n] for n in changed}}
    overrides = {n: o for n, o in config.modality_overrides.items() if n not in changed}
    return dataclasses.replace(config, custom_modalities=custom, modality_overrides=overrides)


def model_record(model: nn.Module, run_config: Mapping[str, Any] | None = None,
                 extra_specs: Mapping[str, ModalitySpec] | None = None,
                 files: Mapping[str, FileEntry] | None = None) -> dict[str, Any]:
    """What a file of ``model`` carries besides its weights (see the module docstring), as plain
    data; empty for a module that is neither a `MultiMAE` nor a `FineTuneModel`. ``extra_specs``:
    more modalities the run prepares (a fine-tuning target)."""
    from multimae.convert.finetune import encoder_config, head_to_dict
    from multimae.model.finetune import FineTuneModel
    from multimae.model.fourm import FourM
    from multimae.model.multimae import MultiMAE

    if isinstance(model, MultiMAE):
        kind, config, head = "pretrain", model.model_config, None
        specs = {**model.input_specs, **model.output_specs}
    elif isinstance(model, FourM):
        kind, config, head = "fourm", model.config, None
        specs = {**model.input_specs, **model.output_specs}
    elif isinstance(model, FineTuneModel):
        kind, config, head = "finetune", encoder_config(model), head_to_dict(model)
        specs = dict(model.input_specs)
    else:
        return {}
    for name, spec in (extra_specs or {}).items():
        specs.setdefault(name, spec)  # the model's own spec of a modality comes first
    record: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "model_config": config.to_dict(),
        "specs": {n: spec_to_dict(s) for n, s in specs.items()},
        "files": {n: dataclasses.asdict(e) for n, e in (files or {}).items()},
    }
    if head is not None:
        record["head"] = head
    if run_config is not None:
        record["run_config"] = dict(run_config)
    return record


def export_safetensors(model: nn.Module, path: Path, metadata: dict[str, str] | None = None,
                       record: Mapping[str, Any] | None = None, state: Mapping[str, Tensor] | None = None) -> None:
    """The model's weights (state-dict key names; a tensor shared by several names stored under each) as
    a safetensors file, written atomically, with ``record`` (default: `model_record` of ``model``)
    JSON-encoded in its metadata. ``state``: the weights to write (default: ``model.state_dict()``;
    a sharded model's gathered ones)."""
    tensors, seen = {}, set()
    for k, v in (model.state_dict() if state is None else state).items():  # 4M's tied heads: under each name
        t = v.detach().cpu().contiguous()
        tensors[k] = t.clone() if t.data_ptr() in seen else t
        seen.add(t.data_ptr())
    record = model_record(model) if record is None else record
    meta = {**(metadata or {}), **{k: v if isinstance(v, str) else json.dumps(v) for k, v in record.items()}}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


# --------------------------------------------------------------------------------- reading
def _json(metadata: Mapping[str, str], key: str, where: object) -> Any:
    try:
        return json.loads(metadata[key]) if key in metadata else None
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: metadata entry {key!r} is not valid JSON ({err})") from None


def _specs(data: Any, where: object) -> dict[str, ModalitySpec]:
    from multimae.modalities.registry import spec_from_dict

    if not data:
        return {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: its stored specs are not a mapping of modality -> spec fields")
    try:
        return {str(n): spec_from_dict({"name": n, **fields}) for n, fields in data.items()}
    except ValueError as err:
        raise ValueError(f"{where}: a stored modality spec does not build: {err}") from None


def _kind(record: Mapping[str, Any], run_config: Mapping[str, Any] | None) -> str:
    kind = record.get("kind")
    if kind is None:  # version 1: told by the head, else by the run's config
        if record.get("head") is not None:
            kind = "finetune"
        else:
            kind = "finetune" if run_config is not None and "task" in run_config else "pretrain"
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}; known: {MODEL_KINDS}")
    return str(kind)


def _from_record(state: dict[str, Tensor], record: Mapping[str, Any], path: Path | None,
                 metadata: dict[str, str] | None = None, trainer: Mapping[str, Any] | None = None) -> Checkpoint:
    """Our `Checkpoint` from a state dict and the plain entries beside it (version 1 or 2)."""
    where = path or "checkpoint"
    run_config = record.get("run_config")
    if run_config is None and isinstance(record.get("config"), Mapping):  # a training checkpoint's run config
        run_config = dict(record["config"])
    try:
        kind = _kind(record, run_config)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    model_config = record.get("model_config")
    head = record.get("head")
    if model_config is None:  # version 1 training checkpoints and run exports: from the run's config
        if run_config is None:
            raise ValueError(f"{where}: carries neither a model config nor a run config")
        model_config, head = _config_from_run(run_config, kind, where)
    version = int(record.get("format_version", 1))
    if version > FORMAT_VERSION:
        raise ValueError(f"{where}: written in checkpoint format {version}, newer than this multimae "
                         f"reads ({FORMAT_VERSION}); update multimae")
    return Checkpoint(
        state=state, format=FORMAT, model_config=dict(model_config), head=dict(head) if head else None,
        metadata=dict(metadata or {}), path=path, kind=kind, specs=_specs(record.get("specs"), where),
        run_config=run_config, trainer=dict(trainer or {}), files=files_table(record.get("files"), where),
        version=version,
    )


def _config_from_run(run_config: Mapping[str, Any], kind: str, where: object) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(model config, head) of a version-1 file, resolved from its run config as runs do."""
    from multimae.config import RunConfig, build_dataclass

    if kind == "pretrain":
        return build_dataclass(RunConfig, run_config).model.build().to_dict(), None
    from multimae.config.finetune import FinetuneConfig
    from multimae.convert.finetune import encoder_config, head_to_dict
    from multimae.tasks.finetune_arch import build_model

    with torch.device("meta"):  # only the architecture is read: no weights are made
        model = build_model(build_dataclass(FinetuneConfig, run_config))
    return encoder_config(model).to_dict(), head_to_dict(model)


def read_ours_safetensors(state: dict[str, Tensor], metadata: Mapping[str, str], path: Path) -> Checkpoint | None:
    """Our `Checkpoint` for a ``.safetensors`` file's contents, or None when it is not ours (no
    multimae metadata, and no run ``config.yaml`` beside it)."""
    from multimae.tasks.runs import read_run_config

    meta = dict(metadata)
    beside = (path.parent / "config.yaml").exists()
    if meta.get("format") != FORMAT and "model_config" not in meta:
        if not beside or meta.get("format") not in (None, FORMAT):
            return None
        record: dict[str, Any] = {}  # a version-1 run export: all from the run's config
    else:
        record = {k: meta[k] if k in ("format", "kind") else _json(meta, k, path) for k in _RECORD_KEYS if k in meta}
    if record.get("run_config") is None and beside:
        record["run_config"] = read_run_config(path.parent)
    ckpt = _from_record(state, record, path, meta)
    verify_files(path, ckpt.files)
    return ckpt


def read_ours_torch(contents: Any, path: Path) -> Checkpoint | None:
    """Our `Checkpoint` for a ``torch.save`` file's contents, or None when it is not ours (not a
    dict with ``model`` weights and a model or run config)."""
    if not isinstance(contents, dict) or not isinstance(contents.get("model"), dict):
        return None
    if not (contents.get("format") == FORMAT or isinstance(contents.get("model_config"), dict)
            or isinstance(contents.get("config"), dict)):
        return None
    trainer = {k: contents[k] for k in TRAINER_KEYS if k in contents}
    ckpt = _from_record(dict(contents["model"]), contents, path, trainer=trainer)
    verify_files(path, ckpt.files)
    return ckpt


def checkpoint_file(path: str | Path) -> Path:
    """The file a path names: itself, or for a run folder its ``model.safetensors``, else its
    latest checkpoint. A ValueError when there is none."""
    path = Path(path)
    if path.is_dir():
        weights = path / "model.safetensors"
        path = weights if weights.exists() else (latest_checkpoint(path) or weights)
    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint or weights file")
    return path


def read_checkpoint(path: str | Path, trusted: bool = False) -> Checkpoint:
    """One of our checkpoints or model files: a run folder (`checkpoint_file`), a
    ``checkpoint-*.pt`` or another ``torch.save`` file of ours, or a ``.safetensors`` export
    (`export_safetensors`, `multimae.convert.save_multimae`, or a run's ``model.safetensors`` with
    its ``config.yaml`` beside). Read safely unless ``trusted``; the files table is checked. Foreign
    files (official MultiMAE, timm) are read by `multimae.convert.read_checkpoint`."""
    path = checkpoint_file(path)
    if path.suffix == ".safetensors":
        ckpt = read_ours_safetensors(*read_safetensors(path), path)
    else:
        ckpt = read_ours_torch(load_torch_file(path, trusted), path)
    if ckpt is None:
        raise ValueError(f"{path}: not a multimae checkpoint (no model config in it or beside it); foreign "
                         "checkpoints load with multimae.convert.load_any / `multimae convert`")
    return ckpt


def build_model_from_checkpoint(source: str | Path | Checkpoint, trusted: bool = False) -> Model:
    """The model (eval mode, on the CPU) a checkpoint of ours describes, its weights loaded
    exactly: a `MultiMAE` (``kind`` pretrain), a `FineTuneModel` (finetune) or a `FourM` (fourm).
    ``source``: a `Checkpoint` or a path as `read_checkpoint` takes it."""
    from multimae.model.finetune import FineTuneModel
    from multimae.model.fourm import FourM, FourMConfig
    from multimae.model.multimae import MultiMAE

    ckpt = source if isinstance(source, Checkpoint) else read_checkpoint(source, trusted)
    if ckpt.format != FORMAT:
        raise ValueError(f"{ckpt.where}: a {ckpt.format!r} checkpoint; load it with multimae.convert.load_any")
    config = ckpt.config()
    model: Model
    if ckpt.kind == "finetune":
        if ckpt.head is None:
            raise ValueError(f"{ckpt.where}: a fine-tuned model's checkpoint without its head config")
        from multimae.convert.finetune import head_from_dict

        name, head = head_from_dict(ckpt.head)
        specs = config.modality_specs()
        trunk = config if isinstance(config, FourMConfig) else config.encoder
        model = FineTuneModel(trunk, {n: specs[n] for n in config.inputs}, head, name)
    elif ckpt.kind == "fourm":
        model = FourM(config)
    else:
        model = MultiMAE(config)
    result = model.load_state_dict(ckpt.state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{ckpt.where}: weights do not match the model its config describes "
                         f"(missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})")
    return model.eval()

