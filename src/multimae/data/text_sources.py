"""Every caption of a data source, without reading its images (to train a tokenizer on them).

A source is any of: a folder in the folder layout (``root/<split>/<modality>/...``, read by
`multimae.data.folder.FolderDataset`), tar shards (a ``.tar`` file, a folder of them, or a root
holding ``<split>/*.tar``; `multimae.data.shards.ShardDataset`), a JSON Lines file of
image-caption pairs (``.jsonl``, `multimae.data.jsonl.JsonlDataset`), a plain text file with one
caption per non-blank line (``.txt``), or a folder of ``.txt`` files, one caption each (searched
recursively). Bad captions (empty, not UTF-8, longer than `multimae.data.codecs.MAX_TEXT_CHARS`)
raise a ValueError naming the file (and line), or with ``on_error="skip"`` are counted in
`Captions.num_skipped` and left out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from multimae.data.codecs import TEXT, decode_text, read_file
from multimae.data.folder import FolderDataset
from multimae.data.jsonl import JsonlDataset
from multimae.data.shards import ShardDataset
from multimae.modalities.registry import DEFAULT_TEXT_MODALITY

log = logging.getLogger(__name__)
SOURCE_KINDS = ("folder", "shards", "jsonl", "text file", "text folder")


@dataclass(frozen=True)
class Captions:
    """The captions of a source: ``texts`` in reading order, the ``kind`` of source (one of
    `SOURCE_KINDS`) and how many bad captions were skipped."""

    texts: list[str]
    kind: str
    num_skipped: int = 0


def source_kind(source: Path, modality: str, split: str) -> str:
    """Which of `SOURCE_KINDS` ``source`` is; a ValueError saying what was expected otherwise."""
    if source.is_file():
        kinds = {".jsonl": "jsonl", ".tar": "shards", ".txt": "text file"}
        if source.suffix.lower() in kinds:
            return kinds[source.suffix.lower()]
        raise ValueError(f"{source}: give a .jsonl, .tar or .txt file, or a folder")
    if not source.is_dir():
        raise ValueError(f"{source}: no such file or folder")
    if (source / split / modality).is_dir():
        return "folder"
    if any(source.glob("*.tar")) or any((source / split).glob("*.tar")):
        return "shards"
    if any(source.rglob("*.txt")):
        return "text folder"
    raise ValueError(f"{source}: found neither {split}/{modality}/ (folder layout), *.tar shards nor .txt files")


def _skip_or_raise(err: ValueError, on_error: str, skipped: list[str]) -> None:
    if on_error == "raise":
        raise err
    skipped.append(str(err))
    log.warning("skipped caption (%d so far): %s", len(skipped), err)


def _lines(path: Path, modality: str, on_error: str, skipped: list[str]) -> list[str]:
    texts = []
    for number, raw in enumerate(read_file(path).split(b"\n"), start=1):
        if raw.strip():
            try:
                texts.append(decode_text(raw, f"{path}:{number}", modality))
            except ValueError as err:
                _skip_or_raise(err, on_error, skipped)
    return texts


def _files(folder: Path, modality: str, on_error: str, skipped: list[str]) -> list[str]:
    texts = []
    for path in sorted(folder.rglob("*.txt")):
        try:
            texts.append(decode_text(read_file(path), str(path), modality))
        except ValueError as err:
            _skip_or_raise(err, on_error, skipped)
    return texts


def _folder(root: Path, modality: str, split: str, on_error: str, skipped: list[str]) -> list[str]:
    dataset = FolderDataset(root, split, (modality,))
    texts = []
    for i in range(len(dataset)):
        try:
            texts.append(dataset.load(i)[modality])
        except ValueError as err:
            _skip_or_raise(err, on_error, skipped)
    return texts


def read_captions(source: str | Path, modality: str = DEFAULT_TEXT_MODALITY, split: str = "train",
                  on_error: str = "raise") -> Captions:
    """The captions (``modality``) of ``source`` (see the module docstring); ``split`` is the folder
    layout's split. Raises a ValueError when there are none."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    source = Path(source)
    kind = source_kind(source, modality, split)
    if kind in ("folder", "shards") and modality not in TEXT:
        raise ValueError(f"{modality!r} is not a text modality; text modalities: {TEXT}")
    skipped: list[str] = []  # the errors skipped here; the readers count their own
    if kind == "jsonl":
        reader: JsonlDataset | ShardDataset = JsonlDataset(source, text_modality=modality, on_error=on_error)
        texts = reader.captions
    elif kind == "shards":
        shard_dir = source / split if any((source / split).glob("*.tar")) else source  # as `generate` writes
        reader = ShardDataset(shard_dir, modalities=(modality,), on_error=on_error)
        texts = [str(s[modality]) for s in reader]
    elif kind == "text file":
        texts = _lines(source, modality, on_error, skipped)
    elif kind == "text folder":
        texts = _files(source, modality, on_error, skipped)
    else:
        texts = _folder(source, modality, split, on_error, skipped)
    num_skipped = len(skipped) + (reader.num_skipped if kind in ("jsonl", "shards") else 0)
    if not texts:
        raise ValueError(f"{source}: no {modality} found ({kind}; {num_skipped} skipped)")
    return Captions(texts, kind, num_skipped)
