"""Mask samplers: MultiMAE's Dirichlet inputs (valid-aware), M3AE's fixed ratios, 4M's input and target
budgets (checked against properties of the official 4M masking fixture), and explicit masks."""

import pytest
import torch
from safetensors.torch import load_file

from multimae.masking import (
    BudgetDirichlet, DirichletInputMasking, DirichletInputTargetMasking, ExplicitMasking, FixedRatioMasking,
    MaskDraw, sample_dirichlet, sample_masks, split_budget,
)

from conftest import SHARED

FOURM_MASKING = SHARED / "reference" / "fourm" / "golden" / "fixture_masking.safetensors"
THREE = {"rgb": 16, "depth": 16, "semseg": 8}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def random_valid(num_tokens, batch_size, seed, p=0.6, absent=("depth",)):
    """Each token valid with probability ``p``; the modalities in ``absent`` missing from every 4th sample."""
    g = gen(seed)
    valid = {n: torch.rand(batch_size, k, generator=g) < p for n, k in num_tokens.items()}
    for n in absent:
        valid[n][::4] = False
    return valid


def given(draw):
    return {n: ~h for n, h in draw.hidden.items()}


def counts(masks, names):
    return torch.stack([masks[n].sum(dim=1) for n in names], dim=1)  # (B, M)


# --- MultiMAE: DirichletInputMasking ---------------------------------------------------------------

@pytest.mark.parametrize("alpha", [1.0, [2.0, 0.5, 0.2], float("inf")])
def test_dirichlet_input_masking_is_sample_masks_when_every_token_is_valid(alpha):
    sampler = DirichletInputMasking(12, alpha)
    for valid in (None, {n: torch.ones(5, k, dtype=torch.bool) for n, k in THREE.items()}):
        g1, g2 = gen(3), gen(3)
        draw = sampler(THREE, 5, g1, valid)
        expected = sample_masks(THREE, 5, 12, alpha, g2)
        assert list(draw.hidden) == list(THREE)
        for n in THREE:
            assert torch.equal(draw.hidden[n], expected[n]) and torch.equal(draw.target[n], expected[n])
        assert torch.equal(g1.get_state(), g2.get_state())  # the same random calls, so later draws agree too


def test_dirichlet_input_masking_spends_no_budget_on_invalid_tokens():
    B, num_visible = 256, 14
    valid = random_valid(THREE, B, seed=1)
    draw = DirichletInputMasking(num_visible, 1.0)(THREE, B, gen(2), valid)
    shown = given(draw)
    names = list(THREE)
    for n in names:
        assert not (shown[n] & ~valid[n]).any()  # invalid tokens are never given
        assert torch.equal(draw.target[n], draw.hidden[n] & valid[n])  # and never targets
    total_valid = counts(valid, names).sum(dim=1)
    assert torch.equal(counts(shown, names).sum(dim=1), total_valid.clamp_max(num_visible))
    assert (total_valid < num_visible).any() and (total_valid > num_visible).any()  # both cases occur
    assert (counts(shown, names)[::4, 1] == 0).all()  # depth is absent there: its share went elsewhere
    assert (counts(shown, names)[::4].sum(dim=1) == counts(valid, names)[::4].sum(dim=1).clamp_max(num_visible)).all()


def test_dirichlet_input_masking_checks_valid():
    sampler = DirichletInputMasking(4)
    with pytest.raises(ValueError, match=r"valid\['rgb'\] must be a \(B, N\) = \(2, 16\) bool tensor"):
        sampler(THREE, 2, gen(), {"rgb": torch.ones(2, 15, dtype=torch.bool)})
    with pytest.raises(ValueError, match="valid names \\['normals'\\]"):
        sampler(THREE, 2, gen(), {"normals": torch.ones(2, 16, dtype=torch.bool)})
    with pytest.raises(ValueError, match="num_visible must be >= 0"):
        DirichletInputMasking(-1)


# --- M3AE: FixedRatioMasking -------------------------------------------------------------------------

def test_fixed_ratio_hides_exactly_round_ratio_times_the_valid_tokens():
    B = 512
    num_tokens = {"rgb": 16, "caption": 12, "depth": 16}
    valid = random_valid(num_tokens, B, seed=4, p=0.7, absent=("caption",))
    valid["rgb"][:] = True
    draw = FixedRatioMasking({"rgb": 0.75, "caption": 0.5})(num_tokens, B, gen(5), valid)
    n_valid = {n: valid[n].sum(dim=1) for n in num_tokens}
    assert ((draw.hidden["rgb"]).sum(dim=1) == 12).all()
    expected = torch.round(0.5 * n_valid["caption"].double()).long()  # halves to even: 5 valid -> 2 hidden
    assert torch.equal((draw.hidden["caption"] & valid["caption"]).sum(dim=1), expected)
    for n in ("rgb", "caption"):
        assert torch.equal(draw.target[n], draw.hidden[n] & valid[n])
        assert not (~draw.hidden[n] & ~valid[n]).any()
    # depth is not named: every valid token given, none predicted
    assert torch.equal(~draw.hidden["depth"], valid["depth"]) and not draw.target["depth"].any()
    # uniform: every rgb position is hidden about 3/4 of the time
    freq = draw.hidden["rgb"].float().mean(dim=0)
    assert ((freq - 0.75).abs() < 0.08).all()


def test_fixed_ratio_rejects_bad_ratios_and_names():
    with pytest.raises(ValueError, match="ratio of 'rgb' must be in \\[0, 1\\]"):
        FixedRatioMasking({"rgb": 1.5})
    with pytest.raises(ValueError, match="ratios name \\['rbg'\\]"):
        FixedRatioMasking({"rbg": 0.5})(THREE, 2, gen())
    edge = FixedRatioMasking({"rgb": 0.0, "depth": 1.0})(THREE, 3, gen())
    assert not edge.hidden["rgb"].any() and edge.hidden["depth"].all() and edge.target["depth"].all()


# --- 4M: DirichletInputTargetMasking -----------------------------------------------------------------

FOUR = {"caption": 12, "rgb": 64, "depth": 64, "semseg": 16}


def test_split_budget_follows_4m():
    g = gen(6)
    B = 2000
    alpha = torch.tensor([[0.5, 1e-9, 0.5, 0.5]], dtype=torch.float64).expand(B, 4)
    big = torch.full((B, 4), 1000)
    total = torch.randint(24, 41, (B,), generator=g)
    budget = split_budget(total, alpha, big, g)
    assert torch.equal(budget.sum(dim=1), total)  # floor + leftovers one by one: the total exactly
    assert (budget[:, 1] == 0).all()  # leftovers go to the argmax of fresh draws: never to alpha ~ 0
    caps = torch.tensor([12, 64, 64, 16]).expand(B, 4)
    clamped = split_budget(total, alpha, caps, g)
    assert (clamped <= caps).all()
    assert (clamped.sum(dim=1) < total).any()  # clamping discards, nothing is redistributed


def test_sample_dirichlet_handles_tiny_concentrations():
    g = gen(7)
    tiny = sample_dirichlet(torch.full((1000, 3), 1e-9, dtype=torch.float64), g)
    assert torch.allclose(tiny.sum(dim=1), torch.ones(1000, dtype=torch.float64))
    assert (tiny.max(dim=1).values > 1 - 1e-6).all()  # one-hot, as the limit is, not 0 / 0
    picked = tiny.argmax(dim=1).bincount(minlength=3)
    assert (picked > 250).all()  # each vertex about a third of the time
    mean = sample_dirichlet(torch.tensor([[4.0, 2.0, 2.0]]).expand(20_000, 3), g).mean(dim=0)
    assert torch.allclose(mean, torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64), atol=0.01)
    with pytest.raises(ValueError, match="must be > 0"):
        sample_dirichlet(torch.tensor([1.0, 0.0]), g)


def test_input_target_masking_disjoint_and_within_budgets():
    B = 512
    sampler = DirichletInputTargetMasking((8, 24), (4, 20), [BudgetDirichlet(1.0, 0.5)])
    valid = random_valid(FOUR, B, seed=8)
    names = list(FOUR)
    caps = counts(valid, names)
    _, inputs, targets = sampler.sample_budgets(caps, names, gen(9))
    draw = sampler(FOUR, B, gen(9), valid)
    shown = given(draw)
    for n in names:
        assert not (shown[n] & draw.target[n]).any()  # disjoint
        assert not (shown[n] & ~valid[n]).any() and not (draw.target[n] & ~valid[n]).any()
    assert torch.equal(counts(shown, names), inputs)  # the budgets are what the masks hold
    assert torch.equal(counts(draw.target, names), targets)
    assert (inputs <= caps).all() and (inputs + targets <= caps).all()
    assert (inputs.sum(dim=1) <= 24).all() and (targets.sum(dim=1) <= 20).all()
    uncut = (inputs < caps).all(dim=1)  # no cap bound on these rows: the drawn total is kept
    assert uncut.float().mean() > 0.5 and (inputs.sum(dim=1)[uncut] >= 8).all()
    neither = sum((~shown[n] & ~draw.target[n] & valid[n]).sum() for n in names)
    assert neither > 0  # valid positions that are neither given nor predicted exist


def test_input_target_masking_fixed_budgets_and_all_remaining_targets():
    sampler = DirichletInputTargetMasking(10, None)
    draw = sampler(FOUR, 64, gen(10))
    shown = given(draw)
    assert (counts(shown, list(FOUR)).sum(dim=1) == 10).all()
    for n in FOUR:
        assert torch.equal(draw.target[n], ~shown[n])  # target_budget None: every token not given


def test_input_target_masking_mixture_uses_every_component_by_weight():
    sampler = DirichletInputTargetMasking(
        (24, 40), (24, 40),
        [BudgetDirichlet({"caption": 0, "rgb": 1000, "depth": 0, "semseg": 0}, {"caption": 0.5, "rgb": 0, "depth": 0.5, "semseg": 0.5}),
         BudgetDirichlet(0.5, {"caption": 0.5, "rgb": 0, "depth": 0.5, "semseg": 0.5})],
        weights=[1.0, 3.0])
    names = list(FOUR)
    caps = torch.tensor([FOUR[n] for n in names]).expand(2000, 4)
    component, inputs, targets = sampler.sample_budgets(caps, names, gen(11))
    share = (component == 1).float().mean()
    assert 0.7 < share < 0.8  # weights 1 : 3
    first = component == 0
    assert torch.equal(inputs[first, 1], inputs[first].sum(dim=1))  # alpha 1000 vs 0: all input in rgb
    assert (inputs[~first, 1] < inputs[~first].sum(dim=1)).any()
    assert (targets[:, 1] == 0).all()  # target alpha 0 for rgb: never a target


def test_input_target_masking_is_reproducible():
    sampler = DirichletInputTargetMasking((4, 30), (4, 30), [BudgetDirichlet(0.5, 0.5), BudgetDirichlet(2.0, 0.2)])
    a, b, c = (sampler(FOUR, 8, gen(s)) for s in (12, 12, 13))
    assert all(torch.equal(a.hidden[n], b.hidden[n]) and torch.equal(a.target[n], b.target[n]) for n in FOUR)
    assert any(not torch.equal(a.hidden[n], c.hidden[n]) for n in FOUR)


def test_input_target_masking_per_modality_alpha():
    names = list(THREE)
    caps = torch.tensor([THREE[n] for n in names]).expand(1000, 3)
    flat = DirichletInputTargetMasking(12, 12, [BudgetDirichlet(1.0, 1.0)])
    skew = DirichletInputTargetMasking(12, 12, [BudgetDirichlet({"rgb": 1.0, "depth": 1.0, "semseg": 1e-6},
                                                                {"rgb": 50.0, "depth": 1e-6, "semseg": 1e-6})])
    _, flat_in, flat_tgt = flat.sample_budgets(caps, names, gen(14))
    _, skew_in, skew_tgt = skew.sample_budgets(caps, names, gen(14))
    assert flat_in[:, 2].float().mean() > 2 and (flat_tgt[:, 1:] > 0).any()
    assert (skew_in[:, 2] == 0).mean(dtype=torch.float) > 0.99  # tiny alpha: (almost) never given
    assert torch.equal(skew_tgt[:, 0], (16 - skew_in[:, 0]).clamp_max(12))  # targets concentrate in rgb
    assert (skew_tgt[:, 1:] == 0).float().mean() > 0.99


def test_input_target_masking_min_tokens_redraws_short_splits():
    names = list(THREE)
    caps = torch.tensor([[16, 16, 8]] * 500 + [[16, 1, 8]] * 12)  # the last rows: depth can hold 1 token only
    plain = DirichletInputTargetMasking(24, None, [BudgetDirichlet(0.2)])
    picky = DirichletInputTargetMasking(24, None, [BudgetDirichlet(0.2)], min_tokens=3)
    _, short, _ = plain.sample_budgets(caps, names, gen(17))
    _, inputs, _ = picky.sample_budgets(caps, names, gen(17))
    assert (short < 3).any()  # alpha 0.2: without redraws some modality often gets < 3
    assert (inputs >= caps.clamp_max(3)).all()  # every modality gets min(3, its cap)
    assert (inputs.sum(dim=1) <= 24).all() and (inputs <= caps).all()


def test_min_tokens_per_modality_holds_only_for_the_modalities_named():
    names = list(THREE)
    caps = torch.tensor([[16, 16, 8]] * 500)
    picky = DirichletInputTargetMasking(24, 12, [BudgetDirichlet(0.2, 0.2)], min_tokens={"semseg": 3})
    _, inputs, targets = picky.sample_budgets(caps, names, gen(19))
    assert (inputs[:, 2] >= 3).all()
    assert (targets[:, 2] >= (8 - inputs[:, 2]).clamp_max(3)).all()  # the target: what the inputs leave, up to 3
    assert (inputs[:, :2] < 3).any() and (targets[:, :2] < 3).any()  # rgb and depth: no floor
    with pytest.raises(ValueError, match="min_tokens must be >= 0"):
        DirichletInputTargetMasking(4, min_tokens={"rgb": -1})


def test_a_grids_max_tokens_caps_what_it_gives_and_predicts():
    from multimae.masking import UnifiedMasking

    masking = UnifiedMasking(DirichletInputTargetMasking(20, 20, [BudgetDirichlet(1.0, 1.0)]),
                             grid_max_tokens={"depth": 5})
    records = {n: (torch.zeros(300, k, dtype=torch.long), None) for n, k in THREE.items()}
    out = masking(records, gen(21))
    used = {n: (~b.hidden).sum(dim=1) + b.target.sum(dim=1) for n, b in out.items()}
    assert (used["depth"] <= 5).all() and (used["depth"] == 5).any()
    assert (used["rgb"] > 5).any()  # the others as before
    with pytest.raises(ValueError, match=r"grid_max_tokens names sequences \[\] or values < 1 \{'depth': 0\}"):
        UnifiedMasking(DirichletInputTargetMasking(4), grid_max_tokens={"depth": 0})


def test_input_target_masking_rejects_bad_settings():
    with pytest.raises(ValueError, match="input_budget must be n >= 0 or \\(min, max\\)"):
        DirichletInputTargetMasking((10, 5))
    with pytest.raises(ValueError, match="weights must be 2 numbers"):
        DirichletInputTargetMasking(4, None, [BudgetDirichlet(), BudgetDirichlet()], weights=[1.0])
    with pytest.raises(ValueError, match="min_tokens must be >= 0"):
        DirichletInputTargetMasking(4, min_tokens=-1)
    with pytest.raises(ValueError, match="input_alpha\\['rgb'\\] must be a finite number >= 0"):
        BudgetDirichlet({"rgb": -1.0})
    sampler = DirichletInputTargetMasking(4, 4, [BudgetDirichlet({"rgb": 1.0, "depth": 1.0})])
    with pytest.raises(ValueError, match="missing: \\['semseg'\\]"):
        sampler(THREE, 2, gen())


@pytest.mark.skipif(not FOURM_MASKING.exists(), reason="shared/reference/fourm is not beside the checkout")
def test_4m_fixture_properties_hold_for_ours():
    """The official fixture (a mixture of two Dirichlets, budgets drawn in [24, 40]) and our sampler with
    the same settings share its properties (the random streams differ: see the module docstring)."""
    fx = load_file(str(FOURM_MASKING))
    official = {"caption": "caption", "rgb": "rgb@64", "depth": "tok_depth@64", "semseg": "tok_semseg@64"}
    inputs, targets = fx["unified.input_budget"], fx["unified.target_budget"]  # (8, 4) in FOUR's order
    assert ((inputs.sum(dim=1) >= 24) & (inputs.sum(dim=1) <= 40)).all()
    assert (targets.sum(dim=1) < 24).any()  # clamping discarded tokens (a sample's targets sum to 13)
    assert (targets[:, 1] == 0).all()  # rgb's target alpha is 0 in both components
    rgb_only = inputs[:, 1] == inputs.sum(dim=1)  # component with input alpha 1000 for rgb, 0 elsewhere
    assert 0 < int(rgb_only.sum()) < 8  # both components were used
    for i, name in enumerate(FOUR):
        if name == "caption":
            continue  # a sequence: span masking, not positions (and its target cap is not reduced by the input)
        given_mask = ~fx[f"unified.{official[name]}.input_mask"]
        target_mask = ~fx[f"unified.{official[name]}.target_mask"]
        assert not (given_mask & target_mask).any()
        assert torch.equal(given_mask.sum(dim=1), inputs[:, i]) and torch.equal(target_mask.sum(dim=1), targets[:, i])
        assert (inputs[:, i] + targets[:, i] <= FOUR[name]).all()  # images: target cap = max - input
    assert (inputs[:, 3] + targets[:, 3] == FOUR["semseg"]).any()  # ... and it binds

    ours = DirichletInputTargetMasking((24, 40), (24, 40), [
        BudgetDirichlet({"caption": 0, "rgb": 1000, "depth": 0, "semseg": 0}, {"caption": 0.5, "rgb": 0, "depth": 0.5, "semseg": 0.5}),
        BudgetDirichlet(0.5, {"caption": 0.5, "rgb": 0, "depth": 0.5, "semseg": 0.5})])
    names = list(FOUR)
    caps = torch.tensor([FOUR[n] for n in names]).expand(400, 4)
    component, our_in, our_tgt = ours.sample_budgets(caps, names, gen(15))
    uncut = (our_in < caps).all(dim=1)  # no cap bound: the drawn input total is kept
    assert ((our_in.sum(dim=1) >= 24) | ~uncut).all() and (our_in.sum(dim=1) <= 40).all()
    assert (our_tgt.sum(dim=1) < 24).any() and (our_tgt[:, 1] == 0).all()
    ours_rgb_only = our_in[:, 1] == our_in.sum(dim=1)
    assert ours_rgb_only[component == 0].all() and not ours_rgb_only[component == 1].all()  # as in the fixture
    assert (our_in + our_tgt <= caps).all() and (our_in[:, 3] + our_tgt[:, 3] == 16).any()


# --- ExplicitMasking ---------------------------------------------------------------------------------

def test_explicit_masking_returns_its_masks_and_applies_valid():
    hidden = {n: torch.rand(3, k, generator=gen(16)) < 0.5 for n, k in THREE.items()}
    target = {"rgb": ~hidden["rgb"], "norm_rgb": torch.ones(3, 16, dtype=torch.bool)}  # an output-only modality
    sampler = ExplicitMasking(hidden, target)
    draw = sampler(THREE, 3)
    assert isinstance(draw, MaskDraw)
    assert all(torch.equal(draw.hidden[n], hidden[n]) for n in THREE)
    assert set(draw.target) == {"rgb", "norm_rgb"} and torch.equal(draw.target["rgb"], ~hidden["rgb"])
    valid = {"rgb": torch.zeros(3, 16, dtype=torch.bool)}
    cut = sampler(THREE, 3, None, valid)
    assert cut.hidden["rgb"].all() and not cut.target["rgb"].any()


def test_explicit_masking_validation():
    ok = {n: torch.zeros(2, k, dtype=torch.bool) for n, k in THREE.items()}
    with pytest.raises(ValueError, match="missing: \\['semseg'\\]"):
        ExplicitMasking({k: v for k, v in ok.items() if k != "semseg"}, {})(THREE, 2)
    with pytest.raises(ValueError, match="not asked for: \\['normals'\\]"):
        ExplicitMasking({**ok, "normals": torch.zeros(2, 4, dtype=torch.bool)}, {})(THREE, 2)
    with pytest.raises(ValueError, match="hidden\\['rgb'\\] has shape \\(2, 16\\), expected \\(B, N\\) = \\(4, 16\\)"):
        ExplicitMasking(ok, {})(THREE, 4)
    with pytest.raises(ValueError, match="target\\['depth'\\] has shape \\(2, 15\\)"):
        ExplicitMasking(ok, {"depth": torch.zeros(2, 15, dtype=torch.bool)})(THREE, 2)
    with pytest.raises(ValueError, match="must be a \\(B, N\\) bool tensor, got torch.float32"):
        ExplicitMasking({**ok, "rgb": torch.zeros(2, 16)}, {})
    with pytest.raises(ValueError, match="disagree on the batch size: \\[2, 3\\]"):
        ExplicitMasking({**ok, "rgb": torch.zeros(3, 16, dtype=torch.bool)}, {})
