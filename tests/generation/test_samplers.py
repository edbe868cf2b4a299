"""Generation on tiny random 4M models made here: schedules, each token decoded exactly once and never
changed, the KV cache against recomputation, guidance's limits, determinism, chaining, batching, errors."""

from __future__ import annotations

import pytest
import torch

from multimae.generation import (
    TargetSchedule, condition, cosine_token_counts, empty_target, encode_state, generate, generate_steps, guidance_states,
    linear_token_counts, token_map_logits,
)
from multimae.generation.autoregressive import autoregressive_step
from multimae.generation.guidance import combine
from multimae.generation.sampling import filter_logits, sample
from multimae.generation.schedule import temperatures
from multimae.model.fourm import FourM, fourm_config

B = 3


@pytest.fixture(scope="module")
def model() -> FourM:
    torch.manual_seed(0)
    cfg = fourm_config("tiny", dim=32, num_heads=2, encoder_depth=2, decoder_depth=2, image_size=32, patch_size=8,
                       inputs=("rgb", "tok_depth", "tok_semseg", "caption"),
                       outputs=("tok_depth", "tok_semseg", "caption"),
                       modality_overrides={"tok_depth": {"num_channels": 16}, "tok_semseg": {"num_channels": 12},
                                           "caption": {"num_channels": 30, "max_length": 16}})
    return FourM(cfg).eval()


@pytest.fixture(scope="module")
def conditions(model):
    g = torch.Generator().manual_seed(1)
    caption = torch.randint(24, 30, (B, 6), generator=g)
    caption[:, -1] = 3  # [EOS]
    caption[0, 4:] = 0  # a shorter caption: padding
    return {"rgb": condition(model, "rgb", torch.randn(B, 3, 32, 32, generator=g)),
            "caption": condition(model, "caption", caption)}


def test_token_schedules_and_temperatures():
    assert cosine_token_counts(16, 3) == [4, 8, 4]  # the fixture's (official) numbers
    assert linear_token_counts(64, 2) == [32, 32] and linear_token_counts(10, 3) == [4, 3, 3]
    assert linear_token_counts(2, 4) == [1, 1]
    assert cosine_token_counts(16, 5) == [2, 4, 5, 4, 1]  # 4M's
    assert cosine_token_counts(16, 9) == [1, 2, 3, 3, 3, 2, 1, 1]  # 4M's, its empty first step dropped
    assert cosine_token_counts(16, 8) == [1, 1, 3, 3, 3, 3, 1, 1]  # 4M's rounding would end in -1
    for n, s in ((16, 1), (16, 7), (16, 8), (64, 8), (5, 5), (4, 12)):
        for counts in (cosine_token_counts(n, s), linear_token_counts(n, s)):
            assert sum(counts) == n and min(counts) >= 1 and len(counts) <= s
    sched = TargetSchedule("t", temperature=1.0, temperature_schedule="linear")
    assert temperatures(sched, [4, 8, 4]) == [1.0, 0.75, 0.25]
    with pytest.raises(ValueError, match="scheme"):
        TargetSchedule("t", scheme="diffusion")


def test_top_k_and_top_p_filtering():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_k=0.5)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_k=3.0)).tolist() == [[False, False, False, True]]
    p = logits.softmax(-1)[0]  # 0.64, 0.24, 0.09, 0.03
    assert torch.isinf(filter_logits(logits, top_p=0.5)).tolist() == [[False, True, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=float(p[0] + 0.01))).tolist() == [[False, False, True, True]]
    tokens, conf = sample(logits, 0.0)
    assert tokens.tolist() == [0] and conf.item() == pytest.approx(float(p[0]))
    g = torch.Generator().manual_seed(0)
    draws, _ = sample(logits.expand(200, -1), 1.0, g, top_k=2)
    assert set(draws.tolist()) == {0, 1}


@pytest.mark.parametrize("scheme,steps,token_schedule", [("maskgit", 5, "cosine"), ("maskgit", 3, "linear"),
                                                         ("roar", 4, "linear")])
def test_every_token_is_decoded_once_as_scheduled_and_never_changes(model, conditions, scheme, steps, token_schedule):
    sched = TargetSchedule("tok_depth", scheme, steps=steps, token_schedule=token_schedule, temperature=1.5)
    expected = cosine_token_counts(16, steps) if token_schedule == "cosine" else linear_token_counts(16, steps)
    seen = torch.zeros(B, 16, dtype=torch.long)
    before = None
    counts = []
    for s in generate_steps(model, conditions, [sched], seed=3):
        record = s.state["tok_depth"]
        counts.append(s.result.positions.shape[1])
        seen.scatter_add_(1, s.result.positions, torch.ones_like(s.result.positions))
        if before is not None:  # earlier tokens stay given and unchanged
            assert bool((record.encoded | ~before.encoded).all())
            assert torch.equal(record.data[before.encoded], before.data[before.encoded])
        assert torch.equal(record.encoded.sum(1), torch.full((B,), sum(counts)))
        before = record
    assert counts == expected
    assert bool((seen == 1).all())  # every position exactly once
    assert bool(before.encoded.all())


def test_temperature_zero_is_deterministic_and_batches_agree(model, conditions):
    scheds = [TargetSchedule("tok_semseg", "maskgit", steps=2, temperature=0.0),
              TargetSchedule("tok_depth", "maskgit", steps=3, temperature=0.0),
              TargetSchedule("caption", "autoregressive", num_tokens=6, temperature=0.0)]
    given = {"rgb": conditions["rgb"]}
    a = generate(model, given, scheds, seed=0)
    b = generate(model, given, scheds, seed=5, batch_size=1)  # one sample at a time, another seed: no draws
    for name in a:
        assert torch.equal(a[name].data, b[name].data) and torch.equal(a[name].valid, b[name].valid), name


def test_sampling_is_reproducible_from_the_seed(model, conditions):
    sched = [TargetSchedule("tok_depth", "maskgit", steps=4, temperature=2.0)]
    a, b = (generate(model, conditions, sched, seed=7)["tok_depth"].data for _ in range(2))
    c = generate(model, conditions, sched, seed=8)["tok_depth"].data
    assert torch.equal(a, b) and not torch.equal(a, c)
    same = {n: condition(model, n, r.data[:1].expand(4, *r.data.shape[1:]), r.valid[:1].expand(4, -1))
            for n, r in conditions.items()}  # one condition set, 4 samples, one per chunk
    rows = generate(model, same, sched, seed=7, batch_size=1)["tok_depth"].data
    assert len({tuple(r.tolist()) for r in rows}) == 4  # different draws per chunk
    assert torch.equal(generate(model, same, sched, seed=7, batch_size=1)["tok_depth"].data, rows)


def test_bf16_passes_give_fp32_logits_near_the_fp32_ones(model, conditions):
    scheds = [TargetSchedule("tok_depth", "maskgit", steps=2, temperature=0.0, guidance={"rgb": 2.0}),
              TargetSchedule("caption", "autoregressive", num_tokens=5, temperature=0.0)]
    runs = {p: list(generate_steps(model, {"rgb": conditions["rgb"]}, scheds, precision=p)) for p in ("fp32", "bf16")}
    full, half = (runs[p][0].result.logits for p in ("fp32", "bf16"))  # the same state: the first step
    assert half.dtype == full.dtype == torch.float32
    assert (half - full).abs().max() < 0.05 * full.abs().max() and not torch.equal(half, full)
    last = runs["bf16"][-1].state
    assert bool(last["tok_depth"].encoded.all()) and last["caption"].data.shape[0] == B
    seq = runs["bf16"][-1].result
    assert seq.logits.dtype == torch.float32 and seq.generated.shape[1] > 1


@pytest.mark.parametrize("guidance", [{}, {"rgb": 2.5}, {"rgb": 1.5, "caption": -1.0}])
def test_the_kv_cache_gives_the_tokens_and_logits_of_recomputation(model, conditions, guidance):
    sched = TargetSchedule("caption", "autoregressive", temperature=1.3, guidance=guidance)
    state = {**conditions}
    runs = [autoregressive_step(model, state, sched, 10, 1.3, torch.Generator().manual_seed(4), use_cache=cache)
            for cache in (True, False)]
    assert torch.equal(runs[0].generated, runs[1].generated)
    torch.testing.assert_close(runs[0].logits, runs[1].logits, atol=1e-5, rtol=1e-4)
    assert runs[0].generated.shape[1] > 2


def test_guidance_limits(model, conditions):
    """All weights 0: the unconditional pass; weight 1 on the only condition: the conditional pass."""
    state = {**conditions, "tok_depth": empty_target(model, "tok_depth", B)}
    queried = torch.arange(16).expand(B, -1)
    with torch.no_grad():
        def logits(s):
            return token_map_logits(model, "tok_depth", queried, encode_state(model, s))

        full = logits(state)
        uncond, conds = guidance_states(model, state, {"rgb": 0.0, "caption": 0.0})
        zero = combine(logits(uncond), [logits(c) for c in conds], [0.0, 0.0])
        assert torch.equal(zero, logits(uncond))
        assert not torch.allclose(zero, full)
        assert uncond["caption"].encoded.sum(1).tolist() == [1] * B  # the opening sentinel alone
        assert encode_state(model, uncond).tokens.shape[1] == 1
        one_u, (one_c,) = guidance_states(model, state, {"rgb": 1.0})  # caption unguided: in both passes
        torch.testing.assert_close(combine(logits(one_u), [logits(one_c)], [1.0]), full, atol=1e-6, rtol=1e-5)
    # and the step itself: guidance {rgb: 1} takes the conditional pass's tokens
    plain = generate(model, conditions, [TargetSchedule("tok_depth", temperature=1.0)], seed=2)["tok_depth"]
    one = generate(model, conditions, [TargetSchedule("tok_depth", temperature=1.0, guidance={"rgb": 1.0})],
                   seed=2)["tok_depth"]
    assert torch.equal(plain.data, one.data)


def test_an_empty_input_encodes_to_an_empty_context(model):
    from multimae.generation.state import emptied

    rgb = condition(model, "rgb", torch.randn(2, 3, 32, 32))
    state = {"rgb": emptied(model, "rgb", rgb)}
    context = encode_state(model, state)
    assert context.tokens.shape == (2, 0, 32)
    out = generate(model, state, [TargetSchedule("tok_depth", steps=2, temperature=0.0)])
    assert bool(out["tok_depth"].encoded.all())


def test_chained_targets_see_earlier_ones_and_independent_ones_do_not(model, conditions):
    semseg = TargetSchedule("tok_semseg", "maskgit", steps=2, temperature=0.0)
    depth = TargetSchedule("tok_depth", "maskgit", steps=2, temperature=0.0)
    alone = generate(model, conditions, [depth])["tok_depth"].data
    independent = generate(model, conditions, [semseg, depth], chained=False)
    chained = list(generate_steps(model, conditions, [semseg, depth]))
    assert torch.equal(independent["tok_depth"].data, alone)
    last = chained[-1].state
    assert bool(last["tok_semseg"].encoded.all())  # semseg was given while depth was decoded
    first_depth = [s for s in chained if s.target == "tok_depth"][0]
    assert bool(first_depth.state["tok_semseg"].encoded.all())
    assert not torch.equal(last["tok_depth"].data, alone)  # (random model: the extra condition changes it)


def test_errors_name_the_problem(model, conditions):
    with pytest.raises(ValueError, match="'tok_normals' is not an output"):
        generate(model, conditions, [TargetSchedule("tok_normals")])
    with pytest.raises(ValueError, match="decoded with"):
        generate(model, conditions, [TargetSchedule("caption", "maskgit")])
    with pytest.raises(ValueError, match="is a condition"):
        generate(model, {**conditions, "tok_depth": condition(model, "tok_depth", torch.zeros(B, 16).long())},
                 [TargetSchedule("tok_depth")])
    with pytest.raises(ValueError, match="at most 15 new ids"):
        generate(model, conditions, [TargetSchedule("caption", "autoregressive", num_tokens=40)])
    with pytest.raises(ValueError, match="guidance on"):
        generate(model, conditions, [TargetSchedule("tok_depth", guidance={"tok_semseg": 2.0})])
    with pytest.raises(ValueError, match="guidance on"):  # even at weight 1, which needs no extra pass
        generate(model, conditions, [TargetSchedule("tok_depth", guidance={"tok_semseg": 1.0})])


def test_the_kv_cache_with_qk_norm_biases_gelu_and_register_tokens():
    torch.manual_seed(1)
    cfg = fourm_config("tiny", dim=32, num_heads=4, encoder_depth=1, decoder_depth=2, image_size=32, patch_size=8,
                       inputs=("rgb", "caption"), outputs=("tok_depth", "caption"), qk_norm=True, bias=True,
                       mlp="gelu", num_register_tokens=2,
                       modality_overrides={"tok_depth": {"num_channels": 16}, "caption": {"num_channels": 30}})
    model = FourM(cfg).eval()
    state = {"rgb": condition(model, "rgb", torch.randn(2, 3, 32, 32))}
    sched = TargetSchedule("caption", "autoregressive", temperature=1.0, guidance={"rgb": 2.0})
    runs = [autoregressive_step(model, state, sched, 8, 1.0, torch.Generator().manual_seed(0), use_cache=cache)
            for cache in (True, False)]
    assert torch.equal(runs[0].generated, runs[1].generated)
    torch.testing.assert_close(runs[0].logits, runs[1].logits, atol=1e-5, rtol=1e-4)
    from multimae.generation.state import emptied

    assert encode_state(model, {"rgb": emptied(model, "rgb", state["rgb"])}).tokens.shape[1] == 2  # registers only
