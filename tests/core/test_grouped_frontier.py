"""The grouped (signature) pool frontier of BM25Retriever and its weighted selection give the plain computation's
arrays bit for bit: kth_largest on the repeated columns, and pool_frontier on the full-catalog scores."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ospo_gym.retrieval.bm25 as bm25_module
import ospo_gym.retrieval.ranking as ranking
from ospo_gym.oracle import coalition_text
from ospo_gym.retrieval import BM25Retriever, pad_pools
from ospo_gym.retrieval.ranking import kth_largest, kth_largest_weighted, pool_frontier

WORDS = "red blue green shoe boot sock wool cotton linen soft warm light dark long short".split()


@st.composite
def weighted_rows(draw):
    """(values (R, G) float32 with many ties and zeros, counts (G,), k)."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    rows, cols = draw(st.integers(1, 12)), draw(st.integers(1, 300))
    levels = draw(st.integers(1, 40))  # few levels: many equal scores
    values = (rng.integers(0, levels + 1, size=(rows, cols)) / np.float32(levels)).astype(np.float32)
    values[rng.random((rows, cols)) < draw(st.floats(0, 0.95))] = 0
    per_row = draw(st.booleans())  # (R, G) counts, or one (G,) row for all
    counts = rng.integers(0, draw(st.integers(1, 30)), size=(rows, cols) if per_row else cols)
    total = int(counts.sum(axis=-1).max())
    k = draw(st.integers(1, max(1, total + 2)))
    return values, counts, k


@settings(max_examples=300, deadline=None)
@given(weighted_rows())
def test_kth_largest_weighted_equals_kth_largest_of_the_repeated_columns(case):
    values, counts, k = case
    got = kth_largest_weighted(values, counts, k)
    row_counts = np.broadcast_to(counts, values.shape)
    want = np.concatenate([kth_largest(np.repeat(v, c)[None], k) for v, c in zip(values, row_counts, strict=True)])
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("per_row", [False, True])
def test_kth_largest_weighted_counts_past_float32_integers_exactly(per_row):
    """Totals of 2**24 and more: float32 can no longer tell 2**24 + 1 from 2**24, so the counting must not use it
    there (hand-computed answers; the repeated columns would not fit in memory)."""
    big = 1 << 24
    values = np.array([[3.0, 2.0, 1.0], [3.0, 2.0, 0.0]], dtype=np.float32)
    counts = np.array([big, 1, big])
    if per_row:
        counts = np.stack([counts, counts])
    np.testing.assert_array_equal(kth_largest_weighted(values, counts, big), [3.0, 3.0])
    np.testing.assert_array_equal(kth_largest_weighted(values, counts, big + 1), [2.0, 2.0])
    np.testing.assert_array_equal(kth_largest_weighted(values, counts, big + 2), [1.0, 0.0])  # row 2: 2**24 + 1 positive


def test_kth_largest_weighted_on_the_sampled_path_with_adversarial_rows():
    # k // _WEIGHTED_SAMPLE_RANK >= 2 and >= 4k scores: the sample path; rows where the sample sees only high or
    # only low columns, and subnormal scores (positive, below the least normal float32)
    rng = np.random.default_rng(3)
    cols = 2000
    counts = rng.integers(1, 8, size=cols)
    smooth = rng.random((4, cols), dtype=np.float32)
    tied = (np.round(rng.random((4, cols)) * 12) / 4).astype(np.float32)
    sparse = np.where(rng.random((4, cols)) < 0.1, rng.random((4, cols)), 0).astype(np.float32)
    ordered = np.sort(rng.random((2, cols)).astype(np.float32), axis=1)
    fooled = np.full((2, cols), 0.25, dtype=np.float32)
    repeated = np.repeat(np.arange(cols), counts)
    fooled[0, np.unique(repeated[:: 1000 // ranking._WEIGHTED_SAMPLE_RANK])] = 1.0  # every sampled column is high
    fooled[1, np.unique(repeated[:: 1000 // ranking._WEIGHTED_SAMPLE_RANK])] = 0.1  # ... or low
    tiny = np.where(rng.random((1, cols)) < 0.5, np.float32(1e-40), np.float32(0)).astype(np.float32)
    values = np.concatenate([smooth, tied, sparse, ordered, fooled, tiny, np.zeros((1, cols), np.float32)])
    assert (tiny > 0).any() and (tiny < np.finfo(np.float32).tiny).all()
    for k in (1, 64, 500, 1000, 3000, int(counts.sum()), int(counts.sum()) + 1):
        want = kth_largest(np.repeat(values, counts, axis=1), k)
        np.testing.assert_array_equal(kth_largest_weighted(values, counts, k), want, err_msg=f"k={k}")
        per_row = np.broadcast_to(counts, values.shape).copy()  # the (R, G) form, one run of equal rows
        np.testing.assert_array_equal(kth_largest_weighted(values, per_row, k), want, err_msg=f"k={k}")


def test_kth_largest_weighted_rejects_bad_input():
    with pytest.raises(ValueError, match="k must be"):
        kth_largest_weighted(np.ones((1, 2), np.float32), np.ones(2, int), 0)
    with pytest.raises(ValueError, match="float32"):
        kth_largest_weighted(np.ones((1, 2)), np.ones(2, int), 1)
    with pytest.raises(ValueError, match="counts"):
        kth_largest_weighted(np.ones((1, 2), np.float32), np.array([1, -1]), 1)
    with pytest.raises(ValueError, match="counts"):
        kth_largest_weighted(np.ones((1, 2), np.float32), np.ones((2, 2), int), 1)
    with pytest.raises(ValueError, match="ints"):
        kth_largest_weighted(np.ones((1, 2), np.float32), np.array([1.5, 1.0]), 1)


def catalog(rng: np.random.Generator, docs: int) -> list[str]:
    # Zipf-like word draws (some terms dense, some sparse) and short documents: many equal BM25 weights
    p = 1.0 / np.arange(1, len(WORDS) + 1)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 7)), p=p / p.sum())) for _ in range(docs)]


def coalition_batch(rng: np.random.Generator, completions: int) -> list[str]:
    """Coalition texts of a few completions, in the oracle's order (a completion's subsets together)."""
    texts: dict[str, None] = {}
    for _ in range(completions):
        words = list(rng.choice(WORDS + ["zzz"], size=int(rng.integers(1, 10))))
        text = " ".join(words)
        spans, at = [], 0
        for w in words:
            spans.append((at, at + len(w)))
            at += len(w) + 1
        for _ in range(int(rng.integers(1, 30))):
            members = np.flatnonzero(rng.random(len(words)) < rng.random())
            texts.setdefault(coalition_text(text, spans, tuple(members.tolist())))
        texts.setdefault(text)
    return list(texts)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cutoff=st.sampled_from([1, 5, 40, 150, 400]))
def test_grouped_frontier_equals_pool_frontier_of_full_scores(seed, cutoff):
    rng = np.random.default_rng(seed)
    docs = 500
    retriever = BM25Retriever(catalog(rng, docs), dense_postings_mb=0.001)
    texts = coalition_batch(rng, int(rng.integers(1, 6)))
    pools, _ = pad_pools([rng.choice(docs, size=int(rng.integers(0, 40)), replace=False) for _ in texts])
    queries = retriever._query_matrix(texts)
    got = retriever._grouped_frontier(queries, pools, cutoff)
    want = pool_frontier(retriever.scores(texts), pools, cutoff)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and np.array_equal(g, w)


def test_pool_frontier_takes_the_grouped_path_and_keeps_full_scoring_numbers(monkeypatch):
    rng = np.random.default_rng(11)
    docs = 3000
    retriever = BM25Retriever(catalog(rng, docs), dense_postings_mb=0.01)
    texts = coalition_batch(rng, 8)
    pools, _ = pad_pools([rng.choice(docs, size=30, replace=False) for _ in texts])
    calls = []
    original = BM25Retriever._signatures

    def spy(self, *args):
        calls.append(args[0])
        return original(self, *args)

    monkeypatch.setattr(BM25Retriever, "_signatures", spy)
    retriever.pool_frontier(texts, pools, 200)
    assert not calls  # a catalog this small is scored in full
    monkeypatch.setattr(bm25_module, "_GROUP_MIN_DOCS", 0)
    got = retriever.pool_frontier(texts, pools, 200)
    assert calls  # the grouped path ran
    want = pool_frontier(retriever.scores(texts), pools, 200)
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g, w)
    assert any(((w > 0) & ~r).any() for w, r in zip(want[0], want[1], strict=True))  # the cutoff bites
    monkeypatch.setattr(bm25_module, "_GROUP_CELLS", 0)  # the block path: the same arrays
    for g, w in zip(retriever.pool_frontier(texts, pools, 200), got, strict=True):
        assert np.array_equal(g, w)


def test_signatures_survive_a_hash_collision(monkeypatch):
    # All multipliers 0: every document hashes alike, so the exact fallback must separate the signatures.
    rng = np.random.default_rng(2)
    retriever = BM25Retriever(catalog(rng, 400))
    texts = coalition_batch(rng, 3)
    pools, _ = pad_pools([rng.choice(400, size=25, replace=False) for _ in texts])
    want = pool_frontier(retriever.scores(texts), pools, 30)
    monkeypatch.setattr(bm25_module, "_SIGNATURE_MULTIPLIERS", np.zeros(bm25_module._GROUP_TERMS, dtype=np.uint64))
    got = retriever._grouped_frontier(retriever._query_matrix(texts), pools, 30)
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g, w)


def test_grouped_frontier_of_queries_without_known_terms_retrieves_nothing():
    rng = np.random.default_rng(4)
    retriever = BM25Retriever(catalog(rng, 300))
    texts = ["", "zzz", "zzz qqq"]
    pools, _ = pad_pools([rng.choice(300, size=10, replace=False) for _ in texts])
    scores, retrieved = retriever._grouped_frontier(retriever._query_matrix(texts), pools, 5)
    assert not scores.any() and not retrieved.any()


def _term_groups_one_row_at_a_time(queries, max_terms):
    """The grouping rule of bm25._term_groups, row after row with Python ints as term sets (its first version)."""
    n_q = queries.shape[0]
    local, inverse = np.unique(queries.indices, return_inverse=True)
    member = np.zeros((n_q, len(local)), dtype=bool)
    member[np.repeat(np.arange(n_q), np.diff(queries.indptr)), inverse.ravel()] = True
    masks = [sum(1 << int(j) for j in np.flatnonzero(row)) for row in member]
    sizes = member.sum(axis=1).tolist()
    groups = []
    for i in sorted(range(n_q), key=sizes.__getitem__, reverse=True):
        m = masks[i]
        home = next((g for g in groups if m & g[0] == m), None)
        if home is None and sizes[i] <= 2:
            home = next((g for g in groups if (m | g[0]).bit_count() <= max_terms), None)
        if home is None:
            groups.append([m, [i]])
        else:
            home[0] |= m
            home[1].append(i)
    return [(sorted(rows), [int(local[j]) for j in range(len(local)) if m >> j & 1]) for m, rows in groups]


@pytest.mark.parametrize("seed", range(30))
def test_term_groups_equal_the_row_by_row_rule(seed):
    """Random coalition-like rows (subsets of a few 'completions', stray one- and two-term rows that must widen a
    group or seed one, empty rows, ties in size): the vectorised grouping is the row-by-row one, group for group
    (a wrong first-fit order, a widening test on the wrong rows or a containment test off by one term would differ)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    vocab = int(rng.integers(5, 60))
    texts = [rng.choice(vocab, size=int(rng.integers(3, min(vocab, 14))), replace=False) for _ in range(int(rng.integers(1, 5)))]
    rows = []
    for _ in range(int(rng.integers(1, 120))):
        kind = rng.random()
        if kind < 0.7:
            text = texts[int(rng.integers(len(texts)))]
            rows.append(rng.choice(text, size=int(rng.integers(1, len(text) + 1)), replace=False))
        elif kind < 0.9:
            rows.append(rng.choice(vocab, size=int(rng.integers(1, 3)), replace=False))
        else:
            rows.append(np.zeros(0, dtype=np.int64))
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    indices = np.concatenate(rows).astype(np.int32) if indptr[-1] else np.zeros(0, dtype=np.int32)
    queries = sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(len(rows), vocab))
    max_terms = int(rng.integers(4, 20))
    got = [(r.tolist(), t.tolist()) for r, t in bm25_module._term_groups(queries, max_terms)]
    assert got == _term_groups_one_row_at_a_time(queries, max_terms)
