"""Multi-modal mask sampling (paper Sec. 3.3, App. C): Dirichlet budgets, uniform selection.

Shapes: B batch, M modalities, N_m tokens of modality m.

Masks are boolean, **True = masked** (hidden from the encoder, predicted, counted in the loss),
False = visible. Every function takes an explicit ``torch.Generator``, so training, tests and
generation share one code path and are reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor


def _marsaglia(a: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Gamma(a, 1) draws for a >= 1 and Gamma(a + 1, 1) draws where a < 1 (``boost``), float64."""
    boost = a < 1
    d = torch.where(boost, a + 1, a) - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    while bool(todo.any()):
        z = torch.randn(a.shape, generator=generator, dtype=a.dtype, device=a.device)
        u = torch.rand(a.shape, generator=generator, dtype=a.dtype, device=a.device)
        v = (1.0 + c * z) ** 3
        ok = (v > 0) & (torch.log(u.clamp_min(1e-300)) < 0.5 * z * z + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        accept = todo & ok
        out = torch.where(accept, d * v, out)
        todo = todo & ~ok
    return out, boost


def sample_gamma(concentration: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Gamma(concentration, 1) samples, same shape as ``concentration`` (Marsaglia & Tsang 2000).

    Vectorised rejection sampling driven by ``generator`` (torch's own gamma sampler takes none).
    For concentration < 1 it uses Gamma(a) = Gamma(a + 1) * U ** (1 / a).
    """
    a = concentration.double()
    out, boost = _marsaglia(a, generator)
    if bool(boost.any()):
        u = torch.rand(a.shape, generator=generator, dtype=a.dtype, device=a.device)
        out = torch.where(boost, out * u ** (1.0 / a), out)
    return out.to(concentration.dtype)


def sample_log_gamma(concentration: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """log of Gamma(concentration, 1) samples, float64, same shape; the same random calls as `sample_gamma`.

    In log space a tiny concentration (1e-9) gives a very negative number instead of an underflow to 0,
    so Dirichlet draws with near-zero concentrations stay well defined (`sample_dirichlet`).
    """
    a = concentration.double()
    out, boost = _marsaglia(a, generator)
    log = torch.log(out)
    if bool(boost.any()):
        u = torch.rand(a.shape, generator=generator, dtype=a.dtype, device=a.device)
        log = torch.where(boost, log + torch.log(u.clamp_min(1e-300)) / a, log)
    return log


def sample_dirichlet(concentration: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Dirichlet draws ``(..., M)`` float64 for concentrations ``(..., M)`` (every entry > 0); rows sum to 1.

    Normalised in log space: with every concentration tiny the draw is (numerically) one-hot, as its
    limit is, instead of 0 / 0.
    """
    if not bool((concentration > 0).all()):
        raise ValueError(f"Dirichlet concentrations must be > 0, got {concentration.tolist()}")
    return torch.softmax(sample_log_gamma(concentration, generator), dim=-1)


def sample_proportions(
    batch_size: int,
    num_modalities: int,
    alpha: float | Sequence[float] = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Per-sample modality proportions ``(B, M)`` ~ Dirichlet(alpha); rows sum to 1.

    ``alpha`` is one concentration for all modalities (symmetric) or one per modality;
    ``math.inf`` means an equal split.
    """
    alphas = [float(alpha)] * num_modalities if isinstance(alpha, (int, float)) else [float(a) for a in alpha]
    if len(alphas) != num_modalities:
        raise ValueError(f"got {len(alphas)} Dirichlet concentrations for {num_modalities} modalities")
    if any(not a > 0 for a in alphas):
        raise ValueError(f"Dirichlet concentrations must be > 0, got {alphas}")
    if all(math.isinf(a) for a in alphas):
        return torch.full((batch_size, num_modalities), 1.0 / num_modalities, device=device)
    if any(math.isinf(a) for a in alphas):
        raise ValueError(f"alpha = inf must be given for all modalities or none, got {alphas}")
    conc = torch.tensor(alphas, dtype=torch.float64, device=device).expand(batch_size, num_modalities)
    gammas = sample_gamma(conc.contiguous(), generator)
    return (gammas / gammas.sum(dim=1, keepdim=True)).float()


def apportion(
    proportions: Tensor, total: int | Tensor, caps: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """Integer counts ``(B, M)`` from ``proportions`` ``(B, M)``: rows sum to ``total``, ``counts <= caps``.

    ``total``: one number, or one per row ``(B,)``; ``caps``: ``(M,)`` or per row ``(B, M)``.
    Largest-remainder rounding with random tie-breaks; what a full modality cannot take is
    re-distributed over the others in proportion to their weights (at most M rounds).
    """
    B, M = proportions.shape
    caps = caps.to(proportions.device).long().expand(B, M)
    if isinstance(total, Tensor):
        remaining = total.to(proportions.device).long().expand(B).clone()
    else:
        remaining = torch.full((B,), total, dtype=torch.long, device=proportions.device)
    room = caps.sum(dim=1)
    if bool((remaining > room).any()):
        row = int((remaining > room).nonzero()[0])
        raise ValueError(f"cannot keep {int(remaining[row])} visible tokens: only {int(room[row])} tokens "
                         f"in total (row {row})")
    if bool((remaining < 0).any()):
        raise ValueError(f"the number of visible tokens must be >= 0, got {remaining.min().item()}")
    counts = torch.zeros(B, M, dtype=torch.long, device=proportions.device)
    weights = proportions.double()
    for _ in range(M):
        if not bool((remaining > 0).any()):
            break
        active = counts < caps
        w = torch.where(active, weights, torch.zeros_like(weights))
        w_sum = w.sum(dim=1, keepdim=True)
        uniform = active.double() / active.double().sum(dim=1, keepdim=True).clamp_min(1)
        w = torch.where(w_sum > 0, w / w_sum.clamp_min(1e-300), uniform)
        share = w * remaining.unsqueeze(1).double()
        base = share.floor()
        short = remaining - base.sum(dim=1).long()  # (B,) units still to hand out: < number of active
        jitter = torch.rand(B, M, generator=generator, dtype=torch.float64, device=proportions.device)
        score = torch.where(active, share - base + 1e-9 * jitter, torch.full_like(share, -1.0))
        rank = score.argsort(dim=1, descending=True).argsort(dim=1)
        add = base.long() + (rank < short.unsqueeze(1)).long()
        add = torch.minimum(add, caps - counts)
        counts = counts + add
        remaining = remaining - add.sum(dim=1)
    if bool((remaining != 0).any()):  # pragma: no cover - guaranteed by construction
        raise RuntimeError("apportion failed to distribute every visible token")
    return counts


def select_tokens(
    counts: Tensor, num_tokens: int, generator: torch.Generator | None = None, valid: Tensor | None = None
) -> Tensor:
    """Mask ``(B, N)`` keeping ``counts`` ``(B,)`` tokens visible, chosen uniformly without replacement.

    ``valid`` ``(B, N)`` bool: only valid tokens are chosen (``counts`` must not exceed their number);
    the random calls are the same with or without it.
    """
    B = counts.shape[0]
    noise = torch.rand(B, num_tokens, generator=generator, device=counts.device)
    if valid is not None:
        noise = noise.masked_fill(~valid, 2.0)  # after every valid token in the order
    rank = noise.argsort(dim=1).argsort(dim=1)
    return rank >= counts.unsqueeze(1)


def sample_masks(
    num_tokens: Mapping[str, int],
    batch_size: int,
    num_visible: int,
    alpha: float | Sequence[float] = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> dict[str, Tensor]:
    """Random multi-modal masks: ``{name: (B, N_m) bool, True = masked}``.

    Each sample keeps exactly ``num_visible`` tokens in total; the per-modality budgets follow
    Dirichlet(alpha) proportions (rounded to integers that sum to ``num_visible`` and never exceed
    a modality's token count), and the visible tokens of a modality are drawn uniformly.
    """
    if not num_tokens:
        raise ValueError("sample_masks needs at least one modality")
    names = list(num_tokens)
    caps = torch.tensor([num_tokens[n] for n in names], dtype=torch.long, device=device)
    props = sample_proportions(batch_size, len(names), alpha, generator, device)
    counts = apportion(props, num_visible, caps, generator)
    return {n: select_tokens(counts[:, i], num_tokens[n], generator) for i, n in enumerate(names)}
