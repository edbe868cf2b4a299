"""Bookkeeping of resumable experiments (``experiments/*.py``): units computed once and kept as
JSON, runs resumed or restarted, and the mean ± sample standard deviation their reports print."""

from __future__ import annotations

import json
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from multimae.engine.checkpoint import latest_checkpoint
from multimae.engine.files import write_text_atomic


def run_unit(path: str | Path, fn: Callable[[], dict[str, Any]], **record: Any) -> dict[str, Any]:
    """``fn``'s result, computed once: ``{"unit": <path's stem>, **fn(), "unit_wall_s": seconds,
    **record}`` is written to ``path`` (atomically; several processes may share a results folder)
    and read back from there on a later call."""
    path = Path(path)
    if path.exists():
        return json.loads(path.read_text())
    print(f"\n=== {path.stem} ===", flush=True)
    start = time.perf_counter()
    result = {"unit": path.stem, **fn(), "unit_wall_s": round(time.perf_counter() - start, 1), **record}
    write_text_atomic(path, json.dumps(result, indent=2), unique=True)
    return result


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def resume_or_restart(run_dir: str | Path) -> Path | None:
    """The run folder to resume, or None after clearing a folder that holds no checkpoint yet (a
    run interrupted before its first checkpoint starts again)."""
    run_dir = Path(run_dir)
    if latest_checkpoint(run_dir) is not None:
        return run_dir
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return None
