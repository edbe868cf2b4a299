"""A gallery index: the k gallery embeddings with the highest cosine similarity to each query.

Shapes: Q queries, M gallery items, F features, k results per query.

Embeddings are expected L2-normalised (`multimae.retrieval.embed.normalize`), so the inner product is
the cosine. `TorchIndex` is exact and needs nothing more; `FaissIndex` is faiss's exact
``IndexFlatIP`` (the optional extra ``pip install 'multimae[faiss]'``), for galleries where that matters.
Both return scores in descending order; ties fall in each library's own order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor

BACKENDS: tuple[str, ...] = ("torch", "faiss")


def _check(embeddings: Tensor, what: str, dim: int | None = None) -> Tensor:
    if embeddings.ndim != 2 or not embeddings.is_floating_point() or (dim is not None and embeddings.shape[1] != dim):
        want = f"(N, {dim})" if dim is not None else "(N, F)"
        raise ValueError(f"{what} must be float {want}, got {embeddings.dtype} {tuple(embeddings.shape)}")
    return embeddings.detach().float().cpu()


class GalleryIndex(Protocol):
    keys: list[str]

    def search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """queries (Q, F) -> (scores (Q, k) float32 descending, indices (Q, k) int64 into the gallery)."""
        ...


class TorchIndex:
    """Exact cosine top-k by one matrix product (queries are taken in chunks of ``chunk``)."""

    def __init__(self, embeddings: Tensor, keys: Sequence[str], chunk: int = 1024) -> None:
        self.embeddings = _check(embeddings, "gallery embeddings")
        if len(keys) != len(self.embeddings) or not len(keys):
            raise ValueError(f"a gallery needs at least one item and one key per embedding ({len(keys)} keys, "
                             f"{len(self.embeddings)} embeddings)")
        self.keys, self.chunk = list(keys), chunk

    def search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        q = _check(queries, "queries", self.embeddings.shape[1])
        k = _top(k, len(self.keys))
        scores, indices = [], []
        for start in range(0, len(q), self.chunk):
            s, i = torch.topk(q[start:start + self.chunk] @ self.embeddings.T, k, dim=1)  # (q, M) -> (q, k)
            scores.append(s)
            indices.append(i)
        return torch.cat(scores), torch.cat(indices)


class FaissIndex:
    """faiss ``IndexFlatIP`` (exact inner product) over the gallery embeddings."""

    def __init__(self, embeddings: Tensor, keys: Sequence[str]) -> None:
        faiss = import_faiss()
        x = _check(embeddings, "gallery embeddings")
        if len(keys) != len(x) or not len(keys):
            raise ValueError(f"a gallery needs at least one item and one key per embedding ({len(keys)} keys, "
                             f"{len(x)} embeddings)")
        self.keys, self.dim = list(keys), x.shape[1]
        self.index = faiss.IndexFlatIP(self.dim)
        self.index.add(x.contiguous().numpy())

    def search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        q = _check(queries, "queries", self.dim)
        scores, indices = self.index.search(q.contiguous().numpy(), _top(k, len(self.keys)))
        return torch.from_numpy(scores).float(), torch.from_numpy(indices).long()


def _top(k: int, size: int) -> int:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return min(k, size)


def import_faiss():  # noqa: ANN201 - the module
    try:
        import faiss
    except ImportError:
        raise ValueError("the faiss backend needs faiss, which is not installed: pip install 'multimae[faiss]' "
                         "(or faiss-cpu), or use the torch backend") from None
    return faiss


def build_index(embeddings: Tensor, keys: Sequence[str], backend: str = "torch") -> GalleryIndex:
    """A gallery index of ``backend`` (``torch`` or ``faiss``) over (M, F) unit embeddings named ``keys``."""
    if backend == "torch":
        return TorchIndex(embeddings, keys)
    if backend == "faiss":
        return FaissIndex(embeddings, keys)
    raise ValueError(f"unknown retrieval backend {backend!r}; choose one of {BACKENDS}")
