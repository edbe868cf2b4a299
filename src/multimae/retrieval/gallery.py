"""A gallery or a set of queries read from data (a folder-layout root or sample shards,
`multimae.data.sources.open_source`) and embedded for retrieval.

Shapes: M samples, F features, S the model's image size (maps are centre-cropped to a square and
resized to S x S, as `multimae generate` reads its conditions).

Gallery embeddings come from the samples' stored feature vectors when the data holds the modality the
run's feature tokenizer reads, else they are predicted by the run from ``modalities`` (by default the
picture); queries are always predicted from the modalities they name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from multimae.data.sources import SampleSource, open_source
from multimae.generation.runs import RunGenerator
from multimae.modalities.registry import DEFAULT_IMAGE_MODALITY
from multimae.retrieval.embed import EmbedSchedule, normalize, predict_embeddings, stored_modality


@dataclass
class EmbeddedSet:
    """Attributes:
    keys: the M samples' keys, in the source's order.
    embeddings: (M, F) unit rows.
    how: where they come from ("stored feature vectors" or "predicted from depth, ...").
    source: the samples (holding ``shown``, for pictures).
    shown: the modalities drawn for these samples in pictures (empty: nothing to draw).
    """

    keys: list[str]
    embeddings: Tensor
    how: str
    source: SampleSource
    shown: tuple[str, ...]


def holds(data: str, modality: str, split: str) -> bool:
    """Whether ``data``'s ``split`` holds ``modality`` (shards are read lazily: their first sample is
    read to tell). Data that cannot be opened at all says why when it is opened for what is needed."""
    try:
        source = open_source(data, [modality], split)
        if len(source.samples):  # type: ignore[arg-type]
            source.samples[0]
    except ValueError:
        return False
    return True


def data_name(gen: RunGenerator, name: str) -> str:
    """The data modality a model input ``name`` (``tok_depth`` or ``depth``) is read from; a ValueError
    naming the model's inputs when it reads no such thing."""
    spec = gen.model.input_specs[gen.input(name)]
    return spec.source_name if spec.kind == "token_map" else spec.name


def raw_batch(gen: RunGenerator, samples: Sequence[dict[str, Any]], modalities: Sequence[str]) -> dict[str, Any]:
    """``{modality: raw batch}`` of samples for `RunGenerator.conditions`: maps at the model's size, texts."""
    from multimae.inference.inputs import fit_size

    size = gen.model.config.image_size
    out: dict[str, Any] = {}
    for m in modalities:
        values = [s[m] for s in samples]
        if all(isinstance(v, str) for v in values):
            out[m] = list(values)
        else:
            out[m] = torch.stack([fit_size({m: v}, size, 1, "crop")[0][m] for v in values])  # type: ignore[dict-item]
    return out


def embed_data(gen: RunGenerator, output: str, data: str, split: str = "train", modalities: Sequence[str] | None = None,
               schedule: EmbedSchedule = EmbedSchedule(), batch: int = 64, shown: Sequence[str] | None = None
               ) -> EmbeddedSet:
    """The samples of ``data`` embedded: stored feature vectors when ``modalities`` is None and the data
    holds them, else predicted by the run from ``modalities`` (None: the picture). ``shown``: the
    modalities kept for pictures (None: the picture, when the data holds it)."""
    feature = stored_modality(gen, output)
    stored = modalities is None and holds(data, feature, split)
    needed = [feature] if stored else [data_name(gen, m) for m in modalities or (DEFAULT_IMAGE_MODALITY,)]
    if shown is None:
        shown = [DEFAULT_IMAGE_MODALITY] if holds(data, DEFAULT_IMAGE_MODALITY, split) else []
    shown = [data_name(gen, m) if m in (modalities or ()) else m for m in shown]
    source = open_source(data, list(dict.fromkeys([*needed, *shown])), split)
    count = len(source.samples)  # type: ignore[arg-type]
    if count == 0:
        raise ValueError(f"{data} ({split}): no samples")
    keys, parts = [], []
    for start in range(0, count, batch):
        samples = [source.samples[i] for i in range(start, min(start + batch, count))]
        keys += [str(s["key"]) for s in samples]
        if stored:
            parts.append(normalize(torch.stack([s[feature] for s in samples])))
        else:
            parts.append(predict_embeddings(gen, raw_batch(gen, samples, needed), schedule, output))
    how = f"stored {feature} vectors" if stored else f"predicted from {', '.join(needed)}"
    return EmbeddedSet(keys, torch.cat(parts), how, source, tuple(shown))
