"""Retrieval measured (issue #19): a 4M feature run's predicted features against our MultiMAE encoder's own
features, for each query modality, on a gallery of stored feature vectors (not in CI; docs/generation.md,
"Retrieval").

The gallery is the ``--split`` samples' stored ``feature`` vectors: the MultiMAE run's global token of
each picture (`multimae pseudolabel --labeler feature=encoder`). Each sample queries it once per query
set, and the right answer is its own item. Per query set (rgb, depth, rgb + depth):

* ``4m``: the 4M run predicts the feature tokens from the query (`predict_embeddings`, one pass at
  temperature 0) and its feature tokenizer decodes them;
* ``multimae``: the MultiMAE run's encoder reads the same query and its global token is the
  embedding. From rgb alone this is the gallery's own function (recall 1 by construction), the
  ceiling; from depth it is the baseline the issue asks for: what MultiMAE's shared encoder carries
  from one modality to the other without a feature target.
* ``multimae+ridge``: the same MultiMAE tokens of the query mapped to the feature space by a ridge
  regression fitted on the ``--fit-split`` samples (the ridge weight picked by recall@1 on their last
  fifth, then refitted on all): what a linear read-out of MultiMAE's encoder finds from the query.
* ``pixels+ridge``: a ridge regression from the query's maps themselves (average-pooled to 16 x 16 per
  channel): what the query's pixels carry about the feature, linearly, with no model at all.

    PYTHONPATH=src .venv/bin/python experiments/retrieval.py --run runs/4m-feat --multimae runs/mmae \
        --data runs/wfeat --split val --fit-split train
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch

from multimae.generation.runs import RunGenerator, load_run
from multimae.model.encoder import encoder_of
from multimae.retrieval import build_index, feature_output, predict_embeddings
from multimae.data.sources import open_source
from multimae.retrieval.embed import normalize, stored_modality
from multimae.retrieval.gallery import raw_batch
from multimae.retrieval.metrics import recall_at_k
from multimae.tasks.loading import load_run_model
from multimae.tasks.probe import pooled_features

QUERIES = (("rgb",), ("depth",), ("rgb", "depth"))
RIDGE_WEIGHTS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # times the mean eigenvalue of X^T X


def multimae_embeddings(model: torch.nn.Module, raw: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, D) unit global tokens of the MultiMAE encoder given every modality of ``raw``, unmasked."""
    raw = dict(raw)
    if "rgb" in raw and not raw["rgb"].is_floating_point():
        raw["rgb"] = raw["rgb"].float() / 255.0
    return normalize(pooled_features(encoder_of(model), raw))


def pixel_features(raw: dict[str, torch.Tensor], side: int = 16) -> torch.Tensor:
    """(B, F) the query's maps average-pooled to ``side`` x ``side`` per channel, concatenated."""
    parts = []
    for name in sorted(raw):
        x = raw[name].float()
        x = x.unsqueeze(1) if x.dim() == 3 else x
        parts.append(torch.nn.functional.adaptive_avg_pool2d(torch.nan_to_num(x), side).flatten(1))
    return torch.cat(parts, dim=1)


def ridge(X: torch.Tensor, Y: torch.Tensor, weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, std, W): the ridge map of standardised ``X`` (N, F) to ``Y`` (N, D), as float64."""
    X, Y = X.double(), Y.double()
    mean, std = X.mean(0), X.std(0).clamp_min(1e-6)
    Z = (X - mean) / std
    gram = Z.T @ Z
    lam = weight * float(gram.diagonal().mean())
    W = torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype), Z.T @ Y)
    return mean, std, W


def fit_ridge(X: torch.Tensor, Y: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], float]:
    """A ridge map from ``X`` to the unit feature rows ``Y``, its weight picked by recall@1 of its
    last fifth against those rows (fitted on the first four fifths), then refitted on all rows."""
    cut = len(X) * 4 // 5
    held = build_index(Y[cut:], [str(i) for i in range(len(Y) - cut)], "torch")
    truth = torch.arange(len(Y) - cut)

    def mapped(params: tuple[torch.Tensor, torch.Tensor, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        mean, std, W = params
        return normalize((((x.double() - mean) / std) @ W).float())

    scores = {}
    for weight in RIDGE_WEIGHTS:
        _, found = held.search(mapped(ridge(X[:cut], Y[:cut], weight), X[cut:]), k=1)
        scores[weight] = recall_at_k(found, truth, ks=(1,))[1]
    best = max(scores, key=lambda w: scores[w])
    params = ridge(X, Y, best)
    return (lambda x: mapped(params, x)), best


def query_rows(gen: RunGenerator, output: str | None, mmae: torch.nn.Module, samples: list, query: tuple[str, ...],
               batch: int) -> dict[str, torch.Tensor]:
    """Per sample: the 4M prediction of ``output`` (None: not predicted), MultiMAE's global token and
    the pooled pixels."""
    rows: dict[str, list[torch.Tensor]] = {"4m": [], "multimae": [], "pixels": []}
    for start in range(0, len(samples), batch):
        chunk = samples[start:start + batch]
        raw = raw_batch(gen, chunk, list(query))  # fitted to the run's size, for both models
        if output is not None:
            rows["4m"].append(predict_embeddings(gen, raw, output=output))
        rows["multimae"].append(multimae_embeddings(mmae, raw))
        rows["pixels"].append(pixel_features(raw))
    return {k: torch.cat(v) for k, v in rows.items() if v}


def load_samples(data: str, modalities: list[str], split: str) -> list[dict]:
    source = open_source(data, modalities, split)
    return [source.samples[i] for i in range(len(source.samples))]  # type: ignore[arg-type]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/4m-feat", help="4M run with a feature output [runs/4m-feat]")
    p.add_argument("--multimae", default="runs/mmae", help="the MultiMAE run whose encoder made the features")
    p.add_argument("--data", default="runs/wfeat", help="folder data holding rgb, depth and feature")
    p.add_argument("--split", default="val")
    p.add_argument("--fit-split", default="train", help="the samples the ridge maps are fitted on")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/retrieval-exp", help="results.json goes here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    gen = RunGenerator(*load_run(args.run))
    output = feature_output(gen)
    feature = stored_modality(gen, output)
    samples = load_samples(args.data, ["rgb", "depth", feature], args.split)
    fit = load_samples(args.data, ["rgb", "depth", feature], args.fit_split)
    keys = [str(s["key"]) for s in samples]
    index = build_index(normalize(torch.stack([s[feature] for s in samples]).float()), keys, "torch")
    fit_targets = normalize(torch.stack([s[feature] for s in fit]).float())
    truth = torch.arange(len(keys))
    mmae = load_run_model(args.multimae).eval()
    if int(encoder_of(mmae).config.image_size) != int(gen.model.config.image_size):
        raise SystemExit(f"{args.multimae} reads {encoder_of(mmae).config.image_size} px, {args.run} "
                         f"{gen.model.config.image_size} px: the queries are fitted to one size for both")
    results: dict[str, dict[str, dict[str, float]]] = {}
    with torch.no_grad():
        for query in QUERIES:
            name = " + ".join(query)
            rows = query_rows(gen, output, mmae, samples, query, args.batch)
            fit_rows = query_rows(gen, None, mmae, fit, query, args.batch)
            embedded = {"4m": rows["4m"], "multimae": rows["multimae"]}
            weights = {}
            for who in ("multimae", "pixels"):
                mapped, weights[who] = fit_ridge(fit_rows[who], fit_targets)
                embedded[f"{who}+ridge"] = mapped(rows[who])
            results[name] = {}
            for who, emb in embedded.items():
                _, found = index.search(emb, k=5)
                recall = recall_at_k(found, truth)
                results[name][who] = {f"recall@{k}": round(v, 4) for k, v in recall.items()}
                if who.endswith("+ridge"):
                    results[name][who]["ridge_weight"] = weights[who.split("+")[0]]
            print(name, results[name], flush=True)
    M = len(keys)
    results["random"] = {"recall@1": round(1 / M, 4), "recall@5": round(5 / M, 4)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"run": args.run, "multimae": args.multimae, "data": args.data,
                                                  "split": args.split, "fit_split": args.fit_split,
                                                  "fit_samples": len(fit), "gallery": M, "results": results},
                                                 indent=2))
    print(f"random {results['random']}; wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
