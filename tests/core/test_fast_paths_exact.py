"""The issue-17 fast paths give the numbers of the plain computations they stand for, exactly."""

from __future__ import annotations

import numpy as np
import pytest

import ospo_gym.retrieval.pooled_bm25 as pooled
from ospo_gym.oracle import CoalitionOracle, coalition_text
from ospo_gym.retrieval import BM25Retriever, TopListBM25Retriever, pad_pools
from ospo_gym.retrieval.ranking import pool_frontier

WORDS = "red blue green shoe boot sock wool cotton linen soft warm light dark long short".split()


def catalog(rng: np.random.Generator, docs: int) -> list[str]:
    # a Zipf-like draw, so that a few words are in most documents (dense rows) and the rest in few
    p = 1.0 / np.arange(1, len(WORDS) + 1)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 9)), p=p / p.sum())) for _ in range(docs)]


def queries(rng: np.random.Generator, count: int) -> list[str]:
    return [" ".join(rng.choice(WORDS + ["zzz"], size=int(rng.integers(0, 7)))) for _ in range(count)]


@pytest.mark.parametrize("cutoff", [3, 40, 150, 400])
def test_thresholds_only_for_queries_that_reach_the_cutoff_equal_full_selection(cutoff):
    rng = np.random.default_rng(cutoff)
    retriever = BM25Retriever(catalog(rng, 600), dense_postings_mb=0.01)  # some terms dense, some sparse
    texts = queries(rng, 120)
    pools, _ = pad_pools([rng.choice(600, size=int(rng.integers(0, 30)), replace=False) for _ in texts])
    want = pool_frontier(retriever.scores(texts), pools, cutoff)
    got = retriever.pool_frontier(texts, pools, cutoff)
    reach = [sum(int(retriever._df[t]) for t in set(ids)) for ids in retriever.tokenize(texts)]
    assert min(reach) < cutoff <= max(reach)  # both kinds of query are in the batch
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and np.array_equal(g, w)


def test_pooled_path_with_persistent_doc_tables_equals_full_scoring(monkeypatch):
    monkeypatch.setattr(pooled, "_SORT_POSTINGS", 0)  # every group takes the (num_docs,) table branch
    rng = np.random.default_rng(5)
    docs = catalog(rng, 800)
    fast = TopListBM25Retriever(docs, full_scoring_below=0)
    full = BM25Retriever(docs)
    for _ in range(3):  # later calls reuse the tables the earlier ones filled and reset
        texts = queries(rng, 60)
        pools, _ = pad_pools([rng.choice(800, size=int(rng.integers(1, 25)), replace=False) for _ in texts])
        got, want = fast.pool_frontier(texts, pools, 50), full.pool_frontier(texts, pools, 50)
        assert np.array_equal(got[1], want[1])
        np.testing.assert_allclose(got[0], want[0], rtol=1e-6)  # float32 sums in another order (module doc)
    tables = fast._scratch.take(fast.num_docs)
    assert not tables.counts.any() and (tables.rows == -1).all()


def test_pad_pools_pads_a_repeated_pool_once_with_the_same_result():
    rng = np.random.default_rng(0)
    pools = [rng.choice(50, size=n, replace=False) for n in (3, 7, 1)]
    gains = [rng.random(len(p)) for p in pools]
    order = [0, 1, 0, 2, 1, 0]
    got = pad_pools([pools[i] for i in order], [gains[i] for i in order])
    want = pad_pools([pools[i].copy() for i in order], [gains[i].copy() for i in order])  # all distinct objects
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))
    with pytest.raises(ValueError, match="pool 3 has 7 ids but 1 gains"):
        pad_pools([pools[0], pools[0], pools[0], pools[1]], [gains[0], gains[0], gains[0], gains[2]])


def test_oracle_joins_unsorted_coalitions_in_segment_order():
    seen: list[str] = []

    def score(prompt_ids, texts):
        seen.extend(texts)
        return np.array([float(len(t)) for t in texts])

    oracle = CoalitionOracle(score, segmentation="word")
    text = "alpha beta  gamma delta"
    spans = oracle.segment(text)
    sorted_ones = [(), (0,), (1, 3), (0, 1, 2, 3)]
    unsorted = [(), (0,), (3, 1), (2, 0, 3, 1)]
    a = oracle.values(0, text, spans, sorted_ones)
    b = oracle.values(0, text, spans, unsorted)
    assert np.array_equal(a, b)
    assert seen[: len(sorted_ones)] == [coalition_text(text, spans, c) for c in sorted_ones]
    assert seen[len(sorted_ones) :] == seen[: len(sorted_ones)]
