"""Retrieval on a tiny 4M run with global feature tokens: the API, `multimae retrieve` (one query, a batch
with recall@k, faiss), a converted official-layout checkpoint, and errors that name the problem."""

from __future__ import annotations

import json

import pytest
import torch

from multimae.cli.main import main
from multimae.generation.runs import RunGenerator, load_run
from multimae.retrieval import EmbedSchedule, build_index, feature_output, normalize, predict_embeddings
from multimae.retrieval.gallery import embed_data, raw_batch

from retrieval.conftest import FEATURES, SCENES

try:
    import faiss  # noqa: F401
    HAS_FAISS = True
except ImportError:
    HAS_FAISS = False


@pytest.fixture(scope="module")
def gen(feature_run) -> RunGenerator:
    return RunGenerator(*load_run(feature_run))


@pytest.fixture(scope="module")
def depth_file(tmp_path_factory, feature_data):
    data, _ = feature_data
    return sorted((data / "train" / "depth").rglob("*.png"))[0]


def test_gallery_embeddings_are_the_stored_vectors_and_each_ranks_itself_first(gen, feature_data):
    data, _ = feature_data
    output = feature_output(gen)
    assert output == "tok_feature"
    gallery = embed_data(gen, output, str(data))
    assert gallery.how == "stored feature vectors" and gallery.embeddings.shape == (SCENES, FEATURES)
    from multimae.data.folder import FolderDataset

    folder = FolderDataset(data, "train", ("feature",))
    stored = torch.stack([folder[i]["feature"] for i in range(len(folder))])
    torch.testing.assert_close(gallery.embeddings, normalize(stored))
    _, found = build_index(gallery.embeddings, gallery.keys).search(normalize(stored), 1)
    assert torch.equal(found[:, 0], torch.arange(SCENES))


def test_predicted_embeddings_are_the_decoded_generated_tokens(gen, feature_data):
    data, _ = feature_data
    predicted = embed_data(gen, "tok_feature", str(data), modalities=["depth"], batch=5)
    assert predicted.how == "predicted from depth" and predicted.embeddings.shape == (SCENES, FEATURES)
    torch.testing.assert_close(predicted.embeddings.norm(dim=1), torch.ones(SCENES))
    from multimae.data.folder import FolderDataset

    samples = [FolderDataset(data, "train", ("depth",))[i] for i in range(3)]
    alone = predict_embeddings(gen, raw_batch(gen, samples, ["depth"]), EmbedSchedule())
    torch.testing.assert_close(alone, predicted.embeddings[:3])  # argmax: batching changes nothing
    roar = predict_embeddings(gen, raw_batch(gen, samples, ["depth"]), EmbedSchedule("roar", steps=4,
                                                                                     temperature=1.0, seed=3))
    assert roar.shape == (3, FEATURES)


def test_cli_one_multimodal_query_writes_the_picture_and_the_results(tmp_path, feature_run, feature_data, depth_file,
                                                                     capsys):
    data, _ = feature_data
    rgb = str(depth_file).replace("/depth/", "/rgb/")
    out = tmp_path / "out"
    assert main(["retrieve", "--checkpoint", str(feature_run), "--query", f"depth={depth_file}", "--query",
                 f"rgb={rgb}", "--gallery", str(data), "--k", "5", "--out", str(out)]) == 0
    assert "ranked a gallery of 16 for 1 query" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["gallery"]["embeddings"] == "stored feature vectors" and results["recall"] is None
    top = results["results"][0]["topk"]
    assert len(top) == 5 and [t["score"] for t in top] == sorted((t["score"] for t in top), reverse=True)
    assert results["queries"]["embeddings"] == "predicted from depth, rgb"
    assert (out / "topk.png").stat().st_size > 0


def test_cli_batch_of_queries_reports_recall_against_brute_force(tmp_path, gen, feature_run, feature_data):
    data, _ = feature_data
    out = tmp_path / "out"
    assert main(["retrieve", "--checkpoint", str(feature_run), "--queries", str(data), "--query-modalities", "depth",
                 "--gallery", str(data), "--k", "5", "--out", str(out), "--picture-queries", "3"]) == 0
    results = json.loads((out / "results.json").read_text())
    queries = embed_data(gen, "tok_feature", str(data), modalities=["depth"])
    gallery = embed_data(gen, "tok_feature", str(data))
    cos = queries.embeddings @ gallery.embeddings.T  # (Q, M)
    rank = (cos > cos.diagonal()[:, None]).sum(dim=1)  # better-scored items than the true one
    assert results["recall"]["1"] == pytest.approx(float((rank < 1).float().mean()))
    assert results["recall"]["5"] == pytest.approx(float((rank < 5).float().mean()))
    assert results["random_recall"] == {"1": 1 / 16, "5": 5 / 16}
    assert all(r["truth_in_gallery"] for r in results["results"]) and (out / "topk.png").is_file()


@pytest.mark.skipif(not HAS_FAISS, reason="faiss is not installed")
def test_cli_faiss_backend_gives_the_torch_results(tmp_path, feature_run, feature_data):
    data, _ = feature_data
    base = ["retrieve", "--checkpoint", str(feature_run), "--queries", str(data), "--query-modalities", "rgb",
            "--gallery", str(data), "--k", "3"]
    assert main([*base, "--out", str(tmp_path / "t")]) == 0 and main([*base, "--backend", "faiss", "--out",
                                                                      str(tmp_path / "f")]) == 0
    t, f = (json.loads((tmp_path / n / "results.json").read_text()) for n in ("t", "f"))
    assert [[x["key"] for x in r["topk"]] for r in t["results"]] == [[x["key"] for x in r["topk"]] for r in f["results"]]
    assert t["recall"] == f["recall"]


def test_a_converted_official_layout_checkpoint_retrieves_like_the_run(tmp_path, gen, feature_run, feature_data,
                                                                       depth_file):
    """Our run's weights under 4M's names (tok_dinov2_global for the feature tokens), converted by
    `multimae convert` and given the run's tokenizers: the same results as the run itself."""
    from safetensors.torch import save_file

    from multimae.tokenizers.run_files import tokenizer_folders

    data, _ = feature_data
    official = {"tok_rgb": "tok_rgb@16", "tok_depth": "tok_depth@16", "tok_feature": "tok_dinov2_global@16"}
    state = {}
    for key, tensor in gen.model.state_dict().items():
        parts = key.split(".")
        if parts[0] in ("encoder_embeddings", "decoder_embeddings"):
            parts[1] = official[parts[1]]
        state[".".join(parts)] = tensor.clone()
    save_file(state, tmp_path / "official.safetensors")
    assert main(["convert", str(tmp_path / "official.safetensors"), str(tmp_path / "ours.safetensors"),
                 "--num-heads", "2"]) == 0
    tokenizers = [f"--tokenizer={m}={d}" for m, d in tokenizer_folders(feature_run).items()]
    common = ["--query", f"depth={depth_file}", "--gallery", str(data), "--k", "4"]
    assert main(["retrieve", "--checkpoint", str(tmp_path / "ours.safetensors"), *tokenizers, *common,
                 "--out", str(tmp_path / "conv")]) == 0
    assert main(["retrieve", "--checkpoint", str(feature_run), *common, "--out", str(tmp_path / "run")]) == 0
    conv, run = (json.loads((tmp_path / n / "results.json").read_text()) for n in ("conv", "run"))
    assert conv["feature_output"] == "tok_feature" and conv["results"] == run["results"]


@pytest.mark.parametrize("extra,message", [
    (["--query", "sound=a.png"], "'sound' is not an input of this model"),
    (["--query", "depth=nothere.png"], "no such file"),
    (["--queries", "DATA"], "--queries needs --query-modalities"),
    ([], "give one query"),
    (["--query", "depth=DEPTH", "--feature", "tok_rgb"], "not a global feature output of this run"),
])
def test_errors_name_the_problem(tmp_path, feature_run, feature_data, depth_file, extra, message):
    data, _ = feature_data
    extra = [str(depth_file).join(e.split("DEPTH")) if "DEPTH" in e else e.replace("DATA", str(data)) for e in extra]
    with pytest.raises(SystemExit, match=message):
        main(["retrieve", "--checkpoint", str(feature_run), "--gallery", str(data), "--out", str(tmp_path / "o"),
              *extra])


def test_an_empty_gallery_and_a_missing_faiss_are_named(tmp_path, monkeypatch, feature_run, depth_file):
    import sys

    empty = tmp_path / "empty"
    for m in ("feature", "rgb"):
        (empty / "train" / m).mkdir(parents=True)
    base = ["retrieve", "--checkpoint", str(feature_run), "--query", f"depth={depth_file}", "--out",
            str(tmp_path / "o")]
    with pytest.raises(SystemExit, match="found 0 rgb files"):
        main([*base, "--gallery", str(empty)])
    monkeypatch.setitem(sys.modules, "faiss", None)  # as if not installed
    with pytest.raises(SystemExit, match="faiss, which is not installed"):
        main([*base, "--gallery", str(empty), "--backend", "faiss"])


def test_a_shard_gallery_without_features_is_embedded_from_its_pictures(tmp_path, feature_run, depth_file):
    from multimae.data.writer import GenerateConfig, generate

    generate(tmp_path / "shards", GenerateConfig(count=6, size=32, fmt="shards", shard_size=4), progress=False)
    out = tmp_path / "out"
    assert main(["retrieve", "--checkpoint", str(feature_run), "--query", f"depth={depth_file}", "--gallery",
                 str(tmp_path / "shards"), "--k", "3", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["gallery"] | {"data": None} == {"data": None, "split": "train", "size": 6,
                                                    "embeddings": "predicted from rgb"}
    assert len(results["results"][0]["topk"]) == 3
