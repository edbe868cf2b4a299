"""`Draws`: the random numbers 4M's masking consumes, behind one small interface.

Shapes: B batch, N tokens.

4M's sequence masking needs four kinds of draw: a keep probability (uniform in [0, 1]), a fair coin
(the 'binary' keep scheme), uniform noise per token, and an index in [0, n) (which sentinel a cut
target starts at). The official code takes them from three generators (Python's ``random``, torch's
global generator, numpy's); here a caller passes one object, so tests can script every number and a
replay of the official streams can be fed through the same code (`GeneratorDraws` is the ordinary
one: everything from one ``torch.Generator``).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor


class Draws(Protocol):
    """A source of the random numbers used by `multimae.masking.span` and `multimae.masking.unified`."""

    def uniform(self) -> float:
        """A float uniform in [0, 1] (a 'random' keep probability)."""
        ...

    def coin(self) -> bool:
        """True or False with probability 1/2 each (a 'binary' keep probability: 1 or 0)."""
        ...

    def noise(self, *shape: int) -> Tensor:
        """Float noise of ``shape``, uniform in [0, 1) (per-token keep decisions, grid orders)."""
        ...

    def index(self, n: int) -> int:
        """An int uniform in [0, n), n >= 1."""
        ...


class GeneratorDraws:
    """Every draw from ``generator`` (None: torch's global generator), on the generator's device."""

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator
        self.device = generator.device if generator is not None else torch.device("cpu")

    def uniform(self) -> float:
        return float(torch.rand((), generator=self.generator, device=self.device))

    def coin(self) -> bool:
        return bool(torch.randint(2, (), generator=self.generator, device=self.device) == 1)

    def noise(self, *shape: int) -> Tensor:
        return torch.rand(shape, generator=self.generator, device=self.device)

    def index(self, n: int) -> int:
        if n < 1:
            raise ValueError(f"index needs n >= 1, got {n}")
        return int(torch.randint(n, (), generator=self.generator, device=self.device))
