import math

import pytest
import torch

from multimae.masking import apportion, sample_gamma, sample_masks, sample_proportions

THREE = {"rgb": 196, "depth": 196, "semseg": 196}


def visible_counts(masks):
    return torch.stack([(~m).sum(dim=1) for m in masks.values()], dim=1)  # (B, M)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_counts_sum_to_the_total_and_respect_caps():
    masks = sample_masks(THREE, 2048, 98, 1.0, gen())
    counts = visible_counts(masks)
    assert (counts.sum(dim=1) == 98).all()
    assert all(m.dtype == torch.bool and m.shape == (2048, 196) for m in masks.values())
    # Small modalities saturate and their excess moves to the others.
    small = sample_masks({"a": 3, "b": 5, "c": 40}, 1000, 20, 0.2, gen(1))
    counts = visible_counts(small)
    assert (counts.sum(dim=1) == 20).all()
    assert (counts <= torch.tensor([3, 5, 40])).all()
    assert (counts[:, 0] == 3).any() and (counts[:, 1] == 5).any()


def test_mean_proportion_is_uniform_over_modalities():
    counts = visible_counts(sample_masks(THREE, 8192, 98, 1.0, gen(2))).float()
    share = counts.mean(dim=0) / 98
    torch.testing.assert_close(share, torch.full((3,), 1 / 3), atol=0.01, rtol=0)


def test_small_alpha_concentrates_and_infinite_alpha_splits_equally():
    def top_share(alpha):
        counts = visible_counts(sample_masks(THREE, 4096, 98, alpha, gen(3))).float()
        return (counts.max(dim=1).values / 98).mean().item()

    # E[max share] of Dirichlet(1, 1, 1) is 11/18; alpha -> 0 tends to 1, alpha -> inf to 1/3.
    assert abs(top_share(1.0) - 11 / 18) < 0.02
    assert top_share(0.1) > 0.85 and top_share(10.0) < 0.45
    equal = visible_counts(sample_masks(THREE, 64, 98, math.inf, gen(4)))
    assert ((equal == 32) | (equal == 33)).all() and (equal.sum(dim=1) == 98).all()
    # Which modality gets the extra tokens is random, not always the first ones.
    assert len({tuple(row.tolist()) for row in equal}) == 3


def test_dirichlet_sampler_matches_the_distribution():
    for alpha in (0.3, 1.0, 4.0):
        x = sample_gamma(torch.full((200_000,), alpha), gen(5))
        assert abs(x.mean().item() - alpha) < 0.02 * max(alpha, 1)
        assert abs(x.var().item() - alpha) < 0.05 * max(alpha, 1)
    p = sample_proportions(50_000, 3, 1.0, gen(6))
    torch.testing.assert_close(p.sum(dim=1), torch.ones(50_000))
    # Dirichlet(1,1,1) marginal is Beta(1, 2): P(p_0 < 0.5) = 0.75.
    assert abs((p[:, 0] < 0.5).float().mean().item() - 0.75) < 0.01


def test_tokens_are_chosen_uniformly_within_a_modality():
    masks = sample_masks({"a": 16, "b": 16}, 20_000, 8, 1.0, gen(7))
    visible_rate = (~masks["a"]).float().mean(dim=0)  # each position equally likely
    assert visible_rate.std() / visible_rate.mean() < 0.05


def test_seeded_determinism_and_per_modality_alpha():
    a = sample_masks(THREE, 4, 98, 1.0, gen(8))
    b = sample_masks(THREE, 4, 98, 1.0, gen(8))
    assert all(torch.equal(a[k], b[k]) for k in a)
    skewed = visible_counts(sample_masks(THREE, 4096, 98, [20.0, 1.0, 1.0], gen(9))).float().mean(dim=0)
    assert skewed[0] > 2 * skewed[1]


def test_apportion_edge_cases():
    props = torch.tensor([[1.0, 0.0, 0.0]])
    # Modality 0 saturates; its excess is split over the others (uniformly: they have no weight).
    assert apportion(props, 10, torch.tensor([4, 4, 4])).tolist() == [[4, 3, 3]]
    assert apportion(props, 12, torch.tensor([4, 4, 4])).tolist() == [[4, 4, 4]]
    with pytest.raises(ValueError, match="only 12 tokens"):
        apportion(props, 13, torch.tensor([4, 4, 4]))
    with pytest.raises(ValueError, match="concentrations must be > 0"):
        sample_masks(THREE, 2, 98, 0.0, gen())
