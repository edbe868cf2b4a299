"""`multimae retrieve`: multimodal retrieval with a 4M run (its global feature tokens predicted from any
inputs, decoded to an embedding, a gallery ranked by cosine similarity)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from multimae.retrieval.index import BACKENDS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "retrieve", help="rank a gallery by the global features a 4M run predicts from a query",
        description="Predicts the run's global feature tokens from the query's modalities (tokenised by the run's "
        "tokenizers), decodes them with its feature tokenizer and ranks a gallery by cosine similarity. Gallery "
        "embeddings are the gallery's stored feature vectors when it holds them, else predicted from "
        "--gallery-modalities. Writes topk.png (each query and its top k) and results.json (keys, scores, and "
        "recall@k when the queries' keys are in the gallery).")
    parser.add_argument("--checkpoint", required=True, help="a 4M run folder (or its checkpoint, or a converted file)")
    parser.add_argument("--tokenizer", action="append", default=[], metavar="MODALITY=DIR",
                        help="a saved tokenizer to use for MODALITY beside the run's own (a converted checkpoint "
                        "keeps none); repeatable")
    parser.add_argument("--query", action="append", default=[], metavar="NAME=FILE",
                        help="one query's input: an image / .npy file for a map, text (or a .txt file) for a "
                        "sequence; repeatable (several = one multimodal query)")
    parser.add_argument("--queries", help="a batch of queries: a folder-layout root or sample shards")
    parser.add_argument("--query-modalities", help="with --queries: the modalities the queries give, comma-separated")
    parser.add_argument("--gallery", required=True, help="the gallery: a folder-layout root or sample shards")
    parser.add_argument("--gallery-modalities", help="predict gallery embeddings from these (comma-separated) "
                        "[the stored feature vectors, else the picture]")
    parser.add_argument("--split", default="train", help="the split of --gallery and --queries [train]")
    parser.add_argument("--feature", help="the run's feature output, when it has several [its only one]")
    parser.add_argument("--k", type=int, default=5, help="results per query [5]")
    parser.add_argument("--backend", default="torch", choices=BACKENDS, help="gallery index [torch]")
    parser.add_argument("--scheme", default="maskgit", choices=("maskgit", "roar"), help="[maskgit]")
    parser.add_argument("--steps", type=int, default=1, help="decoding steps of the feature tokens; 1 = one pass [1]")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = argmax [0]")
    parser.add_argument("--seed", type=int, default=0, help="[0]")
    parser.add_argument("--batch-size", type=int, default=64, help="samples embedded at once [64]")
    parser.add_argument("--picture-queries", type=int, default=8, help="queries drawn in topk.png [8]")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(func=run)


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]


def _one_query(gen: Any, items: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``({input: raw batch of 1}, {input: raw value shown})`` of --query NAME=FILE items."""
    from multimae.cli.generate import _pairs
    from multimae.inference.inputs import fit_size, read_input
    from multimae.modalities.registry import get_modality

    texts, files = {}, {}
    for name, value in _pairs(items, "--query"):
        spec = gen.model.input_specs[gen.input(name)]
        path = Path(value)
        if spec.kind == "tokens":
            texts[name] = path.read_text().strip() if value.endswith(".txt") and path.is_file() else value
            continue
        if not path.is_file():
            raise ValueError(f"--query {name}={value}: no such file")
        files[name] = read_input(get_modality(spec.source_name if spec.kind == "token_map" else spec.name), path).value
    maps = fit_size(files, gen.model.config.image_size, 1, "crop")[0] if files else {}
    raw = {n: v.unsqueeze(0) for n, v in maps.items()}
    raw.update({n: [t] for n, t in texts.items()})
    return raw, {**maps, **texts}


def run(args: argparse.Namespace) -> int:
    from multimae.cli.generate import _pairs
    from multimae.engine.distributed import resolve_device
    from multimae.errors import check_seed, reading
    from multimae.generation.runs import RunGenerator, load_run
    from multimae.retrieval import EmbedSchedule, build_index, feature_output, predict_embeddings
    from multimae.retrieval.gallery import embed_data
    from multimae.tasks.runs import check_output_folder

    try:
        check_seed(args.seed, "--seed")
        if args.k < 1 or args.batch_size < 1 or args.steps < 1:
            raise ValueError("--k, --batch-size and --steps must be >= 1")
        if bool(args.query) == bool(args.queries):
            raise ValueError("give one query (--query NAME=FILE, repeatable) or a batch (--queries DATA "
                             "--query-modalities M,...)")
        if args.queries and not _names(args.query_modalities):
            raise ValueError("--queries needs --query-modalities (the modalities the queries give)")
        device = resolve_device(args.device, key="--device")
        check_output_folder(args.out, [args.checkpoint, args.gallery, *([args.queries] if args.queries else [])])
        with reading(args.checkpoint, "checkpoint"):
            model, tokenizers = load_run(args.checkpoint, dict(_pairs(args.tokenizer, "--tokenizer")))
        gen = RunGenerator(model.to(device), tokenizers)
        output = feature_output(gen, args.feature)
        schedule = EmbedSchedule(args.scheme, args.steps, args.temperature, args.seed, args.batch_size)
        if args.backend == "faiss":
            from multimae.retrieval.index import import_faiss

            import_faiss()  # before any work: faiss asked but not installed
        start = time.perf_counter()
        if args.query:
            raw, shown = _one_query(gen, args.query)
            queries = {"keys": ["query"], "embeddings": predict_embeddings(gen, raw, schedule, output),
                       "how": f"predicted from {', '.join(raw)}", "shown": shown}
        else:
            names = _names(args.query_modalities)
            batch = embed_data(gen, output, args.queries, args.split, names, schedule, args.batch_size, names)
            queries = {"keys": batch.keys, "embeddings": batch.embeddings, "how": batch.how, "set": batch}
        gallery = embed_data(gen, output, args.gallery, args.split, _names(args.gallery_modalities), schedule,
                             args.batch_size)
        index = build_index(gallery.embeddings, gallery.keys, args.backend)
        scores, found = index.search(queries["embeddings"], args.k)
        seconds = time.perf_counter() - start
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    return _write(args, gen, output, queries, gallery, scores, found, seconds)


def _write(args: argparse.Namespace, gen: Any, output: str, queries: dict[str, Any], gallery: Any, scores: Any,
           found: Any, seconds: float) -> int:
    import torch

    from multimae.retrieval.metrics import recall_at_k

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    position = {key: i for i, key in enumerate(gallery.keys)}
    truth = torch.tensor([position.get(k, -1) for k in queries["keys"]]) if "set" in queries else None
    k = found.shape[1]
    ks = sorted({1, 5, k} & set(range(1, k + 1)))
    recall = recall_at_k(found, truth, ks) if truth is not None and bool((truth >= 0).any()) else None
    results = [{"query": key, "truth_in_gallery": bool(truth is not None and truth[q] >= 0),
                "topk": [{"key": gallery.keys[int(i)], "score": round(float(s), 6)} for s, i in zip(scores[q], found[q])]}
               for q, key in enumerate(queries["keys"])]
    summary = {"checkpoint": str(args.checkpoint), "feature_output": output, "backend": args.backend, "k": k,
               "queries": {"count": len(queries["keys"]), "embeddings": queries["how"],
                           "data": args.queries, "files": args.query},
               "gallery": {"data": args.gallery, "split": args.split, "size": len(gallery.keys),
                           "embeddings": gallery.how},
               "schedule": {"scheme": args.scheme, "steps": args.steps, "temperature": args.temperature,
                            "seed": args.seed},
               "recall": None if recall is None else {str(n): v for n, v in recall.items()},
               "random_recall": {str(n): min(1.0, n / len(gallery.keys)) for n in ks}, "seconds": round(seconds, 3),
               "results": results}
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    _picture(gen, queries, gallery, scores, found, args.picture_queries).save(out / "topk.png")
    if recall is not None:
        print("recall: " + ", ".join(f"@{n} {v:.3f}" for n, v in recall.items()) + " (random: "
              + ", ".join(f"@{n} {min(1.0, n / len(gallery.keys)):.3f}" for n in ks) + ")")
    for r in results[: args.picture_queries]:
        print(f"{r['query']}: " + ", ".join(f"{t['key']} {t['score']:.3f}" for t in r["topk"]))
    print(f"ranked a gallery of {len(gallery.keys)} for {len(results)} quer{'y' if len(results) == 1 else 'ies'} "
          f"in {seconds:.2f} s; wrote topk.png and results.json to {out}")
    return 0


def _picture(gen: Any, queries: dict[str, Any], gallery: Any, scores: Any, found: Any, rows: int) -> Any:
    """topk.png: the first ``rows`` queries, their inputs and their top k gallery items."""
    import numpy as np
    import torch

    from multimae.retrieval.picture import drawn, topk_picture

    def source_of(name: str) -> str:
        spec = gen.model.input_specs[gen.input(name)]
        return spec.source_name if spec.kind == "token_map" else spec.name

    def maps(data: Any, i: int) -> dict[str, np.ndarray]:
        sample = data.source.samples[i]
        return {m: drawn(m, sample[m]) for m in data.shown if isinstance(sample[m], torch.Tensor)}

    def tile(i: int) -> np.ndarray:
        return next(iter(maps(gallery, i).values()), np.zeros((8, 8, 3), np.uint8))

    count = min(len(queries["keys"]), max(1, rows))
    if "set" in queries:
        batch = queries["set"]
        shown = [maps(batch, q) for q in range(count)]
        keys_in = set(gallery.keys)
        truth = [k if k in keys_in else None for k in batch.keys[:count]]
    else:
        shown = [{n: drawn(source_of(n), v) for n, v in queries["shown"].items() if not isinstance(v, str)}]
        truth = None
    results = [[tile(int(i)) for i in found[q]] for q in range(count)]
    keys = [[gallery.keys[int(i)] for i in found[q]] for q in range(count)]
    return topk_picture(shown, results, keys, scores[:count].tolist(), truth, list(queries["keys"][:count]))
