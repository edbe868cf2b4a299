"""Files written so that a crash or a kill never leaves half of one: everything is written to a
temporary name beside its target and renamed into place (a rename is atomic on one file system).

The temporary name is ``<name>.tmp``, or ``<name>.<pid>.tmp`` with ``unique=True`` where several
processes may write the same file at once (a manifest, a cache). Both end in ``.tmp``, which is how
a resumed job recognises what a killed one left behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path, unique: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to (its folder is made); on success it replaces
    ``path`` in one rename, on failure it is removed. A stale temporary file is replaced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp" if unique else f"{path.name}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: str | Path, data: bytes, unique: bool = False) -> None:
    with atomic_path(path, unique) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str, unique: bool = False) -> None:
    with atomic_path(path, unique) as tmp:
        tmp.write_text(text)


def save_atomic(obj: Any, path: str | Path, unique: bool = False) -> None:
    """``torch.save(obj)`` into ``path`` atomically."""
    import torch

    with atomic_path(path, unique) as tmp:
        torch.save(obj, tmp)
