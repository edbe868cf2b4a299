"""Encoder token tables drawn from the map tokenizers' code vectors (model.encoder_token_init=codebook)."""

from __future__ import annotations

import json

import pytest
import torch

from multimae.cli.main import main
from multimae.config.fourm import FourMRunConfig
from multimae.config.loader import load_config
from multimae.model.fourm import FourM, fourm_config
from multimae.model.fourm.model import init_token_embeddings_from_codes
from multimae.tasks.fourm_job import input_codes
from multimae.tokenizers import MapTokenizerConfig, QuantizerConfig, SpatialTokenizer
from multimae.tokenizers.base import load_tokenizer

from fourm.conftest import write_config
from token_shards.conftest import make_tokenizer


def test_a_map_tokenizers_code_vectors_are_what_its_decoder_reads():
    tok = make_tokenizer("depth")
    codes = tok.code_vectors()
    assert codes.shape == (tok.vocab_size, 3) and codes.dtype == torch.float32  # FSQ levels (5, 3, 3)
    assert len({tuple(row.tolist()) for row in codes}) == tok.vocab_size  # one vector per id
    ids = torch.randint(0, tok.vocab_size, (2, 4, 4))
    assert torch.equal(codes[ids].permute(0, 3, 1, 2), tok.net.quantizer.codes(ids))
    vq = SpatialTokenizer(tok.format, MapTokenizerConfig(widths=(8, 8), quantizer=QuantizerConfig(
        kind="vq", codebook_size=16, dim=3)))  # a learned codebook: its rows
    codes = vq.code_vectors()
    ids = torch.randint(0, 16, (2, 4, 4))
    assert codes.shape == (16, 3) and torch.allclose(codes[ids].permute(0, 3, 1, 2), vq.net.quantizer.codes(ids))


def model() -> FourM:
    torch.manual_seed(0)
    return FourM(fourm_config("tiny", dim=32, num_heads=2, encoder_depth=1, decoder_depth=1, image_size=32,
                              patch_size=8, inputs=("tok_depth", "caption"), outputs=("tok_depth",),
                              num_encoder_tokens=24, num_decoder_tokens=24,
                              modality_overrides={"tok_depth": {"num_channels": 6}, "caption": {"num_channels": 20}}))


def test_codebook_init_places_near_codes_near_and_leaves_the_rest():
    m = model()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    codes = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.1, 0.0]])
    assert init_token_embeddings_from_codes(m, {"tok_depth": codes}, std=0.5) == ["tok_depth"]
    table = m.encoder_embeddings["tok_depth"].token_emb.weight.detach()
    assert table.std().item() == pytest.approx(0.5, rel=1e-5)
    assert torch.equal(table[0], table[1])  # equal codes, equal rows
    assert torch.linalg.matrix_rank(table).item() == 2  # a projection of 2-d codes
    dist = torch.cdist(table, table)[5]
    assert dist[0] < dist[2] < dist[4]  # code 5 is nearest code 0, then code 2, farthest code 4
    changed = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"encoder_embeddings.tok_depth.token_emb.weight"}
    with pytest.raises(ValueError, match="6 tokens"):
        init_token_embeddings_from_codes(m, {"tok_depth": codes[:5]}, std=1.0)
    with pytest.raises(ValueError, match="tok_normals: not an encoder input"):
        init_token_embeddings_from_codes(m, {"tok_normals": codes}, std=1.0)


def test_a_run_draws_its_map_inputs_from_its_tokenizers(tmp_path, token_data):
    data, dirs = token_data
    cfg = write_config(tmp_path / "4m.yaml", data, dirs, tmp_path / "runs", steps=2)
    with pytest.raises(ValueError, match=r"model.encoder_token_init: must be one of \['normal', 'codebook'\]"):
        load_config(FourMRunConfig, cfg, ["model.encoder_token_init=pca"])
    run_cfg = load_config(FourMRunConfig, cfg, ["model.encoder_token_init=codebook"])
    assert "encoder_token_init" not in vars(run_cfg.model.build())  # not the architecture: weights load as ever
    tokenizers = {m: load_tokenizer(d) for m, d in dirs.items()}
    m = FourM(run_cfg.model.build())
    codes = input_codes(m, tokenizers)
    assert set(codes) == {"tok_rgb", "tok_depth"}  # the caption's tokenizer has no code vectors
    assert torch.equal(codes["tok_depth"], tokenizers["depth"].code_vectors())
    with pytest.raises(ValueError, match="no input is read through a map tokenizer's codes"):
        input_codes(m, {"caption": tokenizers["caption"]})

    assert main(["pretrain", "--config", str(cfg), "--quiet", "model.encoder_token_init=codebook"]) == 0
    run = tmp_path / "runs" / "run"
    assert json.loads((run / "report.json").read_text())["steps"] == 2
