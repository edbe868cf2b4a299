"""Condition dropout in 4M's masking: off draws nothing; on, a withdrawn grid gives nothing, a withdrawn
sequence its opening sentinel alone, targets never change, and the rate is honoured."""

from __future__ import annotations

import pytest
import torch

from multimae.config.fourm import FourMMaskingConfig
from multimae.masking import BudgetDirichlet, DirichletInputTargetMasking, SequenceMasking, UnifiedMasking
from multimae.masking.condition_dropout import drop_conditions
from multimae.masking.span import fourm_sentinel_id

B, N, T = 64, 16, 6


def records():
    g = torch.Generator().manual_seed(0)
    caption = torch.randint(24, 40, (B, T), generator=g)
    caption[:, -1] = 3
    return {"grid": (torch.randint(0, 10, (B, N), generator=g), None), "seq": (caption, None)}


def masking(rate: float) -> UnifiedMasking:
    budgets = DirichletInputTargetMasking((8, 12), (8, 12), [BudgetDirichlet(1.0, 1.0)])
    return UnifiedMasking(budgets, {"seq": SequenceMasking(T)}, condition_dropout=rate)


def test_off_is_the_masking_without_it_and_draws_nothing():
    a, b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    plain = masking(0.0)(records(), a)
    budgets = masking(0.0).budgets
    again = UnifiedMasking(budgets, {"seq": SequenceMasking(T)})(records(), b)
    for name in plain:
        assert torch.equal(plain[name].hidden, again[name].hidden) and torch.equal(plain[name].data, again[name].data)
    assert torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b))


def test_withdrawn_modalities_give_nothing_but_the_opening_sentinel_and_keep_their_targets():
    base = masking(0.0)(records(), torch.Generator().manual_seed(5))
    out = drop_conditions(base, 1.0, torch.Generator().manual_seed(1), sequences={"seq"})
    assert not bool(out["grid"].encoded.any())
    seq = out["seq"]
    had = base["seq"].encoded.any(dim=1)
    assert torch.equal(seq.encoded.sum(dim=1), had.long())
    assert bool((seq.data[had, 0] == fourm_sentinel_id(1)).all())
    for name in out:
        assert torch.equal(out[name].counted, base[name].counted)


def test_the_rate_is_honoured_per_sample_and_modality():
    out = masking(0.5)(records(), torch.Generator().manual_seed(7))
    dropped = (~out["grid"].encoded.any(dim=1)).float().mean()
    assert 0.3 < float(dropped) < 0.7
    with pytest.raises(ValueError, match="condition_dropout"):
        FourMMaskingConfig(condition_dropout=1.0).validate()


def test_the_run_config_reaches_the_masking():
    from multimae.tasks.fourm import build_masking
    from multimae.modalities.registry import resolve_modalities

    specs = resolve_modalities(["tok_depth", "caption"], {}, {})
    assert build_masking(FourMMaskingConfig(input_budget=4, target_budget=4, condition_dropout=0.2),
                         specs).condition_dropout == 0.2
