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

    PYTHONPATH=src .venv/bin/python experiments/retrieval.py --run runs/4m-feat --multimae runs/mmae \
        --data runs/wfeat --split val
"""

from __future__ import annotations

import argparse
import json
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


def multimae_embeddings(model: torch.nn.Module, raw: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, D) unit global tokens of the MultiMAE encoder given every modality of ``raw``, unmasked."""
    raw = dict(raw)
    if "rgb" in raw and not raw["rgb"].is_floating_point():
        raw["rgb"] = raw["rgb"].float() / 255.0
    return normalize(pooled_features(encoder_of(model), raw))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/4m-feat", help="4M run with a feature output [runs/4m-feat]")
    p.add_argument("--multimae", default="runs/mmae", help="the MultiMAE run whose encoder made the features")
    p.add_argument("--data", default="runs/wfeat", help="folder data holding rgb, depth and feature")
    p.add_argument("--split", default="val")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/retrieval-exp", help="results.json goes here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    gen = RunGenerator(*load_run(args.run))
    output = feature_output(gen)
    feature = stored_modality(gen, output)
    source = open_source(args.data, ["rgb", "depth", feature], args.split)
    samples = [source.samples[i] for i in range(len(source.samples))]  # type: ignore[arg-type]
    keys = [str(s["key"]) for s in samples]
    index = build_index(normalize(torch.stack([s[feature] for s in samples]).float()), keys, "torch")
    truth = torch.arange(len(keys))
    mmae = load_run_model(args.multimae).eval()
    if int(encoder_of(mmae).config.image_size) != int(gen.model.config.image_size):
        raise SystemExit(f"{args.multimae} reads {encoder_of(mmae).config.image_size} px, {args.run} "
                         f"{gen.model.config.image_size} px: the queries are fitted to one size for both")
    results: dict[str, dict[str, dict[str, float]]] = {}
    with torch.no_grad():
        for query in QUERIES:
            name = " + ".join(query)
            rows: dict[str, list[torch.Tensor]] = {"4m": [], "multimae": []}
            for start in range(0, len(samples), args.batch):
                chunk = [samples[i] for i in range(start, min(start + args.batch, len(samples)))]
                raw = raw_batch(gen, chunk, list(query))  # fitted to the run's size, for both models
                rows["4m"].append(predict_embeddings(gen, raw, output=output))
                rows["multimae"].append(multimae_embeddings(mmae, raw))
            results[name] = {}
            for who, parts in rows.items():
                _, found = index.search(torch.cat(parts), k=5)
                recall = recall_at_k(found, truth)
                results[name][who] = {f"recall@{k}": round(v, 4) for k, v in recall.items()}
            print(name, results[name], flush=True)
    M = len(keys)
    results["random"] = {"recall@1": round(1 / M, 4), "recall@5": round(5 / M, 4)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"run": args.run, "multimae": args.multimae, "data": args.data,
                                                  "split": args.split, "gallery": M, "results": results}, indent=2))
    print(f"random {results['random']}; wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
