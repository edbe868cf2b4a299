"""Gallery indexes against brute-force cosine, faiss against torch, recall@k on a constructed case."""

from __future__ import annotations

import sys

import pytest
import torch

from multimae.retrieval import build_index, normalize, recall_at_k

def has_faiss() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


needs_faiss = pytest.mark.skipif(not has_faiss(), reason="faiss is not installed (pip install 'multimae[faiss]')")
BOTH = ["torch", pytest.param("faiss", marks=needs_faiss)]


def gallery(m: int = 50, f: int = 16, seed: int = 0) -> torch.Tensor:
    return normalize(torch.randn(m, f, generator=torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("backend", BOTH)
def test_each_item_queried_by_its_own_features_ranks_first(backend):
    g = gallery()
    index = build_index(g, [f"k{i}" for i in range(len(g))], backend)
    scores, found = index.search(g, 3)
    assert torch.equal(found[:, 0], torch.arange(len(g)))
    torch.testing.assert_close(scores[:, 0], torch.ones(len(g)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", BOTH)
def test_topk_order_and_scores_are_the_brute_force_cosine(backend):
    g, q = gallery(), normalize(torch.randn(7, 16, generator=torch.Generator().manual_seed(1)))
    scores, found = build_index(g, [str(i) for i in range(len(g))], backend).search(q, 5)
    brute = torch.nn.functional.cosine_similarity(q[:, None], g[None], dim=2)  # (Q, M)
    order = brute.argsort(dim=1, descending=True)[:, :5]
    assert torch.equal(found, order)
    torch.testing.assert_close(scores, brute.gather(1, order), atol=1e-5, rtol=0)
    assert bool((scores[:, :-1] >= scores[:, 1:]).all())


@needs_faiss
def test_faiss_gives_the_torch_results():
    g, q = gallery(200, 32, 2), normalize(torch.randn(20, 32, generator=torch.Generator().manual_seed(3)))
    keys = [str(i) for i in range(len(g))]
    ts, ti = build_index(g, keys, "torch").search(q, 10)
    fs, fi = build_index(g, keys, "faiss").search(q, 10)
    assert torch.equal(ti, fi)
    torch.testing.assert_close(ts, fs, atol=1e-5, rtol=0)


def test_k_larger_than_the_gallery_returns_the_whole_gallery():
    scores, found = build_index(gallery(3), ["a", "b", "c"]).search(gallery(3), 10)
    assert found.shape == (3, 3) and sorted(found[0].tolist()) == [0, 1, 2]


def test_recall_at_k_on_a_constructed_case():
    found = torch.tensor([[0, 1, 2], [2, 1, 0], [1, 2, 0], [0, 2, 1]])  # results of 4 queries, best first
    truth = torch.tensor([0, 1, 0, -1])  # query 3 has no match in the gallery: left out
    assert recall_at_k(found, truth, (1, 2, 3)) == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: 1.0}
    with pytest.raises(ValueError, match="no query has its true item"):
        recall_at_k(found, torch.full((4,), -1))
    with pytest.raises(ValueError, match="recall@5: the results hold 3"):
        recall_at_k(found, truth, (5,))


def test_errors_name_the_problem(monkeypatch):
    with pytest.raises(ValueError, match="at least one item"):
        build_index(torch.zeros(0, 4), [])
    with pytest.raises(ValueError, match="unknown retrieval backend 'annoy'"):
        build_index(gallery(), [str(i) for i in range(50)], "annoy")
    with pytest.raises(ValueError, match=r"queries must be float \(N, 16\)"):
        build_index(gallery(), [str(i) for i in range(50)]).search(torch.zeros(2, 3), 1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        build_index(gallery(), [str(i) for i in range(50)]).search(gallery(2), 0)
    monkeypatch.setitem(sys.modules, "faiss", None)  # as if not installed
    with pytest.raises(ValueError, match="faiss, which is not installed"):
        build_index(gallery(), [str(i) for i in range(50)], "faiss")
