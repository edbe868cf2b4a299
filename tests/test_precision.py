import pytest
import torch

from multimae.engine.precision import autocast, set_fused_attention

from conftest import make_inputs


def test_explicit_attention_equals_fused_attention(tiny_model):
    inputs = make_inputs(batch=3)
    g = torch.Generator().manual_seed(0)
    masks = {k: v for k, v in tiny_model.sample_masks(inputs, 7, generator=g).items()}
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
    assert not tiny_model.encoder[0].attn.fused_attn
    assert not tiny_model.output_adapters["rgb"].decoder.fused_attn
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max() < 0.1 * ref.abs().max()
    with autocast(tiny_model, "cpu", "fp32"):
        assert tiny_model(inputs).preds["depth"].dtype == torch.float32
    assert tiny_model.encoder[0].attn.fused_attn
    with pytest.raises(ValueError, match="precision must be one of"):
        with autocast(tiny_model, "cpu", "int8"):
            pass
