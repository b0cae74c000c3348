"""TopListBM25Retriever: the same pooled frontier (and reward) as full scoring, on adversarial catalogs."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from ospo_gym.retrieval import BM25Retriever, TopListBM25Retriever, pad_pools, pooled_ndcg

WORDS = [f"w{i}" for i in range(40)]


def corpus(rng: np.random.Generator, n_docs: int, *, duplicates: bool) -> list[str]:
    """Zipf-ish documents; with ``duplicates`` many documents repeat exactly (heavy score ties)."""
    p = 1.0 / np.arange(1, len(WORDS) + 1)
    p /= p.sum()
    docs = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 9)), p=p)) for _ in range(n_docs)]
    if duplicates:
        docs = [docs[int(i)] for i in rng.integers(0, max(n_docs // 8, 1), size=n_docs)]
    return docs


def families(rng: np.random.Generator, n_families: int, n_docs: int) -> tuple[list[str], np.ndarray]:
    """Completions and their sub-texts (like coalitions), each with a pool of documents."""
    texts, pools = [], []
    for _ in range(n_families):
        words = list(rng.choice(WORDS, size=int(rng.integers(1, 10))))
        pool = rng.choice(n_docs, size=int(rng.integers(1, 25)), replace=False)
        for _ in range(int(rng.integers(1, 12))):
            start = int(rng.integers(len(words)))
            sub = words[start : start + int(rng.integers(1, len(words) + 1))]
            texts.append(" ".join(sub))
            pools.append(pool)
        texts.append(" ".join(words) + " unknownword")
        pools.append(pool)
    ids, _ = pad_pools(pools)
    return texts, ids


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("duplicates", [False, True])
def test_pool_frontier_matches_full_scoring(seed, duplicates):
    rng = np.random.default_rng(seed)
    docs = corpus(rng, 400, duplicates=duplicates)
    fast, full = TopListBM25Retriever(docs, full_scoring_below=0), BM25Retriever(docs)
    texts, ids = families(rng, 8, len(docs))
    for cutoff in (1, 3, 17, 60, 399, None):
        got_scores, got = fast.pool_frontier(texts, ids, cutoff)
        ref_scores, ref = full.pool_frontier(texts, ids, cutoff)
        np.testing.assert_array_equal(got, ref, err_msg=f"cutoff={cutoff}")
        np.testing.assert_allclose(got_scores, ref_scores, rtol=1e-5, atol=1e-6)


def test_ties_at_the_threshold_use_the_exact_tie_break():
    # Identical documents tie; with cutoff 2 only the two lowest ids of the tied block are retrieved.
    docs = ["red shoe"] * 5 + ["blue hat"] * 5 + ["green"]
    fast, full = TopListBM25Retriever(docs, full_scoring_below=0), BM25Retriever(docs)
    ids = np.array([[0, 1, 2, 4], [5, 6, 9, -1]])
    got = fast.pool_frontier(["red shoe", "blue"], ids, 2)[1]
    np.testing.assert_array_equal(got, full.pool_frontier(["red shoe", "blue"], ids, 2)[1])
    np.testing.assert_array_equal(got, [[True, True, False, False], [True, True, False, False]])
    assert fast.num_tie_rows == 2


def test_pooled_ndcg_is_unchanged_and_the_retriever_pickles():
    rng = np.random.default_rng(7)
    docs = corpus(rng, 300, duplicates=False)
    fast, full = TopListBM25Retriever(docs, full_scoring_below=0), BM25Retriever(docs)
    texts, ids = families(rng, 5, len(docs))
    pools = [row[row >= 0] for row in ids]
    gains = [rng.choice([0.0, 0.01, 0.1, 1.0], size=len(p)) for p in pools]
    want = pooled_ndcg(full, texts, pools, gains, k=5, cutoff=20)
    np.testing.assert_allclose(pooled_ndcg(fast, texts, pools, gains, k=5, cutoff=20), want, atol=1e-12)
    clone = pickle.loads(pickle.dumps(fast))
    np.testing.assert_allclose(pooled_ndcg(clone, texts, pools, gains, k=5, cutoff=20), want, atol=1e-12)


def test_empty_and_unknown_texts_retrieve_nothing():
    docs = ["alpha beta", "beta gamma", "gamma"]
    fast = TopListBM25Retriever(docs, full_scoring_below=0)
    scores, hit = fast.pool_frontier(["", "zzz", "beta"], np.array([[0, 1], [0, 1], [0, 1]]), 1)
    assert not hit[:2].any() and hit[2].sum() == 1
    assert (scores[:2] == 0).all()


def test_variants_with_a_nonoccurrence_term_use_full_scoring():
    rng = np.random.default_rng(3)
    docs = corpus(rng, 200, duplicates=False)
    fast, full = TopListBM25Retriever(docs, method="bm25+", full_scoring_below=0), BM25Retriever(docs, method="bm25+")
    texts, ids = families(rng, 3, len(docs))
    np.testing.assert_array_equal(fast.pool_frontier(texts, ids, 10)[1], full.pool_frontier(texts, ids, 10)[1])


def test_small_catalogs_use_full_scoring(monkeypatch):
    docs = ["alpha beta", "beta gamma", "gamma"] * 10
    calls = []
    original = BM25Retriever.pool_frontier
    monkeypatch.setattr(BM25Retriever, "pool_frontier", lambda self, *a: calls.append(1) or original(self, *a))
    TopListBM25Retriever(docs).pool_frontier(["beta"], np.array([[0, 1]]), 2)
    assert calls == [1]
    TopListBM25Retriever(docs, full_scoring_below=0).pool_frontier(["beta"], np.array([[0, 1]]), 2)
    assert calls == [1]
