"""What to generate and how: one `TargetSchedule` per target, planned into steps.

A token map of N tokens is decoded over S steps; `token_counts` says how many tokens each step
commits and `temperatures` the temperature of each step. A sequence is decoded token by token
(autoregressively) in one step of the plan.

Token schedules (4M's):

* ``cosine``: with c_i = (1 + cos(pi i / S)) / 2, step i commits round(N (c_i - c_{i+1})) tokens and
  the last step the remainder (4M's; few tokens first, most in the middle). Where that remainder would
  be negative (16 tokens in 8 steps: ..., 2, -1) the running total is rounded instead,
  round(N (1 - c_{i+1})) - round(N (1 - c_i)). Steps that would commit nothing are dropped;
* ``linear``: an even split, larger parts first (ROAR always uses it, as 4M does).

Temperature schedules: ``constant``; ``linear``: T at the first step, then T (N - committed so
far) / N, so it falls to about 0 as the map fills (clipped at 1e-9).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SCHEMES = ("maskgit", "roar", "autoregressive")
TOKEN_SCHEDULES = ("cosine", "linear")
TEMPERATURE_SCHEDULES = ("constant", "linear")
MIN_TEMPERATURE = 1e-9


@dataclass
class TargetSchedule:
    """How one target is generated.

    target: the model's output modality.
    scheme: maskgit (most confident tokens first) | roar (random order) | autoregressive (sequences).
    steps: decoding steps of a token map (ignored by autoregressive).
    num_tokens: tokens to generate: a token map's (None: all of them), or a sequence's most new
        tokens (None: the model's default sequence budget).
    token_schedule: cosine | linear (maskgit; roar is always linear).
    temperature: sampling temperature at the first step; 0 = argmax.
    temperature_schedule: constant | linear.
    top_k: keep the k most likely tokens (k >= 1), or that fraction of the vocabulary (below 1); 0 = off.
    top_p: keep the most likely tokens up to this probability mass (and the first over it); 0 = off.
    guidance: ``{condition: weight}`` classifier-free guidance, logits = l_u + sum_i w_i (l_i - l_u);
        empty = one conditional pass.
    """

    target: str
    scheme: str = "maskgit"
    steps: int = 8
    num_tokens: int | None = None
    token_schedule: str = "cosine"
    temperature: float = 1.0
    temperature_schedule: str = "constant"
    top_k: float = 0
    top_p: float = 0.0
    guidance: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"{self.target}: scheme must be one of {SCHEMES}, got {self.scheme!r}")
        if self.token_schedule not in TOKEN_SCHEDULES:
            raise ValueError(f"{self.target}: token_schedule must be one of {TOKEN_SCHEDULES}, got {self.token_schedule!r}")
        if self.temperature_schedule not in TEMPERATURE_SCHEDULES:
            raise ValueError(f"{self.target}: temperature_schedule must be one of {TEMPERATURE_SCHEDULES}, "
                             f"got {self.temperature_schedule!r}")
        if self.steps < 1:
            raise ValueError(f"{self.target}: steps must be >= 1, got {self.steps}")
        if self.num_tokens is not None and self.num_tokens < 1:
            raise ValueError(f"{self.target}: num_tokens must be >= 1 (or None), got {self.num_tokens}")
        if self.temperature < 0 or self.top_k < 0 or not 0 <= self.top_p <= 1:
            raise ValueError(f"{self.target}: temperature and top_k must be >= 0 and top_p in [0, 1], got "
                             f"{self.temperature}, {self.top_k}, {self.top_p}")

    @property
    def guided(self) -> bool:
        """Whether guidance needs extra passes (one condition at weight 1 is the conditional pass itself)."""
        return bool(self.guidance) and not (len(self.guidance) == 1 and next(iter(self.guidance.values())) == 1.0)


def cosine_token_counts(num_tokens: int, steps: int) -> list[int]:
    """Tokens committed per step by the cosine schedule (each >= 1, summing to ``num_tokens``)."""
    c = [0.5 * (1 + math.cos(math.pi * i / steps)) for i in range(steps + 1)]
    counts = [round(num_tokens * (c[i] - c[i + 1])) for i in range(steps - 1)]
    counts.append(num_tokens - sum(counts))
    if min(counts) < 0:
        done = [round(num_tokens * (1 - ci)) for ci in c]
        counts = [b - a for a, b in zip(done, done[1:])]
    return [n for n in counts if n > 0]


def linear_token_counts(num_tokens: int, steps: int) -> list[int]:
    """An even split into ``steps`` parts, larger first, empty parts dropped (sums to ``num_tokens``)."""
    bounds = [i * num_tokens // steps for i in range(steps + 1)]
    counts = sorted((b - a for a, b in zip(bounds, bounds[1:])), reverse=True)
    return [c for c in counts if c > 0]


def token_counts(schedule: TargetSchedule, num_tokens: int) -> list[int]:
    """Tokens per step for a map of ``num_tokens`` tokens to decode."""
    if schedule.scheme == "roar" or schedule.token_schedule == "linear":
        return linear_token_counts(num_tokens, schedule.steps)
    return cosine_token_counts(num_tokens, schedule.steps)


def temperatures(schedule: TargetSchedule, counts: list[int]) -> list[float]:
    """The temperature of each step of ``counts``."""
    T = schedule.temperature
    if schedule.temperature_schedule == "constant":
        return [T] * len(counts)
    total, done, out = sum(counts), 0, []
    for c in counts:
        out.append(max(T * (total - done) / total, MIN_TEMPERATURE))
        done += c
    return out
