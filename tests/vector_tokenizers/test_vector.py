"""The vector tokenizer: shapes, bad inputs, files, training against its baseline, the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from multimae.cli.main import main
from multimae.modalities.registry import get_modality
from multimae.tokenizers import QuantizerConfig, TokenIds, VectorTokenizer, VectorTokenizerConfig, load_tokenizer
from multimae.tokenizers.config import TokenizerTrainConfig
from multimae.tokenizers.vector_training import ProductKMeans, train_vector_tokenizer, vector_report

C = 24
SPEC = get_modality("feature").replace(num_channels=C)
SMALL = VectorTokenizerConfig(tokens=2, hidden=64, layers=1, quantizer=QuantizerConfig(kind="fsq", levels=(5, 5, 5)))


def vectors(count: int, seed: int = 0) -> torch.Tensor:
    """(count, 1, C): embeddings on a curved 6-D manifold (as many dimensions as the codes of 2 tokens), with
    a little noise: each half of the features depends on all six, which product k-means cannot share."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(6, C, generator=torch.Generator().manual_seed(99))
    z = torch.randn(count, 6, generator=g)
    return (torch.tanh(z) @ basis + 0.05 * torch.randn(count, C, generator=g))[:, None]


@pytest.fixture(scope="module")
def trained() -> VectorTokenizer:
    tok, info = train_vector_tokenizer(SPEC, vectors(800), SMALL, TokenizerTrainConfig(
        steps=300, batch_size=64, warmup_steps=10, stats_scenes=800), progress=False)
    assert info["steps"] == 300 and np.isfinite(info["last_loss"])
    return tok


def test_encode_decode_shapes_and_dtypes(trained):
    raw = vectors(5, seed=1)
    tokens = trained.encode(raw)
    assert isinstance(tokens, TokenIds) and tokens.placement == "global"
    assert tokens.ids.shape == (5, 2) and tokens.ids.dtype == torch.int64 and tokens.valid.all()
    assert 0 <= int(tokens.ids.min()) and int(tokens.ids.max()) < trained.vocab_size == 125
    back = trained.decode(tokens)
    assert back.shape == (5, 1, C) and back.dtype == torch.float32
    assert torch.equal(trained.encode(raw[:, 0]).ids, tokens.ids)  # (B, C) is (B, 1, C) when G = 1
    assert torch.equal(trained.decode(tokens.ids), back)


def test_bad_inputs_are_named(trained):
    with pytest.raises(ValueError, match="feature: vectors must be a float tensor, got torch.int64"):
        trained.encode(torch.zeros(2, 1, C, dtype=torch.int64))
    with pytest.raises(ValueError, match=rf"must be \(B, 1, {C}\) or \(B, {C}\), got \(2, 1, 7\)"):
        trained.encode(torch.zeros(2, 1, 7))
    bad = vectors(2)
    bad[0, 0, 3] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        trained.encode(bad)
    with pytest.raises(ValueError, match=r"ids of shape \(B, 2\)"):
        trained.decode(torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\[0, 125\)"):
        trained.decode(torch.tensor([[0, 125]]))
    with pytest.raises(ValueError, match="depth.*dense modality"):
        VectorTokenizer(get_modality("depth"), (0.0,), (1.0,), SMALL)


def test_saved_tokenizer_reloads_bit_exactly_and_refuses_changed_weights(trained, tmp_path):
    from safetensors.torch import load_file, save_file

    trained.save(tmp_path / "tok")
    back = load_tokenizer(tmp_path / "tok")
    assert isinstance(back, VectorTokenizer) and back.content_hash == trained.content_hash
    raw = vectors(16, seed=2)
    assert torch.equal(back.encode(raw).ids, trained.encode(raw).ids)
    assert torch.equal(back.decode(back.encode(raw)), trained.decode(trained.encode(raw)))
    weights = load_file(tmp_path / "tok" / "weights.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] + 1e-3
    save_file(weights, tmp_path / "tok" / "weights.safetensors")
    with pytest.raises(ValueError, match="recorded"):
        load_tokenizer(tmp_path / "tok")


def test_training_beats_product_kmeans_at_the_same_symbols(trained):
    untrained = VectorTokenizer.fit(SPEC, vectors(800), SMALL)
    val = vectors(200, seed=3)
    baseline = ProductKMeans.fit(trained, vectors(800), seed=0)
    assert baseline.encode(val).shape == (200, 2) and int(baseline.encode(val).max()) < 125
    rep, recon, base = vector_report(trained, val, baseline)
    before, _, _ = vector_report(untrained, val, None)
    assert recon.shape == base.shape == val.shape
    assert rep["tokenizer"]["relative_mse"] < 0.6 * rep["baseline"]["relative_mse"] < before["tokenizer"]["relative_mse"]
    assert rep["tokenizer"]["cosine"] > rep["baseline"]["cosine"]
    assert rep["codes"]["codes_used"] > 20 and rep["codes"]["vocab_size"] == 125


def feature_folder(root: Path) -> Path:
    """A folder root whose train / val splits hold only ``feature`` vectors (as pseudolabel writes them)."""
    for split, count, seed in (("train", 300, 0), ("val", 40, 1)):
        folder = root / split / "feature"
        folder.mkdir(parents=True)
        for i, v in enumerate(vectors(count, seed)):
            np.save(folder / f"s{i:04d}.npy", v.numpy())
    return root


def test_cli_trains_on_pseudolabelled_vectors_and_eval_measures_the_same(tmp_path, capsys):
    data, out = feature_folder(tmp_path / "data"), tmp_path / "tok"
    assert main(["tokenizer", "train", "--modality", "feature", "--data", str(data), "--out", str(out), "--quiet",
                 "train.steps=60", "tokenizer.tokens=2", "tokenizer.hidden=32", "train.baseline_scenes=200"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["vectors"] == 40 and report["training"]["train_vectors"] == 300
    assert {"tokenizer", "baseline", "codes"} <= set(report) and (out / "reconstructions.png").is_file()
    assert load_tokenizer(out).spec.num_channels == C  # the data's width, not the registry's default
    capsys.readouterr()
    assert main(["tokenizer", "eval", "--tokenizer", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["tokenizer"] == pytest.approx(report["tokenizer"]) and again["codes"] == report["codes"]
    assert main(["tokenizer", "train", "--modality", "feature", "--out", str(tmp_path / "x")]) != 0
    assert "give --data DIR" in capsys.readouterr().err
