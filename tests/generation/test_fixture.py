"""Our generation against the official 4M sampler on the fixture's tiny model
(`shared/reference/fourm/golden/fixture_generation.safetensors`).

Logits: every stored decoder pass (3 MaskGIT, 2 ROAR, the caption's 11 autoregressive iterations, the
conditional and unconditional passes of 2 guided MaskGIT steps), recomputed by us from the official
state before that step, at the official queried positions, within the fixture tolerance.

Sampled states: our sampler run end to end with the fixture's schedules and seeds. They can be matched
because we make the official random calls in the same order from a generator seeded like its global one
(per step seed + step; ROAR: one ``rand(N)``, then the draws; MaskGIT: one ``multinomial`` over all
queried rows after top-p filtering and temperature). The ROAR steps and the caption are at temperature
0 (argmax; the fixture's smallest argmax margin is 0.007, far above the 1e-5 logit tolerance). What
cannot be matched bit for bit in general: a draw whose probability sits within float rounding of a
multinomial boundary, and MaskGIT at temperature 0, where 4M sets every confidence to 1 and leaves the
choice to ``topk``'s tie order (we rank by the argmax probability instead); the fixture has neither.
"""

from __future__ import annotations

import pytest
import torch

from fourm.golden import PRESENT, load_golden, official_record
from multimae.convert.fourm import fourm_to_ours
from multimae.generation import (
    SequenceDecoderCache, TargetSchedule, condition, encode_state, generate_steps, guidance_states, sequence_logits,
    token_map_logits,
)
from multimae.modalities.batch import ModalityBatch

pytestmark = pytest.mark.skipif(not PRESENT, reason="4M golden fixture not present")
TOL = dict(atol=1e-5, rtol=1e-4)  # SPEC.json: logits, fp32 CPU
TOP_P = 0.9
CHAIN = [  # the fixture's chained schedule (SPEC.json config.generation.chain)
    TargetSchedule("tok_semseg", "maskgit", steps=3, token_schedule="cosine", temperature=1.0,
                   temperature_schedule="linear", top_p=TOP_P),
    TargetSchedule("tok_depth", "roar", steps=2, temperature=0.0, top_p=TOP_P),
    TargetSchedule("caption", "autoregressive", num_tokens=11, temperature=0.0, top_p=TOP_P),
]
GUIDED = [TargetSchedule("tok_depth", "maskgit", steps=2, token_schedule="linear", temperature=0.5, top_p=TOP_P,
                         guidance={"rgb": 2.0})]
OFFICIAL = {"tok_semseg": "tok_semseg@64", "tok_depth": "tok_depth@64", "caption": "caption"}


@pytest.fixture(scope="module")
def fixture():
    model, _ = fourm_to_ours(load_golden("weights.safetensors"), num_heads=4)
    return model.eval(), load_golden("fixture_generation.safetensors"), load_golden("inputs.safetensors")


def _state(model, gen, inputs, run: str, after: dict[str, str]) -> dict[str, ModalityBatch]:
    """The official state: rgb given, each target at its ``after`` step's state (``init`` before any)."""
    state = {"rgb": condition(model, "rgb", inputs["rgb@64.tensor"])}
    for ours, theirs in OFFICIAL.items():
        key = f"{run}.{after.get(ours, 'init')}.{theirs}"
        if f"{key}.tensor" in gen:
            state[ours] = official_record(gen, key, target=False)
    return state


CHAIN_BEFORE = [{}, {"tok_semseg": "step0"}, {"tok_semseg": "step1"}, {"tok_semseg": "step2"},
                {"tok_semseg": "step2", "tok_depth": "step3"}]


@pytest.mark.parametrize("step", range(5))
def test_token_map_logits_of_every_chain_step(fixture, step):
    model, gen, inputs = fixture
    target = "tok_semseg" if step < 3 else "tok_depth"
    state = _state(model, gen, inputs, "chain", CHAIN_BEFORE[step])
    with torch.no_grad():
        logits = token_map_logits(model, target, gen[f"chain.step{step}.query_pos"], encode_state(model, state))
    torch.testing.assert_close(logits, gen[f"chain.step{step}.logits"], **TOL)


def test_caption_logits_with_and_without_the_kv_cache(fixture):
    """Each of the 11 iterations' last-position logits, fed the official generated prefix."""
    model, gen, inputs = fixture
    state = _state(model, gen, inputs, "chain", {"tok_semseg": "step2", "tok_depth": "step4"})
    prefix = gen["chain.step5.generated"][:, :-1]  # [S_1] and the first 10 ids, (B, 11)
    theirs = gen["chain.step5.last_logits"].transpose(0, 1)  # (B, 11, V)
    with torch.no_grad():
        context = encode_state(model, state)
        full = sequence_logits(model, "caption", prefix, context)
        cache = SequenceDecoderCache(model, "caption", context)
        one_by_one = torch.cat([cache.feed(prefix[:, i:i + 1]) for i in range(prefix.shape[1])], dim=1)
    torch.testing.assert_close(full, theirs, **TOL)
    torch.testing.assert_close(one_by_one, theirs, **TOL)


@pytest.mark.parametrize("step", range(2))
def test_guided_steps_conditional_and_unconditional_passes(fixture, step):
    model, gen, inputs = fixture
    state = _state(model, gen, inputs, "cfg", {"tok_depth": "step0"} if step else {})
    uncond, (cond,) = guidance_states(model, state, {"rgb": 2.0})
    assert not bool(uncond["rgb"].encoded.any())  # the unconditional pass: rgb emptied
    queried = gen[f"cfg.step{step}.query_pos"]
    with torch.no_grad():
        for s, key in ((cond, "logits_cond"), (uncond, "logits_uncond")):
            logits = token_map_logits(model, "tok_depth", queried, encode_state(model, s))
            torch.testing.assert_close(logits, gen[f"cfg.step{step}.{key}"], **TOL)
    if step == 0:  # nothing given at all in the unconditional pass: an empty encoder context
        assert encode_state(model, uncond).tokens.shape[1] == 0


def _check_states(steps, gen, run: str) -> None:
    for s in steps:
        theirs = OFFICIAL[s.target]
        record = s.state[s.target]
        if s.scheme == "autoregressive":
            assert torch.equal(s.result.generated, gen[f"{run}.step{s.index}.generated"])
            assert torch.equal(record.data, gen[f"{run}.step{s.index}.caption.tensor"])
            assert bool(record.valid.all())
            continue
        assert torch.equal(record.data, gen[f"{run}.step{s.index}.{theirs}.tensor"]), s.index
        assert torch.equal(~record.encoded, gen[f"{run}.step{s.index}.{theirs}.input_mask"]), s.index


def test_the_chain_samples_the_official_states(fixture):
    """3 sampled MaskGIT steps (top-p 0.9, temperatures 1, 0.75, 0.25), 2 ROAR steps, the caption."""
    model, gen, inputs = fixture
    conditions = {"rgb": condition(model, "rgb", inputs["rgb@64.tensor"])}
    steps = list(generate_steps(model, conditions, CHAIN, seed=100))
    assert [(s.target, s.result.positions.shape[1] if s.scheme != "autoregressive" else None) for s in steps] == [
        ("tok_semseg", 4), ("tok_semseg", 8), ("tok_semseg", 4), ("tok_depth", 32), ("tok_depth", 32), ("caption", None)]
    assert [s.temperature for s in steps[:3]] == [1.0, 0.75, 0.25]
    _check_states(steps, gen, "chain")
    for s in steps[:5]:
        assert torch.equal(s.result.queried, gen[f"chain.step{s.index}.query_pos"])  # ROAR's random order too


def test_the_guided_run_samples_the_official_states(fixture):
    model, gen, inputs = fixture
    conditions = {"rgb": condition(model, "rgb", inputs["rgb@64.tensor"])}
    steps = list(generate_steps(model, conditions, GUIDED, seed=200))
    _check_states(steps, gen, "cfg")
    final = steps[-1].state["tok_depth"]
    assert torch.equal(final.data, gen["cfg.final.tok_depth@64.tensor"]) and bool(final.encoded.all())
