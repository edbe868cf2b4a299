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


TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def _sniff(path: Path) -> str | None:
    """Why the first bytes of a checkpoint file cannot be one (None when they can): torch files are
    zip archives (or, before torch 1.6, pickles); safetensors files start with their header's length."""
    with path.open("rb") as f:
        head = f.read(9)
    if not head:
        return "the file is empty"
    suffix = path.suffix.lower()
    if suffix in TORCH_SUFFIXES and not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        return "not a PyTorch file (neither a zip archive nor a pickle)"
    if suffix == ".safetensors" and (len(head) < 9 or head[8:9] != b"{"):
        return "not a safetensors file (no JSON header)"
    return None


@contextmanager
def reading(path: str | Path, what: str = "file", label: str | None = None) -> Iterator[None]:
    """Turn a decoder's error while reading ``path`` into a `UserError` naming the file (as
    ``label`` when given, e.g. the option it came from). A checkpoint file whose first bytes
    cannot be one is refused before any decoder sees it."""
    label = label or str(path)
    file = Path(path)
    problem = _sniff(file) if what == "checkpoint" and file.is_file() else None
    if problem is not None:
        raise UserError(f"{label}: cannot read this {what}: {problem}")
    try:
        yield
    except UserError:
        raise
    except Exception as err:
        if not _undecodable(err):
            raise
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0] or type(err).__name__
        raise UserError(f"{label}: cannot read this {what}: empty, truncated or not a {what} ({detail})") from None


def check_out_file(path: str | Path, option: str, suffixes: tuple[str, ...] = ()) -> Path:
    """``path`` as a file to be written: its folder must exist and it must not be a folder; with
    ``suffixes``, its suffix must be one of them. Checked before any work is done."""
    path = Path(path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise UserError(f"{option} {path}: give a file name ending in {', '.join(suffixes)}")
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


MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a 64-bit value


def check_seed(value: int, option: str) -> None:
    """A `UserError` naming ``option`` unless ``value`` is a seed torch accepts."""
    if not 0 <= value <= MAX_SEED:
        raise UserError(f"{option} must be in [0, 2**63 - 1], got {value}")
