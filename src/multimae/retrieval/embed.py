"""Retrieval embeddings: a 4M run's global feature tokens generated from any inputs and decoded by its
feature tokenizer, or feature vectors as stored; every embedding L2-normalised.

Shapes: B samples, T global tokens, G vectors of C channels per sample, F = G * C features.

A run's *feature output* is a token map whose tokenizer is a vector tokenizer (placement ``global``):
4M's DINOv2 / ImageBind global tokens. Its T tokens are generated like any token map
(`multimae.generation`); by default in one pass at temperature 0 (every token the argmax), so an
embedding does not depend on the seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from multimae.generation.generate import generate
from multimae.generation.runs import RunGenerator
from multimae.generation.schedule import TargetSchedule


@dataclass(frozen=True)
class EmbedSchedule:
    """How the feature tokens are generated (`multimae.generation.TargetSchedule`'s fields)."""

    scheme: str = "maskgit"  # maskgit | roar
    steps: int = 1  # decoding steps over the T tokens; 1 = one pass
    temperature: float = 0.0  # 0 = argmax
    seed: int = 0
    batch_size: int | None = None  # samples generated at once (None: all)

    def target(self, name: str) -> TargetSchedule:
        return TargetSchedule(name, self.scheme, steps=self.steps, temperature=self.temperature)


def normalize(vectors: Tensor) -> Tensor:
    """(B, G, C) or (B, F) vectors -> (B, F) float32 rows of unit length (a zero row stays zero)."""
    if vectors.ndim < 2 or not vectors.is_floating_point():
        raise ValueError(f"embeddings must be float (B, F) or (B, G, C), got {vectors.dtype} {tuple(vectors.shape)}")
    return F.normalize(vectors.reshape(vectors.shape[0], -1).float(), dim=1)


def feature_output(gen: RunGenerator, name: str | None = None) -> str:
    """The model output that holds the run's global feature tokens (``name``: one of them, by the model's
    name or its tokenizer's modality); a ValueError naming the run's outputs when it has none."""
    outputs = {n: s for n, s in gen.model.output_specs.items() if s.kind == "token_map"
               and s.source_name in gen.tokenizers and gen.tokenizers[s.source_name].placement == "global"}
    if name is not None:
        resolved = gen.output(name)
        if resolved not in outputs:
            raise ValueError(f"{name!r} is not a global feature output of this run (those are {sorted(outputs)})")
        return resolved
    if not outputs:
        raise ValueError(f"this run predicts no global feature tokens: its outputs are {sorted(gen.model.output_specs)} "
                         f"with tokenizers for {sorted(gen.tokenizers)}; retrieval needs a token map of a vector "
                         "tokenizer's tokens (train one with `multimae tokenizer train --modality feature`, tokenize "
                         "it with the maps and pre-train with it)")
    return next(iter(outputs))


def stored_modality(gen: RunGenerator, output: str) -> str:
    """The data modality the feature output's tokenizer reads (what a gallery stores its vectors under)."""
    return gen.model.output_specs[output].source_name


def predict_embeddings(gen: RunGenerator, raw: Mapping[str, Any], schedule: EmbedSchedule = EmbedSchedule(),
                       output: str | None = None) -> Tensor:
    """``{input name: raw batch}`` (B samples; `RunGenerator.conditions`) -> (B, F) unit embeddings: the
    feature tokens generated from those inputs alone, decoded by the feature tokenizer."""
    target = output or feature_output(gen)
    if target in (gen.input(n) for n in raw):
        raise ValueError(f"{target} is given as an input: a query predicts it from other modalities")
    conditions = gen.conditions(raw)
    with torch.no_grad():
        finals = generate(gen.model, conditions, [schedule.target(target)], schedule.seed, True, schedule.batch_size)
    vectors = gen.decode_record(target, finals[target])
    assert isinstance(vectors, Tensor)
    return normalize(vectors)
