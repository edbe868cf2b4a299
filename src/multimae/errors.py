"""What the user got wrong, told apart from bugs.

`UserError` is a mistake in what was given (a setting, an argument, a file): the CLI prints its
message on one line, ``multimae <command>: error: ...``, and exits with status 2, without a
traceback. It is a `ValueError`, so code that handles bad values handles it too. Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class UserError(ValueError):
    """A bad setting, argument or input file; the message names it."""


def _undecodable(err: BaseException) -> bool:
    """Whether ``err`` is a reader's complaint about the bytes of a file (empty, truncated, garbage)."""
    if isinstance(err, (EOFError, pickle.UnpicklingError, zipfile.BadZipFile, UnicodeDecodeError)):
        return True
    name = type(err).__name__
    if name == "SafetensorError":
        return True
    return isinstance(err, RuntimeError) and ("PytorchStreamReader" in str(err) or "zip archive" in str(err))


@contextmanager
def reading(path: str | Path, what: str = "file") -> Iterator[None]:
    """Turn a decoder's error while reading ``path`` into a `UserError` naming the file."""
    try:
        yield
    except UserError:
        raise
    except Exception as err:
        if not _undecodable(err):
            raise
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"{path}: cannot read this {what}: empty, truncated or not a {what} ({detail})") from None


def check_out_file(path: str | Path, option: str, suffixes: tuple[str, ...] = ()) -> Path:
    """``path`` as a file to be written: its folder must exist (or be creatable) and it must not be a
    folder; with ``suffixes``, its suffix must be one of them. Checked before any work is done."""
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise UserError(f"{option} {path}: give a file name ending in {' or '.join(suffixes)}")
    if path.is_dir():
        raise UserError(f"{option} {path}: is a folder, not a file")
    parent = path.parent
    if not parent.is_dir():
        raise UserError(f"{option} {path}: folder {parent} does not exist")
    return path


def check_out_dir(path: str | Path, option: str) -> Path:
    """``path`` as a folder to write into: not a file, and under a folder that can be written."""
    path = Path(path)
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                raise UserError(f"{option} {path}: {part} is a file, not a folder")
            import os

            if not os.access(part, os.W_OK | os.X_OK):
                raise UserError(f"{option} {path}: {part} is not writable")
            break
    return path


def check_positive(value: int | float | None, option: str, least: int | float = 1) -> None:
    """A `UserError` naming ``option`` unless ``value`` (when given) is at least ``least``."""
    if value is not None and not value >= least:
        raise UserError(f"{option} must be >= {least}, got {value}")
