"""Recall@k: the share of queries whose true gallery item is among their first k results.

Shapes: Q queries, K >= k results per query (gallery indices, best first).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor


def recall_at_k(indices: Tensor, truth: Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """``{k: recall@k}`` of results ``indices`` (Q, K) given each query's true gallery index ``truth`` (Q,)
    (a query without one, -1, is left out); a ValueError when no query has a match or a k exceeds K."""
    if indices.ndim != 2 or truth.shape != (indices.shape[0],):
        raise ValueError(f"indices must be (Q, K) and truth (Q,), got {tuple(indices.shape)} and {tuple(truth.shape)}")
    known = truth >= 0
    if not bool(known.any()):
        raise ValueError("no query has its true item in the gallery: recall is undefined")
    hits = indices[known] == truth[known, None]  # (Q', K)
    out = {}
    for k in ks:
        if not 1 <= k <= indices.shape[1]:
            raise ValueError(f"recall@{k}: the results hold {indices.shape[1]} per query")
        out[k] = float(hits[:, :k].any(dim=1).float().mean())
    return out
