"""Intra-op threads chosen by measurement in the first training steps (``train.threads: auto``).

On a small CPU machine shared with other work, all cores can be much slower than one: measured on
a 2-core AVX2 machine with one other busy process, 2 threads ran 7 s per step where 1 thread ran
1.15 s (OpenMP threads waiting on a core the other process holds). `ThreadTuner` times a few real
training steps at each candidate thread count, under the load of the moment, and keeps the fastest;
the steps are training steps like any other (nothing is thrown away).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count a run uses and why (written to the run log and report.json)."""

    threads: int
    reason: str
    step_s: dict[int, float] = field(default_factory=dict)  # threads -> mean seconds per timed step

    def as_dict(self) -> dict[str, Any]:
        return {"threads": self.threads, "reason": self.reason,
                "step_s": {str(k): round(v, 4) for k, v in self.step_s.items()}}


def all_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def fixed_choice(reason: str) -> ThreadChoice:
    return ThreadChoice(torch.get_num_threads(), reason)


class ThreadTuner:
    """Sets the thread count before each of the first steps and times them: for each candidate,
    ``warmup`` untimed steps (a new thread pool, caches) then ``trials`` timed ones; then keeps
    the fastest candidate. Call `before_step` before and `after_step(seconds)` after each step
    until `choice` is set."""

    def __init__(self, candidates: Sequence[int], warmup: int = 1, trials: int = 2,
                 set_threads: Callable[[int], None] = torch.set_num_threads) -> None:
        if not candidates or min(candidates) < 1:
            raise ValueError(f"thread candidates must be positive, got {list(candidates)}")
        self.candidates = list(dict.fromkeys(candidates))
        self.warmup, self.trials = warmup, trials
        self.set_threads = set_threads
        self.times: dict[int, list[float]] = {c: [] for c in self.candidates}
        self.choice: ThreadChoice | None = None
        self._position = 0  # steps done so far in the schedule

    @property
    def steps_needed(self) -> int:
        return len(self.candidates) * (self.warmup + self.trials)

    @property
    def _current(self) -> int:
        return self.candidates[self._position // (self.warmup + self.trials)]

    def before_step(self) -> None:
        if self.choice is None:
            self.set_threads(self._current)

    def after_step(self, seconds: float) -> ThreadChoice | None:
        """Record one step's time; returns the choice once made (the thread count is then set)."""
        if self.choice is not None:
            return None
        if self._position % (self.warmup + self.trials) >= self.warmup:
            self.times[self._current].append(seconds)
        self._position += 1
        if self._position == self.steps_needed:
            self.choice = self._decide()
            self.set_threads(self.choice.threads)
            return self.choice
        return None

    def _decide(self) -> ThreadChoice:
        means = {c: statistics.fmean(t) for c, t in self.times.items()}
        best = min(means, key=lambda c: means[c])
        others = ", ".join(f"{means[c]:.3g} s with {c}" for c in means if c != best)
        name = "thread" if best == 1 else "threads"
        return ThreadChoice(best, f"{best} {name}: {means[best]:.3g} s/step measured vs {others} "
                            f"(mean of {self.trials} steps each, after {self.warmup} untimed)", means)


def plan_threads(requested: int | str | None, device_type: str, world_size: int, steps_left: int,
                 env: dict[str, str] | None = None, cores: int | None = None) -> ThreadTuner | ThreadChoice:
    """A tuner for ``train.threads: auto`` on a one-process CPU run with enough steps left, else
    the fixed choice and why. The thread count set before (by `local_threads`) is kept when fixed."""
    env = dict(os.environ) if env is None else env
    cores = all_cores() if cores is None else cores
    if requested != "auto":
        return fixed_choice(f"train.threads={requested}" if requested else "PyTorch's default")
    if device_type != "cpu":
        return fixed_choice(f"left as is on {device_type}")
    if world_size > 1:
        return fixed_choice(f"this process's share of the cores ({world_size} processes)")
    if "OMP_NUM_THREADS" in env:
        return fixed_choice(f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']} is set")
    if cores < 2:
        return fixed_choice("one core")
    tuner = ThreadTuner((cores, 1))
    if steps_left < 4 * tuner.steps_needed:
        return fixed_choice(f"too few steps left ({steps_left}) to measure")
    return tuner


def restart_rate(bar: Any) -> None:
    """Make a tqdm bar's rate (and so its ETA) count only the steps from now on, keeping its
    elapsed time: after a thread switch the earlier steps' rate no longer predicts the rest."""
    if getattr(bar, "disable", True):
        return
    start, n = bar.start_t, bar.n
    bar.reset(total=bar.total)
    bar.n = bar.last_print_n = bar.initial = n
    bar.start_t = start
    bar.refresh()
