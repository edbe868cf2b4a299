"""M3AE on the built-in world: text mask ratios, an image-only MAE, unpaired text, caption flips.

The paper's findings (Geng et al. 2022) checked at a scale two CPU cores can run, with at least
two seeds, by linear probes on the frozen encoder (the paper's protocol):

1. pre-train with the `m3ae-cpu` preset (one encoder over image patches and caption pieces, 75 %
   of the patches hidden) at text mask ratio 0.15 (BERT's), 0.5, 0.75 (the default) and 0.9, and an
   image-only MAE: the same preset without the caption (same encoder, steps, batch of images and
   image mask ratio);
2. the default with unpaired text: a third of every batch is captions of the world's text split
   (scenes never shown as images), the batch grown from 32 to 48 so that every step still holds 32
   images (the image budget of the other arms);
3. the default with captioned samples never flipped (``data.caption_flip=skip``) instead of flipped
   with left / right swapped in the caption (the default, ``mirror``);
4. for every pre-trained encoder and a randomly initialised one per seed: linear probes (BatchNorm
   without affine + linear, SGD with momentum, 90 epochs) on the global token and on the mean of
   the patch tokens, for the scene label, the number of objects and the largest object's colour,
   fitted on train-split scenes and scored on val-split scenes; and, for the arms with a caption,
   *relation accuracy*: on val scenes whose caption says "left of" or "right of", only that word
   hidden, is it predicted right (from the image, and with no image at all: what the rest of the
   caption alone allows);
5. write ``docs/m3ae.md`` (tables: mean ± sd over seeds, every run) and ``docs/m3ae.png``.

Every unit writes ``<out>/results/<unit>.json`` when done; a re-run skips finished units and
resumes an interrupted pre-training from its last checkpoint.

    python experiments/m3ae.py                        # the full experiment (2 seeds, 7 arms)
    python experiments/m3ae.py --arms text75 mae      # some arms only (several processes can share an --out)
    python experiments/m3ae.py --smoke --out /tmp/m3ae-smoke   # a minute: checks the pipeline
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from multimae.config import RunConfig, load_config
from multimae.configs import preset_path
from multimae.engine.experiment import mean_sd, resume_or_restart, run_unit
from multimae.tasks.pretrain_job import run_pretraining

REPO = Path(__file__).resolve().parents[1]

# arm -> (label, overrides of the m3ae-cpu preset)
ARMS: dict[str, tuple[str, list[str]]] = {
    "text15": ("M3AE, text mask 0.15", ["masking.ratios={rgb: 0.75, caption: 0.15}"]),
    "text50": ("M3AE, text mask 0.5", ["masking.ratios={rgb: 0.75, caption: 0.5}"]),
    "text75": ("M3AE, text mask 0.75 (default)", []),
    "text90": ("M3AE, text mask 0.9", ["masking.ratios={rgb: 0.75, caption: 0.9}"]),
    "unpaired": ("M3AE 0.75 + unpaired text", ["data.batch_size=48", "data.unpaired_text=0.3333333333"]),
    "skipflip": ("M3AE 0.75, captioned samples not flipped", ["data.caption_flip=skip"]),
    "mae": ("image-only MAE", ["model.inputs=[rgb]", "model.outputs=[rgb]", "masking.ratios={rgb: 0.75}",
                               "loss.weights={}"]),
}
RATIO_ARMS = ("text15", "text50", "text75", "text90")
SHORT = {"text15": "t0.15", "text50": "t0.5", "text75": "t0.75", "text90": "t0.9", "mae": "MAE",
         "unpaired": "+unpaired", "skipflip": "no flip", "random": "random"}
TARGETS = ("label", "objects", "color")
POOLINGS = ("global", "mean")
RELATIONS = ("left", "right")

SMOKE = ["data.world_train_scenes=64", "data.world_val_scenes=32", "data.world_text_scenes=64", "train.val_every=0",
         "train.ckpt_every=3", "train.log_every=3", "train.steps=6"]


@dataclass
class Plan:
    out: Path
    seeds: tuple[int, ...]
    scale: float = 1.0
    smoke: bool = False
    cache_dir: str | None = None
    threads: int | None = None
    probe_train: int = 4000
    probe_val: int = 1000
    extra: list[str] = field(default_factory=list)


def pretrain_config(arm: str, seed: int, plan: Plan) -> RunConfig:
    steps = max(1, round(load_config(RunConfig, preset_path("m3ae-cpu")).train.steps * plan.scale))
    overrides = [f"train.seed={seed}", f"train.steps={steps}", f"train.out_dir={plan.out / 'runs'}",
                 f"train.name={arm}-s{seed}", *ARMS[arm][1],
                 *([f"data.cache_dir={plan.cache_dir}"] if plan.cache_dir else []),
                 *([f"train.threads={plan.threads}"] if plan.threads else []), *(SMOKE if plan.smoke else []),
                 *plan.extra]
    return load_config(RunConfig, preset_path("m3ae-cpu"), overrides)


def pretrained(arm: str, seed: int, plan: Plan) -> Path:
    """The finished run folder of ``arm`` and ``seed`` (trained, or resumed, here if need be)."""
    cfg = pretrain_config(arm, seed, plan)
    run_dir = Path(cfg.train.out_dir) / str(cfg.train.name)
    if not (run_dir / "report.json").exists():
        resume = resume_or_restart(run_dir)
        if resume is not None:
            cfg = load_config(RunConfig, run_dir / "config.yaml")
        run_pretraining(cfg, resume, progress=True)
    return run_dir


# ---------------------------------------------------------------------------------------- probe data
def probe_data(plan: Plan, split: str, count: int, size: int) -> dict[str, Any]:
    """``{"images": (N, 3, S, S), "facts": {fact: (N,)}, "captions": [str]}`` of the first ``count``
    scenes of ``split``, rendered once and kept in ``<out>/probe-<split>-<count>-<size>.pt``."""
    from tqdm import tqdm

    from multimae.engine.files import save_atomic
    from multimae.tasks.probe import world_scenes

    path = plan.out / f"probe-{split}-{count}-{size}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    with tqdm(total=count, desc=f"rendering {count} {split} scenes") as bar:
        images, facts, captions = world_scenes(split, count, size, bar.update)
    data = {"images": images, "facts": facts, "captions": captions}
    save_atomic(data, path)
    return data


def majority_rates(train: dict[str, Any], val: dict[str, Any]) -> dict[str, float]:
    """``{target: val accuracy of always answering the train split's most frequent value}``."""
    rates = {}
    for t in TARGETS:
        most = torch.as_tensor(train["facts"][t]).mode().values
        rates[t] = float((torch.as_tensor(val["facts"][t]) == most).float().mean())
    return rates


# ---------------------------------------------------------------------------------------- units
def probe_unit(arm: str, seed: int, plan: Plan, train: dict[str, Any], val: dict[str, Any]) -> dict[str, Any]:
    from multimae.data.world import FACTS
    from multimae.tasks.loading import load_pretrained, load_tokenizers
    from multimae.tasks.probe import ProbeSettings, probe_encoder, random_encoder_like

    if arm == "random":
        model, _ = load_pretrained(pretrained("text75", seed, plan))
        encoder = random_encoder_like(model, seed)
        report: dict[str, Any] = {}
    else:
        run = pretrained(arm, seed, plan)
        model, _ = load_pretrained(run)
        encoder = model
        report = json.loads((run / "report.json").read_text())
    model.eval()
    out: dict[str, Any] = {"arm": arm, "seed": seed, "probe": {}}
    for pooling in POOLINGS:
        settings = ProbeSettings(pooling=pooling, seed=seed, epochs=5 if plan.smoke else 90)
        out["probe"][pooling] = probe_encoder(encoder, (train["images"], train["facts"]),
                                              (val["images"], val["facts"]), FACTS, TARGETS, settings)
    if arm != "random" and "caption" in model.input_specs:
        tokenizer = load_tokenizers(run, model)["caption"]
        out["relation"] = {with_image: relation_accuracy(model, tokenizer, val, with_image)
                           for with_image in ("image", "no image")}
    if report:
        out.update({"steps": report["steps"], "train_wall_s": report["train_wall_s"], "val": report["val"],
                    "from_rgb": report.get("from_rgb", {}), "baseline_val": report.get("baseline_val", {}),
                    "text": report.get("text", {})})
    return out


@torch.no_grad()
def relation_accuracy(model: Any, tokenizer: Any, val: dict[str, Any], with_image: str) -> dict[str, float]:
    """On the val scenes whose caption says "left of" / "right of": that word alone hidden (the
    image whole, or absent with ``with_image="no image"``), the share predicted right when the
    model chooses between "left" and "right"; and how many scenes were scored."""
    from multimae.modalities.prepare import prepare_batch
    from multimae.text.batch import tokenize_texts

    spec = model.input_specs["caption"]
    ids = {w: tokenizer.encode([w], 1).ids[0, 0].item() for w in RELATIONS}
    rows = [i for i, c in enumerate(val["captions"]) if " left of " in c or " right of " in c]
    if not rows:
        return {"accuracy": float("nan"), "scenes": 0}
    raw = {"rgb": val["images"][rows], "caption": [val["captions"][i] for i in rows]}
    raw, _ = tokenize_texts(raw, {"caption": tokenizer}, {"caption": spec})
    caption = raw["caption"]
    hidden = (caption == ids["left"]) | (caption == ids["right"])  # (B, L): the one relation word
    keep = hidden.sum(dim=1) == 1
    prepared = prepare_batch(raw, model.input_specs, model.output_specs)
    inputs = {"caption": prepared.inputs["caption"][keep]}
    masks = {"caption": hidden[keep]}
    if with_image == "image":
        inputs["rgb"] = prepared.inputs["rgb"][keep]
        enc = model.backbone.config
        masks["rgb"] = torch.zeros(inputs["rgb"].shape[0], (enc.image_size // enc.patch_size) ** 2, dtype=torch.bool)
    logits = model(inputs, masks, valid={"caption": caption[keep] != spec.pad_id}).preds["caption"]  # (B, L, V)
    at = masks["caption"]
    pair = logits[at][:, [ids["left"], ids["right"]]]  # (B, 2)
    truth = (caption[keep][at] == ids["right"]).long()
    return {"accuracy": float((pair.argmax(dim=1) == truth).float().mean()), "scenes": int(keep.sum()),
            "right_share": float(truth.float().mean())}


# ---------------------------------------------------------------------------------------- report
def _fmt(vals: Sequence[float]) -> str:
    if not vals:
        return "–"
    m, s = mean_sd(vals)
    return f"{m:.3f} ± {s:.3f}"


def probe_values(results: list[dict[str, Any]], arm: str, target: str, pooling: str = "global") -> list[float]:
    return [r["probe"][pooling][target]["val"] for r in results if r["arm"] == arm]


def relation_values(results: list[dict[str, Any]], arm: str, with_image: str) -> list[float]:
    return [r["relation"][with_image]["accuracy"] for r in results if r["arm"] == arm and "relation" in r]


NOTES_MARK = "<!-- notes: kept when the report is rewritten -->"

# the paper's claims, each as (claim, arms that should be better, arms they are compared with, measure)
CLAIMS: tuple[tuple[str, tuple[str, ...], tuple[str, ...], str], ...] = (
    ("a high text mask ratio (0.5-0.9) beats BERT's 0.15", ("text50", "text75", "text90"), ("text15",), "probes"),
    ("M3AE's encoder beats an image-only MAE's (linear probes)", ("text75",), ("mae",), "probes"),
    ("unpaired text can be mixed in (no worse than paired alone)", ("unpaired",), ("text75",), "probes"),
    ("the image grounds the caption: relation words from the image beat the caption alone", ("text75",), ("text75",),
     "relation"),
    ("mirroring captions with the image (left <-> right) beats not flipping captioned samples", ("text75",),
     ("skipflip",), "relation"),
)


def verdict(better: Sequence[float], other: Sequence[float]) -> tuple[float, str]:
    """The difference of the means and how it compares with the seeds' spread (the larger sd)."""
    (mb, sb), (mo, so) = mean_sd(better), mean_sd(other)
    diff, spread = mb - mo, max(sb, so)
    if abs(diff) <= spread:
        return diff, f"within the seeds' spread ({spread:.3f})"
    return diff, "holds" if diff > 0 else "reversed"


def claim_lines(results: list[dict[str, Any]]) -> list[str]:
    """One line per claim and measure: the difference of the means, and whether it beats the spread."""
    lines = []
    for claim, better, other, measure in CLAIMS:
        if not all(any(r["arm"] == a for r in results) for a in (*better, *other)):
            continue
        parts = []
        if measure == "probes":
            for t in TARGETS:
                for a in better:
                    others = [v for o in other for v in probe_values(results, o, t)]
                    diff, how = verdict(probe_values(results, a, t), others)
                    parts.append(f"{t} ({SHORT[a]} − {'/'.join(SHORT[o] for o in other)}): {diff:+.3f}, {how}")
        elif better == other:  # with the image vs without it, same runs
            diff, how = verdict(relation_values(results, better[0], "image"),
                                relation_values(results, other[0], "no image"))
            parts.append(f"relation word, with − without the image ({SHORT[better[0]]}): {diff:+.3f}, {how}")
        else:
            diff, how = verdict(relation_values(results, better[0], "image"),
                                relation_values(results, other[0], "image"))
            parts.append(f"relation word from the image ({SHORT[better[0]]} − {SHORT[other[0]]}): {diff:+.3f}, {how}")
        lines += [f"- *{claim}*:", *[f"  - {x}" for x in parts]]
    return lines


def write_report(results: list[dict[str, Any]], plan: Plan, command: str, docs: Path,
                 majority: dict[str, float] | None = None) -> Path:
    from multimae.viz.bars import Panel, bar_panels

    docs.mkdir(parents=True, exist_ok=True)
    arms = [a for a in (*ARMS, "random") if any(r["arm"] == a for r in results)]
    label = {**{a: ARMS[a][0] for a in ARMS}, "random": "random encoder"}
    cfg = pretrain_config("text75", plan.seeds[0], plan)
    enc = cfg.model.build().encoder
    units_by = sorted({r["command"] for r in results if r.get("command") and r["command"] != command})
    lines = [
        "# M3AE on the built-in world: text mask ratio, image-only MAE, unpaired text, caption flips",
        "",
        f"Written by `{command}` (from the repository root; seeds {', '.join(map(str, plan.seeds))})"
        + (f"; the units ran as {', '.join(f'`{c}`' for c in units_by)}. " if units_by else ". ") +
        f"Every arm is the `m3ae-cpu` preset (ViT {enc.depth} blocks × {enc.dim}, patch {enc.patch_size}, "
        f"{enc.image_size} px, joint decoder, {cfg.train.steps} steps, 32 images per step, 75 % of the patches "
        f"hidden) with one change. Linear probes: BatchNorm without affine + linear layer, SGD with momentum "
        f"(no LARS in a well-kept library for current torch), 90 epochs, on {plan.probe_train} train-split "
        f"scenes, scored on {plan.probe_val} val-split scenes; mean ± sample sd over seeds.",
        "",
        "## Linear probes (global token), val accuracy",
        "",
        "| arm | " + " | ".join(TARGETS) + " |",
        "|---|" + "---|" * len(TARGETS),
    ]
    for a in arms:
        lines.append(f"| {label[a]} | " + " | ".join(_fmt(probe_values(results, a, t)) for t in TARGETS) + " |")
    if majority:
        lines.append("| most frequent train value | " + " | ".join(f"{majority[t]:.3f}" for t in TARGETS) + " |")
    lines += ["", "## Linear probes (mean of the patch tokens), val accuracy", "",
              "| arm | " + " | ".join(TARGETS) + " |", "|---|" + "---|" * len(TARGETS)]
    for a in arms:
        lines.append(f"| {label[a]} | " + " | ".join(_fmt(probe_values(results, a, t, "mean")) for t in TARGETS)
                     + " |")
    lines += ["", "## Relation words (\"left of\" / \"right of\" hidden alone), accuracy", "",
              "| arm | from the image | without the image | masked pieces (val) | image MSE (val) |",
              "|---|---|---|---|---|"]
    for a in arms:
        if a == "random":
            continue
        acc = [r["val"].get("caption_acc") for r in results if r["arm"] == a and "caption_acc" in r.get("val", {})]
        mse = [r["val"]["rgb"] for r in results if r["arm"] == a and "rgb" in r.get("val", {})]
        lines.append(f"| {label[a]} | {_fmt(relation_values(results, a, 'image'))} | "
                     f"{_fmt(relation_values(results, a, 'no image'))} | {_fmt(acc)} | {_fmt(mse)} |")
    lines += ["", "![probe accuracies](m3ae.png)", "", "## The paper's claims at this scale", "",
              "Differences of the means over seeds (global-token probes); a difference no larger than the "
              "larger of the two arms' standard deviations is called within the spread.", "", *claim_lines(results),
              "", "## Every run", "",
              "| arm | seed | steps | train wall (s) | probe label / objects / color (global) | relation (image / none) |",
              "|---|---|---|---|---|---|"]
    for r in results:
        probes = " / ".join(f"{r['probe']['global'][t]['val']:.3f}" for t in TARGETS)
        rel = (f"{r['relation']['image']['accuracy']:.3f} / {r['relation']['no image']['accuracy']:.3f} "
               f"({r['relation']['image']['scenes']} scenes)" if "relation" in r else "–")
        lines.append(f"| {r['arm']} | {r['seed']} | {r.get('steps', '–')} | {r.get('train_wall_s', '–')} | "
                     f"{probes} | {rel} |")
    total = sum(r.get("unit_wall_s", 0.0) for r in results)
    lines += ["", f"Total wall time of the probe units (including the pre-trainings they ran): {total / 60:.1f} min.",
              ""]
    md = docs / "m3ae.md"
    kept = md.read_text().split(NOTES_MARK, 1)[1] if md.exists() and NOTES_MARK in md.read_text() else "\n"
    md.write_text("\n".join(lines) + "\n" + NOTES_MARK + kept)
    panels = [Panel(f"probe: {t} (global token)", [SHORT[a] for a in arms], [probe_values(results, a, t) for a in arms])
              for t in TARGETS]
    text_arms = [a for a in arms if a not in ("random", "mae")]
    panels.append(Panel("relation word from the image", [SHORT[a] for a in text_arms],
                        [relation_values(results, a, "image") for a in text_arms]))
    # one colour per arm in every panel (the relation panel lists the arms with a caption, which come first)
    palette = [(70, 130, 200)] * len(RATIO_ARMS) + [(90, 170, 90), (170, 110, 190), (230, 140, 50), (150, 150, 150)]
    bar_panels(panels, palette, columns=2, size=(520, 240)).save(docs / "m3ae.png")
    return md


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/m3ae", help="folder of runs and unit results [runs/m3ae]")
    parser.add_argument("--docs", help="where m3ae.md / m3ae.png go [docs/; <out>/docs with --smoke]")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--arms", nargs="+", default=[*ARMS, "random"], choices=[*ARMS, "random"])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the preset's steps [1]")
    parser.add_argument("--smoke", action="store_true", help="tiny pools and a few steps: checks the pipeline")
    parser.add_argument("--cache-dir", help="world pool cache (default: multimae's)")
    parser.add_argument("--threads", type=int, help="torch threads (1 when other jobs share the cores)")
    parser.add_argument("--report-only", action="store_true", help="write the report from the finished units")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    plan = Plan(out=out, seeds=tuple(args.seeds), scale=args.scale, smoke=args.smoke, cache_dir=args.cache_dir,
                threads=args.threads, probe_train=200 if args.smoke else 4000, probe_val=100 if args.smoke else 1000)
    docs = Path(args.docs) if args.docs else (out / "docs" if args.smoke else REPO / "docs")
    command = " ".join(["python experiments/m3ae.py", *(argv if argv is not None else sys.argv[1:])]).strip()
    size = pretrain_config("text75", plan.seeds[0], plan).data.image_size
    train = probe_data(plan, "train", plan.probe_train, size)
    val = probe_data(plan, "val", plan.probe_val, size)
    if not args.report_only:
        for seed in plan.seeds:
            for arm in args.arms:
                run_unit(out / "results" / f"{arm}-s{seed}.json",
                         lambda a=arm, s=seed: probe_unit(a, s, plan, train, val), command=command)
    results = [json.loads(p.read_text()) for p in sorted((out / "results").glob("*.json"))]
    order = {a: i for i, a in enumerate([*ARMS, "random"])}
    results.sort(key=lambda r: (order[r["arm"]], r["seed"]))
    md = write_report(results, plan, command, docs, majority_rates(train, val))
    print(f"\nwrote {md} and {md.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
