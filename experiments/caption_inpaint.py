"""In-painting a caption with a 4M run (issue #19, "Editing"): one attribute word of each held-out scene's
true caption is replaced by [S_1] and regenerated, greedily, with and without the scene's picture.

For each of the caption's first colour word, first shape word and floor word (`caption_attributes` reads
them): the share of scenes whose regenerated span (the words that took [S_1]'s place) says the true
value (its first colour / shape word; for the floor, its only word), from

* ``rgb + text``: the picture and the caption with the word masked (4M's span-masked input);
* ``text``: the masked caption alone (the language prior: what the rest of the sentence implies);
* ``generated``: the caption generated whole from the picture (no text given), read by
  `caption_attributes`;
* ``majority``: the most common true value among the scenes (always saying it).

Also the share of spans of one word (``one word``): a span that runs on is a caption written into the gap.

The world is rendered at the run's class colours (`generation.run_class_colors`). Prints a markdown table
and writes ``<out>.json``.

    PYTHONPATH=src .venv/bin/python experiments/caption_inpaint.py --run runs/4m-cb1 --scenes 128
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generation import run_class_colors  # noqa: E402

from multimae.data import WorldDataset  # noqa: E402
from multimae.data.world import caption_attributes  # noqa: E402
from multimae.data.world.classes import COLORS, OBJECT_CLASSES  # noqa: E402
from multimae.generation import TargetSchedule  # noqa: E402
from multimae.generation.runs import RunGenerator, load_run  # noqa: E402

ATTRIBUTES = ("color", "shape", "floor")
BATCH = 16


def masked(caption: str, attribute: str, value: str | None) -> str | None:
    """``caption`` with the word `caption_attributes` reads for ``attribute`` as [S_1] (None: not said)."""
    if value is None:
        return None
    words = caption.split()
    index = words.index(value) if attribute != "floor" else words.index("floor") - 1
    return " ".join([*words[:index], "[S_1]", *words[index + 1:]])


def span_value(result: str, given: str, attribute: str) -> tuple[str | None, int]:
    """(the value the span that replaced [S_1] in ``result`` says, its word count)."""
    words, parts = result.split(), given.split()
    index = parts.index("[S_1]")
    suffix = len(parts) - index - 1
    span = words[index:len(words) - suffix] if suffix else words[index:]
    if attribute == "floor":
        return (span[0] if len(span) == 1 else None), len(span)
    vocabulary = COLORS if attribute == "color" else OBJECT_CLASSES
    return next((w for w in span if w in vocabulary), None), len(span)


def captions(gen: RunGenerator, pictures: torch.Tensor | None, texts: list[str] | None, precision: str) -> list[str]:
    schedules = [TargetSchedule("caption", "autoregressive", temperature=0.0)]
    raw = {} if pictures is None else {"rgb": pictures}
    inpaint = {} if texts is None else {"caption": texts}
    *_, last = gen.steps(raw, schedules, inpaint=inpaint, precision=precision)
    return gen.decode(last.state, schedules)["caption"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default="runs/4m-cb1")
    p.add_argument("--scenes", type=int, default=128)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/caption-inpaint")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    run = Path(args.run)
    gen = RunGenerator(*load_run(run))
    colors = run_class_colors(run)
    world = WorldDataset("val", size=gen.model.config.image_size, length=args.scenes, modalities=("rgb",),
                         class_colors=colors)
    scenes = [world[i] for i in range(args.scenes)]
    truth = [caption_attributes(s["caption"]) for s in scenes]
    hits: dict[str, Counter] = {a: Counter() for a in ATTRIBUTES}
    counted: Counter = Counter()
    examples: list[dict[str, str]] = []
    for b in range(0, len(scenes), BATCH):
        part = scenes[b:b + BATCH]
        pictures = torch.stack([s["rgb"] for s in part])
        whole = captions(gen, pictures, None, args.precision)
        for attribute in ATTRIBUTES:
            rows = [i for i, s in enumerate(part) if truth[b + i][attribute] is not None]
            texts = [masked(part[i]["caption"], attribute, truth[b + i][attribute]) for i in rows]
            with_rgb = captions(gen, pictures[rows], texts, args.precision)
            alone = captions(gen, None, texts, args.precision)
            for j, i in enumerate(rows):
                want = truth[b + i][attribute]
                counted[attribute] += 1
                for key, result in (("rgb + text", with_rgb[j]), ("text", alone[j])):
                    value, length = span_value(result, texts[j], attribute)
                    hits[attribute][key] += value == want
                    hits[attribute][f"{key} one word"] += length == 1
                hits[attribute]["generated"] += caption_attributes(whole[i])[attribute] == want
                if len(examples) < 6 and attribute == "shape":
                    examples.append({"given": texts[j], "rgb + text": with_rgb[j], "text": alone[j]})
    result: dict[str, Any] = {"run": str(run), "scenes": args.scenes, "class_colors": colors,
                              "precision": args.precision, "scores": {}, "examples": examples}
    keys = ("rgb + text", "text", "generated", "majority", "rgb + text one word", "text one word")
    lines = [f"| attribute | scenes | {' | '.join(keys)} |", "|---" * (len(keys) + 2) + "|"]
    for a in ATTRIBUTES:
        n = counted[a]
        values = Counter(t[a] for t in truth if t[a] is not None)
        majority = values.most_common(1)[0][1] / n if n else 0.0
        scores = {k: hits[a][k] / n for k in keys if k != "majority"} | {"majority": majority}
        result["scores"][a] = {"scenes": n, **{k: round(v, 3) for k, v in scores.items()}}
        lines.append(f"| {a} | {n} | " + " | ".join(f"{scores[k]:.3f}" for k in keys) + " |")
    result["wall_s"] = round(time.perf_counter() - start, 1)
    Path(f"{args.out}.json").parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(result, indent=1))
    print("\n".join(lines))
    for e in examples:
        print(f"  {e['given']!r}\n    rgb + text: {e['rgb + text']!r}\n    text:       {e['text']!r}")
    print(f"{result['wall_s']} s; wrote {args.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
