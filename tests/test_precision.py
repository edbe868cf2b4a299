import warnings

import pytest
import torch

from multimae.engine.precision import (
    MatmulTiming,
    PrecisionChoice,
    autocast,
    cached_measure,
    choose_precision,
    machine_key,
    measure_bf16,
    probe_shape,
    set_fused_attention,
)

from conftest import make_inputs


def test_explicit_attention_equals_fused_attention(tiny_model):
    inputs = make_inputs(batch=3)
    g = torch.Generator().manual_seed(0)
    masks = {k: v for k, v in tiny_model.backbone.sample_masks(inputs, 7, generator=g).items()}
    masks["rgb"][0] = True  # sample 0 keeps fewer tokens: exercises the padding masks too
    fused = tiny_model(inputs, masks).preds
    set_fused_attention(tiny_model, False)
    explicit = tiny_model(inputs, masks).preds
    for k in fused:
        torch.testing.assert_close(fused[k], explicit[k], atol=1e-5, rtol=1e-4)


def test_bf16_autocast_on_cpu_uses_explicit_attention_and_stays_close(tiny_model):
    inputs = make_inputs()
    ref = tiny_model(inputs).preds["depth"]
    with autocast(tiny_model, "cpu", "bf16"):
        low = tiny_model(inputs).preds["depth"]
    assert not tiny_model.backbone.encoder[0].attn.fused_attn
    assert not tiny_model.output_adapters["rgb"].decoder.fused_attn
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max() < 0.1 * ref.abs().max()
    with autocast(tiny_model, "cpu", "fp32"):
        assert tiny_model(inputs).preds["depth"].dtype == torch.float32
    assert tiny_model.backbone.encoder[0].attn.fused_attn
    with pytest.raises(ValueError, match="precision must be one of"):
        with autocast(tiny_model, "cpu", "int8"):
            pass


# --------------------------------------------------------------------------- precision auto

SHAPE = (1024, 192, 768)


def timing(speedup, small_only=False):
    return MatmulTiming((256, 256, 256) if small_only else SHAPE, fp32_s=speedup * 1e-3, bf16_s=1e-3, small_only=small_only)


def never_measure(shape):
    raise AssertionError("no timing expected")


def test_auto_on_a_cpu_without_native_bf16_is_fp32_without_timing():
    choice = choose_precision("auto", "cpu", SHAPE, flags={"avx2", "fma"}, measure=never_measure)
    assert choice == PrecisionChoice("fp32", "auto", choice.reason, None)
    assert "no amx_bf16 or avx512_bf16" in choice.reason and choice.reason.startswith("fp32")


def test_auto_on_a_native_bf16_cpu_takes_bf16_only_when_measured_faster():
    seen = []
    fast = choose_precision("auto", "cpu", SHAPE, flags={"avx512_bf16"},
                            measure=lambda s: seen.append(s) or (timing(1.9), False))
    assert seen == [SHAPE]
    assert (fast.precision, fast.speedup) == ("bf16", pytest.approx(1.9))
    assert fast.reason == "bf16: avx512_bf16, bf16 matmul 1.9x fp32 measured (1024x192 @ 192x768, 1 thread)"
    amx = choose_precision("auto", "cpu", SHAPE, flags={"avx512_bf16", "amx_bf16"}, measure=lambda s: (timing(7.0), True))
    assert amx.precision == "bf16" and amx.reason.startswith("bf16: amx_bf16") and amx.reason.endswith(", cached")
    slow = choose_precision("auto", "cpu", SHAPE, flags={"amx_bf16"}, measure=lambda s: (timing(1.05), False))
    assert slow.precision == "fp32" and "present but bf16 matmul 1.1x fp32" in slow.reason


def test_auto_on_cuda_is_bf16_or_fp16_by_capability_and_explicit_choices_are_kept():
    assert choose_precision("auto", "cuda:0", cuda_bf16=True, measure=never_measure).precision == "bf16"
    fp16 = choose_precision("auto", "cuda", cuda_bf16=False, measure=never_measure)
    assert fp16.precision == "fp16" and "loss scaling" in fp16.reason
    assert choose_precision("bf16", "cuda", cuda_bf16=False, measure=never_measure).reason == "bf16: requested"
    assert choose_precision("auto", "meta", measure=never_measure).precision == "fp32"
    for p in ("fp32", "fp16"):
        assert choose_precision(p, "cpu", measure=never_measure) == PrecisionChoice(p, p, f"{p}: requested")
    with pytest.raises(ValueError, match="precision must be one of"):
        choose_precision("fp8", "cpu")


def test_explicit_bf16_on_a_slow_bf16_cpu_warns_with_the_measured_ratio():
    with pytest.warns(RuntimeWarning, match=r"bf16 matmul 95x slower than fp32 measured \(256x256 @ 256x256, 1 thread, small"):
        choice = choose_precision("bf16", "cpu", SHAPE, flags={"avx2"}, measure=lambda s: (timing(1 / 95, True), False))
    assert choice.precision == "bf16" and choice.speedup == pytest.approx(1 / 95)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_precision("bf16", "cpu", SHAPE, flags={"amx_bf16"}, measure=lambda s: (timing(4.0), False)).precision == "bf16"


def test_measure_stops_after_the_small_matmul_when_bf16_is_slow():
    calls = []

    def timer(speed):
        def run(m, k, n, dtype):
            calls.append((m, k, n, dtype))
            assert torch.get_num_threads() == 1  # timed on one thread: robust to a busy neighbour
            return 1e-3 if dtype == torch.float32 else 1e-3 / speed
        return run

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        slow = measure_bf16(SHAPE, timer(1 / 90))
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(threads)
    assert slow.small_only and slow.shape == (256, 256, 256) and slow.speedup == pytest.approx(1 / 90)
    assert [c[:3] for c in calls] == [(256, 256, 256)] * 2
    calls.clear()
    fast = measure_bf16(SHAPE, timer(3.0))
    assert not fast.small_only and fast.shape == SHAPE and fast.speedup == pytest.approx(3.0)
    assert [c[:3] for c in calls] == [(256, 256, 256)] * 2 + [SHAPE] * 2
    assert probe_shape(32 * 32, 192) == SHAPE and probe_shape(2048 * 98, 768) == (2048, 768, 3072)


def test_the_timing_is_cached_per_machine_key(tmp_path):
    path, measured = tmp_path / "sub" / "precision.json", []

    def measure(shape):
        measured.append(shape)
        return timing(2.5)

    first = cached_measure(SHAPE, path, "key-a", measure)
    again = cached_measure(SHAPE, path, "key-a", measure)
    other = cached_measure(SHAPE, path, "key-b", measure)
    assert first == (timing(2.5), False) and again == (timing(2.5), True) and other[1] is False
    assert measured == [SHAPE, SHAPE]
    path.write_text("{not json")
    assert cached_measure(SHAPE, path, "key-a", measure) == (timing(2.5), False)
    key = machine_key(SHAPE, 2, model="Xeon", flags={"amx_bf16"})
    assert "Xeon" in key and f"torch {torch.__version__}" in key and "2 threads" in key and "1024x192x768" in key
    assert key != machine_key(SHAPE, 1, model="Xeon", flags={"amx_bf16"})
    assert key != machine_key(SHAPE, 2, model="Xeon", flags={"avx2"})
