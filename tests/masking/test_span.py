"""4M's span masking of sequences, the (B, 2(T+1)) sequence layout, the unified masking of several
modalities and the transfer masking: hand-worked examples with scripted random numbers, properties
under a real generator, and the official 4M fixture (structural invariants of every recorded sample,
then an exact reproduction by replaying the official random streams)."""

from __future__ import annotations

import json
import random
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.distributions import Dirichlet

from multimae.masking import (
    BudgetDirichlet, DirichletInputTargetMasking, GeneratorDraws, SequenceMasking, SpanLayout, TransferMasking,
    UnifiedMasking, cut_target, fourm_sentinel_id, grid_masks, mask_sequence, official_masks, span_layout, span_mask,
    span_mask_within, spans_from_kept, teacher_forced_slots,
)
from multimae.masking.span import MAX_DECAYS

FOURM = Path(__file__).resolve().parents[3] / "shared" / "reference" / "fourm" / "golden"
needs_fixture = pytest.mark.skipif(not FOURM.exists(), reason="shared/reference/fourm is not beside the checkout")
PAD, EOS = 0, 3
S1, S2, S3, S4 = (fourm_sentinel_id(i) for i in range(1, 5))  # 5, 6, 7, 8


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


class Scripted:
    """`Draws` that hands out given numbers in order and fails on any draw it was not given."""

    def __init__(self, noise=(), uniform=(), coins=(), indices=()):
        self._noise = [torch.tensor(n, dtype=torch.float32) for n in noise]
        self._uniform, self._coins, self._indices = list(uniform), list(coins), list(indices)
        self.index_sizes: list[int] = []  # the n of every index(n) asked

    @staticmethod
    def _next(queue, what):
        assert queue, f"unexpected {what} draw"
        return queue.pop(0)

    def uniform(self):
        return self._next(self._uniform, "uniform")

    def coin(self):
        return self._next(self._coins, "coin")

    def noise(self, *shape):
        n = self._next(self._noise, "noise")
        assert tuple(n.shape) == shape
        return n

    def index(self, n):
        self.index_sizes.append(n)
        return self._next(self._indices, "index")

    def used_up(self):
        return not (self._noise or self._uniform or self._coins or self._indices)


# --- invariants of one masked row (used for the official tensors and ours) ----------------------------

def is_sentinel(t):
    return fourm_sentinel_id(0) <= t < fourm_sentinel_id(20)  # the fixture tokenizer has [S_0]..[S_19]


def groups(target):
    """[(sentinel number, ids after it until the next sentinel)] of a target (that starts at a sentinel)."""
    out = []
    for t in target:
        if is_sentinel(t):
            out.append((t - fourm_sentinel_id(0), []))
        else:
            out[-1][1].append(t)
    return out


def matches(pattern, seq):
    """Whether ``seq`` is the concatenation of ``pattern``: ("ids", [..]) exactly, or ("run", prefix): the
    prefix then any ids, at least one id in all."""
    @cache
    def go(k, i):
        if k == len(pattern):
            return i == len(seq)
        kind, ids = pattern[k]
        if seq[i:i + len(ids)] != ids:
            return False
        if kind == "ids":
            return go(k + 1, i + len(ids))
        return any(go(k + 1, e) for e in range(i + max(len(ids), 1), len(seq) + 1))
    return go(0, 0)


def check_span_row(ids, given, target, input_budget, target_budget, original):
    """Assert every structural property of one 4M sequence row; returns True if its target was cut."""
    S = len(ids)
    n_in, n_tgt = sum(given), sum(target)
    assert given == [i < n_in for i in range(S)], "the input is the prefix [0, n_in)"
    assert target == [input_budget <= i < input_budget + n_tgt for i in range(S)], "target at the budget offset"
    assert n_in <= input_budget and n_tgt <= target_budget
    assert all(t == PAD for t, g, m in zip(ids, given, target) if not g and not m), "PAD elsewhere"
    inp, tgt = ids[:n_in], ids[input_budget:input_budget + n_tgt]
    numbers = [t - fourm_sentinel_id(0) for t in inp if is_sentinel(t)]
    assert numbers == list(range(1, len(numbers) + 1)), "input sentinels are [S_1], [S_2], ... in order"
    runs = len(numbers) if input_budget else 1
    if input_budget == 0:
        assert n_in == 0
        inp = [S1]
    full = len(original) - (n_in - len(numbers) if input_budget else 0) + runs + 1  # dropped + sentinels
    assert n_tgt <= full
    parts = groups(tgt) if tgt else []
    assert all(n <= runs + 1 for n, _ in parts), "no sentinel past the closing one"
    if tgt:
        assert is_sentinel(tgt[0]), "a target starts at a sentinel"
        first = parts[0][0]
        assert [g[0] for g in parts] == list(range(first, first + len(parts))), "target sentinels in order"
    if n_tgt == full:  # not cut: [S_1] run_1 .. [S_k], and merging gives back the original
        assert [g[0] for g in parts] == list(range(1, runs + 2)) and parts[-1][1] == []
        assert numbers == [g[0] for g in parts][:len(numbers)]
        spans = dict(parts)
        merged = [t for x in inp for t in (spans[x - fourm_sentinel_id(0)] if is_sentinel(x) else [x])]
        assert merged == original
        return False
    known = {n: ("ids", ids_) for n, ids_ in parts[:-1]}  # complete runs; the last one may be cut short
    if parts and parts[-1][0] <= runs:
        known[parts[-1][0]] = ("run", parts[-1][1])
    elif parts:
        assert parts[-1][1] == [], "nothing follows the closing sentinel"
    pattern = [known.get(x - fourm_sentinel_id(0), ("run", [])) if is_sentinel(x) else ("ids", [x]) for x in inp]
    assert all(p[1] for p in known.values() if p[0] == "ids"), "a run is never empty"
    assert matches(pattern, original), "the cut target is a window of the full one"
    return True


def row_of(batch, b):
    return batch.data[b].tolist(), (~batch.hidden[b]).tolist(), batch.target[b].tolist()


# --- span masking of one sequence --------------------------------------------------------------------

def test_span_mask_of_eight_tokens_by_hand():
    ids = [40, 41, 42, 43, 44, 45, 46, EOS]
    u = torch.tensor([0.2, 0.7, 0.9, 0.5, 0.1, 0.6, 0.3, 0.8])  # kept iff u <= 0.5: 40, 43 (u == p), 44, 46
    out = span_mask(ids, 0.5, u)
    assert out.input == [40, S1, 43, 44, S2, 46, S3]
    assert out.target == [S1, 41, 42, S2, 45, S3, EOS, S4]
    assert out.sentinels == [0, 3, 5, 7]


def test_span_mask_extremes_and_sentinel_function():
    ids = [40, 41, EOS]
    assert span_mask(ids, 1.0, torch.tensor([0.0, 0.5, 0.99])) == ([40, 41, EOS], [S1], [0])
    assert span_mask(ids, 0.0, torch.tensor([0.1, 0.5, 0.99])) == ([S1], [S1, 40, 41, EOS, S2], [0, 4])
    assert span_mask([], 0.3, torch.zeros(0)) == ([], [S1], [0])
    shifted = span_mask(ids, 0.5, torch.tensor([0.9, 0.1, 0.9]), sentinel=lambda i: 1000 + i)
    assert shifted == ([1001, 41, 1002], [1001, 40, 1002, EOS, 1003], [0, 2, 4])
    g1, g2 = gen(3), gen(3)
    assert span_mask(ids, 0.5, generator=g1) == span_mask(ids, 0.5, torch.rand(3, generator=g2))
    with pytest.raises(ValueError, match=r"noise must have shape \(L,\) = \(3,\)"):
        span_mask(ids, 0.5, torch.zeros(4))


def test_keep_probability_decays_until_the_input_fits():
    ids = [40, 41, 42, 43, 44, 45, 46, EOS]
    draws = Scripted(noise=[[0.5] * 8,  # p = 1: everything kept, 8 > 3
                            [0.95, 0.1, 0.95, 0.1, 0.95, 0.1, 0.1, 0.1],  # p = 0.9: [S_1] 41 [S_2] 43 .. 7 > 3
                            [0.85, 0.85, 0.85, 0.85, 0.1, 0.85, 0.85, 0.85]])  # p = 0.81: [S_1] 44 [S_2]
    spans, p = span_mask_within(ids, 3, 1.0, draws)
    assert p == 1.0 * 0.9 * 0.9 and draws.used_up()
    assert spans.input == [S1, 44, S2] and spans.target == [S1, 40, 41, 42, 43, S2, 45, 46, EOS, S3]


def test_redraw_loop_terminates_even_if_noise_never_drops_a_token():
    class Zeros:  # u = 0 is kept at every p >= 0
        calls = 0

        def noise(self, *shape):
            self.calls += 1
            return torch.zeros(shape)

    draws = Zeros()
    spans, p = span_mask_within([40, 41, EOS], 1, 1.0, draws)
    expected = 1.0
    for _ in range(MAX_DECAYS):
        expected *= 0.9
    assert draws.calls == 1 + MAX_DECAYS and p == expected < 1e-45  # gave up: every token dropped instead
    assert spans.input == [S1] and spans.target == [S1, 40, 41, EOS, S2]


@pytest.mark.parametrize("keep", ["random", "all", "binary"])
def test_input_always_fits_its_budget_with_a_real_generator(keep):
    ids = list(range(40, 51)) + [EOS]
    g = gen(4)
    for budget in (1, 2, 3, 5, 8, 12):
        for _ in range(20):
            layout = mask_sequence(ids, budget, 14, keep, GeneratorDraws(g))
            assert 1 <= len(layout.input) <= budget
            row = layout.place(26, PAD)
            check_span_row(row[0].tolist(), row[1].tolist(), row[2].tolist(), budget, 14, ids)


def test_cut_target_keeps_budget_ids_from_the_picked_sentinel():
    spans = spans_from_kept([40, 41, 42, 43, 44, EOS], [False, True, False, False, True, False])
    assert spans.target == [S1, 40, S2, 42, 43, S3, EOS, S4] and spans.sentinels == [0, 2, 5, 7]
    draws = Scripted(indices=[1])
    assert cut_target(spans, 3, draws) == [S2, 42, 43]  # 3 ids from [S_2]: the closing sentinel is dropped
    assert draws.index_sizes == [3]  # one of the first 3 sentinels: never the closing one while others exist


def test_cut_target_falls_back_to_the_earliest_sentinel_whose_rest_fits():
    spans = spans_from_kept([40, 41, 42, 43, 44, EOS], [False, True, False, False, True, False])
    draws = Scripted(indices=[2])  # [S_3] leaves 3 ids, fewer than the budget 4 ...
    assert cut_target(spans, 4, draws) == [S3, EOS, S4]  # ... so the earliest sentinel with <= 4 left: [S_3]
    assert cut_target(spans, 6, Scripted(indices=[2])) == [S2, 42, 43, S3, EOS, S4]  # here [S_2]
    assert cut_target(spans, 8, Scripted()) == spans.target  # fits: unchanged, no draw
    single = spans_from_kept([40, EOS], [False, False])  # [S_1] 40 [EOS] [S_2]: only [S_1] can be picked
    one = Scripted(indices=[0])
    assert cut_target(single, 2, one) == [S1, 40] and one.index_sizes == [1]
    assert cut_target(single, 0, Scripted(indices=[0])) == []


def test_mask_sequence_places_input_at_zero_and_target_at_the_budget():
    ids = [40, 41, 42, 43, EOS]
    draws = Scripted(uniform=[0.5], noise=[[0.1, 0.9, 0.2, 0.3, 0.9]], indices=[0])  # input 40 [S_1] 42 43 [S_2]
    layout = mask_sequence(ids, 7, 4, "random", draws)
    assert layout == SpanLayout([40, S1, 42, 43, S2], [S1, 41, S2, EOS], 7, 0.5)
    batch = span_layout(torch.tensor([ids]), 8, torch.tensor([7]), torch.tensor([4]), "random",
                        Scripted(uniform=[0.5], noise=[[0.1, 0.9, 0.2, 0.3, 0.9]], indices=[0]))
    assert batch.data.shape == (1, 18)  # 2 * (max_tokens + 1)
    assert batch.data[0].tolist() == [40, S1, 42, 43, S2, PAD, PAD, S1, 41, S2, EOS] + [PAD] * 7
    given = [True] * 5 + [False] * 13
    target = [False] * 7 + [True] * 4 + [False] * 7
    assert (~batch.hidden[0]).tolist() == given and batch.target[0].tolist() == target
    assert batch.valid[0].tolist() == [g or t for g, t in zip(given, target)]
    assert batch.encoded[0].tolist() == given and batch.counted[0].tolist() == target
    # teacher forcing: slot p feeds id p, predicts id p + 1; counts iff both are targets
    assert teacher_forced_slots(batch.target)[0].nonzero().flatten().tolist() == [7, 8, 9]


def test_input_budget_zero_makes_everything_the_target_without_drawing():
    layout = mask_sequence([40, 41, EOS], 0, 12, "random", Scripted())
    assert layout == SpanLayout([], [S1, 40, 41, EOS, S2], 0, 0.0)


def test_keep_schemes_all_and_binary():
    ids = [40, 41, EOS]
    assert mask_sequence(ids, 5, 5, "all", Scripted(noise=[[0.9, 0.99, 0.5]])).input == ids  # p = 1
    kept = mask_sequence(ids, 5, 5, "binary", Scripted(coins=[True], noise=[[0.9, 0.99, 0.5]]))
    dropped = mask_sequence(ids, 5, 5, "binary", Scripted(coins=[False], noise=[[0.9, 0.99, 0.5]]))
    assert (kept.input, kept.target, kept.keep_prob) == (ids, [S1], 1.0)
    assert (dropped.input, dropped.target, dropped.keep_prob) == ([S1], [S1, 40, 41, EOS, S2], 0.0)
    with pytest.raises(ValueError, match="keep scheme must be one of"):
        mask_sequence(ids, 5, 5, "cosine", Scripted())


def test_span_layout_batch_cuts_long_rows_and_leaves_absent_rows_empty():
    ids = torch.tensor([[40, 41, 42, 43, 44, EOS], [PAD] * 6, [45, EOS, PAD, PAD, PAD, PAD]])
    draws = Scripted(noise=[[0.0] * 4, [0.0, 0.0]])  # 'all' keeps everything; the empty row draws nothing
    batch = span_layout(ids, 4, torch.tensor([4, 3, 2]), torch.tensor([1, 3, 1]), "all", draws)
    assert draws.used_up()
    assert batch.data.tolist() == [[40, 41, 42, 43, S1, 0, 0, 0, 0, 0],  # cut to 4 ids: [EOS] lost (as 4M)
                                   [0] * 10,
                                   [45, EOS, S1, 0, 0, 0, 0, 0, 0, 0]]
    assert not batch.valid[1].any() and not batch.present[1] and batch.present[[0, 2]].all()
    with pytest.raises(ValueError, match="input budgets must be <= max_tokens = 4"):
        span_layout(ids, 4, torch.tensor([5, 1, 1]), torch.tensor([1, 1, 1]))
    with pytest.raises(ValueError, match="one input budget, target budget and keep scheme per row"):
        span_layout(ids, 4, torch.tensor([1, 1]), torch.tensor([1, 1, 1]))


# --- grids and the unified masking -------------------------------------------------------------------

def test_grid_masks_rank_positions_by_the_permutation_itself():
    noise = torch.tensor([[0.3, 0.1, 0.4, 0.2]])  # argsort = [1, 3, 0, 2]: position i has rank argsort[i]
    everything = torch.ones(1, 4, dtype=torch.bool)
    given, target = grid_masks(noise, everything, torch.tensor([1]), torch.tensor([2]))
    assert given.tolist() == [[False, False, True, False]] and target.tolist() == [[True, False, False, True]]
    valid = torch.tensor([[True, True, False, True]])  # position 2 missing: the others keep their order
    given, target = grid_masks(noise, valid, torch.tensor([1]), torch.tensor([5]))
    assert given.tolist() == [[True, False, False, False]] and target.tolist() == [[False, True, False, True]]


def unified_records(B=48, seed=5):
    g = gen(seed)
    lengths = torch.randint(0, 9, (B,), generator=g)  # some samples lack the sequence
    seq = torch.randint(40, 90, (B, 10), generator=g)
    seq = torch.where(torch.arange(10) < lengths.unsqueeze(1), seq, PAD)
    seq[torch.arange(B), lengths] = torch.where(lengths > 0, EOS, PAD)  # ... each ends in [EOS]
    pixels_valid = torch.rand(B, 4, generator=g) < 0.7
    return {"first": (torch.randint(0, 64, (B, 16), generator=g), None),
            "text": (seq, None),
            "second": (torch.rand(B, 3, 8, 8, generator=g), pixels_valid)}


def test_unified_masking_respects_budgets_and_layouts():
    budgets = DirichletInputTargetMasking((4, 12), (4, 12), [BudgetDirichlet(1.0, 1.0)])
    masking = UnifiedMasking(budgets, {"text": SequenceMasking(6)})
    records = unified_records()
    out = masking(records, gen(7))
    g = gen(7)  # a call is: budgets from sample_budgets, then apply with the same generator
    names = list(records)
    component, inputs, targets = budgets.sample_budgets(masking.caps(records), names, g, [True, False, True])
    again = masking.apply(records, inputs, targets, GeneratorDraws(g), component)
    for n in names:
        for field in ("data", "valid", "hidden", "target"):
            assert torch.equal(getattr(out[n], field), getattr(again[n], field))
    for i, n in enumerate(names):
        if n == "text":
            continue
        given, target, valid = out[n].encoded, out[n].counted, out[n].valid
        assert not (given & target).any() and not ((given | target) & ~valid).any()
        assert torch.equal(given.sum(dim=1), inputs[:, i]) and torch.equal(target.sum(dim=1), targets[:, i])
        assert (inputs[:, i] + targets[:, i] <= valid.sum(dim=1)).all()  # a grid's target cap is what is left
    assert out["first"].data is records["first"][0] and out["second"].data.shape == (48, 3, 8, 8)
    text = out["text"]
    assert text.data.shape == (48, 14)
    ids = records["text"][0]
    cut = 0
    for b in range(48):
        original = ids[b][ids[b] != PAD].tolist()[:6]
        if not original:  # absent: no budget, no input, no target
            assert inputs[b, 1] == 0 and targets[b, 1] == 0 and not text.valid[b].any()
            continue
        cut += check_span_row(*row_of(text, b), int(inputs[b, 1]), int(targets[b, 1]), original)
    assert cut > 0  # some targets had to be cut
    present = inputs[:, 1] > 0
    assert (inputs[present, 1] + targets[present, 1] > 6).any()  # a sequence's target cap is T, not T - input


def test_unified_masking_keep_scheme_follows_the_mixture_component():
    budgets = DirichletInputTargetMasking((8, 12), (4, 8), [BudgetDirichlet(1.0, 1.0), BudgetDirichlet(1.0, 1.0)])
    masking = UnifiedMasking(budgets, {"text": SequenceMasking(8, keep=("all", "binary"))})
    records = unified_records(B=64, seed=8)
    g = gen(9)
    component, inputs, targets = budgets.sample_budgets(masking.caps(records), list(records), g, [True, False, True])
    text = masking.apply(records, inputs, targets, GeneratorDraws(g), component)["text"]
    ids = records["text"][0]
    seen = set()
    for b in range(64):
        original = ids[b][ids[b] != PAD].tolist()[:8]
        if not original or inputs[b, 1] < len(original):
            continue  # absent, or p was lowered
        given = text.data[b][text.encoded[b]].tolist()
        if component[b] == 0:
            assert given == original  # 'all': p = 1
        else:
            assert given in (original, [S1])  # 'binary': p = 1 or p = 0
        seen.add((int(component[b]), given == original))
    assert {(0, True), (1, True), (1, False)} <= seen
    with pytest.raises(ValueError, match="keep has 2 schemes, a sample drew component 2"):
        SequenceMasking(8, keep=("all", "binary")).schemes(torch.tensor([0, 2]))


def test_sample_budgets_reduce_target_cap():
    budgets = DirichletInputTargetMasking((10, 20), (10, 20), [BudgetDirichlet(1.0, 1.0)])
    caps = torch.tensor([[12, 16]]).expand(200, 2)
    default = budgets.sample_budgets(caps, ["s", "g"], gen(1))
    all_reduced = budgets.sample_budgets(caps, ["s", "g"], gen(1), [True, True])
    assert all(torch.equal(a, b) for a, b in zip(default, all_reduced))
    _, inputs, targets = budgets.sample_budgets(caps, ["s", "g"], gen(1), [False, True])
    assert (targets[:, 0] <= 12).all() and (targets[:, 0] > 12 - inputs[:, 0]).any()
    assert (inputs[:, 1] + targets[:, 1] <= 16).all()
    with pytest.raises(ValueError, match="one flag per modality"):
        budgets.sample_budgets(caps, ["s", "g"], gen(1), [True])


def test_unified_masking_rejects_bad_records():
    masking = UnifiedMasking(DirichletInputTargetMasking(4), {"text": SequenceMasking(6)})
    ids = torch.tensor([[40, EOS]])
    with pytest.raises(ValueError, match=r"sequences \['text'\] are not among the records"):
        masking({"grid": (torch.zeros(1, 4, dtype=torch.long), None)})
    with pytest.raises(ValueError, match="disagree on the batch size"):
        masking({"text": (ids, None), "grid": (torch.zeros(2, 4, dtype=torch.long), None)})
    with pytest.raises(ValueError, match="a grid without valid must be"):
        masking({"text": (ids, None), "grid": (torch.rand(1, 3, 8, 8), None)})
    with pytest.raises(ValueError, match="keep must be schemes among"):
        SequenceMasking(6, keep="cosine")


# --- transfer masking --------------------------------------------------------------------------------

def test_transfer_masking_layouts():
    masking = TransferMasking(["text_in", "grid_in"], ["text_out", "grid_out"],
                              {"text_in": SequenceMasking(4), "text_out": SequenceMasking(4)})
    ids = torch.tensor([[40, 41, EOS, PAD], [PAD] * 4])
    grid = torch.zeros(2, 3, dtype=torch.long)
    valid = torch.tensor([[True, False, True], [True, True, True]])
    out = masking({"text_in": (ids, None), "text_out": (ids, None), "grid_in": (grid, valid), "grid_out": (grid, valid)})
    assert out["text_in"].data[0].tolist() == [40, 41, EOS, 0, S1, 0, 0, 0, 0, 0]  # [S_1] at index T = 4
    assert out["text_in"].encoded[0].tolist() == [True] * 3 + [False] * 7
    assert out["text_in"].counted[0].tolist() == [False] * 4 + [True] + [False] * 5
    assert out["text_out"].data[0].tolist() == [0, 0, 0, 0, S1, 40, 41, EOS, S2, 0]
    assert not out["text_out"].encoded.any()
    assert out["text_out"].counted[0].tolist() == [False] * 4 + [True] * 5 + [False]
    assert not out["text_in"].valid[1].any() and not out["text_out"].valid[1].any()  # absent row: nothing
    assert torch.equal(out["grid_in"].encoded, valid) and not out["grid_in"].counted.any()
    assert torch.equal(out["grid_out"].counted, valid) and not out["grid_out"].encoded.any()
    with pytest.raises(ValueError, match=r"records \['other'\] are neither inputs nor targets"):
        masking({"other": (grid, None)})
    with pytest.raises(ValueError, match="both inputs and targets"):
        TransferMasking(["a"], ["a"])


# --- the official fixture ----------------------------------------------------------------------------

NAMES = ["caption", "rgb@64", "tok_depth@64", "tok_semseg@64"]  # the fixture's dict order
T = 12  # the caption's max_tokens in the fixture


def fixture():
    tokenizers = pytest.importorskip("tokenizers")
    spec = json.loads((FOURM / "SPEC.json").read_text())["config"]
    tok = tokenizers.Tokenizer.from_file(str(FOURM / "tokenizer.json"))

    def encode(text):  # as 4M: the pieces, [EOS], cut to max_tokens
        ids = tok.encode(text).ids
        assert 1 not in ids  # no [UNK]
        return (ids + [EOS])[:T]
    return spec, encode


def official_rows():
    """Every recorded official caption row: (ids, given, target, input budget, target budget, original)."""
    spec, encode = fixture()
    fx = load_file(str(FOURM / "fixture_masking.safetensors"))
    rows = []
    for s, text in enumerate(spec["masking"]["captions"]):
        rows.append((fx["unified.caption.tensor"][s], fx["unified.caption.input_mask"][s],
                     fx["unified.caption.target_mask"][s], int(fx["unified.input_budget"][s, 0]),
                     int(fx["unified.target_budget"][s, 0]), encode(text)))
    batch = load_file(str(FOURM / "inputs.safetensors"))  # the forward fixture's two batches
    for prefix, key in (("", "main"), ("edge.", "edge")):
        for s, text in enumerate(spec["captions"]):
            n_in, n_tgt = spec["budgets"][key][s]["caption"]
            rows.append((batch[f"{prefix}caption.tensor"][s], batch[f"{prefix}caption.input_mask"][s],
                         batch[f"{prefix}caption.target_mask"][s], n_in, n_tgt, encode(text)))
    return rows


@needs_fixture
def test_official_rows_and_ours_share_the_span_structure():
    rows = official_rows()
    assert len(rows) == 12
    official_cuts = []
    for ids, input_mask, target_mask, n_in, n_tgt, original in rows:
        official_cuts.append(check_span_row(ids.tolist(), (~input_mask).tolist(), (~target_mask).tolist(),
                                            n_in, n_tgt, original))
    assert 0 < sum(official_cuts) < len(rows)
    g = gen(11)
    originals = torch.tensor([r[5] + [PAD] * (T + 2 - len(r[5])) for r in rows])  # (12, 14)
    inputs, targets = torch.tensor([r[3] for r in rows]), torch.tensor([r[4] for r in rows])
    for _ in range(5):
        ours = span_layout(originals, T, inputs, targets, "random", GeneratorDraws(g))
        assert ours.data.shape == (12, 2 * (T + 1))
        for b, row in enumerate(rows):
            check_span_row(*row_of(ours, b), row[3], row[4], row[5])


class OfficialStreams:
    """`Draws` read from the official code's generators: Python's ``random`` (keep probabilities),
    numpy's legacy global generator (the sentinel pick) and torch's global generator (noise)."""

    def __init__(self, seed):
        self.py, self.np = random.Random(seed), np.random.RandomState(seed)

    def uniform(self):
        return self.py.uniform(0, 1)

    def coin(self):
        return self.py.choice([0.0, 1.0]) == 1.0

    def noise(self, *shape):
        return torch.rand(shape)

    def index(self, n):
        return int(self.np.randint(n))


def official_split(dirichlet, total, caps):
    """4M's budget split with the official draws (README §8 steps 3-5): floor(Dir * total), then each
    leftover token to the argmax of a fresh draw, then clamp (torch's global generator)."""
    budget = (dirichlet.sample() * total).floor().long()
    leftover = int(total - budget.sum())
    budget += torch.bincount(dirichlet.sample((leftover,)).argmax(dim=-1), minlength=len(caps))
    return torch.minimum(budget, caps)


def replay_records(caption, grids):
    ids = torch.tensor([caption + [PAD] * (16 - len(caption))])
    return {"caption": (ids, None), "rgb@64": (torch.zeros(1, 3, 64, 64), torch.ones(1, 64, dtype=torch.bool)),
            "tok_depth@64": (grids[0], None), "tok_semseg@64": (grids[1], None)}


def assert_same_as_official(ours, official, prefix, s):
    for name in NAMES:
        mine = official_masks(ours[name], sequence=name == "caption")
        for key, value in mine.items():
            assert torch.equal(value[0], official[f"{prefix}{name}.{key}"][s]), (s, name, key)
    assert torch.equal(ours["caption"].data[0].int(), official[f"{prefix}caption.tensor"][s])


@needs_fixture
def test_official_unified_masking_reproduced_exactly():
    """The 8 recorded calls, bit for bit: the official streams are replayed (python random, numpy and
    torch seeded with masking.seed; per call the component and the two totals from python random, the
    Dirichlet budgets from torch, then per modality in dict order the image noise or the caption's
    draws) and our `UnifiedMasking.apply` consumes them. One difference in the draws: for an input
    budget of 0 the official code still draws (and ignores) the caption's noise; ours draws nothing,
    so the replay draws it."""
    spec, encode = fixture()
    fx = load_file(str(FOURM / "fixture_masking.safetensors"))
    cfg = spec["masking"]
    alphas = {kind: torch.tensor([cfg["alphas"][n][kind] for n in NAMES]).T.clamp(min=1e-9)
              for kind in ("input_alphas", "target_alphas")}  # (components, modalities)
    caps = torch.tensor([T, 64, 64, 16])
    is_image = torch.tensor([False, True, True, True])
    masking = UnifiedMasking(DirichletInputTargetMasking(0), {"caption": SequenceMasking(T, keep=tuple(cfg["alphas"]["caption"]["keep"]))})
    draws = OfficialStreams(cfg["seed"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["seed"])
        for s, text in enumerate(cfg["captions"]):
            component = draws.py.randint(0, 1)
            num_input, num_target = draws.py.randint(*cfg["input_tokens_range"]), draws.py.randint(*cfg["target_tokens_range"])
            inputs = official_split(Dirichlet(alphas["input_alphas"][component]), num_input, caps)
            targets = official_split(Dirichlet(alphas["target_alphas"][component]), num_target,
                                     torch.where(is_image, caps - inputs, caps))
            assert torch.equal(inputs, fx["unified.input_budget"][s]) and torch.equal(targets, fx["unified.target_budget"][s])
            caption = encode(text)
            if inputs[0] == 0:
                torch.rand(len(caption))
            grids = (fx["raw.tok_depth"][s:s + 1], fx["raw.tok_semseg"][s:s + 1])
            ours = masking.apply(replay_records(caption, grids), inputs[None], targets[None], draws, torch.tensor([component]))
            assert_same_as_official(ours, fx, "unified.", s)


@needs_fixture
def test_official_forward_batches_masking_reproduced_exactly():
    """The model-input batches of the forward fixture (fixed budgets per sample): each sample masked
    with python random, numpy and torch seeded with seed_mask (or seed_edge_mask) + the sample index.
    That seeding is a reconstruction (SPEC names only the seeds); every tensor matching is its evidence."""
    spec, encode = fixture()
    batch = load_file(str(FOURM / "inputs.safetensors"))
    masking = UnifiedMasking(DirichletInputTargetMasking(0), {"caption": SequenceMasking(T)})
    for prefix, key, seed in (("", "main", spec["seed_mask"]), ("edge.", "edge", spec["seed_edge_mask"])):
        for s, text in enumerate(spec["captions"]):
            budgets = spec["budgets"][key][s]
            inputs = torch.tensor([[budgets[n][0] for n in NAMES]])
            targets = torch.tensor([[budgets[n][1] for n in NAMES]])
            caption = encode(text)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + s)
                if inputs[0, 0] == 0:
                    torch.rand(len(caption))  # drawn and ignored by the official code
                grids = (batch[f"{prefix}tok_depth@64.tensor"][s:s + 1], batch[f"{prefix}tok_semseg@64.tensor"][s:s + 1])
                ours = masking.apply(replay_records(caption, grids), inputs, targets, OfficialStreams(seed + s))
            assert_same_as_official(ours, batch, prefix, s)


@needs_fixture
def test_official_transfer_masking_reproduced_exactly():
    spec, encode = fixture()
    fx = load_file(str(FOURM / "fixture_masking.safetensors"))
    cfg = spec["masking"]["transfer"]
    masking = TransferMasking(cfg["input_modalities"], cfg["target_modalities"], {"caption": SequenceMasking(T)})
    records = replay_records(encode(spec["masking"]["captions"][1]),
                             (fx["raw.tok_depth"][1:2], fx["raw.tok_semseg"][1:2]))
    ours = masking(records)
    for name in NAMES:
        for key, value in official_masks(ours[name], sequence=name == "caption").items():
            assert torch.equal(value[0], fx[f"transfer.{name}.{key}"]), (name, key)
    assert torch.equal(ours["caption"].data[0].int(), fx["transfer.caption.tensor"])


# --- chunk masking (4M-21's metadata) -------------------------------------------------------------------

KEYS, VALUES = (30, 31, 32, 33), frozenset(range(100, 140))  # key ids, value ids (a tokenizer's coordinates)


def metadata_ids(rng):
    """key value [value] ... [EOS]: 4 keys, each with one or two values (distinct within the row), in order."""
    values, ids = rng.sample(sorted(VALUES), 2 * len(KEYS)), []
    for i, key in enumerate(KEYS):
        ids += [key, *values[2 * i : 2 * i + rng.choice([1, 2])]]
    return ids + [EOS]


def test_chunk_index_starts_a_chunk_at_every_key_and_at_eos():
    from multimae.masking.span import chunk_index, whole_chunks

    ids = [30, 100, 31, 101, 102, 32, 103, EOS]
    chunks = chunk_index(ids, VALUES, EOS)
    assert chunks == [0, 0, 1, 1, 1, 2, 2, 3]
    assert [whole_chunks(ids, chunks, t) for t in (8, 7, 6, 5, 4, 2, 1)] == [8, 7, 5, 5, 2, 2, 0]


@pytest.mark.parametrize("keep", ["random", "binary"])
def test_chunk_masking_gives_or_predicts_a_key_with_its_values(keep):
    """Over many draws: a key and its values are on the same side (given / predicted), [EOS] alone; the
    row keeps every span invariant of 4M's layout and, uncut, merges back to the original; both sides
    occur; one noise value is drawn per chunk."""
    from multimae.masking.span import chunk_index

    rng, g = random.Random(0), gen(3)
    B, T = 64, 16
    rows = [metadata_ids(rng) for _ in range(B)]
    ids = torch.full((B, T), PAD, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, :len(r)] = torch.tensor(r)
    inputs, targets = torch.randint(1, 10, (B,), generator=g), torch.full((B,), 2 * T)
    batch = span_layout(ids, T, inputs, targets, keep, GeneratorDraws(g), pad_id=PAD, chunk_values=VALUES, eos_id=EOS)
    split = 0
    for b, original in enumerate(rows):
        data, given, target = row_of(batch, b)
        assert not check_span_row(data, given, target, int(inputs[b]), 2 * T, original)
        chunks = chunk_index(original, VALUES, EOS)
        shown = [t for t, gv in zip(data, given) if gv and not is_sentinel(t)]  # the given ids, in order
        kept = [t in shown for t in original]  # ids are distinct within a row
        assert all(kept[i] == kept[j] for i in range(len(original)) for j in range(len(original))
                   if chunks[i] == chunks[j]), (original, shown)
        split += 0 < sum(kept) < len(original)
    assert split > 5  # rows given in part and predicted in part

    class Count(GeneratorDraws):
        sizes: list[int] = []

        def noise(self, n):
            self.sizes.append(n)
            return super().noise(n)

    counter = Count(gen(1))
    mask_sequence(rows[0], 4, 8, "random", counter, chunks=chunk_index(rows[0], VALUES, EOS))
    assert set(counter.sizes) == {len(KEYS) + 1}  # one value per chunk, [EOS] one


def test_chunked_sequences_need_their_tokenizer_and_must_be_sequences():
    from multimae.config.fourm import FourMMaskingConfig
    from multimae.modalities.registry import resolve_modalities
    from multimae.tasks.fourm import build_masking

    specs = resolve_modalities(["tok_depth", "metadata"], overrides={"tok_depth": {"num_channels": 10, "stride": 8}})
    with pytest.raises(ValueError, match="masking.chunked.metadata: chunks need the sequence tokenizer"):
        build_masking(FourMMaskingConfig(input_budget=4, target_budget=4, chunked=["metadata"]), specs)
    with pytest.raises(ValueError, match="masking.chunked: \\['tok_depth'\\] are not sequences"):
        build_masking(FourMMaskingConfig(input_budget=4, target_budget=4, chunked=["tok_depth"]), specs)


def test_merge_spans_undoes_span_masking():
    from multimae.masking.span import merge_spans, sentinel_numbers, spans_from_kept

    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        n = int(torch.randint(1, 12, (1,), generator=g))
        ids = torch.randint(300, 400, (n,), generator=g).tolist() + [3]  # words, then [EOS]
        kept = (torch.rand(n + 1, generator=g) < 0.5).tolist()
        masked = spans_from_kept(ids, kept)
        k = len(sentinel_numbers(masked.input, n + 2))
        assert merge_spans(masked.input, masked.target, k + 1) == ids
    # a span the target lacks is empty; ids past the last sentinel looked for are words
    assert merge_spans([300, 5, 301, 6], [5, 310, 311, 6], 2) == [300, 310, 311, 301]
    assert merge_spans([5], [5, 310, 8, 311], 2) == [310, 8, 311]
    assert sentinel_numbers([300, 6, 5, 301], 3) == [2, 1]
