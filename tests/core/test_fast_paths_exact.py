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


def _random_token_batch(rng: np.random.Generator, rows: int, *, aligned: bool):
    """Rows of spans, credit and token offsets; ``aligned`` tokens never cross a span boundary (the common case:
    byte-level tokens end where words end), otherwise many tokens straddle two spans."""
    spans, credit, offsets = [], [], []
    for _ in range(rows):
        length = int(rng.integers(0, 60))
        cuts = np.sort(rng.choice(length + 1, size=min(length + 1, int(rng.integers(0, 12))), replace=False))
        row = [(int(a), int(b)) for a, b in zip(cuts[0::2], cuts[1::2], strict=False) if b > a]
        bounds = np.unique(np.concatenate([[0, length], cuts])) if aligned else np.sort(rng.integers(0, length + 1, size=int(rng.integers(1, 20))))
        tokens = np.stack([bounds[:-1], bounds[1:]], axis=1) if len(bounds) > 1 else np.zeros((0, 2), dtype=np.int64)
        if len(tokens) and rng.random() < 0.3:
            tokens = np.concatenate([tokens, [[length, length]]])  # EOS: an empty span at the end
        spans.append(row)
        credit.append(np.round(rng.normal(size=len(row)), int(rng.integers(0, 3))))  # ties, zeros, signs
        offsets.append(tokens)
    return spans, credit, offsets


@pytest.mark.parametrize("aligned", [True, False])
def test_batched_token_projection_equals_the_row_by_row_product_bit_for_bit(aligned):
    """``segment_to_tokens_batch`` stands for ``W.T @ credit`` row by row (the BLAS product), down to the sign of
    zero; the aligned batches take the searchsorted path, the others mostly the per-row fallback."""
    from ospo_gym.credit import segment_to_tokens, segment_to_tokens_batch

    rng = np.random.default_rng(int(aligned))
    for _ in range(300):
        spans, credit, offsets = _random_token_batch(rng, int(rng.integers(1, 9)), aligned=aligned)
        if rng.random() < 0.2 and len(spans[0]) > 1:
            spans[0] = spans[0][::-1]  # spans out of order: the row's own product
        width = max(len(o) for o in offsets) + int(rng.integers(0, 3))
        got = segment_to_tokens_batch(spans, credit, offsets, width)
        want = np.zeros((len(spans), width))
        for b, (s, c, o) in enumerate(zip(spans, credit, offsets, strict=True)):
            want[b, : len(o)] = segment_to_tokens(s, c, o)
        assert np.array_equal(got.view(np.int64), want.view(np.int64))


@pytest.mark.parametrize("seed", range(4))
def test_ndcg_ranking_by_one_bit_key_equals_the_two_key_lexsort(seed):
    """Positive float32 scores: ranking by one uint64 key (score bits, then id) gives the lexsort's NDCG bit for bit,
    with many tied scores, unordered ids, padding and unretrieved documents; other scores keep the lexsort."""
    from ospo_gym.metrics import ndcg_at_k
    from ospo_gym.retrieval import reward

    rng = np.random.default_rng(seed)
    rows, width = 300, 25
    ids = np.stack([rng.permutation(1000)[:width] for _ in range(rows)])
    ids[rng.random((rows, width)) < 0.2] = -1
    scores = (rng.integers(1, 6, size=(rows, width)) / np.float32(4)).astype(np.float32)  # many ties
    retrieved = (ids >= 0) & (rng.random((rows, width)) < 0.7)
    gains = np.where(ids >= 0, rng.integers(0, 4, size=(rows, width)), 0).astype(np.float64)

    def lexsorted(s):
        key = np.where(retrieved, -s.astype(np.float64), np.inf)
        order = np.lexsort((ids, key), axis=-1)
        return ndcg_at_k(np.take_along_axis(np.where(retrieved, gains, 0.0), order, axis=1), gains, 3)

    got = reward._ndcg_of_frontier(ids, scores, retrieved, gains, 3)
    assert np.array_equal(got, lexsorted(scores)) and len(np.unique(got)) > 20
    signed = scores - np.float32(0.5)  # zero and negative scores: the lexsort path
    assert np.array_equal(reward._ndcg_of_frontier(ids, signed, retrieved, gains, 3), lexsorted(signed))


@pytest.mark.parametrize("key_bits", [64, 40])
def test_ndcg_of_distinct_pools_ranks_only_the_retrieved_as_the_full_lexsort_does(key_bits, monkeypatch):
    """Gains of distinct pools with ``pool_of``: ranking only the retrieved documents by one (row, score, id rank)
    key, or by the lexsort where that key would not fit (``key_bits`` 40), gives the NDCG of the full-row lexsort
    over the gathered rows bit for bit (a tie broken by column instead of id, a rank counted across rows, or an
    ideal taken from the wrong pool would each differ)."""
    from ospo_gym.metrics import ndcg_at_k
    from ospo_gym.retrieval import reward

    monkeypatch.setattr(reward, "_KEY_BITS", key_bits)
    rng = np.random.default_rng(3)
    distinct, width, rows, k = 5, 30, 400, 10
    pool_ids = np.stack([rng.permutation(5000)[:width] for _ in range(distinct)])
    pool_ids[rng.random((distinct, width)) < 0.2] = -1
    gains = np.where(pool_ids >= 0, rng.integers(0, 4, size=(distinct, width)), 0).astype(np.float64)
    pool_of = rng.integers(0, distinct, size=rows)
    ids = pool_ids[pool_of]
    scores = (rng.integers(1, 4, size=(rows, width)) / np.float32(4)).astype(np.float32)  # many ties
    retrieved = (ids >= 0) & (rng.random((rows, width)) < rng.random((rows, 1)))  # 0 to all of a pool
    key = np.where(retrieved, -scores.astype(np.float64), np.inf)
    order = np.lexsort((ids, key), axis=-1)
    want = ndcg_at_k(np.take_along_axis(np.where(retrieved, gains[pool_of], 0.0), order, axis=1), gains[pool_of], k)
    got = reward._ndcg_of_frontier(ids, scores, retrieved, gains, k, pool_of)
    assert np.array_equal(got, want) and len(np.unique(got)) > 50
    assert np.array_equal(reward._ndcg_of_frontier(ids[:, :4], scores[:, :4], retrieved[:, :4], gains[:, :4], k, pool_of),
                          ndcg_at_k(np.take_along_axis(np.where(retrieved, gains[pool_of], 0.0)[:, :4],
                                                       np.lexsort((ids[:, :4], key[:, :4]), axis=-1), axis=1),
                                    gains[pool_of][:, :4], k))  # pools narrower than k  # fmt: skip


def test_pooled_ndcg_with_distinct_pools_and_pool_of_equals_pools_per_text():
    from ospo_gym.retrieval import pooled_ndcg

    rng = np.random.default_rng(11)
    retriever = BM25Retriever(catalog(rng, 300))
    distinct = [rng.choice(300, size=int(rng.integers(1, 30)), replace=False) for _ in range(4)]
    distinct_gains = [rng.integers(0, 4, size=len(p)).astype(float) for p in distinct]
    pool_of = rng.integers(0, 4, size=80)
    texts = queries(rng, 80)
    want = pooled_ndcg(retriever, texts, [distinct[i] for i in pool_of], [distinct_gains[i] for i in pool_of], cutoff=20)
    got = pooled_ndcg(retriever, texts, distinct, distinct_gains, cutoff=20, pool_of=pool_of)
    assert np.array_equal(got, want) and (want > 0).sum() > 10
    for bad in (pool_of[:-1], pool_of + 4, pool_of - 1, pool_of.astype(float)):
        with pytest.raises(ValueError, match="pool_of"):
            pooled_ndcg(retriever, texts, distinct, distinct_gains, pool_of=bad)
