"""Metrics logging: a JSONL file (always) and TensorBoard (when installed), main process only."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

from multimae.engine.files import write_text_atomic


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, inf) replaced by None, so that the JSON written
    is valid (``json.dumps`` would write the non-standard ``NaN``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def dump_json(value: Any, **kwargs: Any) -> str:
    """Strict JSON text of ``value`` (non-finite floats as null; see `json_safe`)."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)


class MetricLogger:
    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self._tb: Any = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:  # pragma: no cover - depends on the environment
                warnings.warn("tensorboard is not installed: metrics go to metrics.jsonl only", stacklevel=2)

    def log(self, step: int, values: dict[str, float], kind: str = "train") -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, **{k: round(v, 6) if isinstance(v, float) else v for k, v in values.items()}}
        with self.path.open("a") as f:
            f.write(dump_json(record) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def drop_metrics_after(run_dir: Path, step: int) -> None:
    """Remove the records after ``step`` from ``run_dir/metrics.jsonl`` (a run resumed from the
    checkpoint of ``step`` logs those steps again); the file is rewritten atomically."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    keep = [line for line in lines if line.strip() and _step_of(line) <= step]
    if len(keep) != len(lines):
        write_text_atomic(path, "".join(line + "\n" for line in keep))


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 1 << 62  # a line cut by a kill: dropped


def read_metrics(run_dir: Path, kind: str | None = None) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if kind is None or r.get("kind") == kind]
