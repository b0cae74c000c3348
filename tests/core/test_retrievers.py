"""Tests of ospo_gym.retrieval's BM25 (scores against bm25s), ranking rules and pooled NDCG reward."""

from __future__ import annotations

import math

import bm25s
import numpy as np
import pytest

from ospo_gym.retrieval import (
    BM25Retriever,
    PoolRetriever,
    Retriever,
    kth_largest,
    pad_pools,
    pool_frontier,
    pooled_ndcg,
    rank_from_scores,
)

WORDS = [
    "red", "blue", "green", "leather", "cotton", "running", "shoes", "socks", "yoga", "mat",
    "bottle", "water", "steel", "pro", "max", "the", "and", "with",
]  # fmt: skip


def random_docs(rng: np.random.Generator, n: int, words=WORDS, lo=0, hi=9) -> list[str]:
    return [" ".join(rng.choice(words, size=int(rng.integers(lo, hi)))) for _ in range(n)]


def random_queries(rng: np.random.Generator, n: int, words=WORDS) -> list[str]:
    # Repeated words, unknown words and stopwords on purpose.
    pool = [*words, "unknownword", "zzz", "and"]
    return [" ".join(rng.choice(pool, size=int(rng.integers(0, 7)))) for _ in range(n)]


def reference_scores(retriever: BM25Retriever, texts: list[str]) -> np.ndarray:
    """bm25s's own get_scores, one query at a time, fed the query's index tokens plus an unknown token."""
    inverse = {v: k for k, v in retriever.bm25.vocab_dict.items()}
    rows = []
    for ids in retriever.tokenize(texts):
        tokens = [inverse[i] for i in ids] + ["never-indexed-token"]
        rows.append(retriever.bm25.get_scores(tokens))
    return np.array(rows, dtype=np.float32).reshape(len(texts), retriever.num_docs)


def brute_force_order(scores: np.ndarray) -> list[np.ndarray]:
    """Per row: ids with score > 0, by descending score then ascending id."""
    out = []
    for row in scores:
        ids = np.lexsort((np.arange(len(row)), -row.astype(np.float64)))
        out.append(ids[row[ids] > 0])
    return out


def brute_force_pooled(scores, pools, gains, k, cutoff) -> np.ndarray:
    out = []
    for order, pool, gain in zip(brute_force_order(scores), pools, gains, strict=True):
        if cutoff is not None:
            order = order[:cutoff]
        gain_of = dict(zip(pool.tolist(), gain.tolist(), strict=True))
        ranked = [gain_of[d] for d in order.tolist() if d in gain_of][:k]
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(ranked))
        ideal = sorted(gain.tolist(), reverse=True)[:k]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        out.append(dcg / idcg if idcg > 0 else 0.0)
    return np.array(out)


# ---- scores against bm25s ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["lucene", "robertson", "atire", "bm25+"])
def test_batched_scores_equal_bm25s_get_scores(method):
    rng = np.random.default_rng(1)
    docs = random_docs(rng, 80)
    retriever = BM25Retriever(docs, method=method)
    queries = random_queries(rng, 60)
    got = retriever.scores(queries)
    assert got.shape == (60, 80) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference_scores(retriever, queries), rtol=1e-5, atol=1e-5)


def test_scores_with_stemmer_and_sparse_terms_equal_bm25s():
    rng = np.random.default_rng(2)
    words = [*WORDS, "runs", "runner", "bottles", "mats", *[f"rare{i}" for i in range(60)]]
    docs = random_docs(rng, 200, words, 1, 12)
    # dense_postings_mb=0.01 forces most terms through the sparse path, and 0 all of them.
    for mb in (64.0, 0.01, 0.0):
        retriever = BM25Retriever(docs, stemmer=True, dense_postings_mb=mb)
        queries = random_queries(rng, 50, words) + ["running runs runner", "Bottles MATS"]
        np.testing.assert_allclose(
            retriever.scores(queries), reference_scores(retriever, queries), rtol=1e-5, atol=1e-5
        )
    assert retriever.tokenize(["runs"]) == retriever.tokenize(["running"])


def test_repeated_terms_count_each_time_and_unknown_words_are_ignored():
    retriever = BM25Retriever(["red shoes", "blue shoes", "red red socks", "green mat"])
    once, twice, unknown = retriever.scores(["red", "red red", "red qwerty"])
    np.testing.assert_allclose(twice, 2 * once, rtol=1e-6)
    np.testing.assert_array_equal(unknown, once)
    np.testing.assert_allclose(once, retriever.bm25.get_scores(["red"]), rtol=1e-6)
    np.testing.assert_allclose(twice, retriever.bm25.get_scores(["red", "red"]), rtol=1e-6)


def test_tokenizer_matches_bm25s_tokenize_on_ascii_with_its_pattern():
    rng = np.random.default_rng(3)
    docs = random_docs(rng, 50)
    pattern = r"(?u)\b\w\w+\b"  # bm25s's default
    retriever = BM25Retriever(docs, token_pattern=pattern)
    texts = [*random_queries(rng, 30), "Red SHOES, with  leather!"]
    inverse = {v: k for k, v in retriever.bm25.vocab_dict.items()}
    ours = [[inverse[i] for i in ids] for ids in retriever.tokenize(texts)]
    theirs = bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False, token_pattern=pattern)
    assert ours == [[t for t in q if t in retriever.bm25.vocab_dict] for q in theirs]


# ---- ranking ---------------------------------------------------------------------------------------------


def test_rank_order_ties_and_padding():
    docs = ["red shoes", "blue socks", "red shoes", "red", "yoga mat", "red shoes"]
    retriever = BM25Retriever(docs)
    ids, scores = retriever.rank(["red shoes", "mat", "nothing here", ""], k=5)
    assert ids.dtype == np.int64 and scores.dtype == np.float32 and ids.shape == (4, 5)
    # Docs 0, 2, 5 tie (same text): ascending id; then doc 3 ("red" only).
    assert ids[0].tolist() == [0, 2, 5, 3, -1]
    assert scores[0, 0] == scores[0, 1] == scores[0, 2] > scores[0, 3] > 0 and scores[0, 4] == -np.inf
    assert ids[1].tolist() == [4, -1, -1, -1, -1]
    assert (ids[2:] == -1).all() and np.isneginf(scores[2:]).all()
    # k beyond the catalog is padded too.
    big_ids, _ = retriever.rank(["red"], k=10)
    assert big_ids[0].tolist() == [3, 0, 2, 5] + [-1] * 6


def test_rank_matches_brute_force_on_random_catalogs():
    rng = np.random.default_rng(4)
    docs = random_docs(rng, 120, WORDS[:8], 1, 5)  # few words: many exact ties
    retriever = BM25Retriever(docs)
    queries = random_queries(rng, 40, WORDS[:8])
    full = retriever.scores(queries)
    for k in (1, 7, 50, 200):
        ids, scores = retriever.rank(queries, k)
        for q, order in enumerate(brute_force_order(full)):
            expect = order[:k]
            assert ids[q, : len(expect)].tolist() == expect.tolist()
            assert (ids[q, len(expect) :] == -1).all()
            np.testing.assert_array_equal(scores[q, : len(expect)], full[q, expect])


def test_empty_and_stopword_queries_retrieve_nothing():
    retriever = BM25Retriever(["the red shoes", "and blue", ""])
    for text in ["", "   ", "the and", "qwerty", "!!!"]:
        ids, scores = retriever.rank([text], 3)
        assert (ids == -1).all() and np.isneginf(scores).all()
        assert (retriever.scores([text]) == 0).all()
    assert retriever.kth_score(["", "red"], 1).tolist()[0] == 0.0


def test_non_ascii_documents_and_queries():
    docs = [
        "赤 ワイヤレス イヤホン",
        "青 ヨガ マット",
        "zapatillas de correr niño rojo",
        "auriculares inalámbricos 🎧 negro",
        "RED running shoes",
        "café molido",
    ]
    retriever = BM25Retriever(docs, stopwords=None)
    queries = ["赤", "ヨガ", "niño", "🎧", "ｒｅｄ", "CAFÉ", "inalámbricos"]
    ids, _ = retriever.rank(queries, 2)
    assert ids[:, 0].tolist() == [0, 1, 2, 3, 4, 5, 3]
    assert (ids[:, 1] == -1).all()
    np.testing.assert_allclose(retriever.scores(queries), reference_scores(retriever, queries), rtol=1e-5)


def test_retriever_protocols_and_validation():
    retriever = BM25Retriever(["a red shoe", "blue"])
    assert isinstance(retriever, Retriever) and isinstance(retriever, PoolRetriever)
    assert retriever.num_docs == 2
    with pytest.raises(TypeError, match="sequence of strings"):
        retriever.scores("red")
    with pytest.raises(ValueError, match="empty"):
        BM25Retriever([])
    with pytest.raises(ValueError, match="pool ids"):
        retriever.score_pool(["red"], [np.array([2])])


def test_corpus_without_tokens_retrieves_nothing():
    retriever = BM25Retriever(["", "the and", "!!"])
    assert retriever.vocab_size == 0
    ids, _ = retriever.rank(["red", "the"], 2)
    assert (ids == -1).all()
    assert pooled_ndcg(retriever, ["red"], [np.array([0, 1])], [np.array([1.0, 0.0])]).tolist() == [0.0]


@pytest.mark.parametrize("stemmer", [False, True])
def test_retriever_pickles(stemmer):
    import pickle

    docs = ["red running shoes", "blue yoga mats", "runs daily"] * 1000
    retriever = BM25Retriever(docs, stemmer=stemmer, n_threads=2)
    queries = ["running red", "mat", "runner"] * 40  # large enough to start the thread pool
    before = retriever.scores(queries)
    assert retriever._executor is not None
    clone = pickle.loads(pickle.dumps(retriever))
    np.testing.assert_array_equal(clone.scores(queries), before)
    assert clone.tokenize(["mats"]) == retriever.tokenize(["mats"])


# ---- pool scoring and cutoffs ----------------------------------------------------------------------------


def test_score_pool_and_kth_score_match_full_scores():
    rng = np.random.default_rng(5)
    docs = random_docs(rng, 150, lo=1)
    retriever = BM25Retriever(docs, dense_postings_mb=0.02)  # a mix of dense and sparse terms
    queries = random_queries(rng, 30)
    full = retriever.scores(queries)
    pools = [rng.choice(150, size=int(rng.integers(0, 20)), replace=False) for _ in queries]
    for q, got in enumerate(retriever.score_pool(queries, pools)):
        assert got.dtype == np.float32 and got.shape == pools[q].shape
        np.testing.assert_allclose(got, full[q, pools[q]], rtol=1e-6, atol=1e-7)
    for k in (1, 5, 40, 150, 151):
        expect = [np.sort(r[r > 0])[::-1][k - 1] if (r > 0).sum() >= k else 0.0 for r in full]
        np.testing.assert_array_equal(retriever.kth_score(queries, k), np.array(expect, dtype=np.float32))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pooled_ndcg_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    n_docs = 90
    docs = random_docs(rng, n_docs, WORDS[:10], 0, 6)  # small vocabulary: many ties, some empty docs
    retriever = BM25Retriever(docs)
    queries = random_queries(rng, 50, WORDS[:10])
    pools = [rng.choice(n_docs, size=int(rng.integers(0, 25)), replace=False) for _ in queries]
    gains = [rng.choice([0.0, 0.01, 0.1, 1.0], size=len(p)) for p in pools]
    full = retriever.scores(queries)
    for cutoff in (1, 2, 5, 12, 30, 89, 90, 500, None):
        for k in (1, 10):
            got = pooled_ndcg(retriever, queries, pools, gains, k=k, cutoff=cutoff)
            expect = brute_force_pooled(full, pools, gains, k, cutoff)
            assert got.shape == (50,) and np.all((got >= 0) & (got <= 1))
            np.testing.assert_allclose(got, expect, atol=1e-12, err_msg=f"cutoff={cutoff} k={k}")


@pytest.mark.parametrize("n_threads", [1, 2])
def test_pooled_ndcg_threaded_blocks_equal_brute_force(n_threads):
    # Big enough for several blocks on the worker threads, and for the sampled threshold (cutoff >= 256).
    rng = np.random.default_rng(11)
    n_docs = 4000
    words = [*WORDS, *[f"w{i}" for i in range(200)]]
    docs = random_docs(rng, n_docs, words, 1, 10)
    retriever = BM25Retriever(docs, n_threads=n_threads, dense_postings_mb=0.5)
    queries = random_queries(rng, 300, WORDS)
    pools = [rng.choice(n_docs, size=int(rng.integers(1, 60)), replace=False) for _ in queries]
    gains = [rng.choice([0.0, 0.01, 0.1, 1.0], size=len(p)) for p in pools]
    full = retriever.scores(queries)
    assert retriever._executor is not None
    np.testing.assert_allclose(full[:25], reference_scores(retriever, queries[:25]), rtol=1e-5, atol=1e-5)
    for cutoff in (40, 300, 900, None):
        got = pooled_ndcg(retriever, queries, pools, gains, k=10, cutoff=cutoff)
        np.testing.assert_allclose(got, brute_force_pooled(full, pools, gains, 10, cutoff), atol=1e-12)
    np.testing.assert_array_equal(
        retriever.kth_score(queries, 300), np.array([_reference_kth(full[q : q + 1], 300)[0] for q in range(300)])
    )


def test_pooled_ndcg_tie_at_cutoff_uses_ascending_ids():
    # Docs 0..4 are identical: they tie, so cutoff 2 retrieves exactly ids 0 and 1.
    docs = ["red shoes"] * 5 + ["blue mat"]
    retriever = BM25Retriever(docs)
    pools = [np.array([3, 1]), np.array([4, 2]), np.array([1, 0, 5])]
    gains = [np.array([1.0, 0.1]), np.array([1.0, 1.0]), np.array([0.0, 0.1, 1.0])]
    got = pooled_ndcg(retriever, ["red shoes"] * 3, pools, gains, k=10, cutoff=2)
    ideal0 = 1.0 + 0.1 / math.log2(3)
    np.testing.assert_allclose(got, [0.1 / ideal0, 0.0, 0.1 / (1.0 + 0.1 / math.log2(3))])
    # Without the cutoff every tied doc is retrieved, still ordered by id.
    np.testing.assert_allclose(
        pooled_ndcg(retriever, ["red shoes"], pools[:1], gains[:1], k=10, cutoff=None),
        [(0.1 + 1.0 / math.log2(3)) / ideal0],
    )


def test_pooled_ndcg_generic_retriever_path_agrees():
    rng = np.random.default_rng(7)
    docs = random_docs(rng, 60, WORDS[:9], 1, 6)
    bm25 = BM25Retriever(docs)

    class Precomputed:
        """A plain Retriever (no pool fast path) backed by the BM25 scores."""

        num_docs = bm25.num_docs

        def scores(self, texts):
            return bm25.scores(texts)

        def rank(self, texts, k):
            return rank_from_scores(self.scores(texts), k)

    plain = Precomputed()
    assert isinstance(plain, Retriever) and not isinstance(plain, PoolRetriever)
    queries = random_queries(rng, 30, WORDS[:9])
    pools = [rng.choice(60, size=15, replace=False) for _ in queries]
    gains = [rng.choice([0.0, 0.1, 1.0], size=15) for _ in queries]
    for cutoff in (3, 20, None):
        np.testing.assert_allclose(
            pooled_ndcg(plain, queries, pools, gains, cutoff=cutoff),
            pooled_ndcg(bm25, queries, pools, gains, cutoff=cutoff),
            atol=1e-12,
        )


def test_pooled_ndcg_edge_cases():
    retriever = BM25Retriever(["red shoes", "blue socks", "green mat"])
    assert pooled_ndcg(retriever, [], [], [], k=10).shape == (0,)
    # An empty pool, an all-irrelevant pool, and an empty query: all 0.
    got = pooled_ndcg(
        retriever,
        ["red", "red", ""],
        [np.array([], dtype=np.int64), np.array([0, 1]), np.array([0])],
        [np.array([]), np.array([0.0, 0.0]), np.array([1.0])],
    )
    np.testing.assert_array_equal(got, [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="gains"):
        pooled_ndcg(retriever, ["red"], [np.array([0, 1])], [np.array([1.0])])
    with pytest.raises(ValueError, match="pool ids"):
        pooled_ndcg(retriever, ["red"], [np.array([3])], [np.array([1.0])])
    with pytest.raises(ValueError, match="cutoff"):
        pooled_ndcg(retriever, ["red"], [np.array([0])], [np.array([1.0])], cutoff=0)


# ---- the pure selection functions on large rows (sampling path) -------------------------------------------


def _reference_kth(scores: np.ndarray, k: int) -> np.ndarray:
    out = []
    for row in scores:
        pos = np.sort(row[row > 0])[::-1]
        out.append(pos[k - 1] if len(pos) >= k else 0.0)
    return np.array(out, dtype=scores.dtype)


def test_kth_largest_exact_on_large_rows_with_ties_and_sparse_rows():
    rng = np.random.default_rng(8)
    n = 6000
    smooth = rng.random((6, n), dtype=np.float32)
    tied = np.round(rng.random((6, n)) * 20).astype(np.float32) / 4  # heavy ties, some zeros
    sparse = np.where(rng.random((6, n)) < 0.05, rng.random((6, n)), 0).astype(np.float32)  # few positives
    ordered = np.sort(rng.random((3, n)).astype(np.float32), axis=1)  # a sample stride cannot see the top
    constant = np.full((2, n), 0.5, dtype=np.float32)
    # Adversarial for a stride-7 sample (k=1000): the sampled columns are all high, or all low.
    fooled = np.full((2, n), 0.25, dtype=np.float32)
    fooled[0, ::7] = 1.0
    fooled[1] = 1.0
    fooled[1, ::7] = 0.25
    scores = np.concatenate([smooth, tied, sparse, ordered, constant, fooled, np.zeros((1, n), np.float32)])
    for k in (1, 255, 256, 300, 1000, 1500, n, n + 1):
        np.testing.assert_array_equal(kth_largest(scores, k), _reference_kth(scores, k), err_msg=f"k={k}")


def test_kth_largest_uses_the_sample_for_most_rows(monkeypatch):
    import ospo_gym.retrieval.ranking as ranking

    full_rows = []
    original = ranking._kth_by_partition

    def spy(scores, k):
        full_rows.append(scores.shape[0])
        return original(scores, k)

    monkeypatch.setattr(ranking, "_kth_by_partition", spy)
    scores = np.random.default_rng(10).random((40, 8000), dtype=np.float32)
    np.testing.assert_array_equal(kth_largest(scores, 1000), _reference_kth(scores, 1000))
    assert sum(full_rows) <= 2  # the sampled bracket holds for (nearly) every row


def test_pool_frontier_matches_brute_force_on_large_rows():
    rng = np.random.default_rng(9)
    n = 5000
    scores = np.round(rng.random((12, n)) * 40).astype(np.float32) / 8
    scores[3] = 0
    scores[4, rng.random(n) < 0.9] = 0
    pools = [rng.choice(n, size=int(rng.integers(0, 60)), replace=False) for _ in range(12)]
    ids, _ = pad_pools(pools)
    for cutoff in (1, 700, 1200, 4999, None):
        pool_scores, retrieved = pool_frontier(scores, ids, cutoff)
        for q, order in enumerate(brute_force_order(scores)):
            kept = set((order if cutoff is None else order[:cutoff]).tolist())
            expect = [d in kept for d in pools[q].tolist()]
            assert retrieved[q, : len(pools[q])].tolist() == expect
            assert not retrieved[q, len(pools[q]) :].any()
            np.testing.assert_array_equal(pool_scores[q, : len(pools[q])], scores[q, pools[q]])


# ---- the package's own layering ---------------------------------------------------------------------------------

PACKAGE_ORDER = (
    "protocol",
    "checks",
    "ranking",
    "reward",
    "index_cache",
    "bm25",
    "pooled_bm25",
    "dense_cache",
    "pretrained",
    "dense",
    "random_model",
)
"""ospo_gym.retrieval's modules, each allowed to import only the ones before it (its __init__ imports them all)."""


def test_retrieval_modules_import_only_the_modules_below_them():
    import ast
    from pathlib import Path

    import ospo_gym.retrieval

    folder = Path(ospo_gym.retrieval.__file__).parent
    assert sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__") == sorted(PACKAGE_ORDER)
    upward = []
    for rank, name in enumerate(PACKAGE_ORDER):
        tree = ast.parse((folder / f"{name}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            modules += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            for module in modules:
                if module == "ospo_gym.retrieval" or (
                    module.startswith("ospo_gym.retrieval.")
                    and PACKAGE_ORDER.index(module.split(".")[2]) >= rank
                ):
                    upward.append(f"{name}.py imports {module}")
    assert not upward, upward
