"""Tests of ospo_gym.retrieval.dense: exact search against numpy, HNSW recall, the pooled reward, the cache.

No weights are downloaded: a tiny random BERT with a WordPiece vocabulary trained on the test words is
built once per module and saved as a sentence-transformers model directory.
"""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("faiss")
pytest.importorskip("tokenizers")
pytest.importorskip("transformers")

from ospo_gym.retrieval import (  # noqa: E402
    DenseRetriever,
    PoolRetriever,
    Retriever,
    dense,
    pad_pools,
    pool_frontier,
    pooled_ndcg,
    rank_from_scores,
)
from ospo_gym.retrieval.random_model import build_random_model  # noqa: E402

WORDS = [
    "red", "blue", "green", "leather", "cotton", "running", "shoes", "socks", "yoga", "mat", "bottle",
    "water", "steel", "pro", "max", "the", "and", "with", "café", "靴", "赤", "zapatos", "rojo", "☕",
]  # fmt: skip


def random_texts(rng: np.random.Generator, n: int, lo: int = 1, hi: int = 7) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(lo, hi)))) for _ in range(n)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A saved 1-layer, 32-dim random BERT with mean pooling, vocabulary trained on the test words."""
    corpus = random_texts(np.random.default_rng(0), 300) + WORDS
    return build_random_model(tmp_path_factory.mktemp("tiny_model"), corpus, dim=32, vocab_size=300)


@pytest.fixture(scope="module")
def model(model_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu")


@pytest.fixture(scope="module")
def docs():
    rng = np.random.default_rng(1)
    # Exact duplicates on purpose: identical embeddings, so exact score ties.
    return random_texts(rng, 150) + ["red shoes"] * 3 + ["靴 赤 café ☕"] + random_texts(rng, 146)


@pytest.fixture(scope="module")
def flat(docs, model):
    return DenseRetriever(docs, model, index="flat", device="cpu")


@pytest.fixture(scope="module")
def queries():
    return [*random_texts(np.random.default_rng(2), 30), "red shoes", "", "   ", "red shoes"]


def reference_cosine(model, texts: list[str], docs: list[str]) -> np.ndarray:
    q = model.encode(texts, convert_to_numpy=True).astype(np.float64)
    d = model.encode(docs, convert_to_numpy=True).astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return q @ d.T


def counting_encode(monkeypatch, model) -> list[int]:
    """Record the number of texts of every encode call (encode_query/encode_document go through it)."""
    calls: list[int] = []
    original = model.encode

    def encode(*args, **kwargs):
        texts = args[0] if args else kwargs.get("inputs", kwargs.get("sentences"))
        calls.append(len(texts))
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "encode", encode)
    return calls


# ---- import, arguments, protocol ------------------------------------------------------------------------


def test_import_does_not_load_torch():
    code = (
        "import sys, ospo_gym.retrieval, ospo_gym.retrieval.random_model; "
        "print(sorted({'torch', 'faiss', 'sentence_transformers'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("module", ["sentence_transformers", "torch"])
def test_missing_extra_error(monkeypatch, model_dir, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'ospo-gym\[dense\]'"):
        DenseRetriever(["a doc"], str(model_dir))


def test_missing_faiss_error_for_hnsw(monkeypatch, model):
    monkeypatch.setitem(sys.modules, "faiss", None)
    DenseRetriever(["a doc", "another"], model, index="flat")  # exact search needs no faiss
    with pytest.raises(ImportError, match=r"'faiss'.*ospo-gym\[dense\]"):
        DenseRetriever(["a doc", "another"], model, index="hnsw")


def test_bad_arguments(model, flat):
    with pytest.raises(ValueError, match="index must be one of"):
        DenseRetriever(["a"], model, index="ivf")
    with pytest.raises(ValueError, match="docs is empty"):
        DenseRetriever([], model)
    with pytest.raises(ValueError, match="batch_size"):
        DenseRetriever(["a"], model, batch_size=0)
    with pytest.raises(TypeError, match="not one string"):
        flat.rank("red shoes", 3)
    with pytest.raises(ValueError, match="k must be >= 1"):
        flat.rank(["red"], 0)
    with pytest.raises(ValueError, match="pools"):
        flat.score_pool(["red", "blue"], [np.array([0])])


def test_protocol(flat, model_dir, docs):
    assert isinstance(flat, Retriever) and isinstance(flat, PoolRetriever)
    assert flat.num_docs == len(docs) and flat.dim == 32 and flat.index_kind == "flat"
    assert flat.doc_embeddings.shape == (len(docs), 32) and not flat.doc_embeddings.flags.writeable
    by_path = DenseRetriever(docs[:20], model_dir, device="cpu")  # a model directory loads by path
    assert by_path.index_kind == "flat"
    assert DenseRetriever(docs[:20], model_dir, hnsw_threshold=10).index_kind == "hnsw"


# ---- exact search ---------------------------------------------------------------------------------------


def test_scores_are_shifted_cosine(flat, model, docs, queries):
    texts = [t for t in queries if t.strip()]
    np.testing.assert_allclose(flat.scores(texts), 1.0 + reference_cosine(model, texts, docs), atol=2e-6)


def test_rank_matches_bruteforce(flat, model, docs, queries):
    texts = [t for t in queries if t.strip()]
    k = 25
    ids, scores = flat.rank(texts, k)
    assert ids.dtype == np.int64 and scores.dtype == np.float32 and ids.shape == (len(texts), k)
    # Bit-exact against the shared ranking rule applied to this retriever's own full scores.
    ref_ids, ref_scores = rank_from_scores(flat.scores(texts), k)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(scores, ref_scores)
    # And against an independent float64 numpy cosine, up to float32 rounding.
    cos = 1.0 + reference_cosine(model, texts, docs)
    np.testing.assert_allclose(scores, -np.sort(-cos, axis=1)[:, :k], atol=2e-6)
    np.testing.assert_allclose(np.take_along_axis(cos, ids, axis=1), scores, atol=2e-6)


def test_rank_pads_past_catalog_and_breaks_ties_by_id(model):
    docs = ["blue socks"] * 6 + ["red shoes"] * 6
    r = DenseRetriever(docs, model, index="flat")
    ids, scores = r.rank(["blue", "socks red"], 15)
    assert (ids[:, 12:] == -1).all() and np.isneginf(scores[:, 12:]).all()
    first, second = np.arange(6), np.arange(6, 12)
    for row in ids:
        # Two groups of equal scores, each listed by ascending id.
        expected = np.concatenate([first, second] if row[0] == 0 else [second, first])
        np.testing.assert_array_equal(row[:12], expected)
    # k=4 cuts the top group: its 4 lowest ids.
    np.testing.assert_array_equal(r.rank(["blue", "socks red"], 4)[0], ids[:, :4])


def test_document_blocks_give_the_same_ranking(monkeypatch, flat, queries):
    whole = flat.rank(queries, 40)
    monkeypatch.setattr(dense, "_DOC_BLOCK", 64)  # 5 document blocks, the last one short
    monkeypatch.setattr(dense, "_BLOCK_CELLS", 64 * 16)  # query blocks of 16 rows
    blocked = flat.rank(queries, 40)
    # Per-block top-k merged: exactly the top 40 of the (identically blocked) full scores ...
    expected = rank_from_scores(flat.scores(queries), 40)
    np.testing.assert_array_equal(blocked[0], expected[0])
    np.testing.assert_array_equal(blocked[1], expected[1])
    # ... which differ from the unblocked matmul's only by float rounding.
    np.testing.assert_allclose(blocked[1], whole[1], atol=1e-6)
    # Several document blocks: the pooled reward looks pools up in the ranked lists instead.
    pools, gains = make_pools(np.random.default_rng(6), len(queries), flat.num_docs)
    reward = pooled_ndcg(flat, queries, pools, gains, k=10, cutoff=30)
    expected = brute_force_pooled_ndcg(flat.scores(queries), pools, gains, 10, 30)
    np.testing.assert_allclose(reward, expected, rtol=0, atol=1e-12)


def test_raw_inner_product(docs, model, queries):
    r = DenseRetriever(docs, model, index="flat", normalize=False)
    texts = [t for t in queries if t.strip()]
    q = model.encode(texts, convert_to_numpy=True).astype(np.float64)
    d = model.encode(docs, convert_to_numpy=True).astype(np.float64)
    shift = np.linalg.norm(q, axis=1, keepdims=True) * np.linalg.norm(d, axis=1).max()
    full = r.scores(texts)
    assert (full > 0).all()
    np.testing.assert_allclose(full, q @ d.T + shift, rtol=1e-5, atol=1e-4)


def test_repeated_texts_encoded_once(monkeypatch, docs, model):
    r = DenseRetriever(docs[:50], model, index="flat")
    calls = counting_encode(monkeypatch, model)
    ids, _ = r.rank(["red", "blue", "red", "", "red"], 5)
    assert calls == [2]
    np.testing.assert_array_equal(ids[0], ids[2])
    np.testing.assert_array_equal(ids[0], ids[4])


def test_empty_query_retrieves_nothing(flat, queries):
    texts = ["", "  \t", "red shoes"]
    ids, scores = flat.rank(texts, 5)
    assert (ids[:2] == -1).all() and np.isneginf(scores[:2]).all() and (ids[2] >= 0).all()
    full = flat.scores(texts)
    assert (full[:2] == 0).all() and (full[2] > 0).all()
    np.testing.assert_array_equal(flat.kth_score(texts, 3)[:2], 0.0)
    assert all((s == 0).all() for s in flat.score_pool(texts[:2], [np.arange(4), np.arange(2)]))
    pools = [np.arange(148, 158)] * 3  # holds the three "red shoes" documents
    gains = [np.ones(10)] * 3
    for cutoff in (None, 5):
        reward = pooled_ndcg(flat, texts, pools, gains, k=10, cutoff=cutoff)
        assert reward[0] == reward[1] == 0.0 and reward[2] > 0


def test_non_ascii_text(flat, docs):
    target = docs.index("靴 赤 café ☕")
    ids, scores = flat.rank(["靴 赤 café ☕", "ＲＥＤ 靴 ☕ ☕"], 3)
    assert ids[0, 0] == target and scores[0, 0] == pytest.approx(2.0, abs=1e-5)
    assert (ids[1] >= 0).all() and np.isfinite(scores[1]).all()


# ---- HNSW -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hnsw(docs, model):
    return DenseRetriever(docs, model, index="hnsw", hnsw_m=16, ef_search=32)


def test_hnsw_agrees_with_flat(hnsw, flat, queries):
    assert hnsw.index_kind == "hnsw"
    texts = [t for t in queries if t.strip()]
    exact, _ = flat.rank(texts, 10)
    approx, scores = hnsw.rank(texts, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx, exact, strict=True)])
    assert recall >= 0.9
    # Returned scores are the documents' exact scores, in (score desc, id asc) order.
    full = flat.scores(texts)
    np.testing.assert_allclose(scores, np.take_along_axis(full, approx, axis=1), atol=1e-6)
    assert (np.diff(scores, axis=1) <= 0).all()
    np.testing.assert_allclose(hnsw.kth_score(texts, 10), scores[:, -1], atol=0)
    # k reaching the catalog size falls back to the exact ranking.
    np.testing.assert_array_equal(
        hnsw.rank(texts[:3], hnsw.num_docs)[0], flat.rank(texts[:3], flat.num_docs)[0]
    )


# ---- pooled NDCG ----------------------------------------------------------------------------------------


def make_pools(rng: np.random.Generator, n_queries: int, num_docs: int):
    pools, gains = [], []
    for _ in range(n_queries):
        size = int(rng.integers(1, 40))
        pools.append(rng.choice(num_docs, size=size, replace=False))
        gains.append(rng.choice([0.0, 0.01, 0.1, 1.0], size=size))
    return pools, gains


def brute_force_pooled_ndcg(full: np.ndarray, pools, gains, k: int, cutoff: int | None) -> np.ndarray:
    """Sort the whole catalog (score desc, id asc), keep score > 0 and the first ``cutoff``, keep the pool."""
    out = []
    for row, pool, gain in zip(full, pools, gains, strict=True):
        order = np.lexsort((np.arange(len(row)), -row.astype(np.float64)))
        order = order[row[order] > 0][:cutoff]
        gain_of = dict(zip(pool.tolist(), gain.tolist(), strict=True))
        ranked = [gain_of[d] for d in order.tolist() if d in gain_of]
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(ranked[:k]))
        ideal = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(gain, reverse=True)[:k]))
        out.append(dcg / ideal if ideal > 0 else 0.0)
    return np.array(out)


@pytest.mark.parametrize("cutoff", [None, 1, 7, 60, 299, 300, 5000])
def test_pooled_ndcg_matches_bruteforce(flat, queries, cutoff):
    pools, gains = make_pools(np.random.default_rng(3), len(queries), flat.num_docs)
    pools[-1] = np.array([150, 151, 152, 3])  # the three tied "red shoes" documents
    gains[-1] = np.array([0.1, 1.0, 0.01, 0.0])
    reward = pooled_ndcg(flat, queries, pools, gains, k=10, cutoff=cutoff)
    expected = brute_force_pooled_ndcg(flat.scores(queries), pools, gains, 10, cutoff)
    np.testing.assert_allclose(reward, expected, rtol=0, atol=1e-12)
    assert reward[-3] == reward[-2] == 0.0  # empty texts
    # The fast path computes what the shared pool_frontier computes from the full scores.
    ids, _ = pad_pools(pools)
    fast_scores, fast_retrieved = flat.pool_frontier(queries, ids, cutoff)
    slow_scores, slow_retrieved = pool_frontier(flat.scores(queries), ids, cutoff)
    np.testing.assert_array_equal(fast_retrieved, slow_retrieved)
    np.testing.assert_allclose(
        fast_scores, slow_scores, rtol=0, atol=0 if cutoff in (1, 7, 60, 299) else 1e-6
    )


@pytest.mark.parametrize("cutoff", [5, 40])
def test_hnsw_pooled_ndcg_is_its_ranking_filtered(hnsw, queries, cutoff):
    pools, gains = make_pools(np.random.default_rng(4), len(queries), hnsw.num_docs)
    ids, scores = hnsw.rank(queries, cutoff)
    # The ranking as full-score rows: listed documents keep their rank score, the rest 0 (not retrieved).
    full = np.zeros((len(queries), hnsw.num_docs), dtype=np.float32)
    for q in range(len(queries)):
        keep = ids[q] >= 0
        full[q, ids[q][keep]] = scores[q][keep]
    reward = pooled_ndcg(hnsw, queries, pools, gains, k=10, cutoff=cutoff)
    np.testing.assert_allclose(reward, brute_force_pooled_ndcg(full, pools, gains, 10, None), atol=1e-12)


def test_score_pool_and_kth_score(flat, queries):
    pools, _ = make_pools(np.random.default_rng(5), len(queries), flat.num_docs)
    full = flat.scores(queries)
    for q, values in enumerate(flat.score_pool(queries, pools)):
        assert values.dtype == np.float32 and values.shape == pools[q].shape
        np.testing.assert_allclose(values, full[q, pools[q]], atol=1e-6)
    np.testing.assert_array_equal(flat.kth_score(queries, 13), -np.sort(-full, axis=1)[:, 12])
    np.testing.assert_array_equal(flat.kth_score(queries, flat.num_docs + 1), 0.0)


def test_pickle_roundtrip(flat, hnsw, queries):
    for r in (flat, hnsw):
        clone = pickle.loads(pickle.dumps(r))
        np.testing.assert_array_equal(clone.rank(queries, 10)[0], r.rank(queries, 10)[0])


# ---- embedding cache ------------------------------------------------------------------------------------


def test_cache_hit_skips_encoding(monkeypatch, tmp_path, docs, model):
    calls = counting_encode(monkeypatch, model)
    first = DenseRetriever(docs, model, index="flat", cache_dir=tmp_path)
    assert calls == [len(docs)] and first.cache_path.suffix == ".npy" and first.cache_path.exists()
    second = DenseRetriever(docs, model, index="flat", cache_dir=tmp_path)
    assert calls == [len(docs)] and second.cache_path == first.cache_path
    np.testing.assert_array_equal(second.doc_embeddings, first.doc_embeddings)
    # Other documents or another normalisation are other keys.
    DenseRetriever(docs[:-1], model, index="flat", cache_dir=tmp_path)
    DenseRetriever(docs, model, index="flat", cache_dir=tmp_path, normalize=False)
    assert calls == [len(docs), len(docs) - 1, len(docs)]
    assert len(list(tmp_path.glob("*.npy"))) == 3


CORRUPTIONS = {
    "garbage": lambda path, emb: path.write_bytes(b"\x00not an npy file" * 7),
    "truncated": lambda path, emb: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
    "wrong_shape": lambda path, emb: np.save(path, emb[:-1]),
    "wrong_dim": lambda path, emb: np.save(path, emb[:, :-1]),
    "wrong_dtype": lambda path, emb: np.save(path, emb.astype(np.float64)),
    "pickled_objects": lambda path, emb: np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True),
    "nan": lambda path, emb: np.save(path, np.full_like(emb, np.nan)),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_cache_is_rebuilt(monkeypatch, tmp_path, docs, model, kind):
    good = DenseRetriever(docs[:40], model, index="flat", cache_dir=tmp_path)
    CORRUPTIONS[kind](good.cache_path, np.array(good.doc_embeddings))
    calls = counting_encode(monkeypatch, model)
    with pytest.warns(RuntimeWarning, match="re-encoding"):
        rebuilt = DenseRetriever(docs[:40], model, index="flat", cache_dir=tmp_path)
    assert calls == [40]
    np.testing.assert_allclose(rebuilt.doc_embeddings, good.doc_embeddings, atol=1e-6)
    DenseRetriever(docs[:40], model, index="flat", cache_dir=tmp_path)  # repaired on disk: a hit again
    assert calls == [40]


def test_hnsw_index_cache(tmp_path, docs, model, queries):
    first = DenseRetriever(docs, model, index="hnsw", cache_dir=tmp_path, hnsw_m=16)
    (index_file,) = tmp_path.glob("*.faiss")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = DenseRetriever(docs, model, index="hnsw", cache_dir=tmp_path, hnsw_m=16)
    np.testing.assert_array_equal(second.rank(queries, 10)[0], first.rank(queries, 10)[0])
    index_file.write_bytes(b"broken")
    with pytest.warns(RuntimeWarning, match="rebuilding the index"):
        third = DenseRetriever(docs, model, index="hnsw", cache_dir=tmp_path, hnsw_m=16)
    assert third.rank(queries, 10)[0].shape == (len(queries), 10)


def test_model_change_changes_the_key(tmp_path, docs, model):
    import torch

    first = DenseRetriever(docs[:10], model, index="flat", cache_dir=tmp_path)
    param = next(model.parameters())
    saved = param.detach().clone()
    with torch.no_grad():
        param.add_(0.5)
    try:
        second = DenseRetriever(docs[:10], model, index="flat", cache_dir=tmp_path)
    finally:
        with torch.no_grad():
            param.copy_(saved)
    assert second.cache_path != first.cache_path


# ---- benchmark smoke test -------------------------------------------------------------------------------


def test_benchmark_smoke(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_dense.py"
    spec = importlib.util.spec_from_file_location("bench_dense", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "dense.json"
    argv = ["--num-products", "300", "--queries", "12", "--cutoff", "50", "--hnsw-sizes", "300", "400"]
    result = bench.main([*argv, "--dim", "32", "--repeats", "1", "--output", str(out)])
    assert out.exists() and result["command"].startswith(
        "python benchmarks/bench_dense.py --num-products 300"
    )
    assert result["flat_search"]["k=10"]["topk_set_agreement"] > 0.99
    assert set(result["hnsw"]["sizes"]) == {"300", "400"}
    assert 0.0 <= result["mean_reward"] <= 1.0


def test_random_model_builds_are_byte_identical(tmp_path):
    """The same corpus and seed give the same files (WordPiece's own trainer broke ties differently per run)."""
    corpus = ["red leather running shoes", "blue cotton t-shirt", "Red wool socks", "shoes, shoes and more shoes"] * 3
    first = build_random_model(tmp_path / "a", corpus, dim=16, vocab_size=80, seed=3)
    second = build_random_model(tmp_path / "b", corpus, dim=16, vocab_size=80, seed=3)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    vocab = json.loads((first / "tokenizer.json").read_text())["model"]["vocab"]
    assert vocab["shoes"] > vocab["##w"] > vocab["w"] > vocab["[MASK]"]  # specials, characters, then words
    small = build_random_model(tmp_path / "c", corpus, dim=16, vocab_size=50, seed=3)
    capped = json.loads((small / "tokenizer.json").read_text())["model"]["vocab"]
    assert len(capped) == 50 and {"shoes", "red"} <= set(capped) and "wool" not in capped  # frequent words first


# ---- the query-embedding cache ------------------------------------------------------------------------------


def test_query_cache_serves_repeated_texts_without_encoding_them_again(
    docs, model, flat, queries, monkeypatch
):
    """Across calls, a cached text is not re-encoded; rankings, scores and pooled rewards match the uncached
    retriever (up to float rounding of another batch); the least recently used text is evicted first."""
    cached = DenseRetriever(docs, model, index="flat", device="cpu", query_cache=40)
    encoded: list[str] = []
    real = cached._encode

    def counting(texts, role):
        encoded.extend(texts)
        return real(texts, role)

    monkeypatch.setattr(cached, "_encode", counting)
    first, second = queries[:20], queries[10:]
    for batch in (first, second, first):
        ids, vals = cached.rank(batch, 5)
        ref_ids, ref_vals = flat.rank(batch, 5)
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_allclose(vals, ref_vals, rtol=0, atol=1e-6)
        np.testing.assert_allclose(cached.scores(batch), flat.scores(batch), rtol=0, atol=1e-6)
    distinct = {t for t in queries if t.strip()}
    assert sorted(encoded) == sorted(distinct)  # each distinct non-empty text encoded exactly once
    assert cached.query_cache_hits > 0
    assert len(cached._query_embeddings) == len(distinct) <= 40

    small = DenseRetriever(docs, model, index="flat", device="cpu", query_cache=2)
    small.rank(["red shoes", "blue mat", "green socks"], 1)
    assert list(small._query_embeddings) == ["blue mat", "green socks"]
    small.rank(["blue mat", "yoga mat"], 1)  # "blue mat" used again: "green socks" is now the oldest
    assert list(small._query_embeddings) == ["blue mat", "yoga mat"]
    assert pickle.loads(pickle.dumps(small))._query_embeddings == {}


def test_query_cache_must_be_a_non_negative_int(docs, model):
    with pytest.raises(ValueError, match="query_cache must be an int >= 0"):
        DenseRetriever(docs[:5], model, device="cpu", query_cache=-1)
