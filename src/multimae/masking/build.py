"""`build_mask_sampler`: the `MaskSampler` a `MaskingConfig` describes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from multimae.masking.input_target import BudgetDirichlet, DirichletInputTargetMasking
from multimae.masking.samplers import DirichletInputMasking, FixedRatioMasking, MaskSampler

if TYPE_CHECKING:  # the config package imports the model, which imports masking: no import at run time
    from multimae.config.schema import MaskingConfig


def build_mask_sampler(cfg: MaskingConfig, inputs: Sequence[str]) -> MaskSampler:
    """The sampler of ``cfg.sampler`` for the input modalities ``inputs`` (in the order the model uses).

    dirichlet: `DirichletInputMasking` (num_visible, alpha); fixed_ratio: `FixedRatioMasking` (ratios,
    each naming an input); input_target: `DirichletInputTargetMasking` (input_budget or num_visible,
    target_budget, mixture or the one component (alpha, target_alpha), min_tokens).
    """
    cfg.validate()
    if cfg.sampler == "dirichlet":
        return DirichletInputMasking(cfg.num_visible, cfg.concentrations(inputs))
    if cfg.sampler == "fixed_ratio":
        unknown = sorted(set(cfg.ratios) - set(inputs))
        if unknown:
            raise ValueError(f"masking.ratios names {unknown}, which are not inputs {list(inputs)}")
        return FixedRatioMasking(dict(cfg.ratios))
    if cfg.sampler == "input_target":
        mixture = cfg.mixture or None
        components = ([BudgetDirichlet(c.alpha, c.target_alpha) for c in mixture] if mixture
                      else [BudgetDirichlet(cfg.alpha, cfg.target_alpha)])
        weights = [c.weight for c in mixture] if mixture and any(c.weight != 1.0 for c in mixture) else None
        budget = cfg.num_visible if cfg.input_budget is None else cfg.input_budget
        return DirichletInputTargetMasking(budget, cfg.target_budget, components, weights, cfg.min_tokens)
    raise ValueError(f"masking.sampler={cfg.sampler!r} is not a sampler")  # validate() catches it first
