"""In-painting on a tiny random 4M model: kept tokens never change, every regenerated position is decoded
exactly once over a schedule of the regenerated positions alone, all-keep generates nothing, keep-nothing is
plain generation, temperature 0 is deterministic, the pixel -> token rule, errors; a sequence's spans are
decoded up to its closing sentinel and merged around its given ids."""

from __future__ import annotations

import pytest
import torch

from multimae.generation import (
    TargetSchedule, autoregressive_step, condition, cosine_token_counts, generate, generate_steps, inpaint_sequence,
    inpaint_target, keep_from_pixels, linear_token_counts,
)
from multimae.generation.autoregressive import Row, merged
from multimae.model.fourm import FourM, fourm_config

B, N = 3, 16  # 32 px, 8 px patches: 4 x 4 token grids


def tiny(inputs, outputs, seed=0) -> FourM:
    torch.manual_seed(seed)
    overrides = {"tok_depth": {"num_channels": 16}, "tok_semseg": {"num_channels": 12},
                 "caption": {"num_channels": 30, "max_length": 16}}
    cfg = fourm_config("tiny", dim=32, num_heads=2, encoder_depth=2, decoder_depth=2, image_size=32, patch_size=8,
                       inputs=inputs, outputs=outputs,
                       modality_overrides={n: o for n, o in overrides.items() if n in (*inputs, *outputs)})
    return FourM(cfg).eval()


@pytest.fixture(scope="module")
def model() -> FourM:
    return tiny(("rgb", "tok_depth", "tok_semseg", "caption"), ("tok_depth", "tok_semseg", "caption"))


@pytest.fixture(scope="module")
def rgb(model):
    return {"rgb": condition(model, "rgb", torch.randn(B, 3, 32, 32, generator=torch.Generator().manual_seed(1)))}


@pytest.fixture(scope="module")
def depth():
    """(tokens (B, N), keep (B, N)): a random map; every sample keeps 10 tokens, at its own positions."""
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, 16, (B, N), generator=g)
    keep = torch.zeros(B, N, dtype=torch.bool)
    for b in range(B):
        keep[b, torch.randperm(N, generator=g)[:10]] = True
    return tokens, keep


@pytest.mark.parametrize("scheme,steps,token_schedule", [("maskgit", 3, "cosine"), ("maskgit", 4, "linear"),
                                                         ("roar", 4, "linear")])
def test_kept_tokens_stay_and_every_regenerated_position_is_decoded_once(model, rgb, depth, scheme, steps,
                                                                         token_schedule):
    tokens, keep = depth
    sched = TargetSchedule("tok_depth", scheme, steps=steps, token_schedule=token_schedule, temperature=1.5)
    start = inpaint_target(model, "tok_depth", tokens, keep)
    seen = torch.zeros(B, N, dtype=torch.long)
    counts = []
    for s in generate_steps(model, rgb, [sched], seed=4, inpaint={"tok_depth": start}):
        record = s.state["tok_depth"]
        counts.append(s.result.positions.shape[1])
        seen.scatter_add_(1, s.result.positions, torch.ones_like(s.result.positions))
        assert not bool(keep.gather(1, s.result.queried).any())  # kept positions are never even queried
        assert torch.equal(record.data[keep], tokens[keep])
    assert counts == (cosine_token_counts(6, steps) if token_schedule == "cosine" else linear_token_counts(6, steps))
    assert torch.equal(seen, (~keep).long())  # each regenerated position exactly once, kept ones never
    out = generate(model, rgb, [sched], seed=4, inpaint={"tok_depth": start})["tok_depth"]
    assert torch.equal(out.data, record.data) and bool(out.encoded.all())
    assert torch.equal(out.data[keep], tokens[keep])


def test_kept_tokens_are_given_to_the_encoder_from_the_first_step(model, rgb, depth):
    tokens, keep = depth
    start = inpaint_target(model, "tok_depth", tokens, keep)
    first = next(generate_steps(model, rgb, [TargetSchedule("tok_depth", steps=2, temperature=0.0)],
                                inpaint={"tok_depth": start}))
    committed = torch.zeros(B, N, dtype=torch.bool).scatter(1, first.result.positions, True)
    assert torch.equal(first.state["tok_depth"].encoded, keep | committed)
    other = tokens.clone()
    other[keep] = (other[keep] + 1) % 16  # other kept tokens: other logits at the regenerated positions
    second = next(generate_steps(model, rgb, [TargetSchedule("tok_depth", steps=2, temperature=0.0)],
                                 inpaint={"tok_depth": inpaint_target(model, "tok_depth", other, keep)}))
    assert not torch.allclose(first.result.logits, second.result.logits)


def test_guided_in_paint_keeps_the_kept_tokens_in_every_pass(model, rgb, depth):
    tokens, keep = depth
    keep = keep[:1].expand(B, -1)
    start = {"tok_depth": inpaint_target(model, "tok_depth", tokens, keep)}
    sched = [TargetSchedule("tok_depth", "maskgit", steps=2, temperature=1.0, guidance={"rgb": 2.0})]
    out = generate(model, rgb, sched, seed=1, inpaint=start)["tok_depth"].data
    assert torch.equal(out[keep], tokens[keep])
    from multimae.generation import guidance_states

    uncond, (cond,) = guidance_states(model, {**rgb, **start}, {"rgb": 2.0})
    for state in (uncond, cond):
        assert torch.equal(state["tok_depth"].encoded, keep)


def test_an_all_keep_mask_generates_nothing_and_gives_the_input_back(model, rgb, depth):
    tokens, _ = depth
    start = inpaint_target(model, "tok_depth", tokens, torch.ones(B, N, dtype=torch.bool))
    sched = [TargetSchedule("tok_depth", steps=3), TargetSchedule("tok_semseg", steps=2, temperature=0.0)]
    steps = list(generate_steps(model, rgb, sched, inpaint={"tok_depth": start}))
    assert [s.target for s in steps] == ["tok_semseg", "tok_semseg"]
    assert torch.equal(steps[0].state["tok_depth"].data, tokens)  # given whole to the semseg steps
    out = generate(model, rgb, sched, inpaint={"tok_depth": start}, batch_size=2)
    assert torch.equal(out["tok_depth"].data, tokens) and bool(out["tok_depth"].encoded.all())


def test_a_keep_nothing_mask_is_plain_generation(model, rgb, depth):
    tokens, _ = depth
    start = inpaint_target(model, "tok_depth", tokens, torch.zeros(B, N, dtype=torch.bool))
    sched = [TargetSchedule("tok_depth", "maskgit", steps=3, temperature=1.0)]
    plain = generate(model, rgb, sched, seed=9)["tok_depth"].data
    assert torch.equal(generate(model, rgb, sched, seed=9, inpaint={"tok_depth": start})["tok_depth"].data, plain)


@pytest.mark.parametrize("scheme", ["maskgit", "roar"])
def test_temperature_zero_in_paint_is_deterministic(model, rgb, depth, scheme):
    tokens, keep = depth
    keep = keep[:1].expand(B, -1)  # one mask for all, so batches of any size share the schedule
    start = {"tok_depth": inpaint_target(model, "tok_depth", tokens, keep)}
    sched = [TargetSchedule("tok_depth", scheme, steps=3, temperature=0.0)]
    a = generate(model, rgb, sched, seed=0, inpaint=start)["tok_depth"].data
    assert torch.equal(generate(model, rgb, sched, seed=0, inpaint=start)["tok_depth"].data, a)
    if scheme == "maskgit":  # no draw at all: neither the seed nor the batching matters
        assert torch.equal(generate(model, rgb, sched, seed=5, batch_size=1, inpaint=start)["tok_depth"].data, a)
    assert not torch.equal(a[:, ~keep[0]], tokens[:, ~keep[0]])  # (random model: it did regenerate)


def test_a_pixel_mask_marks_every_token_it_touches():
    regenerate = torch.zeros(2, 32, 32, dtype=torch.bool)
    regenerate[0, 9, 0] = True  # one pixel of cell (1, 0)
    regenerate[0, 7, 31] = True  # one pixel of cell (0, 3)
    regenerate[1, 8:16, 8:24] = True  # exactly cells (1, 1) and (1, 2)
    keep = keep_from_pixels(regenerate, (4, 4))
    assert keep.shape == (2, 16)
    assert (~keep[0]).nonzero()[:, 0].tolist() == [3, 4]
    assert (~keep[1]).nonzero()[:, 0].tolist() == [5, 6]
    assert bool(keep_from_pixels(torch.zeros(1, 32, 32, dtype=torch.bool), (4, 4)).all())
    with pytest.raises(ValueError, match="30x32 pixel mask does not tile the 4x4 token grid"):
        keep_from_pixels(torch.zeros(1, 30, 32, dtype=torch.bool), (4, 4))


def test_errors_name_the_problem(model, rgb, depth):
    tokens, keep = depth
    sched = [TargetSchedule("tok_depth", steps=2)]
    with pytest.raises(ValueError, match="'caption': a sequence"):
        inpaint_target(model, "caption", tokens, keep)
    with pytest.raises(ValueError, match=r"must both be \(B, 16\)"):
        inpaint_target(model, "tok_depth", tokens[:, :8], keep[:, :8])
    unread = tiny(("rgb",), ("tok_depth",))
    with pytest.raises(ValueError, match="predicts it but does not read it"):
        inpaint_target(unread, "tok_depth", tokens, keep)
    start = inpaint_target(model, "tok_depth", tokens, keep)
    with pytest.raises(ValueError, match="not among the targets"):
        generate(model, rgb, [TargetSchedule("tok_semseg", steps=2)], inpaint={"tok_depth": start})
    uneven = keep.clone()
    uneven[0] = True
    with pytest.raises(ValueError, match=r"regenerate different numbers of tokens \(\[0, 6, 6\]\)"):
        generate(model, rgb, sched, inpaint={"tok_depth": inpaint_target(model, "tok_depth", tokens, uneven)})
    # one sample at a time, each has its own schedule
    out = generate(model, rgb, sched, batch_size=1,
                   inpaint={"tok_depth": inpaint_target(model, "tok_depth", tokens, uneven)})["tok_depth"]
    assert torch.equal(out.data[0], tokens[0]) and torch.equal(out.data[uneven], tokens[uneven])


# the caption of `model`: ids 24..29 words, [EOS] 3, [S_i] 4 + i
SEQ = torch.tensor([[24, 5, 25, 6, 3], [26, 27, 5, 3, 0], [5, 28, 3, 0, 0]])  # w [S_1] w [S_2] .. / w w [S_1] ..


def test_a_sequence_in_paint_keeps_its_given_ids_and_merges_its_spans(model, rgb):
    record = inpaint_sequence(model, "caption", SEQ)
    sched = TargetSchedule("caption", "autoregressive", num_tokens=12, temperature=1.5)
    steps = list(generate_steps(model, rgb, [sched], seed=3, inpaint={"caption": record}))
    assert len(steps) == 1
    res = steps[0].result
    closing = [7, 6, 6]  # [S_3] after two spans, [S_2] after one
    for b, row in enumerate(res.generated.tolist()):
        given = [t for t in SEQ[b].tolist() if t]
        decoded = row[:row.index(closing[b])] if closing[b] in row else row
        spans, current = {}, None
        for t in decoded:  # the ids after each [S_i] (4 <= t <= 7: a sentinel here)
            current = spans.setdefault(t, []) if 4 <= t <= 7 else current
            if not 4 <= t <= 7 and current is not None:
                current.append(t)
        expect = [x for t in given for x in (spans.get(t, []) if t in (5, 6) else [t])]
        assert res.ids[b] == expect[:16]
        words = [t for t in given if t not in (5, 6)]
        assert _subsequence(words, res.ids[b])
    assert torch.equal(steps[0].state["caption"].data[0, :len(res.ids[0])], torch.tensor(res.ids[0]))
    again = autoregressive_step(model, {**rgb, "caption": record}, sched, 12, 1.5, torch.Generator().manual_seed(3),
                                use_cache=False)
    assert torch.equal(again.generated, res.generated) and again.ids == res.ids  # the KV cache agrees


def _subsequence(part: list[int], whole: list[int]) -> bool:
    it = iter(whole)
    return all(t in it for t in part)


def test_a_row_stops_at_its_closing_sentinel_or_at_eos_when_its_end_is_open():
    shut = Row([24, 5, 3], spans=1, closing=6, eos_ends=False)  # "w [S_1] [EOS]": [EOS] cannot end the span
    assert merged(shut, [5, 25, 3, 26, 6, 27], lambda i: 4 + i, 3, 16) == [24, 25, 3, 26, 3]
    open_end = Row([24, 5], spans=1, closing=6, eos_ends=True)  # "w [S_1]": the span runs to the end
    assert merged(open_end, [5, 25, 3, 26, 6], lambda i: 4 + i, 3, 16) == [24, 25, 3]
    assert merged(open_end, [5, 25, 26, 27, 28], lambda i: 4 + i, 3, 4) == [24, 25, 26, 3]  # cut: [EOS] last
    assert merged(Row([5], 1, 6, True), [5, 25, 3, 6], lambda i: 4 + i, 3, 16) == [25, 3]  # plain generation


def test_sequence_in_paint_errors_name_the_problem(model, rgb):
    with pytest.raises(ValueError, match="no span to regenerate; mark each with a sentinel"):
        inpaint_sequence(model, "caption", torch.tensor([[24, 25, 3]]))
    with pytest.raises(ValueError, match=r"must be \[S_1\] .. \[S_2\] in order, got \[S_2\], \[S_1\]"):
        inpaint_sequence(model, "caption", torch.tensor([[24, 6, 25, 5, 3]]))
    with pytest.raises(ValueError, match="a token map; give its tokens and a keep mask"):
        inpaint_sequence(model, "tok_depth", torch.tensor([[5]]))
    with pytest.raises(ValueError, match="fully given"):
        generate(model, rgb, [TargetSchedule("caption", "autoregressive")],
                 inpaint={"caption": inpaint_sequence(model, "caption", SEQ[:2])})
