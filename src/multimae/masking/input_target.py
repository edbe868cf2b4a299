"""4M's input-and-target masking (Mizrahi et al. 2023, Sec. 3.3; official ``UnifiedMasking``).

Shapes: B batch, M modalities, N_m tokens of modality m, K mixture components.

Per sample: pick a mixture component; draw an input budget and a target budget (token totals);
split each over the modalities (`split_budget`); then, per modality, one random order of the valid
tokens: the first ``input`` positions are given to the encoder, the next ``target`` are predicted.
Inputs and targets are therefore disjoint, and positions in neither exist. Every modality is
treated as a set of positions (4M's image rule); 4M's span masking of sequences, with these budgets,
is `multimae.masking.unified.UnifiedMasking`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from multimae.masking.dirichlet import sample_dirichlet
from multimae.masking.samplers import MaskDraw, full_valid, require_each, sampler_device

# The official code clamps concentrations to >= 1e-9 (so 0 means "almost never"); so do we.
MIN_ALPHA = 1e-9


def split_budget(total: Tensor, alpha: Tensor, caps: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Per-modality budgets ``(B, M)`` long from totals ``total`` ``(B,)``, concentrations ``alpha`` ``(B, M)``
    (> 0) and caps ``caps`` ``(B, M)``.

    4M's procedure: floor(Dirichlet(alpha) * total); each of the leftover tokens goes to the argmax of
    a fresh Dirichlet draw (so a modality with alpha ~ 0 gets none); then clamp to ``caps``. Clamping
    discards tokens, nothing is redistributed: a row can sum to less than its total.
    """
    B, M = alpha.shape
    total = total.long()
    props = sample_dirichlet(alpha, generator)  # (B, M)
    budget = (props * total.unsqueeze(1).double()).floor().long()
    leftover = (total - budget.sum(dim=1)).clamp(0, M)  # (B,) fewer than M but for rounding
    extra = sample_dirichlet(alpha.unsqueeze(1).expand(B, M, M).contiguous(), generator)  # (B, M draws, M)
    winners = torch.nn.functional.one_hot(extra.argmax(dim=-1), M)  # (B, M draws, M)
    used = torch.arange(M, device=alpha.device).unsqueeze(0) < leftover.unsqueeze(1)  # (B, M draws)
    budget = budget + (winners * used.unsqueeze(-1)).sum(dim=1)
    return torch.minimum(budget, caps.long())


@dataclass(frozen=True)
class BudgetDirichlet:
    """One mixture component: Dirichlet concentrations of the input and of the target split.

    Each is one value for every modality or ``{modality: alpha}`` naming every modality sampled;
    0 means (almost) never (clamped to 1e-9, as in 4M), e.g. ``target_alpha={rgb: 0, depth: 0.5}``.
    """

    input_alpha: float | Mapping[str, float] = 1.0
    target_alpha: float | Mapping[str, float] = 1.0

    def __post_init__(self) -> None:
        for kind in ("input_alpha", "target_alpha"):
            value = getattr(self, kind)
            items = value.items() if isinstance(value, Mapping) else [("", value)]
            for name, a in items:
                if not (0.0 <= a < float("inf")):  # NaN fails too
                    where = f"{kind}[{name!r}]" if name else kind
                    raise ValueError(f"BudgetDirichlet: {where} must be a finite number >= 0, got {a}")

    def table(self, kind: str, names: Sequence[str]) -> list[float]:
        """The ``kind`` ('input_alpha' or 'target_alpha') concentrations of ``names``, in order."""
        value = getattr(self, kind)
        if not isinstance(value, Mapping):
            return [float(value)] * len(names)
        require_each(value, names, f"BudgetDirichlet: {kind}", outside="not sampled")
        return [float(value[n]) for n in names]


def _check_range(name: str, value: int | tuple[int, int]) -> tuple[int, int]:
    lo, hi = (value, value) if isinstance(value, int) else tuple(value)
    if not 0 <= lo <= hi:
        raise ValueError(f"DirichletInputTargetMasking: {name} must be n >= 0 or (min, max) with "
                         f"0 <= min <= max, got {value}")
    return int(lo), int(hi)


@dataclass
class DirichletInputTargetMasking:
    """4M: per sample ``input_budget`` tokens given and ``target_budget`` tokens predicted, split over
    the modalities by a mixture of `BudgetDirichlet` components.

    ``input_budget`` / ``target_budget``: a fixed total, or ``(min, max)`` drawn uniformly per sample
    (both ends included). ``target_budget=None``: every valid token not given is a target.
    ``components``: the mixture; ``weights`` (one per component, >= 0): how often each is picked
    (None: uniformly). A modality's input budget is capped at its valid tokens, its target budget
    at the valid tokens left after the inputs; what a cap cuts off is not given to others (as in 4M).
    ``min_tokens``: a sample's split is drawn again (at most ``max_tries`` draws in all, then the last
    is kept, as in 4M) while a modality gets fewer than min(``min_tokens``, its cap); one number for
    every modality or ``{modality: n}`` (4M's per-modality ``min_tokens``; others 0); 0 = never.
    """

    input_budget: int | tuple[int, int]
    target_budget: int | tuple[int, int] | None = None
    components: Sequence[BudgetDirichlet] = field(default_factory=lambda: (BudgetDirichlet(),))
    weights: Sequence[float] | None = None
    min_tokens: int | Mapping[str, int] = 0
    max_tries: int = 100

    def __post_init__(self) -> None:
        _check_range("input_budget", self.input_budget)
        if self.target_budget is not None:
            _check_range("target_budget", self.target_budget)
        if not self.components:
            raise ValueError("DirichletInputTargetMasking: components must hold at least one BudgetDirichlet")
        if self.weights is not None:
            w = [float(x) for x in self.weights]
            if len(w) != len(self.components) or any(not x >= 0 for x in w) or sum(w) <= 0:
                raise ValueError(f"DirichletInputTargetMasking: weights must be {len(self.components)} numbers "
                                 f">= 0 (one per component), not all 0, got {list(self.weights)}")
        least = self.min_tokens.values() if isinstance(self.min_tokens, Mapping) else [self.min_tokens]
        if any(n < 0 for n in least) or self.max_tries < 1:
            raise ValueError(f"DirichletInputTargetMasking: min_tokens must be >= 0 and max_tries >= 1, "
                             f"got {self.min_tokens} and {self.max_tries}")

    def _least(self, names: Sequence[str], device: torch.device) -> Tensor:
        """(M,) the fewest tokens each of ``names`` should get."""
        if isinstance(self.min_tokens, Mapping):
            return torch.tensor([int(self.min_tokens.get(n, 0)) for n in names], device=device)
        return torch.full((len(names),), int(self.min_tokens), device=device)

    def _alphas(self, kind: str, names: Sequence[str], component: Tensor) -> Tensor:
        table = torch.tensor([c.table(kind, names) for c in self.components], dtype=torch.float64)  # (K, M)
        return table.to(component.device)[component].clamp_min(MIN_ALPHA)  # (B, M)

    def _split(self, total: Tensor, alpha: Tensor, caps: Tensor, generator: torch.Generator | None,
               least: Tensor) -> Tensor:
        """`split_budget`, drawn again for the rows where a modality is below min(``least``, cap)."""
        budget = split_budget(total, alpha, caps, generator)
        if not bool(least.any()):
            return budget
        need = torch.minimum(caps, least)
        for _ in range(self.max_tries - 1):
            short = (budget < need).any(dim=1)  # (B,)
            if not bool(short.any()):
                break
            budget[short] = split_budget(total[short], alpha[short], caps[short], generator)
        return budget

    def sample_budgets(self, caps: Tensor, names: Sequence[str], generator: torch.Generator | None = None,
                       reduce_target_cap: Sequence[bool] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``(component (B,), input (B, M), target (B, M))`` for valid-token counts ``caps`` ``(B, M)``.

        ``reduce_target_cap`` (one per modality; None: all True): whether a modality's target cap is
        its cap minus its input budget (positions, given or predicted: 4M's images) or its cap itself
        (4M's sequences, whose input and target are separate spans of one layout).
        """
        B, device = caps.shape[0], caps.device
        reduce = [True] * len(names) if reduce_target_cap is None else [bool(r) for r in reduce_target_cap]
        if len(reduce) != len(names):
            raise ValueError(f"reduce_target_cap needs one flag per modality ({len(names)}), got {len(reduce)}")
        if self.weights is None:
            component = torch.randint(len(self.components), (B,), generator=generator, device=device)
        else:
            w = torch.tensor([float(x) for x in self.weights], dtype=torch.float64, device=device)
            component = torch.multinomial(w, B, replacement=True, generator=generator)
        lo, hi = _check_range("input_budget", self.input_budget)
        num_input = torch.randint(lo, hi + 1, (B,), generator=generator, device=device)
        least = self._least(names, device)
        inputs = self._split(num_input, self._alphas("input_alpha", names, component), caps, generator, least)
        target_caps = torch.where(torch.tensor(reduce, device=device), caps - inputs, caps)
        if self.target_budget is None:
            return component, inputs, target_caps
        lo, hi = _check_range("target_budget", self.target_budget)
        num_target = torch.randint(lo, hi + 1, (B,), generator=generator, device=device)
        targets = self._split(num_target, self._alphas("target_alpha", names, component), target_caps, generator,
                              least)
        return component, inputs, targets

    def __call__(self, num_tokens: Mapping[str, int], batch_size: int,
                 generator: torch.Generator | None = None, valid: Mapping[str, Tensor] | None = None) -> MaskDraw:
        if not num_tokens:
            raise ValueError("DirichletInputTargetMasking needs at least one modality")
        names = list(num_tokens)
        device = sampler_device(generator, valid)
        masks = full_valid(num_tokens, batch_size, valid, device)
        caps = torch.stack([masks[n].sum(dim=1) for n in names], dim=1)  # (B, M)
        _, inputs, targets = self.sample_budgets(caps, names, generator)
        hidden, target = {}, {}
        for i, n in enumerate(names):
            noise = torch.rand(batch_size, num_tokens[n], generator=generator, device=device)
            order = noise.masked_fill(~masks[n], 2.0).argsort(dim=1).argsort(dim=1)  # (B, N): valid first
            given = order < inputs[:, i : i + 1]
            hidden[n] = ~given
            target[n] = ~given & (order < (inputs + targets)[:, i : i + 1])
        return MaskDraw(hidden, target)
