"""The converter for official M3AE / MAE JAX checkpoints, checked against a numpy re-statement of
the official forward pass (m3ae/model.py: MaskedMultimodalAutoencoder) on parameter trees with
the official names and shapes, in the official containers (Flax msgpack; the pickled TrainState
of model.pkl)."""

from __future__ import annotations

import pickle
import sys
import types

import numpy as np
import pytest
import torch

from multimae.convert.flax_io import find_params, flatten, read_flax_file
from multimae.convert.m3ae_jax import m3ae_to_multimae, read_m3ae_jax

D, E, DEPTH, DEC_DEPTH, HEADS, DEC_HEADS, P, S, V, L = 32, 16, 2, 1, 4, 2, 4, 16, 30, 8


# ------------------------------------------------------------------ the official model, in numpy
def dense(x, p):
    return x @ p["kernel"] + p["bias"]


def layer_norm(x, p, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def attention(x, p, heads, pad):
    B, N, C = x.shape
    qkv = dense(x, p["Dense_0"]).reshape(B, N, 3, heads, C // heads).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv
    a = q @ k.swapaxes(-2, -1) * (C // heads) ** -0.5
    a = np.where(pad[:, None, None, :] > 0, -1e7, a)
    a = np.exp(a - a.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    return dense((a @ v).swapaxes(1, 2).reshape(B, N, C), p["Dense_1"])


def transformer(x, p, depth, heads, pad):
    for i in range(depth):
        b = p[f"Block_{i}"]
        x = x + attention(layer_norm(x, b["LayerNorm_0"]), b["Attention_0"], heads, pad)
        h = layer_norm(x, b["LayerNorm_1"])
        x = x + dense(gelu_tanh(dense(h, b["TransformerMLP_0"]["fc1"])), b["TransformerMLP_0"]["fc2"])
    return layer_norm(x, p["LayerNorm_0"])


def sincos_1d(dim, pos):
    omega = 1.0 / 10000 ** (np.arange(dim // 2) / (dim / 2.0))
    out = pos.reshape(-1)[:, None] * omega[None]
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim, length):
    g = int(length ** 0.5)
    grid = np.stack(np.meshgrid(np.arange(g, dtype=np.float64), np.arange(g, dtype=np.float64)), 0)  # w first
    return np.concatenate([sincos_1d(dim // 2, grid[0]), sincos_1d(dim // 2, grid[1])], axis=1)[None]


def patches(image):  # (B, H, W, C) -> (B, N, P*P*C), (row, column, channel) within a patch
    B, H, W, C = image.shape
    x = image.reshape(B, H // P, P, W // P, P, C).swapaxes(2, 3)
    return x.reshape(B, (H // P) * (W // P), P * P * C)


def official_forward(t, image, text, pad, keep_image, keep_text):
    """Encoder over [cls, kept patches, kept words] and decoder over every position, as
    forward_encoder + forward_decoder with the masking's kept ids given (instead of drawn)."""
    B, N = image.shape[0], (S // P) ** 2
    img = dense(patches(image), t["image_embedding"]) + sincos_2d(D, N) + t["encoder_image_type_embedding"]
    txt = t["text_embedding"]["embedding"][text] + sincos_1d(D, np.arange(L))[None] + t["encoder_text_type_embedding"]
    x = np.concatenate([np.broadcast_to(t["cls_token"], (B, 1, D)), img[:, keep_image], txt[:, keep_text]], 1)
    enc_pad = np.concatenate([np.zeros((B, 1 + len(keep_image))), pad[:, keep_text]], 1)
    x = transformer(x, t["encoder"], DEPTH, HEADS, enc_pad)
    y = dense(x, t["decoder_input_projection"])
    ki = len(keep_image)
    full_img = np.broadcast_to(t["image_mask_embedding"], (B, N, E)).copy()
    full_img[:, keep_image] = y[:, 1 : 1 + ki]
    full_txt = np.broadcast_to(t["text_mask_embedding"], (B, L, E)).copy()
    full_txt[:, keep_text] = y[:, 1 + ki :]
    full_img = full_img + sincos_2d(E, N) + t["decoder_image_type_embedding"]
    full_txt = full_txt + sincos_1d(E, np.arange(L))[None] + t["decoder_text_type_embedding"]
    seq = np.concatenate([y[:, :1], full_img, full_txt], 1)
    dec_pad = np.concatenate([np.zeros((B, 1 + N)), pad], 1)
    seq = transformer(seq, t["decoder"], DEC_DEPTH, DEC_HEADS, dec_pad)
    return x, dense(seq[:, 1 : 1 + N], t["decoder_image_output"]["Dense_0"]), \
        dense(seq[:, 1 + N :], t["decoder_text_output"]["Dense_0"])


# ------------------------------------------------------------------ an official tree
def block_tree(rng, dim, count):
    def dense_p(i, o):
        return {"kernel": rng.normal(0, 0.2, (i, o)).astype(np.float32), "bias": rng.normal(0, 0.1, o).astype(np.float32)}

    def ln(d):
        return {"scale": (1 + rng.normal(0, 0.1, d)).astype(np.float32), "bias": rng.normal(0, 0.1, d).astype(np.float32)}

    tree = {f"Block_{i}": {"LayerNorm_0": ln(dim), "Attention_0": {"Dense_0": dense_p(dim, 3 * dim), "Dense_1": dense_p(dim, dim)},
                           "LayerNorm_1": ln(dim), "TransformerMLP_0": {"fc1": dense_p(dim, 4 * dim), "fc2": dense_p(4 * dim, dim)}}
            for i in range(count)}
    tree["LayerNorm_0"] = ln(dim)
    return tree


def official_tree(seed=0, text=True):
    rng = np.random.default_rng(seed)

    def w(*shape, s=0.2):
        return rng.normal(0, s, shape).astype(np.float32)

    t = {"image_embedding": {"kernel": w(P * P * 3, D), "bias": w(D)}, "cls_token": w(1, 1, D),
         "encoder_image_type_embedding": w(1, 1, D), "decoder_image_type_embedding": w(1, 1, E),
         "image_mask_embedding": w(1, 1, E), "encoder": block_tree(rng, D, DEPTH), "decoder": block_tree(rng, E, DEC_DEPTH),
         "decoder_input_projection": {"kernel": w(D, E), "bias": w(E)},
         "decoder_image_output": {"Dense_0": {"kernel": w(E, P * P * 3), "bias": w(P * P * 3)}}}
    if text:
        t |= {"text_embedding": {"embedding": w(V, D, s=1.0)}, "encoder_text_type_embedding": w(1, 1, D),
              "decoder_text_type_embedding": w(1, 1, E), "text_mask_embedding": w(1, 1, E),
              "decoder_text_output": {"Dense_0": {"kernel": w(E, V), "bias": w(V)}}}
    return t


def convert(tree):
    return m3ae_to_multimae(flatten(tree), num_heads=HEADS, decoder_num_heads=DEC_HEADS, image_size=S,
                            text_length=L, image_mean=(0.0, 0.0, 0.0), image_std=(1.0, 1.0, 1.0))


def test_the_converted_model_computes_what_the_official_one_does():
    tree = official_tree()
    model, report = convert(tree)
    assert not report.dropped and not report.missing
    rng = np.random.default_rng(1)
    B, N = 2, (S // P) ** 2
    image = rng.uniform(0, 1, (B, S, S, 3)).astype(np.float32)
    text = rng.integers(1, V, (B, L))
    lengths = [L, 5]
    pad = np.array([[0.0] * n + [1.0] * (L - n) for n in lengths])
    text = np.where(pad > 0, 0, text)
    keep_image, keep_text = np.array([0, 3, 5, 9]), np.array([0, 2, 3])  # the same kept ids in every sample
    enc, img_out, txt_out = official_forward(tree, image.astype(np.float64), text, pad, keep_image, keep_text)

    hidden_img = torch.ones(B, N, dtype=torch.bool)
    hidden_img[:, keep_image] = False
    hidden_txt = torch.ones(B, L, dtype=torch.bool)
    hidden_txt[:, keep_text] = False
    inputs = {"rgb": torch.from_numpy(image).permute(0, 3, 1, 2), "caption": torch.from_numpy(text)}
    valid = {"caption": torch.from_numpy(pad == 0)}
    with torch.no_grad():
        out = model(inputs, {"rgb": hidden_img, "caption": hidden_txt}, valid=valid)
    # patches (row, column, channel) -> the image (B, 3, H, W)
    want_img = img_out.reshape(B, S // P, S // P, P, P, 3).transpose(0, 5, 1, 3, 2, 4).reshape(B, 3, S, S)
    torch.testing.assert_close(out.preds["rgb"].double(), torch.from_numpy(want_img), atol=2e-4, rtol=1e-4)
    real = torch.from_numpy(pad == 0)
    torch.testing.assert_close(out.preds["caption"].double()[real], torch.from_numpy(txt_out)[real], atol=2e-4, rtol=1e-4)
    # the encoder's tokens, normalised as the official encoder's last LayerNorm does: the global token
    dec = model.output_adapters[model.decoder_key["rgb"]]
    with torch.no_grad():
        tokens = model.backbone.forward_encoder(inputs, {"rgb": hidden_img, "caption": hidden_txt}, valid=valid).tokens
        normed = dec.context_norm(tokens)
    torch.testing.assert_close(normed[:, -1].double(), torch.from_numpy(enc[:, 0]), atol=2e-4, rtol=1e-4)


def test_an_mae_tree_becomes_an_image_only_model():
    model, report = convert(official_tree(text=False))
    assert list(model.input_specs) == ["rgb"] and list(model.output_specs) == ["rgb"]
    assert model.model_config.encoder.act == "gelu_tanh" and model.model_config.decoder.kind == "joint"
    assert report.inferred["modalities"].startswith("rgb") and not report.dropped


def _flax_msgpack(tree) -> bytes:
    """Bytes as flax.serialization.to_bytes writes them (ndarray = ext type 1)."""
    import msgpack

    def ext(x):
        if isinstance(x, np.ndarray):
            return msgpack.ExtType(1, msgpack.packb((x.shape, x.dtype.name, x.tobytes())))
        raise TypeError(type(x))

    return msgpack.packb({"params": tree}, default=ext, strict_types=True)


def _official_pickle(tree, protocol) -> bytes:
    """model.pkl as m3ae_main.py writes it: a TrainState whose params hold {"params": tree} and
    whose optimiser state holds trees of the same keys (built from stand-in flax / optax classes)."""
    flax = types.ModuleType("flax.training.train_state")

    class TrainState:
        def __init__(self, **fields):
            self.__dict__.update(fields)

    class FrozenDict(dict):
        def __reduce__(self):
            return FrozenDict, (dict(self),)

    TrainState.__module__ = FrozenDict.__module__ = "flax.training.train_state"
    TrainState.__qualname__, FrozenDict.__qualname__ = "TrainState", "FrozenDict"
    flax.TrainState, flax.FrozenDict = TrainState, FrozenDict
    names = ("flax", "flax.training", "flax.training.train_state")
    for name in names:  # importable for pickle, as the real flax would be
        sys.modules[name] = flax if name == names[-1] else types.ModuleType(name)
    try:
        zeros = {k: (np.zeros_like(v) if isinstance(v, np.ndarray) else v) for k, v in tree.items()}
        state = TrainState(step=3, params=FrozenDict({"params": tree}), opt_state=({"mu": zeros},), tx=None)
        return pickle.dumps({"step": 3, "epoch": 0, "variant": {"model": "base"}, "state": state}, protocol=protocol)
    finally:
        for name in names:
            del sys.modules[name]


@pytest.mark.parametrize("container", ["msgpack", "pkl-4", "pkl-5"])
def test_official_containers_are_read_without_jax(container, tmp_path):
    tree = official_tree(seed=2)
    if container == "msgpack":
        pytest.importorskip("msgpack")
        path = tmp_path / "m3ae.msgpack"
        path.write_bytes(_flax_msgpack(tree))
    else:
        path = tmp_path / "model.pkl"
        path.write_bytes(_official_pickle(tree, int(container[-1])))
    model, report = read_m3ae_jax(str(path), num_heads=HEADS, decoder_num_heads=DEC_HEADS, image_size=S,
                                  text_length=L)
    reference, _ = convert(tree)
    assert not report.dropped
    for k, v in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, msg=k)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"state": Evil()}))
    with pytest.raises(ValueError, match="refusing to load builtins.print"):
        read_flax_file(path)


def test_unknown_sizes_and_other_trees_get_clear_errors():
    tree = official_tree()
    with pytest.raises(ValueError, match="not an official M3AE size; pass its number of heads"):
        m3ae_to_multimae(flatten(tree), image_size=S)
    with pytest.raises(ValueError, match="not an M3AE / MAE JAX parameter tree"):
        m3ae_to_multimae({"foo/kernel": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="no Flax parameter tree"):
        find_params({"state": {"something": 1}})


def test_convert_command_writes_a_model_that_loads_back(tmp_path, capsys):
    from multimae.cli.main import main
    from multimae.inference.load import load_model

    src = tmp_path / "model.pkl"
    src.write_bytes(_official_pickle(official_tree(seed=3), 4))
    dst = tmp_path / "m3ae.safetensors"
    assert main(["convert", str(src), str(dst), "--num-heads", str(HEADS), "--decoder-num-heads", str(DEC_HEADS)]) == 0
    assert "M3AE" in capsys.readouterr().out
    model = load_model(dst)
    assert set(model.output_specs) == {"rgb", "caption"} and model.model_config.decoder.pos_2d == "columns_first"
    assert model.input_specs["rgb"].mean == (0.5762, 0.5503, 0.5213)  # CC12M's, the official default
