"""Transfer on the built-in world: MultiMAE vs an RGB-only MAE vs training from scratch.

The paper's central claims (Tables 1-4): fine-tuned from RGB alone, MultiMAE matches MAE; when
depth is available as an input, MultiMAE is much better. This script checks them at a scale two
CPU cores can run, with at least two seeds:

1. pre-train (a) MultiMAE on rgb + depth + semseg: the `cpu-long` pre-training preset on the world that
   fine-tuning uses (object colours independent of class, ``data.world_class_colors=0``), and
   (b) an RGB-only MAE: the same preset with inputs rgb, outputs rgb + norm_rgb (MAE's norm-pix
   target, as MultiMAE's rgb part) and, as in the paper (App. A.1) and MAE, 3/4 of the tokens
   masked (16 of 64 visible; MultiMAE keeps 32 of 192); same encoder, steps, batch and scenes;
2. fine-tune each, and a from-scratch baseline, with one recipe for all three (the `finetune-cpu`
   preset, with the paper's per-task settings in `TASK_RECIPES`) on:
   scene classification (rgb), semantic segmentation from rgb, from depth and from rgb + depth
   (head on the rgb tokens, as the paper), and depth estimation from rgb;
3. evaluate every fine-tuned model on held-out test scenes and write ``docs/transfer.md`` (table:
   mean +- sd over seeds, per-seed values, checks of the claims) and ``docs/transfer.png``.

Every unit (a pre-training or a fine-tuning) writes ``<out>/results/<unit>.json`` when it is done;
a re-run skips finished units and resumes an interrupted one from its last checkpoint.

    python experiments/transfer.py                       # the full experiment (about 70 min on 2 cores)
    python experiments/transfer.py --scale 0.5           # half the steps everywhere
    python experiments/transfer.py --smoke --out /tmp/transfer-smoke   # a minute: checks the pipeline
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

from multimae.config import FinetuneConfig, RunConfig, load_config
from multimae.configs import preset_path
from multimae.engine.experiment import mean_sd, resume_or_restart, run_unit
from multimae.tasks.finetune_data import eval_batches
from multimae.tasks.finetune_job import make_task, run_finetuning
from multimae.tasks.loading import load_finetuned
from multimae.tasks.pretrain_job import run_pretraining

REPO = Path(__file__).resolve().parents[1]

# Fine-tuning tasks: name -> (kind, inputs, title, [(metric, label, higher is better)]).
TASKS: dict[str, tuple[str, tuple[str, ...], str, list[tuple[str, str, bool]]]] = {
    "cls-rgb": ("classification", ("rgb",), "classification, RGB", [("top1", "top-1 acc.", True)]),
    "seg-rgb": ("segmentation", ("rgb",), "segmentation, RGB", [("miou", "mIoU", True)]),
    "seg-depth": ("segmentation", ("depth",), "segmentation, depth", [("miou", "mIoU", True)]),
    "seg-rgbd": ("segmentation", ("rgb", "depth"), "segmentation, RGB + depth", [("miou", "mIoU", True)]),
    "depth-rgb": ("depth", ("rgb",), "depth, RGB",
                  [("delta1", "δ1", True), ("abs_rel", "abs. rel.", False), ("rmse", "RMSE", False)]),
}
# Where the paper's fine-tuning settings differ by task (App. B.1 / official configs), the same for every
# initialisation: classification uses layer decay 0.65 and label smoothing 0.1 (mixup / cutmix are left off
# in a 200-step schedule); the official depth fine-tuning uses no drop path.
TASK_RECIPES: dict[str, list[str]] = {
    "cls-rgb": ["optim.layer_decay=0.65", "task.label_smoothing=0.1"],
    "depth-rgb": ["model.encoder.drop_path_rate=0.0"],
}
INITS = ("multimae", "mae", "scratch")
INIT_LABELS = {"multimae": "MultiMAE", "mae": "MAE", "scratch": "scratch"}
COLORS = [(70, 130, 200), (230, 140, 50), (150, 150, 150)]
RGB_ONLY = ("cls-rgb", "seg-rgb", "depth-rgb")  # claim: MultiMAE matches MAE
WITH_DEPTH = ("seg-depth", "seg-rgbd")  # claim: MultiMAE is much better than MAE

# Overrides of a smoke run: the full pipeline on tiny pools in about a minute (batch as in the real run,
# so that its per-step times predict the full run's).
# Steps are logged every 3 so that per-step times can be read after the first (warm-up) steps.
SMOKE_PRETRAIN = ["data.world_train_scenes=64", "data.world_val_scenes=32", "train.val_every=0", "train.ckpt_every=3",
                  "train.log_every=3"]
SMOKE_FINETUNE = ["data.world_train_scenes=64", "data.world_val_scenes=32", "train.val_every=0", "train.ckpt_every=3",
                  "train.log_every=3"]
SMOKE_STEPS = 9


@dataclass
class Plan:
    out: Path
    seeds: tuple[int, ...]
    scale: float = 1.0  # multiplies the presets' pre-training and fine-tuning steps
    mae_visible: int = 16
    smoke: bool = False
    cache_dir: str | None = None
    threads: int | None = None
    pretrain_extra: list[str] = field(default_factory=list)
    finetune_extra: list[str] = field(default_factory=list)

    def common(self) -> list[str]:
        out = [f"data.cache_dir={self.cache_dir}"] if self.cache_dir else []
        return out + ([f"train.threads={self.threads}"] if self.threads else [])


def _steps(preset: str, cls: type, scale: float, smoke_steps: int, smoke: bool) -> int:
    if smoke:
        return smoke_steps
    return max(1, round(load_config(cls, preset_path(preset)).train.steps * scale))


def pretrain_config(arm: str, seed: int, plan: Plan) -> RunConfig:
    """The `cpu-long` preset on the fine-tuning world; the MAE arm changes only its modalities and the number of
    visible tokens."""
    steps = _steps("cpu-long", RunConfig, plan.scale, SMOKE_STEPS, plan.smoke)
    overrides = [f"train.seed={seed}", f"train.steps={steps}", f"train.out_dir={plan.out / 'runs'}",
                 f"data.world_class_colors={finetune_config('seg-rgb', 'scratch', seed, plan).data.world_class_colors}",
                 f"train.name=pretrain-{arm}-s{seed}", *plan.common(), *(SMOKE_PRETRAIN if plan.smoke else []),
                 *plan.pretrain_extra]
    if arm == "mae":
        overrides += ["model.inputs=[rgb]", "model.outputs=[rgb, norm_rgb]", "model.modality_overrides={}",
                      f"masking.num_visible={plan.mae_visible}"]
    return load_config(RunConfig, preset_path("cpu-long"), overrides)


def finetune_config(task: str, init: str, seed: int, plan: Plan) -> FinetuneConfig:
    """The `finetune-cpu` preset for every task and initialisation."""
    kind, inputs, _, _ = TASKS[task]
    steps = _steps("finetune-cpu", FinetuneConfig, plan.scale, SMOKE_STEPS, plan.smoke)
    checkpoint = "null" if init == "scratch" else str(plan.out / "runs" / f"pretrain-{init}-s{seed}")
    overrides = [f"task.kind={kind}", f"task.inputs=[{','.join(inputs)}]", f"init.checkpoint={checkpoint}",
                 f"train.seed={seed}", f"train.steps={steps}", f"train.out_dir={plan.out / 'runs'}",
                 f"train.name=ft-{task}-{init}-s{seed}", *TASK_RECIPES.get(task, []), *plan.common(),
                 *(SMOKE_FINETUNE if plan.smoke else []), *plan.finetune_extra]
    return load_config(FinetuneConfig, preset_path("finetune-cpu"), overrides)


def step_seconds(run_dir: Path) -> float | None:
    """Seconds per training step after the first logged step (which includes the warm-up)."""
    from multimae.engine.logger import read_metrics

    rows = [r for r in read_metrics(run_dir, "train") if "elapsed_s" in r]
    if len(rows) < 2:
        return None
    return (rows[-1]["elapsed_s"] - rows[0]["elapsed_s"]) / max(rows[-1]["step"] - rows[0]["step"], 1)


def pretrain_unit(arm: str, seed: int, plan: Plan) -> dict[str, Any]:
    cfg = pretrain_config(arm, seed, plan)
    run_dir = Path(cfg.train.out_dir) / str(cfg.train.name)
    if not (run_dir / "report.json").exists():
        resume = resume_or_restart(run_dir)
        if resume is not None:  # continue with the run's own config
            cfg = load_config(RunConfig, run_dir / "config.yaml")
        run_pretraining(cfg, resume, progress=True)
    report = json.loads((run_dir / "report.json").read_text())
    return {"arm": arm, "seed": seed, "run": str(run_dir), "steps": report["steps"],
            "train_wall_s": report["train_wall_s"], "step_s": step_seconds(run_dir), "val": report["val"],
            "from_rgb": report.get("from_rgb", {})}


def finetune_unit(task: str, init: str, seed: int, plan: Plan) -> dict[str, Any]:
    cfg = finetune_config(task, init, seed, plan)
    run_dir = Path(cfg.train.out_dir) / str(cfg.train.name)
    if not (run_dir / "report.json").exists():
        resume = resume_or_restart(run_dir)
        if resume is not None:  # continue with the run's own (resolved) config
            cfg = load_config(FinetuneConfig, run_dir / "config.yaml")
        run_finetuning(cfg, resume, progress=True)
    report = json.loads((run_dir / "report.json").read_text())
    model, run_cfg = load_finetuned(run_dir)
    test = make_task(run_cfg, model).evaluate(eval_batches(run_cfg, "test", progress=True))
    return {"task": task, "init": init, "seed": seed, "run": str(run_dir), "steps": report["steps"],
            "train_wall_s": report["train_wall_s"], "step_s": step_seconds(run_dir), "val": report["val"], "test": test}


# ---------------------------------------------------------------------------------------- report
def compare(a: Sequence[float], b: Sequence[float], higher_is_better: bool) -> tuple[float, str]:
    """(a's advantage over b in the metric's good direction, verdict). Differences no larger than
    the sum of the two seed standard deviations count as within the seed-to-seed spread."""
    (ma, sa), (mb, sb) = mean_sd(a), mean_sd(b)
    gain = (ma - mb) if higher_is_better else (mb - ma)
    if abs(gain) <= sa + sb:
        return gain, "within spread"
    return gain, "better" if gain > 0 else "worse"


def values(results: list[dict[str, Any]], task: str, init: str, metric: str) -> list[float]:
    return [r["test"][metric] for r in results if r["task"] == task and r["init"] == init]


def _fmt(vals: Sequence[float]) -> str:
    if not vals:
        return "–"
    m, s = mean_sd(vals)
    return f"{m:.3f} ± {s:.3f}"


def write_report(pre: list[dict[str, Any]], fine: list[dict[str, Any]], plan: Plan, command: str, docs: Path) -> Path:
    from multimae.viz.bars import Panel, bar_panels

    docs.mkdir(parents=True, exist_ok=True)
    seeds = ", ".join(str(s) for s in plan.seeds)
    lines = [
        "# Transfer on the built-in world: MultiMAE vs MAE vs from scratch",
        "",
        (f"Produced by `{command}` (from the repository root; {len(plan.seeds)} seeds: {seeds}). "
        f"Metrics on {finetune_config('seg-rgb', 'scratch', plan.seeds[0], plan).data.world_val_scenes} held-out "
        "**test** scenes of the world, mean ± sample standard deviation over seeds "
        "(seed *s* fine-tunes the models pre-trained with seed *s*)."),
        "",
        setup_text(plan),
        "",
        "| task | metric | MultiMAE | MAE | scratch | MultiMAE vs MAE | MultiMAE vs scratch |",
        "|---|---|---|---|---|---|---|",
    ]
    panels = []
    for task, (_, _, title, metrics) in TASKS.items():
        for metric, label, higher in metrics:
            runs = {i: values(fine, task, i, metric) for i in INITS}
            cells = [_fmt(runs[i]) for i in INITS]
            verdicts = []
            for other in ("mae", "scratch"):
                if runs["multimae"] and runs[other]:
                    gain, verdict = compare(runs["multimae"], runs[other], higher)
                    verdicts.append(f"{gain:+.3f} ({verdict})")
                else:
                    verdicts.append("–")
            arrow = "↑" if higher else "↓"
            lines.append(f"| {title} | {label} {arrow} | {' | '.join(cells)} | {' | '.join(verdicts)} |")
            panels.append(Panel(f"{title}: {label.replace('δ', 'delta ')}", [INIT_LABELS[i] for i in INITS],
                                [runs[i] for i in INITS], higher))
    lines += ["", "![transfer results](transfer.png)", "", "## The paper's claims at this scale", ""]
    lines += claim_lines(fine)
    lines += ["", ("A difference counts as *within spread* when it is no larger than the sum of the two seed "
                   "standard deviations; with two seeds this is a rough guide, not a significance test."), ""]
    lines += ["## Pre-training runs", "", "| arm | seed | steps | train wall (s) | val masked rgb MSE | val total |",
              "|---|---|---|---|---|---|"]
    for r in pre:
        lines.append(f"| {r['arm']} | {r['seed']} | {r['steps']} | {r['train_wall_s']} | {r['val'].get('rgb', float('nan')):.3f} "
                     f"| {r['val'].get('total', float('nan')):.3f} |")
    lines += ["", "## Every fine-tuning run (test metrics)", "", "| task | init | seed | steps | train wall (s) | metrics |",
              "|---|---|---|---|---|---|"]
    for r in fine:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in r["test"].items())
        lines.append(f"| {r['task']} | {r['init']} | {r['seed']} | {r['steps']} | {r['train_wall_s']} | {shown} |")
    total = sum(r.get("unit_wall_s", 0.0) for r in [*pre, *fine])
    lines += ["", f"Total wall time of the units: {total / 60:.1f} min.", ""]
    md = docs / "transfer.md"
    md.write_text("\n".join(lines))
    bar_panels(panels, COLORS).save(docs / "transfer.png")
    return md


def setup_text(plan: Plan) -> str:
    """What was run, read from the configs themselves."""
    mm, mae = pretrain_config("multimae", plan.seeds[0], plan), pretrain_config("mae", plan.seeds[0], plan)
    ft = finetune_config("seg-rgb", "multimae", plan.seeds[0], plan)
    enc = mm.model.build().encoder
    tokens = (enc.image_size // enc.patch_size) ** 2
    return (
        f"Setup. Pre-training (`cpu-long` preset): a ViT with {enc.depth} blocks, {enc.dim} wide, patch {enc.patch_size}, "
        f"{enc.image_size} px, batch {mm.data.batch_size}, {mm.train.steps} steps, {mm.data.world_train_scenes} "
        f"scenes, for (a) MultiMAE on {' + '.join(mm.model.inputs)} ({mm.masking.num_visible} of "
        f"{tokens * len(mm.model.inputs)} tokens visible, Dirichlet α = {mm.masking.alpha}, outputs "
        f"{', '.join(mm.model.outputs)}) and (b) an RGB-only MAE (outputs {', '.join(mae.model.outputs)}, "
        f"{mae.masking.num_visible} of {tokens} tokens visible, the paper's single-modality mask ratio). "
        f"Fine-tuning (`finetune-cpu` preset), one recipe for all three initialisations: "
        f"{ft.train.steps} steps at batch {ft.data.batch_size} on the first {ft.data.world_train_scenes} training "
        f"scenes (also among the pre-training scenes: MultiMAE saw their depth and semseg maps during pre-training, "
        f"the MAE only their RGB), AdamW lr {ft.optim.lr}, layer-wise lr decay {ft.optim.layer_decay}, drop path "
        f"{ft.model.encoder.get('drop_path_rate', 0.0)}; per task as the paper: "
        f"{'; '.join(f'{t}: ' + ', '.join(o) for t, o in TASK_RECIPES.items())}; heads: linear (classification), ConvNeXt (segmentation; "
        "from RGB + depth it reads the RGB tokens, the paper's choice), DPT (depth, berHu loss). The from-scratch "
        "baseline has the same encoder and recipe. Validation and test scenes are never trained on."
    )


def claim_lines(fine: list[dict[str, Any]]) -> list[str]:
    """One line per task: does the paper's claim hold here?"""
    out = []
    for task in (*RGB_ONLY, *WITH_DEPTH):
        _, _, title, metrics = TASKS[task]
        metric, label, higher = metrics[0]
        mm, mae = values(fine, task, "multimae", metric), values(fine, task, "mae", metric)
        if not (mm and mae):
            continue
        gain, verdict = compare(mm, mae, higher)
        if task in RGB_ONLY:
            holds = "holds" if verdict in ("within spread", "better") else "does not hold"
            claim = "MultiMAE matches MAE"
        else:
            holds = "holds" if verdict == "better" else "does not hold"
            claim = "MultiMAE is better than MAE"
        out.append(f"- {title} ({label}): claim *{claim}* {holds} here: MultiMAE − MAE = {gain:+.3f} ({verdict}).")
    return out


def estimate(pre: list[dict[str, Any]], fine: list[dict[str, Any]], plan: Plan) -> tuple[float, float]:
    """(training minutes, other minutes) the full schedule (``--scale``) would take at the per-step
    times measured here; "other" is this run's measured set-up and evaluation time (the full run
    evaluates on larger held-out sets, so it is a lower bound there)."""
    full_pre = load_config(RunConfig, preset_path("cpu-long")).train.steps * plan.scale
    full_ft = load_config(FinetuneConfig, preset_path("finetune-cpu")).train.steps * plan.scale
    train = other = 0.0
    for r, full in [*((r, full_pre) for r in pre), *((r, full_ft) for r in fine)]:
        per_step = r.get("step_s") or r["train_wall_s"] / max(r["steps"], 1)
        train += per_step * full
        other += r["unit_wall_s"] - r["train_wall_s"]
    return train / 60, other / 60


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/transfer", help="folder of runs and unit results [runs/transfer]")
    parser.add_argument("--docs", help="where transfer.md / transfer.png go [docs/; <out>/docs with --smoke]")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds [0 1]")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every preset's number of steps [1]")
    parser.add_argument("--mae-visible", type=int, default=16, help="visible tokens of the MAE arm [16 of 64]")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS), help="fine-tuning tasks")
    parser.add_argument("--smoke", action="store_true", help="tiny pools and a few steps: checks the pipeline")
    parser.add_argument("--cache-dir", help="world pool cache (default: multimae's)")
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores; 1 when other jobs share "
                        "the cores: two threads competing with another process run many times slower)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    plan = Plan(out=out, seeds=tuple(args.seeds), scale=args.scale, mae_visible=args.mae_visible, smoke=args.smoke,
                cache_dir=args.cache_dir, threads=args.threads)
    docs = Path(args.docs) if args.docs else (out / "docs" if args.smoke else REPO / "docs")
    command = " ".join(["python experiments/transfer.py", *(argv if argv is not None else sys.argv[1:])]).strip()
    units = plan.out / "results"
    pre = [run_unit(units / f"pretrain-{arm}-s{seed}.json", lambda a=arm, s=seed: pretrain_unit(a, s, plan))
           for seed in plan.seeds for arm in ("multimae", "mae")]
    fine = [run_unit(units / f"ft-{task}-{init}-s{seed}.json", lambda t=task, i=init, s=seed: finetune_unit(t, i, s, plan))
            for seed in plan.seeds for task in args.tasks for init in INITS]
    md = write_report(pre, fine, plan, command, docs)
    print(f"\nwrote {md} and {md.with_suffix('.png')}")
    if plan.smoke:
        train, other = estimate(pre, fine, plan)
        print(f"full experiment at these per-step times: {train:.0f} min of training steps + at least "
              f"{other:.0f} min of set-up and evaluation")
        for kind, rows in (("pre-training", pre), ("fine-tuning", fine)):
            for r in rows:
                print(f"  {kind} {r['unit']}: {r.get('step_s') or float('nan'):.3f} s/step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
