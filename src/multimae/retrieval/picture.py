"""A picture of retrieval results: one row per query, its given inputs then its top-k gallery items,
each noted with its key and cosine score (the true match, when known, marked)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from multimae.modalities.registry import get_modality
from multimae.viz.colormaps import draw_spec
from multimae.viz.grid import image_grid


def drawn(modality: str, value: object) -> np.ndarray:
    """A uint8 (H, W, 3) picture of one raw map of ``modality`` (as its spec draws it)."""
    return draw_spec(get_modality(modality), np.asarray(value))


def topk_picture(queries: Sequence[Mapping[str, np.ndarray]], results: Sequence[Sequence[np.ndarray]],
                 keys: Sequence[Sequence[str]], scores: Sequence[Sequence[float]],
                 truth: Sequence[str | None] | None = None, names: Sequence[str] = ()) -> Image.Image:
    """``queries[q]``: ``{modality: picture}`` (the same modalities for every query); ``results[q][j]``
    the picture of its j-th result, ``keys`` / ``scores`` alike; ``truth[q]`` its true key (or None);
    ``names[q]`` a label for the query (its key: the truth is then named only when it differs)."""
    given = list(queries[0]) if queries else []
    k = max((len(r) for r in results), default=0)
    blank = np.zeros_like(next(iter(queries[0].values()))) if given else np.zeros((8, 8, 3), np.uint8)
    rows, notes = [], []
    for q, (query, found) in enumerate(zip(queries, results)):
        rows.append([query[m] for m in given] + list(found) + [blank] * (k - len(found)))
        marks = [f"{j + 1}. {key} {score:.3f}" + (" (match)" if truth and key == truth[q] else "")
                 for j, (key, score) in enumerate(zip(keys[q], scores[q]))]
        head = names[q] if q < len(names) else f"query {q}"
        if truth and truth[q] is not None and truth[q] != head:
            head += f" (truth {truth[q]})"
        notes.append(f"{head}: " + "; ".join(marks))
    titles = [f"{m} (query)" for m in given] + [f"top {j + 1}" for j in range(k)]
    return image_grid(rows, titles, notes)
