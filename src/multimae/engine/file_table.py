"""The files table of a checkpoint: files that travel with it (a tokenizer's vocabulary, ...),
each recorded by its path relative to the checkpoint's folder and its SHA-256, and checked when
the checkpoint is read (`verify_files`); `attach_file` adds one."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from multimae.engine.files import atomic_path, save_atomic


@dataclass(frozen=True)
class FileEntry:
    """A file that travels with a checkpoint: ``path`` relative to the checkpoint's folder."""

    path: str
    sha256: str


def files_table(data: Any, where: object) -> dict[str, FileEntry]:
    """A stored files table (plain data) as `FileEntry` by name; a ValueError naming ``where``
    when it is malformed."""
    if not data:
        return {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: its files table is not a mapping of name -> {{path, sha256}}")
    try:
        return {str(n): FileEntry(str(e["path"]), str(e["sha256"])) for n, e in data.items()}
    except (KeyError, TypeError):
        raise ValueError(f"{where}: a files table entry lacks 'path' or 'sha256': {dict(data)!r}") from None


def base_folder(path: Path | None) -> Path:
    """The folder the paths of ``path``'s files table are relative to."""
    return Path(path).parent if path is not None else Path(".")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_files(checkpoint: Path | None, files: Mapping[str, FileEntry]) -> None:
    """A ValueError naming the first file of the table that is missing beside ``checkpoint`` or
    whose SHA-256 differs from the recorded one."""
    for name, entry in files.items():
        file = base_folder(checkpoint) / entry.path
        if not file.is_file():
            raise ValueError(f"{checkpoint}: file {name!r} ({file}) of its files table is missing")
        found = sha256_file(file)
        if found != entry.sha256:
            raise ValueError(f"{checkpoint}: file {name!r} ({file}) has SHA-256 {found}, not the recorded "
                             f"{entry.sha256}: it was changed or replaced since the checkpoint was written")


def attach_file(checkpoint: str | Path, name: str, source: str | Path, relative: str | None = None) -> FileEntry:
    """Copy ``source`` next to ``checkpoint`` (as ``relative``, default its own name; kept where it
    already is) and record it with its SHA-256 in the checkpoint's files table (the checkpoint is
    rewritten atomically). Returns the entry."""
    checkpoint, source = Path(checkpoint), Path(source)
    if not source.is_file():
        raise ValueError(f"{source}: no such file to attach to {checkpoint}")
    rel = Path(relative or source.name)
    if rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"{rel}: an attached file's path must be relative to the checkpoint's folder, inside it")
    target = checkpoint.parent / rel
    if target.resolve() != source.resolve():
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
    entry = FileEntry(rel.as_posix(), sha256_file(target))
    _rewrite_files(checkpoint, {name: entry})
    return entry


def _rewrite_files(checkpoint: Path, added: Mapping[str, FileEntry]) -> None:
    if checkpoint.suffix == ".safetensors":
        from multimae.engine.checkpoint import read_safetensors

        tensors, meta = read_safetensors(checkpoint)
        table = {**json.loads(meta.get("files") or "{}"), **{n: dataclasses.asdict(e) for n, e in added.items()}}
        with atomic_path(checkpoint) as tmp:
            save_file(tensors, str(tmp), metadata={**meta, "files": json.dumps(table)})
        return
    from multimae.engine.checkpoint import load_torch_file

    state = load_torch_file(checkpoint)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{checkpoint}: not a multimae checkpoint: cannot record files in it")
    state["files"] = {**(state.get("files") or {}), **{n: dataclasses.asdict(e) for n, e in added.items()}}
    save_atomic(state, checkpoint)
