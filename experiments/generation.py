"""Generation with a 4M run on the built-in world, measured against its exact truth (issue #19).

Every world scene has exact ground truth for every modality, so what a run generates can be scored:

1. ``from-rgb-*``: RGB -> depth / normals / semseg, one pass (argmax; with the tokenizer ceiling, the
   MultiMAE run's one-pass maps, and the caption and boxes generated greedily: `world_from_rgb`), and by
   MaskGIT and ROAR for several steps and temperatures (`MapScores`, the same metrics);
2. ``caption-rgb-g*`` / ``semseg-rgb``: does the generated RGB show what the condition says? A probe
   (a MultiMAE encoder fine-tuned for semseg from RGB on real world images) reads the generated RGB:
   the class of its largest object and that object's named colour against the caption's, its
   segmentation against the conditioning semseg; ``probe-real`` is the probe on the real pictures
   (the ceiling of these scores) and the majority value their floor;
3. ``chain-*``: caption -> semseg, then rgb, chained (the semseg given while the rgb is decoded) or
   independent: agreement between the generated semseg and the probe's semseg of the generated RGB;
4. ``caption-rgb-g<w>``: (2) for classifier-free guidance weights w on the caption, one negative;
5. ``metadata-rgb`` / ``palette-rgb`` (runs that read them): the brightness / dominant colour of the
   generated RGB against the scene's whose metadata / palette was given, next to another scene's;
6. ``speed``: seconds per image and tokens per second of each scheme, the caption with and without the
   KV cache (the method of benchmarks/bench_generation.py, on the run's own model).

Each unit writes ``<out>/results/<unit>.json``; a re-run skips finished units. At the end
``<out>/generation.md`` (tables) and ``<out>/samples.png`` (conditions and generated samples).

The probe should be fine-tuned at the run's world class colours (the default probe is at 0; the runs'
shards at 0.8, where it finds few objects); one at 0.8, about 2.5 min on one core:

    multimae finetune --task segmentation --inputs rgb --checkpoint runs/mmae \
        train.out_dir=runs/genexp train.name=probe-seg-rgb-c08 train.threads=1 data.world_class_colors=0.8

    PYTHONPATH=src .venv/bin/python experiments/generation.py --threads 1            # defaults below
    PYTHONPATH=src .venv/bin/python experiments/generation.py --smoke --out /tmp/genexp-smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from multimae.data import WorldDataset
from multimae.data.world import BACKGROUND_CLASSES, CLASS_NAMES, caption_attributes
from multimae.data.world.classes import COLORS
from multimae.engine.experiment import run_unit
from multimae.generation import TargetSchedule, condition, generate
from multimae.generation.runs import RunGenerator, load_run
from multimae.inference.fourm import MapScores
from multimae.model.fourm import FourM

REPO = Path(__file__).resolve().parents[1]
RUNS = ("runs/4m-cb1-cd", "runs/4m-cb1")  # --run default: the first with a model (docs/generation.md names the runs)
MULTIMAE = "runs/mmae"  # the README's MultiMAE run, made with train.name=mmae
PROBE = "runs/genexp/probe-seg-rgb-c08"  # fine-tuned at class colours 0.8, as the runs' pictures
DENSE = ("depth", "normals", "semseg")
OBJECTS = [i for i, n in enumerate(CLASS_NAMES) if n not in BACKGROUND_CLASSES]
BATCH = 32

# (scheme, steps, temperature) of the RGB -> dense maps units; temperature 0 = argmax at every step.
SCHEMES = [("maskgit", 1, 0.0), ("maskgit", 4, 0.0), ("maskgit", 8, 0.0),
           ("maskgit", 1, 1.0), ("maskgit", 4, 1.0), ("maskgit", 8, 1.0),
           ("roar", 1, 1.0), ("roar", 4, 1.0), ("roar", 8, 1.0), ("roar", 8, 0.0)]
GUIDANCE = (0.0, 1.0, 2.0, 3.0, -1.0)
IMAGE_STEPS = 8  # MaskGIT steps of every generated RGB
IMAGE_TEMPERATURE = 1.0


@dataclass
class Setup:
    """What every unit reads: the 4M run, its world scenes (raw truth) and the probe."""

    run: Path
    gen: RunGenerator
    samples: list[dict[str, Any]]
    class_colors: float
    probe: Any
    multimae: Path | None
    smoke: bool
    probe_run: str = PROBE
    seed: int = 0

    @property
    def model(self) -> FourM:
        return self.gen.model

    def batches(self, keys: Sequence[str]) -> list[dict[str, Any]]:
        """The scenes in batches: maps stacked, texts as lists."""
        out = []
        for b in range(0, len(self.samples), BATCH):
            part = self.samples[b:b + BATCH]
            out.append({k: torch.stack([s[k] for s in part]) if isinstance(part[0][k], Tensor) else [s[k] for s in part]
                        for k in keys})
        return out

    def has_input(self, name: str) -> bool:
        try:
            self.gen.input(name)
            return True
        except ValueError:
            return False


def newest_run() -> Path:
    for name in RUNS:
        if (REPO / name / "model.safetensors").exists() or (Path(name) / "model.safetensors").exists():
            return Path(name) if Path(name).exists() else REPO / name
    raise SystemExit(f"none of {RUNS} has a model.safetensors yet: pass --run")


def run_class_colors(run: Path) -> float:
    """The class colours of the world the run's token shards were rendered with (0 if not found)."""
    import yaml

    root = yaml.safe_load((run / "config.yaml").read_text())["data"]["root"]
    for base in (Path.cwd(), run.parent.parent, REPO):
        manifest = base / root / "manifest.json"
        if manifest.exists():
            return float(json.loads(manifest.read_text())["source"].get("class_colors", 0.0))
    return 0.0


# ---------------------------------------------------------------------------------------- probe
@torch.no_grad()
def probe_semseg(probe: Any, rgb: Tensor) -> Tensor:
    """(B, 3, H, W) rgb in [0, 1] -> (B, H, W) class ids by the fine-tuned segmentation probe."""
    from multimae.modalities import prepare_batch

    inputs = prepare_batch({"rgb": rgb.float().clamp(0, 1)}, probe.input_specs, {}).inputs
    return probe(inputs).argmax(dim=1)


def nearest_color(rgb: np.ndarray) -> str:
    """The named world colour nearest to a mean colour (3,) in sRGB [0, 1] up to shading: the name c
    minimising |rgb - a c|^2 over a shading factor a in [0.3, 1.5] (on the real pictures with the true
    semseg this names the caption's colour in 0.89 of 128 val scenes; plain nearest colour 0.73)."""
    best, name = float("inf"), ""
    for n, c in COLORS.items():
        c = np.asarray(c)
        a = float(np.clip(rgb @ c / (c @ c), 0.3, 1.5))
        err = float(((rgb - a * c) ** 2).sum())
        if err < best:
            best, name = err, n
    return name


def read_objects(semseg: Tensor, rgb: Tensor) -> list[dict[str, str | None]]:
    """Per image: the class of its largest object class region (``shape``) and the named colour of the
    mean RGB over that region (``color``), None where no object pixel is seen."""
    out = []
    for seg, pic in zip(semseg, rgb):
        counts = torch.bincount(seg.flatten(), minlength=len(CLASS_NAMES))[OBJECTS]
        if int(counts.max()) == 0:
            out.append({"shape": None, "color": None})
            continue
        k = OBJECTS[int(counts.argmax())]
        mean = pic[:, seg == k].float().mean(dim=1).clamp(0, 1).numpy()
        out.append({"shape": CLASS_NAMES[k], "color": nearest_color(mean)})
    return out


def attribute_scores(seen: Sequence[Mapping[str, str | None]], captions: Sequence[str]) -> dict[str, float]:
    """Share of images whose read ``shape`` / ``color`` is the caption's (first-named object), and the
    majority baseline of each."""
    said = [caption_attributes(c) for c in captions]
    out = {}
    for key in ("shape", "color"):
        truth = [s[key] for s in said]
        out[f"{key}_acc"] = sum(a[key] == t for a, t in zip(seen, truth)) / len(truth)
        out[f"{key}_majority"] = max(truth.count(v) for v in set(truth)) / len(truth)
    return out


# ---------------------------------------------------------------------------------------- units
def generate_raw(s: Setup, conditions: Mapping[str, Any], schedules: Sequence[TargetSchedule], chained: bool = True,
                 seed: int | None = None) -> dict[str, Any]:
    """Targets generated from raw conditions and decoded by the run's tokenizers. Texts are tokenised
    here at the model's ``max_length`` (`RunGenerator.conditions` pads them to the tokenizer's length
    and refuses a longer one, e.g. a 34-id palette padded to 64)."""
    texts = {n: v for n, v in conditions.items() if isinstance(v, list)}
    state = s.gen.conditions({n: v for n, v in conditions.items() if n not in texts})
    for name, value in texts.items():
        spec = s.model.input_specs[s.gen.input(name)]
        tokens = s.gen.tokenizer(spec).encode(value, max_length=spec.max_length)
        state[spec.name] = condition(s.model, spec.name, tokens.ids, tokens.valid)
    out = generate(s.model, state, schedules, seed=s.seed if seed is None else seed, chained=chained)
    return s.gen.decode(out, schedules)


def unit_onepass(s: Setup) -> dict[str, Any]:
    from multimae.tasks.fourm_job import world_from_rgb

    manifest = {"source": {"class_colors": s.class_colors}}
    multimae = str(s.multimae) if s.multimae else None
    return world_from_rgb(s.model, s.gen.tokenizers, manifest, len(s.samples), multimae)


def unit_scheme(s: Setup, scheme: str, steps: int, temperature: float) -> dict[str, Any]:
    """RGB -> each dense map independently (``scheme`` over ``steps``), scored against the truth."""
    targets = [m for m in DENSE if m in s.gen.tokenizers]
    schedules = [TargetSchedule(s.gen.output(m), scheme, steps=steps, temperature=temperature) for m in targets]
    scores = MapScores({m: len(CLASS_NAMES) for m in targets}, OBJECTS, angular=("normals",))
    for i, batch in enumerate(s.batches(["rgb", *targets])):
        decoded = generate_raw(s, {"rgb": batch["rgb"]}, schedules, chained=False, seed=s.seed + 1000 * i)
        scores.update(decoded, batch)
    return {"scheme": scheme, "steps": steps, "temperature": temperature, "scores": scores.result()}


def unit_ceiling(s: Setup) -> dict[str, Any]:
    """The truth's own tokens decoded, scored as `unit_scheme` scores (the normals' angle included)."""
    targets = [m for m in DENSE if m in s.gen.tokenizers]
    scores = MapScores({m: len(CLASS_NAMES) for m in targets}, OBJECTS, angular=("normals",))
    with torch.no_grad():
        for batch in s.batches(targets):
            tok = s.gen.tokenizers
            scores.update({m: tok[m].decode(tok[m].encode(batch[m])) for m in targets}, batch)
    return {"scores": scores.result()}


def rgb_schedule(guidance: Mapping[str, float] | None = None) -> TargetSchedule:
    return TargetSchedule("tok_rgb", "maskgit", steps=IMAGE_STEPS, temperature=IMAGE_TEMPERATURE,
                          guidance=dict(guidance or {}))


def unit_probe_real(s: Setup) -> dict[str, Any]:
    """The probe on the real pictures: the ceiling of the probe-read scores."""
    scores, seen, exact, captions = MapScores({"semseg": len(CLASS_NAMES)}, OBJECTS), [], [], []
    for batch in s.batches(["rgb", "semseg", "caption"]):
        seg = probe_semseg(s.probe, batch["rgb"])
        scores.update({"semseg": seg}, batch)
        seen += read_objects(seg, batch["rgb"])
        exact += read_objects(batch["semseg"], batch["rgb"])
        captions += batch["caption"]
    return {"semseg": scores.result(), "attributes": attribute_scores(seen, captions),
            "attributes_true_semseg": attribute_scores(exact, captions)}


def unit_caption_rgb(s: Setup, weight: float | None) -> dict[str, Any]:
    """caption -> rgb (MaskGIT), with guidance ``weight`` on the caption (None: one conditional pass)."""
    seen, captions = [], []
    schedule = rgb_schedule(None if weight is None else {"caption": weight})
    for i, batch in enumerate(s.batches(["caption"])):
        rgb = generate_raw(s, {"caption": batch["caption"]}, [schedule], seed=s.seed + 1000 * i)["rgb"]
        seen += read_objects(probe_semseg(s.probe, rgb), rgb)
        captions += batch["caption"]
    shifted = captions[1:] + captions[:1]  # scene i read against the caption of scene i + 1
    return {"guidance": weight, "attributes": attribute_scores(seen, captions),
            "other_caption": attribute_scores(seen, shifted), "examples": seen[:4]}


def unit_semseg_rgb(s: Setup) -> dict[str, Any]:
    """semseg -> rgb (MaskGIT): the probe's semseg of the generated rgb against the conditioning semseg."""
    scores, other = MapScores({"semseg": len(CLASS_NAMES)}, OBJECTS), MapScores({"semseg": len(CLASS_NAMES)}, OBJECTS)
    for i, batch in enumerate(s.batches(["semseg"])):
        rgb = generate_raw(s, {"semseg": batch["semseg"]}, [rgb_schedule()], seed=s.seed + 1000 * i)["rgb"]
        seg = probe_semseg(s.probe, rgb)
        scores.update({"semseg": seg}, batch)
        other.update({"semseg": seg}, {"semseg": batch["semseg"].roll(1, 0)})  # another scene's condition
    return {"scores": scores.result(), "other_scene": other.result()}


def unit_chain(s: Setup, chained: bool) -> dict[str, Any]:
    """caption -> semseg, rgb: the probe's semseg of the generated rgb against the generated semseg."""
    schedules = [TargetSchedule("tok_semseg", "maskgit", steps=IMAGE_STEPS, temperature=IMAGE_TEMPERATURE),
                 rgb_schedule()]
    agree, other = MapScores({"semseg": len(CLASS_NAMES)}, OBJECTS), MapScores({"semseg": len(CLASS_NAMES)}, OBJECTS)
    for i, batch in enumerate(s.batches(["caption"])):
        out = generate_raw(s, {"caption": batch["caption"]}, schedules, chained=chained, seed=s.seed + 1000 * i)
        seg = probe_semseg(s.probe, out["rgb"])
        agree.update({"semseg": seg}, {"semseg": out["semseg"]})
        other.update({"semseg": seg}, {"semseg": out["semseg"].roll(1, 0)})  # another sample's semseg
    return {"chained": chained, "agreement": agree.result(), "other_sample": other.result()}


def _grey(rgb: Tensor) -> Tensor:
    """(B, 3, H, W) in [0, 1] -> (B,) mean Rec. 601 luma in [0, 255] (metadata's brightness)."""
    return (rgb.clamp(0, 1) * 255 * torch.tensor([0.299, 0.587, 0.114])[None, :, None, None]).sum(1).mean((1, 2))


def unit_metadata_rgb(s: Setup) -> dict[str, Any]:
    """metadata -> rgb: the generated picture's brightness against the scene's whose metadata was given."""
    got, want = [], []
    for i, batch in enumerate(s.batches(["metadata", "rgb"])):
        rgb = generate_raw(s, {"metadata": batch["metadata"]}, [rgb_schedule()], seed=s.seed + 1000 * i)["rgb"]
        got.append(_grey(rgb))
        want.append(_grey(batch["rgb"]))
    g, w = torch.cat(got), torch.cat(want)
    return {"brightness_abs_err": float((g - w).abs().mean()),
            "other_scene_abs_err": float((g - w.roll(1)).abs().mean()),
            "corr": float(torch.corrcoef(torch.stack([g, w]))[0, 1]), "requested_sd": float(w.std())}


def unit_palette_rgb(s: Setup) -> dict[str, Any]:
    """palette -> rgb: the generated picture's dominant colour against the scene's whose palette was given."""
    from multimae.data.world.palette import dominant_colors

    def top(rgb: Tensor) -> np.ndarray:
        pics = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return np.stack([dominant_colors(p)[0][0] for p in pics])

    got, want = [], []
    for i, batch in enumerate(s.batches(["palette", "rgb"])):
        rgb = generate_raw(s, {"palette": batch["palette"]}, [rgb_schedule()], seed=s.seed + 1000 * i)["rgb"]
        got.append(top(rgb))
        want.append(top(batch["rgb"]))
    g, w = np.concatenate(got), np.concatenate(want)
    dist = lambda a, b: float(np.linalg.norm(a - b, axis=1).mean())  # noqa: E731
    return {"dominant_color_dist": dist(g, w), "other_scene_dist": dist(g, np.roll(w, 1, axis=0))}


def _median_time(fn: Callable[[], Any], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def unit_speed(s: Setup, batch_size: int, rounds: int) -> dict[str, Any]:
    """Seconds per image and tokens per second: tok_semseg from rgb by one pass, MaskGIT and ROAR; the
    caption from rgb with and without the KV cache (every row decoding the same number of ids)."""
    from multimae.generation.autoregressive import autoregressive_step
    from multimae.inference.fourm import predict_token_maps

    model = s.model
    rgb = torch.stack([x["rgb"] for x in s.samples[:batch_size]])
    state = s.gen.conditions({"rgb": rgb})
    B = rgb.shape[0]
    N = model.decoder_embeddings["tok_semseg"].side ** 2
    rows: list[dict[str, Any]] = []
    ids = {n: (r.data, r.valid) for n, r in state.items()}  # the picture's record: its tokens or its pixels
    t = _median_time(lambda: predict_token_maps(model, ids, ["tok_semseg"]), rounds)
    rows.append({"what": "tok_semseg, one pass", "s_per_image": t / B, "tokens_per_s": B * N / t})
    for scheme, steps in (("maskgit", 1), ("maskgit", 8), ("roar", 8), ("maskgit", 16)):
        sched = [TargetSchedule("tok_semseg", scheme, steps=steps, temperature=1.0)]
        t = _median_time(lambda: generate(model, state, sched), rounds)
        rows.append({"what": f"tok_semseg, {scheme} {steps} steps", "s_per_image": t / B, "tokens_per_s": B * N / t})
    sched1 = TargetSchedule("caption", "autoregressive", temperature=1.0)
    new = 32
    never = -1  # as the benchmark: no id is -1, so every row decodes all `new` ids
    with torch.no_grad():
        for cache in (True, False):
            t = _median_time(lambda: autoregressive_step(model, state, sched1, new, 1.0, torch.Generator().manual_seed(0),
                                                         cache, sentinel=lambda i: 5 if i == 1 else never,
                                                         eos_id=never), rounds)
            rows.append({"what": f"caption, {new} ids, {'KV cache' if cache else 'recomputed prefix'}",
                         "s_per_image": t / B, "tokens_per_s": B * new / t})
    return {"batch": B, "rounds": rounds, "threads": torch.get_num_threads(), "rows": rows}


# ---------------------------------------------------------------------------------------- report
def _f(x: Any, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def report(s: Setup, results: Mapping[str, dict[str, Any]], command: str, out: Path) -> Path:
    n = len(s.samples)
    lines = [f"# Generation measured on the built-in world ({s.run})", "",
             f"`{command}`; {n} world val scenes at {s.model.config.image_size} px, class colours {s.class_colors}; "
             f"probe {s.probe_run}; seed {s.seed}.", ""]
    one = results.get("from-rgb-onepass")
    lines += ["## RGB -> dense maps, against the exact truth", "",
              "| how | depth L1 ↓ | normals angle (°) ↓ | semseg mIoU | semseg pixel acc | object-class IoU |", "|---|---|---|---|---|---|"]

    def row(name: str, sc: Mapping[str, float]) -> str:
        return (f"| {name} | {_f(sc.get('depth_l1'))} | {_f(sc.get('normals_angle'), 1)} | {_f(sc.get('semseg_miou'))} | "
                f"{_f(sc.get('semseg_acc'))} | {_f(sc.get('semseg_object_iou'))} |")
    if one:
        lines.append(row("one pass (argmax)", one["model"]))
    for key, r in results.items():
        if key.startswith("from-rgb-") and key not in ("from-rgb-onepass", "from-rgb-ceiling"):
            lines.append(row(f"{r['scheme']}, {r['steps']} steps, T={r['temperature']:g}", r["scores"]))
    if "from-rgb-ceiling" in results:
        lines.append(row("tokenizer ceiling (truth's tokens decoded)", results["from-rgb-ceiling"]["scores"]))
    if one:
        if "multimae" in one:
            lines.append(row(f"MultiMAE one pass ({one.get('multimae_run')})", one["multimae"]))
        cap = one.get("caption")
        if cap:
            lines += ["", "RGB -> caption (greedy), attributes read back by `caption_attributes` (majority baseline):",
                      "", "| colour | shape | objects | floor | exact |", "|---|---|---|---|---|",
                      "| " + " | ".join(f"{cap[f'{k}_acc']:.3f} ({cap[f'{k}_majority']:.3f})"
                                        for k in ("color", "shape", "objects", "floor")) + f" | {cap['exact']:.3f} |"]
        if "boxes" in one:
            b = one["boxes"]
            shown = {k: v for k, v in b.items() if isinstance(v, float)}
            other = {k: v for k, v in b.get("other_scene", {}).items() if isinstance(v, float)}
            lines += ["", "RGB -> boxes (greedy), `box_scores` (another scene's true boxes in brackets): " +
                      ", ".join(f"{k} {v:.3f} ({_f(other.get(k))})" for k, v in shown.items())]
    lines += ["", "## Does the generated RGB show what the condition says? (read by the probe)", "",
              "Shape / colour: the class of the largest object region the probe finds in the generated rgb and the "
              "named colour of its pixels, against the caption's first-named object (in brackets: against "
              "another scene's caption).", "",
              "| condition | guidance on caption | shape acc | colour acc |", "|---|---|---|---|"]
    real = results.get("probe-real")
    for key, r in results.items():
        if key.startswith("caption-rgb"):
            a = r["attributes"]
            w = "none (one pass)" if r["guidance"] is None else f"{r['guidance']:g}"
            o = r["other_caption"]
            lines.append(f"| caption | {w} | {a['shape_acc']:.3f} ({o['shape_acc']:.3f}) | "
                         f"{a['color_acc']:.3f} ({o['color_acc']:.3f}) |")
    if real:
        a = real["attributes"]
        lines.append(f"| (real picture, probe ceiling) | – | {a['shape_acc']:.3f} | {a['color_acc']:.3f} |")
        t = real["attributes_true_semseg"]
        lines.append(f"| (real picture, true semseg: the reading rule's ceiling) | – | {t['shape_acc']:.3f} | "
                     f"{t['color_acc']:.3f} |")
        lines.append(f"| (majority value, floor) | – | {a['shape_majority']:.3f} | {a['color_majority']:.3f} |")
    if "semseg-rgb" in results:
        sc, o = results["semseg-rgb"]["scores"], results["semseg-rgb"]["other_scene"]
        lines += ["", f"semseg -> rgb: the probe's semseg of the generated rgb against the condition: mIoU "
                  f"{sc['semseg_miou']:.3f}, pixel acc {sc['semseg_acc']:.3f}, object-class IoU "
                  f"{sc['semseg_object_iou']:.3f}; against another scene's semseg {o['semseg_miou']:.3f} / "
                  f"{o['semseg_acc']:.3f} / {o['semseg_object_iou']:.3f}" + (f" (the probe on the real picture: {real['semseg']['semseg_miou']:.3f} / "
                                                      f"{real['semseg']['semseg_acc']:.3f} / "
                                                      f"{real['semseg']['semseg_object_iou']:.3f})" if real else "") + "."]
    chains = [r for k, r in results.items() if k.startswith("chain-")]
    if chains:
        lines += ["", "## Chained vs independent: caption -> semseg, rgb", "",
                  "Agreement of the probe's semseg of the generated rgb with the generated semseg:", "",
                  "| | mIoU | pixel acc | object-class IoU | mIoU against another sample's semseg |",
                  "|---|---|---|---|---|"]
        for r in chains:
            a, o = r["agreement"], r["other_sample"]
            lines.append(f"| {'chained' if r['chained'] else 'independent'} | {a['semseg_miou']:.3f} | "
                         f"{a['semseg_acc']:.3f} | {a['semseg_object_iou']:.3f} | {o['semseg_miou']:.3f} |")
    if "metadata-rgb" in results:
        m = results["metadata-rgb"]
        lines += ["", f"metadata -> rgb: |brightness of the generated rgb − the scene's| = {m['brightness_abs_err']:.1f} "
                  f"grey levels (another scene's: {m['other_scene_abs_err']:.1f}; correlation {m['corr']:.3f}; the "
                  f"requested brightness varies with sd {m['requested_sd']:.1f})."]
    if "palette-rgb" in results:
        p = results["palette-rgb"]
        lines += ["", f"palette -> rgb: distance of the generated rgb's dominant colour to the scene's = "
                  f"{p['dominant_color_dist']:.1f} (0-255 RGB units; to another scene's: {p['other_scene_dist']:.1f})."]
    if "speed" in results:
        sp = results["speed"]
        lines += ["", f"## Speed (batch {sp['batch']}, median of {sp['rounds']}, {sp['threads']} thread(s))", "",
                  "| what | s / image | tokens / s |", "|---|---|---|"]
        lines += [f"| {r['what']} | {r['s_per_image']:.4f} | {r['tokens_per_s']:.0f} |" for r in sp["rows"]]
    md = out / "generation.md"
    md.write_text("\n".join(lines) + "\n")
    return md


def samples_figure(s: Setup, out: Path, count: int = 4) -> Path:
    """Conditions and generated samples: real rgb | caption -> rgb (g 3 if the run reads captions) |
    semseg | semseg -> rgb | the probe's semseg of it."""
    from multimae.data.world.classes import PALETTE
    from multimae.viz.colormaps import classes_to_rgb, draw
    from multimae.viz.grid import image_grid

    part = s.samples[:count]
    rgb = torch.stack([x["rgb"] for x in part])
    seg = torch.stack([x["semseg"] for x in part])
    captions = [x["caption"] for x in part]
    from_caption = generate_raw(s, {"caption": captions}, [rgb_schedule({"caption": 3.0})])["rgb"]
    from_seg = generate_raw(s, {"semseg": seg}, [rgb_schedule()])["rgb"]
    probe_seg = probe_semseg(s.probe, from_seg)
    rows = [[draw("rgb", rgb[i]), draw("rgb", from_caption[i]), classes_to_rgb(seg[i], PALETTE),
             draw("rgb", from_seg[i]), classes_to_rgb(probe_seg[i], PALETTE)] for i in range(len(part))]
    figure = image_grid(rows, ["real rgb", "caption -> rgb (g=3)", "semseg", "semseg -> rgb", "probe of it"],
                        notes=captions, tile=128)
    path = out / "samples.png"
    figure.save(path)
    return path


# ---------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", help=f"4M run folder [the first of {RUNS} with a model]")
    p.add_argument("--multimae", help=f"MultiMAE run for the one-pass comparison [{MULTIMAE} if present]")
    p.add_argument("--probe", default=PROBE, help=f"fine-tuned semseg-from-rgb run that reads generated pictures [{PROBE}]")
    p.add_argument("--scenes", type=int, default=128, help="world val scenes [128]")
    p.add_argument("--out", default="runs/genexp", help="results folder [runs/genexp]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads [1]")
    p.add_argument("--smoke", action="store_true", help="4 scenes, one setting each: checks the pipeline")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    run = Path(args.run) if args.run else newest_run()
    multimae = Path(args.multimae) if args.multimae else next(
        (c for c in (Path(MULTIMAE), REPO / MULTIMAE) if c.exists()), None)
    scenes = 4 if args.smoke else args.scenes
    from multimae.tasks.loading import load_finetuned

    model, tokenizers = load_run(run)
    probe, probe_cfg = load_finetuned(args.probe)
    probe.eval()
    colors = run_class_colors(run)
    if float(probe_cfg.data.world_class_colors) != colors:  # its shape read-out is then much weaker
        print(f"note: the probe was trained at class colours {probe_cfg.data.world_class_colors}, the run's "
              f"world has {colors}: fine-tune a probe at {colors} (data.world_class_colors) for a fair reading")
    gen = RunGenerator(model, tokenizers)
    wanted = ("rgb", "depth", "normals", "semseg",
              *(m for m in ("metadata", "palette") if m in tokenizers))
    world = WorldDataset("val", size=model.config.image_size, length=scenes, modalities=wanted, class_colors=colors)
    s = Setup(run, gen, [world[i] for i in range(scenes)], colors, probe, multimae, args.smoke, args.probe, args.seed)
    out = Path(args.out)
    units = out / "results"
    schemes = [("maskgit", 8, 1.0)] if args.smoke else SCHEMES
    guidance = (3.0,) if args.smoke else GUIDANCE
    plan: list[tuple[str, Callable[[], dict[str, Any]]]] = [("from-rgb-onepass", lambda: unit_onepass(s))]
    plan += [("from-rgb-ceiling", lambda: unit_ceiling(s))]
    plan += [(f"from-rgb-{sc}-s{st}-t{t:g}", lambda sc=sc, st=st, t=t: unit_scheme(s, sc, st, t)) for sc, st, t in schemes]
    plan += [("speed", lambda: unit_speed(s, 4 if args.smoke else 16, 1 if args.smoke else 3))]
    if s.has_input("caption"):
        plan += [("chain-chained", lambda: unit_chain(s, True)), ("chain-independent", lambda: unit_chain(s, False))]
    plan += [("probe-real", lambda: unit_probe_real(s)), ("semseg-rgb", lambda: unit_semseg_rgb(s))]
    if s.has_input("caption"):
        plan += [("caption-rgb", lambda: unit_caption_rgb(s, None))]
        plan += [(f"caption-rgb-g{w:g}", lambda w=w: unit_caption_rgb(s, w)) for w in guidance]
    if s.has_input("metadata"):
        plan += [("metadata-rgb", lambda: unit_metadata_rgb(s))]
    if s.has_input("palette"):
        plan += [("palette-rgb", lambda: unit_palette_rgb(s))]
    results = {}
    for name, fn in plan:
        results[name] = run_unit(units / f"{name}.json", fn, run=str(run), scenes=scenes)
        print(f"{name}: {results[name]['unit_wall_s']} s", flush=True)
    command = " ".join(["experiments/generation.py", *(argv if argv is not None else sys.argv[1:])])
    md = report(s, results, command, out)
    fig = samples_figure(s, out)
    print(f"\nwrote {md} and {fig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
