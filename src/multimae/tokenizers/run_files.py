"""Tokenizers kept with a model: copied into its run folder (``tokenizers/<modality>/``), listed
with their SHA-256 in every checkpoint's files table, and read back checked, so that a model is
never paired with a changed tokenizer (`multimae.engine.file_table`)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from multimae.engine.file_table import FileEntry, base_folder, sha256_file, verify_files
from multimae.tokenizers.base import Tokenizer, load_tokenizer

TOKENIZER_DIR = "tokenizers"  # in the run folder: one saved tokenizer per stored modality
_ENTRY = "tokenizer/"  # files-table names: tokenizer/<modality>/<file>


def keep_tokenizers(folders: Mapping[str, str | Path], run_dir: Path, is_main: bool = True) -> dict[str, FileEntry]:
    """Copy each saved tokenizer ``{stored modality: folder}`` into ``run_dir/tokenizers/<modality>/``
    (the main process only; a folder already there is left) and return the files-table entries."""
    files = {}
    for modality, folder in folders.items():
        target = run_dir / TOKENIZER_DIR / modality
        if is_main and Path(folder).resolve() != target.resolve():
            shutil.copytree(folder, target, dirs_exist_ok=True)
        for path in sorted(Path(folder).iterdir()):
            if path.is_file():
                files[f"{_ENTRY}{modality}/{path.name}"] = FileEntry(f"{TOKENIZER_DIR}/{modality}/{path.name}",
                                                                     sha256_file(path))
    return files


def tokenizer_folders(checkpoint: str | Path) -> dict[str, Path]:
    """``{stored modality: folder}`` of the tokenizers a checkpoint's files table lists, every file's
    SHA-256 checked against the table."""
    from multimae.engine.checkpoint import read_checkpoint

    ckpt = read_checkpoint(checkpoint)
    entries = {n: e for n, e in ckpt.files.items() if n.startswith(_ENTRY)}
    verify_files(ckpt.path, entries)
    return {n.split("/")[1]: (base_folder(ckpt.path) / e.path).parent for n, e in sorted(entries.items())}


def run_tokenizers(checkpoint: str | Path) -> dict[str, Tokenizer]:
    """``{stored modality: tokenizer}`` a run keeps (`tokenizer_folders`), each one's content hash
    checked against its own record as it loads."""
    return {m: load_tokenizer(folder) for m, folder in tokenizer_folders(checkpoint).items()}
