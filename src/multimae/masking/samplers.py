"""Mask samplers: objects that draw, per batch, which tokens the encoder sees and which are targets.

Shapes: B batch, N_m tokens of modality m.

Every sampler is called as ``sampler(num_tokens, batch_size, generator, valid)`` and returns a
`MaskDraw`: ``hidden[m]`` (B, N_m) bool, True = not given to the encoder, and ``target[m]``
(B, N_m) bool, True = predicted and counted (see `multimae.modalities.batch.ModalityBatch`).
``valid`` (optional, ``{m: (B, N_m) bool}``) marks the tokens that exist; samplers never spend a
budget on invalid tokens, always hide them and never make them targets. Masks live on the
generator's device (else ``valid``'s, else the CPU).

Here: `DirichletInputMasking` (MultiMAE), `FixedRatioMasking` (M3AE), `ExplicitMasking` (given
masks); 4M's `DirichletInputTargetMasking` is in `multimae.masking.input_target`.

The model treats an output whose modality is absent from ``target`` as fully predicted (MultiMAE:
an output whose source was not given is predicted everywhere).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from multimae.masking.dirichlet import apportion, sample_masks, sample_proportions, select_tokens


@dataclass
class MaskDraw:
    """``hidden``: ``{input modality: (B, N_m) bool}``, True = not encoded.
    ``target``: ``{modality: (B, N_m) bool}``, True = predicted and counted."""

    hidden: dict[str, Tensor]
    target: dict[str, Tensor]

    def rows(self, rows: slice, device: torch.device | str | None = None) -> MaskDraw:
        """The rows ``rows`` of every mask (a process's share of a global batch), on ``device``."""
        return MaskDraw({k: v[rows].to(device) for k, v in self.hidden.items()},
                        {k: v[rows].to(device) for k, v in self.target.items()})


class MaskSampler(Protocol):
    def __call__(
        self,
        num_tokens: Mapping[str, int],
        batch_size: int,
        generator: torch.Generator | None = None,
        valid: Mapping[str, Tensor] | None = None,
    ) -> MaskDraw: ...


def sampler_device(generator: torch.Generator | None, valid: Mapping[str, Tensor] | None) -> torch.device:
    """Where a sampler's masks live: the generator's device, else the ``valid`` masks', else the CPU."""
    if generator is not None:
        return generator.device
    if valid:
        return next(iter(valid.values())).device
    return torch.device("cpu")


def require_each(named: Iterable[str], wanted: Sequence[str], what: str, each: str = "modality",
                 outside: str = "not asked for") -> None:
    """A ValueError unless ``named`` holds each name of ``wanted`` and no other: ``"<what> names [...];
    it must name each <each> [...] (missing: [...]) (<outside>: [...])"``."""
    named = list(named)
    missing, unknown = [n for n in wanted if n not in named], sorted(set(named) - set(wanted))
    if missing or unknown:
        raise ValueError(f"{what} names {sorted(named)}; it must name each {each} {list(wanted)}"
                         + (f" (missing: {missing})" if missing else "")
                         + (f" ({outside}: {unknown})" if unknown else ""))


def full_valid(
    num_tokens: Mapping[str, int], batch_size: int, valid: Mapping[str, Tensor] | None, device: torch.device
) -> dict[str, Tensor]:
    """``{m: (B, N_m) bool}`` for every modality of ``num_tokens``: ``valid[m]`` where given, else all True.

    Raises ValueError when ``valid`` names a modality not in ``num_tokens`` or has the wrong shape or dtype.
    """
    if batch_size < 0:
        raise ValueError(f"batch_size must be >= 0, got {batch_size}")
    valid = valid or {}
    unknown = sorted(set(valid) - set(num_tokens))
    if unknown:
        raise ValueError(f"valid names {unknown}, which are not among the modalities {list(num_tokens)}")
    out = {}
    for name, n in num_tokens.items():
        v = valid.get(name)
        if v is None:
            out[name] = torch.ones(batch_size, n, dtype=torch.bool, device=device)
            continue
        if v.dtype != torch.bool or tuple(v.shape) != (batch_size, n):
            raise ValueError(f"valid[{name!r}] must be a (B, N) = {(batch_size, n)} bool tensor, "
                             f"got {v.dtype} {tuple(v.shape)}")
        out[name] = v.to(device)
    return out


@dataclass
class DirichletInputMasking:
    """MultiMAE (paper Sec. 3.3): each sample keeps ``num_visible`` input tokens in total, split over
    the inputs by Dirichlet(``alpha``) proportions; the targets are the hidden input tokens.

    ``alpha``: one concentration, or one per input in ``num_tokens`` order (`MaskingConfig.concentrations`).

    With invalid tokens a sample keeps min(``num_visible``, its valid tokens) visible, no modality
    gets more than its valid tokens, invalid tokens are hidden and never targets. With ``valid``
    None or all True the masks (and the random calls) are those of `sample_masks`.
    """

    num_visible: int
    alpha: float | Sequence[float] = 1.0

    def __post_init__(self) -> None:
        if self.num_visible < 0:
            raise ValueError(f"DirichletInputMasking: num_visible must be >= 0, got {self.num_visible}")

    def __call__(self, num_tokens: Mapping[str, int], batch_size: int,
                 generator: torch.Generator | None = None, valid: Mapping[str, Tensor] | None = None) -> MaskDraw:
        if not num_tokens:
            raise ValueError("DirichletInputMasking needs at least one modality")
        device = sampler_device(generator, valid)
        if valid is None or all(bool(v.all()) for v in valid.values()):
            if valid is not None:
                full_valid(num_tokens, batch_size, valid, device)  # shapes checked all the same
            hidden = sample_masks(num_tokens, batch_size, self.num_visible, self.alpha, generator, device)
            return MaskDraw(hidden, dict(hidden))
        masks = full_valid(num_tokens, batch_size, valid, device)
        names = list(num_tokens)
        caps = torch.stack([masks[n].sum(dim=1) for n in names], dim=1)  # (B, M) valid tokens
        total = caps.sum(dim=1).clamp_max(self.num_visible)  # (B,)
        props = sample_proportions(batch_size, len(names), self.alpha, generator, device)
        counts = apportion(props, total, caps, generator)  # (B, M)
        hidden = {n: select_tokens(counts[:, i], num_tokens[n], generator, masks[n]) | ~masks[n]
                  for i, n in enumerate(names)}
        return MaskDraw(hidden, {n: hidden[n] & masks[n] for n in names})


@dataclass
class FixedRatioMasking:
    """M3AE-style: per sample, ``round(ratio * N_valid)`` valid tokens of each named modality are hidden,
    chosen uniformly; the targets are the hidden valid tokens (M3AE: image 0.75, text 0.5 or 0.75).

    ``ratios``: ``{modality: fraction in [0, 1]}``. A modality of ``num_tokens`` not named is fully
    visible and has no target; ``round`` rounds halves to even, as Python's does.
    """

    ratios: Mapping[str, float]

    def __post_init__(self) -> None:
        for name, r in self.ratios.items():
            if not 0.0 <= r <= 1.0:  # NaN fails too
                raise ValueError(f"FixedRatioMasking: the ratio of {name!r} must be in [0, 1], got {r}")

    def __call__(self, num_tokens: Mapping[str, int], batch_size: int,
                 generator: torch.Generator | None = None, valid: Mapping[str, Tensor] | None = None) -> MaskDraw:
        unknown = sorted(set(self.ratios) - set(num_tokens))
        if unknown:
            raise ValueError(f"FixedRatioMasking: ratios name {unknown}, not among the modalities {list(num_tokens)}")
        device = sampler_device(generator, valid)
        masks = full_valid(num_tokens, batch_size, valid, device)
        hidden, target = {}, {}
        for name, n in num_tokens.items():
            ok = masks[name]
            if name not in self.ratios:
                hidden[name], target[name] = ~ok, torch.zeros_like(ok)
                continue
            num_hidden = torch.round(self.ratios[name] * ok.sum(dim=1).double()).long()  # (B,), halves to even
            visible = ~select_tokens(ok.sum(dim=1) - num_hidden, n, generator, ok)
            hidden[name] = ~visible
            target[name] = ok & ~visible
        return MaskDraw(hidden, target)


@dataclass
class ExplicitMasking:
    """Masks given by the caller (inference, generation, tests): ``hidden`` ``{m: (B, N_m) bool}`` for every
    modality the sampler is asked about, ``target`` ``{m: (B, N_m) bool}`` for the predicted ones.

    A call checks the masks against ``num_tokens`` and ``batch_size``; with ``valid`` the invalid
    tokens are hidden and dropped from the targets. The generator is not used.
    """

    hidden: Mapping[str, Tensor]
    target: Mapping[str, Tensor]

    def __post_init__(self) -> None:
        sizes = set()
        for kind, masks in (("hidden", self.hidden), ("target", self.target)):
            for name, m in masks.items():
                if m.dtype != torch.bool or m.dim() != 2:
                    raise ValueError(f"ExplicitMasking: {kind}[{name!r}] must be a (B, N) bool tensor, "
                                     f"got {m.dtype} {tuple(m.shape)}")
                sizes.add(m.shape[0])
        if len(sizes) > 1:
            raise ValueError(f"ExplicitMasking: the masks disagree on the batch size: {sorted(sizes)}")

    def __call__(self, num_tokens: Mapping[str, int], batch_size: int,
                 generator: torch.Generator | None = None, valid: Mapping[str, Tensor] | None = None) -> MaskDraw:
        require_each(self.hidden, list(num_tokens), "ExplicitMasking: hidden")
        for kind, masks in (("hidden", self.hidden), ("target", self.target)):
            for name, m in masks.items():
                n = num_tokens.get(name, m.shape[1])
                if tuple(m.shape) != (batch_size, n):
                    raise ValueError(f"ExplicitMasking: {kind}[{name!r}] has shape {tuple(m.shape)}, "
                                     f"expected (B, N) = {(batch_size, n)}")
        device = next(iter(self.hidden.values())).device if self.hidden else torch.device("cpu")
        masks = full_valid(num_tokens, batch_size, valid, device)
        hidden = {n: self.hidden[n] | ~masks[n] for n in num_tokens}
        target = {n: t & masks[n] if n in masks else t.clone() for n, t in self.target.items()}
        return MaskDraw(hidden, target)
