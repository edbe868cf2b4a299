"""A map tokenizer's report: round-trip metrics and code usage on held-out maps, next to the
`PooledKMeans` baseline at the same grid and vocabulary; what ``report.json`` holds and
``multimae tokenizer eval`` prints.

Shapes: B samples, H W pixels.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from multimae.tokenizers.baseline import PooledKMeans
from multimae.tokenizers.metrics import HIGHER_IS_BETTER, CodeUsage, RoundTrip, primary_metric
from multimae.tokenizers.spatial import SpatialTokenizer

BASELINE_METHOD = "P x P average pooling, k-means to the same vocabulary size, nearest upsampling"


def round_trip(tokenizer: SpatialTokenizer | PooledKMeans, raw: Tensor, batch_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """(reconstructions like ``raw``, ids (B, N), valid (B, N)) of raw maps (B, ...), in batches."""
    recons, ids, valid = [], [], []
    for start in range(0, raw.shape[0], batch_size):
        part = raw[start:start + batch_size]
        if isinstance(tokenizer, SpatialTokenizer):
            tokens = tokenizer.encode(part)
            recons.append(tokenizer.decode(tokens))
            ids.append(tokens.ids)
            valid.append(tokens.valid)
        else:
            cell_ids, cell_valid = tokenizer.encode(part)
            recons.append(tokenizer.decode(cell_ids))
            ids.append(cell_ids.flatten(1))
            valid.append(cell_valid.flatten(1))
    return torch.cat(recons), torch.cat(ids), torch.cat(valid)


def measure(tokenizer: SpatialTokenizer | PooledKMeans, raw: Tensor, batch_size: int,
            vocab_size: int) -> tuple[dict[str, float], Tensor]:
    """({metric: value} of the round trip and the code usage, reconstructions)."""
    recon, ids, valid = round_trip(tokenizer, raw, batch_size)
    errors, usage = RoundTrip(tokenizer.format), CodeUsage(vocab_size)
    errors.update(raw, recon)
    usage.update(ids, valid)
    return {**errors.result(), **usage.result()}, recon


def report(tokenizer: SpatialTokenizer, val_raw: Tensor, baseline: PooledKMeans | None,
           batch_size: int = 64) -> tuple[dict[str, Any], Tensor, Tensor | None]:
    """(the report, the tokenizer's and the baseline's reconstructions of ``val_raw``)."""
    ours, recon = measure(tokenizer, val_raw, batch_size, tokenizer.vocab_size)
    out: dict[str, Any] = {
        "modality": tokenizer.spec.name,
        "tokenizer": {"content_hash": tokenizer.content_hash, "vocab_size": tokenizer.vocab_size,
                      "quantizer": tokenizer.config.quantizer.kind, "grid": [val_raw.shape[-2] // tokenizer.patch,
                                                                             val_raw.shape[-1] // tokenizer.patch],
                      "parameters": sum(p.numel() for p in tokenizer.net.parameters())},
        "val_maps": int(val_raw.shape[0]),
        "primary_metric": primary_metric(tokenizer.format),
        "higher_is_better": primary_metric(tokenizer.format) in HIGHER_IS_BETTER,
        "metrics": ours,
    }
    base_recon = None
    if baseline is not None:
        theirs, base_recon = measure(baseline, val_raw, batch_size, tokenizer.vocab_size)
        out["baseline"] = {"method": BASELINE_METHOD, "vocab_size": baseline.vocab_size, "metrics": theirs}
    return out, recon, base_recon


def summary_lines(rep: dict[str, Any]) -> list[str]:
    """The report as a few lines of text: metric, tokenizer, baseline."""
    tok = rep["tokenizer"]
    lines = [f"{rep['modality']}: {tok['quantizer']} tokenizer, vocabulary {tok['vocab_size']}, grid "
             f"{tok['grid'][0]}x{tok['grid'][1]}, sha256 {tok['content_hash'][:16]}; {rep['val_maps']} held-out maps"]
    base = rep.get("baseline", {}).get("metrics", {})
    lines.append(f"{'metric':<20}{'tokenizer':>14}{'baseline':>14}")
    for name, value in rep["metrics"].items():
        other = base.get(name)
        lines.append(f"{name:<20}{value:>14.5g}{(f'{other:.5g}' if other is not None else '-'):>14}")
    return lines
