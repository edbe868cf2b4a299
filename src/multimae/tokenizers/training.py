"""Training a map tokenizer on the built-in world or a data source (`multimae.tokenizers.maps`):
resumable, ending with its report and picture.

Shapes: B batch, H W pixels.

A run folder holds ``config.yaml`` (the resolved run config), ``train_state.pt`` (step, weights,
optimizer, normalisation; written atomically every ``train.ckpt_every`` steps and at the end),
``log.jsonl`` (the loss every ``train.log_every`` steps), then the trained tokenizer itself
(`Tokenizer.save`: ``weights.safetensors`` and ``multimae_tokenizer.json``), ``report.json``
(`multimae.tokenizers.evaluation.report`) and ``reconstructions.png``. Batches are drawn from a
generator seeded by (seed, step), so a resumed run draws the batches the interrupted one would have.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor
from tqdm import tqdm

from multimae.config.loader import build_dataclass, to_plain, to_yaml
from multimae.engine.files import save_atomic, write_text_atomic
from multimae.tokenizers.baseline import PooledKMeans
from multimae.tokenizers.config import TokenizerRunConfig, TokenizerTrainConfig
from multimae.tokenizers.evaluation import report, summary_lines
from multimae.tokenizers.figure import reconstruction_figure
from multimae.tokenizers.maps import training_maps
from multimae.tokenizers.raw import MapFormat, fit_statistics
from multimae.tokenizers.spatial import SpatialTokenizer

T = TypeVar("T")

STATE_FILE = "train_state.pt"
RUN_CONFIG_FILE = "config.yaml"
REPORT_FILE = "report.json"
FIGURE_FILE = "reconstructions.png"
LOG_FILE = "log.jsonl"


def learning_rate(step: int, t: TokenizerTrainConfig) -> float:
    """Linear warm-up to ``t.lr``, then a cosine down to 10 % of it at the last step."""
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    progress = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
    return t.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def batch_index(step: int, count: int, t: TokenizerTrainConfig) -> Tensor:
    """(B,) training samples of step ``step``: the same whatever the run was interrupted."""
    g = torch.Generator().manual_seed(t.seed * 1_000_003 + step)
    return torch.randint(count, (t.batch_size,), generator=g)


@dataclass
class TrainState:
    tokenizer: SpatialTokenizer
    optimizer: torch.optim.Optimizer
    step: int = 0


def _new_state(config: TokenizerRunConfig, train_raw: Tensor) -> TrainState:
    spec = config.spec()
    fmt = fit_statistics(spec, train_raw[:config.train.stats_scenes])
    torch.manual_seed(config.train.seed)
    tok = SpatialTokenizer(fmt, config.tokenizer)
    opt = torch.optim.AdamW(tok.net.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay)
    return TrainState(tok, opt)


def _save_state(state: TrainState, out: Path, config: TokenizerRunConfig) -> None:
    fmt = state.tokenizer.format
    save_atomic({"step": state.step, "net": state.tokenizer.net.state_dict(), "optimizer": state.optimizer.state_dict(),
                 "mean": fmt.mean, "std": fmt.std, "config": to_plain(config),
                 "torch_rng": torch.get_rng_state()}, out / STATE_FILE)


def _without_steps(plain: dict[str, Any]) -> dict[str, Any]:
    return {**plain, "train": {k: v for k, v in plain["train"].items() if k != "steps"}}


def _resume_state(config: TokenizerRunConfig, out: Path) -> TrainState:
    saved = torch.load(out / STATE_FILE, map_location="cpu", weights_only=False)
    if _without_steps(saved["config"]) != _without_steps(to_plain(config)):
        raise ValueError(f"{out}: the run there was started with another config; resume it with its own "
                         f"({out / RUN_CONFIG_FILE}; only train.steps may change) or choose another folder")
    if int(saved["step"]) > config.train.steps:
        raise ValueError(f"{out}: the run is at step {saved['step']}, past train.steps={config.train.steps}")
    tok = SpatialTokenizer(MapFormat(config.spec(), tuple(saved["mean"]), tuple(saved["std"])), config.tokenizer)
    tok.net.load_state_dict(saved["net"])
    opt = torch.optim.AdamW(tok.net.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay)
    opt.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["torch_rng"])
    return TrainState(tok, opt, int(saved["step"]))


def _train_steps(state: TrainState, train_raw: Tensor, config: TokenizerRunConfig, out: Path,
                 progress: bool) -> float:
    """Run steps ``state.step`` .. ``train.steps``; returns the seconds they took."""
    t, net = config.train, state.tokenizer.net
    net.train()
    _trim_log(out / LOG_FILE, state.step)
    start = time.perf_counter()
    with tqdm(total=t.steps, initial=state.step, desc=f"tokenizer {config.modality}", unit="step",
              disable=not progress, dynamic_ncols=True) as bar, (out / LOG_FILE).open("a") as log:
        while state.step < t.steps:
            for group in state.optimizer.param_groups:
                group["lr"] = learning_rate(state.step, config.train)
            raw = train_raw[batch_index(state.step, len(train_raw), config.train)]
            _, _, loss = state.tokenizer.reconstruct(raw)
            state.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), t.grad_clip)
            state.optimizer.step()
            state.step += 1
            bar.update(1)
            if state.step % t.log_every == 0 or state.step == t.steps:
                bar.set_postfix(loss=f"{loss.item():.4f}")
                log.write(json.dumps({"step": state.step, "loss": loss.item()}) + "\n")
                log.flush()
            if state.step % t.ckpt_every == 0 or state.step == t.steps:
                _save_state(state, out, config)
    return time.perf_counter() - start


def finish(tokenizer: SpatialTokenizer, config: TokenizerRunConfig, out: Path, val_raw: Tensor,
           baseline_raw: Tensor | None) -> dict[str, Any]:
    """Write the tokenizer, ``report.json`` and ``reconstructions.png`` into ``out``; returns the report."""
    tokenizer.save(out)
    baseline = None
    if baseline_raw is not None and len(baseline_raw):
        baseline = PooledKMeans.fit(tokenizer.format, baseline_raw, tokenizer.patch, tokenizer.vocab_size,
                                    seed=config.train.seed)
    rep, recon, base_recon = report(tokenizer, val_raw, baseline, config.train.eval_batch_size)
    n = min(config.train.figure_samples, len(val_raw))
    if n:
        figure = reconstruction_figure(tokenizer.format, val_raw[:n], recon[:n],
                                       None if base_recon is None else base_recon[:n],
                                       title=f"tokenizer ({tokenizer.vocab_size})")
        figure.save(out / FIGURE_FILE)
    return rep


def train_tokenizer(config: TokenizerRunConfig, out: str | Path, resume: bool = False,
                    progress: bool = True) -> dict[str, Any]:
    """Train (or, with ``resume``, continue) the tokenizer ``config`` describes in run folder ``out``;
    returns the report, also written to ``out/report.json``. A folder holding a run needs ``resume``."""
    out = Path(out)
    if (out / STATE_FILE).exists() and not resume:
        raise ValueError(f"{out} already holds a tokenizer run ({STATE_FILE}): resume it or choose another folder")
    if resume and not (out / STATE_FILE).exists():
        raise ValueError(f"{out}: nothing to resume (no {STATE_FILE})")
    out.mkdir(parents=True, exist_ok=True)
    train_raw = training_maps(config.data, config.modality, "train", config.data.train_scenes, progress)
    state = _resume_state(config, out) if resume else _new_state(config, train_raw)
    write_text_atomic(out / RUN_CONFIG_FILE, to_yaml(config))
    seconds = _train_steps(state, train_raw, config, out, progress)
    val_raw = training_maps(config.data, config.modality, "val", config.data.val_scenes, progress)
    rep = finish(state.tokenizer, config, out, val_raw, train_raw[:config.train.baseline_scenes])
    rep["training"] = {"steps": config.train.steps, "batch_size": config.train.batch_size,
                       "seconds_this_session": round(seconds, 1), "train_scenes": config.data.train_scenes,
                       "last_loss": _last_loss(out)}
    write_text_atomic(out / REPORT_FILE, json.dumps(rep, indent=2) + "\n")
    if progress:
        print("\n".join(summary_lines(rep)))
    return rep


def _trim_log(path: Path, step: int) -> None:
    """Drop the records after ``step`` (written after the last checkpoint of an interrupted run)."""
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        write_text_atomic(path, "".join(f"{line}\n" for line in kept))


def _last_loss(out: Path) -> float | None:
    lines = (out / LOG_FILE).read_text().splitlines() if (out / LOG_FILE).exists() else []
    return json.loads(lines[-1])["loss"] if lines else None


def run_config_of(folder: str | Path, kind: type[T] = TokenizerRunConfig) -> T | None:  # type: ignore[assignment]
    """The run config (a ``kind``) saved beside a trained tokenizer, or None (a tokenizer saved elsewhere)."""
    import yaml

    path = Path(folder) / RUN_CONFIG_FILE
    if not path.is_file():
        return None
    return build_dataclass(kind, yaml.safe_load(path.read_text()))
