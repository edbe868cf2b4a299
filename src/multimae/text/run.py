"""A run's tokenizer: made (or found) once in the run folder, then carried by every checkpoint.

The tokenizer of text modality ``m`` lives in ``run_dir/tokenizer-<m>/`` (`TOKENIZER_FILE` and the
wrapper's config) and is listed in the files table of every checkpoint as
``tokenizer:<m>`` with the SHA-256 of its ``tokenizer.json`` (its `TextTokenizer.content_hash`),
so a checkpoint read later gets exactly the tokenizer it was trained with (`from_checkpoint`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from multimae.engine.file_table import FileEntry
from multimae.text.tokenizer import TOKENIZER_FILE, TextTokenizer, load_or_train

if TYPE_CHECKING:
    from multimae.engine.checkpoint import Checkpoint


def file_key(modality: str) -> str:
    """The files-table name of modality ``modality``'s tokenizer."""
    return f"tokenizer:{modality}"


def tokenizer_folder(run_dir: str | Path, modality: str) -> Path:
    return Path(run_dir) / f"tokenizer-{modality}"


def run_tokenizer(run_dir: str | Path, modality: str, texts: Callable[[], Iterable[str]],
                  pretrained: str | Path | None = None, vocab_size: int = 1000,
                  min_frequency: int = 1) -> tuple[TextTokenizer, dict[str, FileEntry]]:
    """(the run's tokenizer of ``modality``, its files-table entry to add to every checkpoint).

    Without ``pretrained``: the one cached in the run folder, else a WordPiece tokenizer trained on
    ``texts()`` (the training captions) and saved there. With ``pretrained`` (a hub name or a
    folder): that tokenizer, saved in the run folder; a run folder already holding another one
    raises a ValueError (a resumed run keeps its tokenizer). In DDP, call it on the main process
    first and on the others after a barrier: they then read the saved file.
    """
    folder = tokenizer_folder(run_dir, modality)
    if pretrained is None:
        tokenizer = load_or_train(folder, texts, vocab_size, min_frequency)
    else:
        tokenizer = TextTokenizer.from_pretrained(pretrained)
        if (folder / TOKENIZER_FILE).is_file():
            cached = TextTokenizer.load(folder)
            if cached.content_hash != tokenizer.content_hash:
                raise ValueError(f"{folder}: this run already has another {modality} tokenizer "
                                 f"(sha256 {cached.content_hash[:12]}, not {pretrained}'s {tokenizer.content_hash[:12]})")
        else:
            tokenizer.save(folder)
    entry = FileEntry(f"{folder.name}/{TOKENIZER_FILE}", tokenizer.content_hash)
    return tokenizer, {file_key(modality): entry}


def from_checkpoint(checkpoint: Checkpoint, modality: str) -> TextTokenizer:
    """The tokenizer of ``modality`` a checkpoint carries (its file's SHA-256 checked); a
    ValueError naming the checkpoint when it has none."""
    path = checkpoint.file(file_key(modality))
    return TextTokenizer.load(path.parent)
