"""The global feature tokens through the 4M chain: `multimae tokenize` writes a folder's feature vectors as
global tokens (the same vector at every crop), and a 4M run lays them on a learned square table."""

from __future__ import annotations

import json

import numpy as np
import torch

from multimae.data.token_pool import load_token_pool
from multimae.engine.checkpoint import build_model_from_checkpoint
from multimae.pretokenize.crops import crop_view
from multimae.tokenizers import load_tokenizer

from retrieval.conftest import IMAGE, TOKENS


def test_tokenize_writes_feature_vectors_as_global_tokens(feature_data, feature_tokens):
    data, dirs = feature_data
    entry = json.loads((feature_tokens / "manifest.json").read_text())["tokenizers"]["feature"]
    assert (entry["placement"], entry["grid"], entry["num_tokens"]) == ("global", None, TOKENS)
    pool = load_token_pool(feature_tokens)
    assert pool.ids["feature"].shape == (16, 2, TOKENS) and pool.ids["rgb"].shape == (16, 2, 16)
    tok = load_tokenizer(dirs["feature"])
    keys = sorted(p.relative_to(data / "train" / "feature").with_suffix("") for p in
                  (data / "train" / "feature").rglob("*.npy"))
    from multimae.data.folder import FolderDataset

    folder = FolderDataset(data, "train", ("feature",))
    vectors = torch.stack([folder[i]["feature"] for i in range(len(folder))])
    assert len(keys) == len(vectors)
    want = tok.encode(vectors).ids  # (16, T): every crop stores its sample's one vector's tokens
    assert torch.equal(pool.ids["feature"][:, 0], want) and torch.equal(pool.ids["feature"][:, 1], want)


def test_a_flipped_crop_keeps_the_feature_vector():
    sample = {"rgb": torch.rand(3, 8, 8), "feature": torch.arange(6.0).reshape(1, 6)}
    view = crop_view(sample, np.array([0, 0, 4, 4, 1]), {"rgb": 4, "feature": None})
    assert torch.equal(view["feature"], sample["feature"]) and view["rgb"].shape == (3, 4, 4)


def test_the_run_lays_global_tokens_on_a_learned_square_table(feature_run):
    model = build_model_from_checkpoint(feature_run)
    spec = model.output_specs["tok_feature"]
    assert spec.source_name == "feature" and spec.positions == "learned" and spec.stride == IMAGE // 2
    emb = model.encoder_embeddings["tok_feature"]
    assert isinstance(emb.pos_emb, torch.nn.Parameter) and emb.pos_emb.shape[1] == TOKENS
