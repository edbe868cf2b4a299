"""Training a vector tokenizer on the feature vectors of a data source, its baseline and its report.

Shapes: N vectors, G vectors per sample, C channels, F = G * C features, T tokens, V vocabulary.

Vectors come from a source on disk holding a ``vector`` modality (pseudo-labelled features:
`multimae pseudolabel --tasks feature`), split as a map tokenizer's data is (`source_samples`: a
folder root's train / val splits, or every shard but the last / the last). The baseline is
`ProductKMeans` at the same number of symbols: the F standardised features cut into T equal groups,
each coded by the nearest of V k-means centres. The report compares both on held-out vectors:
``mse`` (standardised units), ``relative_mse`` (over the held-out variance: 1 = predicting the mean),
``cosine`` between raw vectors, ``recall_at_1`` (the reconstruction's nearest held-out vector, by
cosine, is its own: what retrieval with a predicted embedding needs), and the tokenizer's code usage.
Training takes seconds to a minute, so it is not resumable: an interrupted run is started again.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from multimae.modalities.spec import ModalitySpec
from multimae.tokenizers.baseline import kmeans
from multimae.tokenizers.config import TokenizerTrainConfig, VectorRunConfig
from multimae.tokenizers.metrics import CodeUsage
from multimae.tokenizers.training import batch_index, learning_rate
from multimae.tokenizers.vector import VectorTokenizer, VectorTokenizerConfig, check_vectors


def disk_vectors(source: str, spec: ModalitySpec, split: str, count: int) -> tuple[ModalitySpec, Tensor]:
    """(the spec with the data's G and C, raw vectors (N, G, C)) of the first ``count`` samples of a
    source's ``split``; a ValueError when the modality holds no vectors there."""
    from multimae.tokenizers.maps import source_samples

    samples = source_samples(source, spec.name, split)
    if len(samples) == 0:
        raise ValueError(f"{source}: no {split} samples")
    vectors = []
    for i in range(min(count, len(samples))):
        value = samples[i][spec.name]
        if not isinstance(value, Tensor) or value.ndim != 2:
            raise ValueError(f"{source}: {spec.name} of sample {i} is not a (G, C) array of vectors")
        vectors.append(value.float())
    if len({tuple(v.shape) for v in vectors}) > 1:
        raise ValueError(f"{source}: {spec.name} vectors differ in shape: {sorted({tuple(v.shape) for v in vectors})}")
    raw = torch.stack(vectors)
    return spec.replace(max_length=raw.shape[1], num_channels=raw.shape[2]), raw


class ProductKMeans:
    """T groups of standardised features, each coded by the nearest of V k-means centres."""

    def __init__(self, tokenizer: VectorTokenizer, centres: list[Tensor]) -> None:
        self.tokenizer, self.centres = tokenizer, centres

    @classmethod
    def fit(cls, tokenizer: VectorTokenizer, raw: Tensor, iterations: int = 25, seed: int = 0) -> ProductKMeans:
        """Centres of each feature group of the training vectors ``raw``, standardised as ``tokenizer`` does."""
        g = torch.Generator().manual_seed(seed)
        groups = cls._groups(tokenizer, tokenizer.normalize(raw).double())
        return cls(tokenizer, [kmeans(x, tokenizer.vocab_size, iterations, g).float() for x in groups])

    @staticmethod
    def _groups(tokenizer: VectorTokenizer, x: Tensor) -> list[Tensor]:
        return list(torch.tensor_split(x, tokenizer.config.tokens, dim=1))

    def encode(self, raw: Tensor) -> Tensor:
        """Raw vectors -> ids (N, T)."""
        groups = self._groups(self.tokenizer, self.tokenizer.normalize(raw))
        return torch.stack([torch.cdist(x, c).argmin(1) for x, c in zip(groups, self.centres)], dim=1)

    def decode(self, ids: Tensor) -> Tensor:
        """Ids (N, T) -> raw vectors (N, G, C)."""
        return self.tokenizer.denormalize(torch.cat([c[ids[:, t]] for t, c in enumerate(self.centres)], dim=1))


def train_vector_tokenizer(spec: ModalitySpec, train_raw: Tensor, config: VectorTokenizerConfig,
                           train: TokenizerTrainConfig, progress: bool = True) -> tuple[VectorTokenizer, dict[str, Any]]:
    """A tokenizer trained on ``train_raw`` (N, G, C) with ``train``'s steps, batch size and schedule;
    returns it and ``{steps, batch_size, seconds, last_loss}``."""
    torch.manual_seed(train.seed)
    tok = VectorTokenizer.fit(spec, train_raw[:train.stats_scenes], config)
    opt = torch.optim.AdamW(tok.net.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    tok.net.train()
    start, loss = time.perf_counter(), torch.zeros(())
    for step in tqdm(range(train.steps), desc=f"tokenizer {spec.name}", unit="step", disable=not progress,
                     dynamic_ncols=True):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, train)
        _, _, loss = tok.reconstruct(train_raw[batch_index(step, len(train_raw), train)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tok.net.parameters(), train.grad_clip)
        opt.step()
    tok.net.eval()
    return tok, {"steps": train.steps, "batch_size": train.batch_size, "train_vectors": len(train_raw),
                 "seconds": round(time.perf_counter() - start, 1), "last_loss": float(loss.detach())}


def vector_metrics(tokenizer: VectorTokenizer, raw: Tensor, recon: Tensor) -> dict[str, float]:
    """Round-trip quality of reconstructions ``recon`` of held-out vectors ``raw`` (see the module docstring)."""
    x, y = tokenizer.normalize(raw), tokenizer.normalize(recon)
    mse = float(F.mse_loss(y, x))
    variance = float(x.var(0, correction=0).mean())
    a, b = check_vectors(tokenizer.spec, raw), check_vectors(tokenizer.spec, recon)
    cosine = F.cosine_similarity(a, b, dim=1)
    nearest = (F.normalize(b, dim=1) @ F.normalize(a, dim=1).T).argmax(1)
    return {"mse": mse, "relative_mse": mse / max(variance, 1e-12), "cosine": float(cosine.mean()),
            "recall_at_1": float((nearest == torch.arange(len(a))).float().mean())}


def vector_report(tokenizer: VectorTokenizer, val_raw: Tensor, baseline: ProductKMeans | None
                  ) -> tuple[dict[str, Any], Tensor, Tensor | None]:
    """(report, the tokenizer's reconstructions, the baseline's or None) of held-out vectors."""
    tokens = tokenizer.encode(val_raw)
    recon = tokenizer.decode(tokens)
    usage = CodeUsage(tokenizer.vocab_size)
    usage.update(tokens.ids)
    rep: dict[str, Any] = {"modality": tokenizer.spec.name, "vectors": len(val_raw), "tokens": tokenizer.config.tokens,
                           "vocab_size": tokenizer.vocab_size, "tokenizer": vector_metrics(tokenizer, val_raw, recon),
                           "codes": usage.result(), "content_hash": tokenizer.content_hash}
    base = None
    if baseline is not None:
        base = baseline.decode(baseline.encode(val_raw))
        rep["baseline"] = {"kind": "product k-means", **vector_metrics(tokenizer, val_raw, base)}
    return rep, recon, base


def vector_figure(tokenizer: VectorTokenizer, raw: Tensor, recon: Tensor, baseline: Tensor | None = None,
                  tile: int = 128) -> Image.Image:
    """One row per vector: its standardised features drawn as a square of cells (colour-mapped over
    -2.5 .. 2.5 standard deviations), the tokenizer's reconstruction, the error, and the baseline's."""
    from multimae.viz.colormaps import draw
    from multimae.viz.grid import image_grid

    def square(v: Tensor) -> np.ndarray:
        flat = tokenizer.normalize(v[None])[0]
        side = math.ceil(math.sqrt(len(flat)))
        cells = torch.full((side * math.ceil(len(flat) / side),), float("nan"))
        cells[:len(flat)] = flat
        return cells.reshape(-1, side).numpy()

    titles = ["input", f"tokenizer ({tokenizer.config.tokens} x {tokenizer.vocab_size})", "error (bright = large)"]
    titles += ["baseline"] if baseline is not None else []
    rows, notes = [], []
    for i in range(len(raw)):
        a, b = square(raw[i]), square(recon[i])
        row = [draw("colormap", a, value_range=(-2.5, 2.5)), draw("colormap", b, value_range=(-2.5, 2.5)),
               draw("colormap", -np.abs(a - b), value_range=(-2.5, 0.0))]
        if baseline is not None:
            row.append(draw("colormap", square(baseline[i]), value_range=(-2.5, 2.5)))
        rows.append(row)
        notes.append(f"cosine {float(F.cosine_similarity(raw[i].reshape(1, -1), recon[i].reshape(1, -1))):.3f}")
    return image_grid(rows, titles, notes, tile=tile)


def summary_lines(rep: dict[str, Any]) -> list[str]:
    """The report as a few lines: the tokenizer next to the baseline, then code usage."""
    lines = [f"{rep['modality']}: {rep['vectors']} held-out vectors, {rep['tokens']} tokens of {rep['vocab_size']}",
             f"{'':<16} {'mse':>8} {'rel. mse':>9} {'cosine':>7} {'R@1':>6}"]
    for name in ("tokenizer", "baseline"):
        if name in rep:
            m = rep[name]
            lines.append(f"{name:<16} {m['mse']:>8.4f} {m['relative_mse']:>9.4f} {m['cosine']:>7.4f} "
                         f"{m['recall_at_1']:>6.3f}")
    c = rep["codes"]
    lines.append(f"codes used {c['codes_used']} of {c['vocab_size']}, perplexity {c['perplexity']:.1f}")
    return lines


def train_vector_run(config: VectorRunConfig, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train the tokenizer ``config`` describes on its source; write it, ``config.yaml``, ``report.json``
    and ``reconstructions.png`` into ``out``; returns the report."""
    from multimae.config.loader import to_yaml
    from multimae.engine.files import write_text_atomic
    from multimae.tokenizers.training import FIGURE_FILE, REPORT_FILE, RUN_CONFIG_FILE

    config.validate()
    out = Path(out)
    spec, train_raw = disk_vectors(config.source, config.spec(), "train", config.train_vectors)
    _, val_raw = disk_vectors(config.source, spec, "val", config.val_vectors)
    if val_raw.shape[1:] != train_raw.shape[1:]:
        raise ValueError(f"{config.source}: held-out vectors are {tuple(val_raw.shape[1:])}, training ones "
                         f"{tuple(train_raw.shape[1:])}")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / RUN_CONFIG_FILE, to_yaml(config))
    tokenizer, training = train_vector_tokenizer(spec, train_raw, config.tokenizer, config.train, progress)
    tokenizer.save(out)
    baseline = None
    if config.train.baseline_scenes:
        baseline = ProductKMeans.fit(tokenizer, train_raw[:config.train.baseline_scenes], seed=config.train.seed)
    rep, recon, base = vector_report(tokenizer, val_raw, baseline)
    rep["training"] = training
    n = min(config.train.figure_samples, len(val_raw))
    if n:
        vector_figure(tokenizer, val_raw[:n], recon[:n], None if base is None else base[:n]).save(out / FIGURE_FILE)
    write_text_atomic(out / REPORT_FILE, json.dumps(rep, indent=2) + "\n")
    if progress:
        print("\n".join(summary_lines(rep)))
    return rep
