"""Retrievers that rank a product catalog for a batch of query texts, and the pooled NDCG reward.

:class:`BM25Retriever` indexes with the real ``bm25s`` package and then scores through bm25s's own
precomputed score matrix, read as a ``scipy.sparse`` matrix: a batch of queries is a (query x term) count
matrix times that (term x document) matrix, so the scores equal ``bm25s.BM25.get_scores`` (every occurrence
of a repeated query term counts, unknown terms are ignored) without a Python loop over queries. Frequent
terms' rows are kept dense, which makes their part of the product a vectorised sparse-times-dense one.

Retrieval semantics shared by every function here: a query retrieves the documents with score > 0, ordered
by descending score with ties broken by ascending document id; with a cutoff ``c`` only the first ``c``
of that order are retrieved. An empty query, or one made only of unknown words, retrieves nothing.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import time
import unicodedata
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from ospo_gym.metrics import ndcg_at_k

__all__ = [
    "DEFAULT_TOKEN_PATTERN",
    "BM25Retriever",
    "PoolRetriever",
    "Retriever",
    "check_frontier",
    "check_ranking",
    "check_scores",
    "kth_largest",
    "pad_pools",
    "pool_frontier",
    "pooled_ndcg",
    "rank_from_scores",
]

# bm25s's default pattern r"(?u)\b\w\w+\b" keeps unicode letters but drops every one-character word: a
# Japanese "赤" (red), sizes like "x" or "3", and all emoji. This one keeps any run of unicode word
# characters, plus each emoji / pictographic symbol as its own token; punctuation is still dropped.
DEFAULT_TOKEN_PATTERN = r"\w+|[\U0001F000-\U0001FAFF\u2600-\u27BF]"
# Full-score blocks are at most this many float32 cells (4 MiB): huge catalogs never need a (Q, num_docs)
# array at once, and the several passes over a block stay in cache. (Measured: 8 MiB blocks made glibc map
# fresh pages for every block, ~40% slower.)
_BLOCK_CELLS = 1 << 20
# Batches below this many score cells are scored inline: a thread hop would cost more than it saves.
_INLINE_CELLS = 1 << 18
# kth_largest samples every (k // _SAMPLE_RANK)-th column, so the answer sits near rank _SAMPLE_RANK there.
_SAMPLE_RANK = 128


@runtime_checkable
class Retriever(Protocol):
    """Anything that scores and ranks ``num_docs`` documents for query texts.

    What a retriever returns is checked once per call (:func:`check_scores`, :func:`check_frontier`,
    :func:`check_ranking`: shape, dtype, finite scores), so a broken user retriever raises one ``ValueError``
    saying what it returned instead of silently broadcasting or failing deep inside the reward.
    """

    num_docs: int

    def rank(self, texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` per query: ids ``(Q, k)`` int64 padded with -1, scores ``(Q, k)`` float32 padded with -inf;
        descending score, ties by ascending id, only documents with score > 0."""
        ...

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """Scores of every document, ``(Q, num_docs)`` float32."""
        ...


@runtime_checkable
class PoolRetriever(Retriever, Protocol):
    """A retriever with a fast path for :func:`pooled_ndcg` (scores only the judged pools)."""

    def pool_frontier(
        self, texts: Sequence[str], pool_ids: np.ndarray, cutoff: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores ``(Q, P)`` of padded pool ids ``(Q, P)`` (-1 = padding) and whether each is retrieved
        ``(Q, P)`` bool, exactly as :func:`pool_frontier` computes them from full scores."""
        ...


# --------------------------------------------------------------------------------------------------------
# Pure functions on score arrays
# --------------------------------------------------------------------------------------------------------


def kth_largest(scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k``-th largest score per row, or 0 where a row has fewer than ``k`` positive scores.

    Exact. For large rows it avoids a full selection: a strided sample gives a value ``v`` that is, with
    high probability, a little below the answer; when at least ``k`` (and at most ``2k``) scores are
    ``>= v`` the answer is the ``k``-th largest of those few candidates. Rows where the sample misses fall
    back to a full ``np.partition``, so the sample only affects speed, never the result.

    Args:
        scores: ``(R, N)`` float array.
        k: rank, ``k >= 1``; ``k > N`` gives 0 everywhere.

    Returns:
        ``(R,)`` array of ``scores.dtype``, always ``>= 0``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scores = np.asarray(scores)
    rows, n = scores.shape
    out = np.zeros(rows, dtype=scores.dtype)
    if k > n or rows == 0:
        return out
    stride = k // _SAMPLE_RANK
    if stride < 2 or n < 4 * k:
        out[:] = _kth_by_partition(scores, k)
        return out
    # Sample rank of the answer is about k / stride; aim 3 standard deviations lower so that v undershoots.
    sample = np.negative(scores[:, ::stride])
    target = -(-k // stride)
    j = min(target + int(3 * np.sqrt(target)) + 2, sample.shape[1]) - 1
    sample.partition(j, axis=1)
    v = -sample[:, j]
    candidate = scores >= v[:, None]
    counts = np.count_nonzero(candidate, axis=1)
    good = (v > 0) & (counts >= k) & (counts <= 2 * k)
    fallback = np.flatnonzero(~good)
    if len(fallback):
        out[fallback] = _kth_by_partition(scores[fallback], k)
    sel = np.flatnonzero(good)
    if len(sel):
        # Masking the rejected rows in place avoids copying the selected rows out of ``scores``.
        if len(fallback):
            candidate[fallback] = False
        flat = np.flatnonzero(candidate)  # row-major, so each row's candidates are contiguous
        values = np.ascontiguousarray(scores).ravel()[flat]
        cnt = counts[sel]
        width = int(cnt.max())
        # Candidate e of packed row p goes to p * width + (e - first candidate of p); one 1-D scatter.
        shift = np.zeros(rows, dtype=np.int64)
        shift[sel] = np.arange(len(sel)) * width - (np.cumsum(cnt) - cnt)
        packed = np.full((len(sel), width), np.inf, dtype=scores.dtype)
        packed.ravel()[np.arange(len(flat)) + shift[flat // n]] = -values
        packed.partition(k - 1, axis=1)
        out[sel] = -packed[:, k - 1]
    return out


def _kth_by_partition(scores: np.ndarray, k: int) -> np.ndarray:
    """:func:`kth_largest` by a full selection on the rows that have more than ``k`` positive scores."""
    rows = scores.shape[0]
    out = np.zeros(rows, dtype=scores.dtype)
    # Rows with fewer than k positive scores need no selection: the answer is 0 for them.
    busy = np.flatnonzero(np.count_nonzero(scores > 0, axis=1) >= k)
    if len(busy) == 0:
        return out
    # Selecting the (k-1)-th smallest of the negated row is several times faster than the (N-k)-th of
    # the row itself when many scores tie at 0 (introselect degrades on long runs of equal values).
    # One working copy, negated and partitioned in place.
    neg = np.negative(scores) if len(busy) == rows else scores[busy]
    if len(busy) != rows:
        np.negative(neg, out=neg)
    neg.partition(k - 1, axis=1)
    out[busy] = np.maximum(-neg[:, k - 1], 0)
    return out


def _tie_last_ids(scores: np.ndarray, rows: np.ndarray, threshold: np.ndarray, cutoff: int) -> np.ndarray:
    """For each row in ``rows`` (whose threshold is the positive ``cutoff``-th largest score), the largest
    document id among the tied documents that still make the top ``cutoff`` under the id tie-break."""
    block = scores[rows]
    thr = threshold[rows, None]
    slots = cutoff - np.count_nonzero(block > thr, axis=1)  # >= 1, since thr is the cutoff-th largest
    r, c = np.nonzero(block == thr)
    starts = np.searchsorted(r, np.arange(len(rows)))
    return c[starts + slots - 1].astype(np.int64)


def pool_frontier(
    scores: np.ndarray, pool_ids: np.ndarray, cutoff: int | None, *, threshold: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pool scores and which pool documents the full-catalog ranking retrieves.

    Args:
        scores: ``(R, N)`` full-catalog scores.
        pool_ids: ``(R, P)`` int document ids, ``-1`` for padding.
        cutoff: only the top ``cutoff`` documents (score > 0, ties by ascending id) are retrieved; ``None``:
            every positive-score document is.
        threshold: precomputed ``kth_largest(scores, cutoff)`` (``(R,)``), if already known.

    Returns:
        ``(pool_scores, retrieved)``: ``(R, P)`` of ``scores.dtype`` (padding 0; the dtype is kept so that
        comparisons with the threshold are exact) and ``(R, P)`` bool (padding False).
    """
    scores = np.asarray(scores)
    pool_ids = np.asarray(pool_ids, dtype=np.int64)
    valid = pool_ids >= 0
    rows = np.arange(scores.shape[0])[:, None]
    pool_scores = np.where(valid, scores[rows, np.where(valid, pool_ids, 0)], 0).astype(scores.dtype)
    retrieved = valid & (pool_scores > 0)
    if cutoff is None or cutoff >= scores.shape[1]:
        return pool_scores, retrieved
    if cutoff < 1:
        raise ValueError(f"cutoff must be >= 1 or None, got {cutoff}")
    thr = kth_largest(scores, cutoff) if threshold is None else np.asarray(threshold, dtype=scores.dtype)
    thr_p = thr[:, None]
    on_edge = retrieved & (pool_scores == thr_p)
    # Ties at the threshold are rare, so the exact id tie-break is computed only for the rows that have one.
    tie_rows = np.flatnonzero(on_edge.any(axis=1) & (thr > 0))
    last_id = np.full(scores.shape[0], np.iinfo(np.int64).max, dtype=np.int64)
    if len(tie_rows):
        last_id[tie_rows] = _tie_last_ids(scores, tie_rows, thr, cutoff)
    retrieved &= (pool_scores > thr_p) | (on_edge & (pool_ids <= last_id[:, None]))
    return pool_scores, retrieved


def rank_from_scores(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` documents per row: descending score, ties by ascending id, only scores > 0.

    Args:
        scores: ``(R, N)`` float array.
        k: list length, ``k >= 1``.

    Returns:
        ids ``(R, k)`` int64 padded with -1, scores ``(R, k)`` float32 padded with -inf.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scores = np.asarray(scores, dtype=np.float32)
    n_rows, n = scores.shape
    ids = np.full((n_rows, k), -1, dtype=np.int64)
    out = np.full((n_rows, k), -np.inf, dtype=np.float32)
    if n_rows == 0 or n == 0:
        return ids, out
    thr = kth_largest(scores, k)
    # Candidates: positive and at least the threshold; ties at the threshold may overflow k, which the
    # stable sort below resolves by id (np.nonzero lists them in ascending id order).
    keep = (scores > 0) & (scores >= thr[:, None])
    r, c = np.nonzero(keep)
    counts = np.bincount(r, minlength=n_rows)
    width = int(counts.max(initial=0))
    if width == 0:
        return ids, out
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    col = np.arange(len(r)) - starts[r]
    packed = np.full((n_rows, width), np.inf, dtype=np.float32)
    packed_ids = np.full((n_rows, width), -1, dtype=np.int64)
    packed[r, col] = -scores[r, c]
    packed_ids[r, col] = c
    order = np.argsort(packed, axis=1, kind="stable")[:, :k]
    take = min(k, width)
    top = -np.take_along_axis(packed, order, axis=1)
    top_ids = np.take_along_axis(packed_ids, order, axis=1)
    out[:, :take] = top[:, :take]
    ids[:, :take] = top_ids[:, :take]
    return ids, out


def pad_pools(
    pools: Sequence[np.ndarray], pool_gains: Sequence[np.ndarray] | None = None, *, num_docs: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pad per-query pools into rectangles.

    Args:
        pools: ``Q`` int arrays of document ids (distinct within a pool).
        pool_gains: ``Q`` float arrays of the same lengths, or None.
        num_docs: if given, ids are checked to lie in ``[0, num_docs)``.

    Returns:
        ids ``(Q, P)`` int64 padded with -1 and gains ``(Q, P)`` float64 padded with 0, ``P`` the largest pool.
    """
    lengths = np.fromiter((len(p) for p in pools), dtype=np.int64, count=len(pools))
    width = int(lengths.max(initial=0))
    ids = np.full((len(pools), width), -1, dtype=np.int64)
    gains = np.zeros((len(pools), width), dtype=np.float64)
    if width == 0:
        return ids, gains
    flat = np.concatenate([np.asarray(p, dtype=np.int64).ravel() for p in pools])
    if num_docs is not None and len(flat) and (flat.min() < 0 or flat.max() >= num_docs):
        raise ValueError(f"pool ids must lie in [0, {num_docs}); got ids in [{flat.min()}, {flat.max()}]")
    rows = np.repeat(np.arange(len(pools)), lengths)
    cols = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    ids[rows, cols] = flat
    if pool_gains is not None:
        if len(pool_gains) != len(pools):
            raise ValueError(f"got {len(pools)} pools but {len(pool_gains)} gain arrays")
        gain_lengths = np.fromiter((len(g) for g in pool_gains), dtype=np.int64, count=len(pool_gains))
        if not np.array_equal(gain_lengths, lengths):
            bad = int(np.flatnonzero(gain_lengths != lengths)[0])
            raise ValueError(f"pool {bad} has {lengths[bad]} ids but {gain_lengths[bad]} gains")
        gains[rows, cols] = np.concatenate([np.asarray(g, dtype=np.float64).ravel() for g in pool_gains])
    return ids, gains


def _ndcg_of_frontier(
    pool_ids: np.ndarray, pool_scores: np.ndarray, retrieved: np.ndarray, gains: np.ndarray, k: int
) -> np.ndarray:
    """NDCG@k of the retrieved pool documents ranked by (score desc, id asc); ideal from all pool gains."""
    key = np.where(retrieved, -pool_scores.astype(np.float64), np.inf)
    order = np.lexsort((pool_ids, key), axis=-1)
    ranked = np.take_along_axis(np.where(retrieved, gains, 0.0), order, axis=1)
    return ndcg_at_k(ranked, gains, k)


def pooled_ndcg(
    retriever: Retriever,
    texts: Sequence[str],
    pools: Sequence[np.ndarray],
    pool_gains: Sequence[np.ndarray],
    *,
    k: int = 10,
    cutoff: int | None = 1000,
) -> np.ndarray:
    """The reward: NDCG@k of each query's ranking filtered to its judged pool.

    The query ranks the whole catalog; only the top ``cutoff`` documents with score > 0 are retrieved
    (``cutoff=None``: all with score > 0); the retrieved list is filtered to ``pools[q]`` and NDCG@k is
    computed over it, the ideal being the best ordering of all of ``pool_gains[q]``. A document whose score
    ties the cutoff-th best score is retrieved only if it is within the top ``cutoff`` under the
    ascending-id tie-break.

    Args:
        retriever: any :class:`Retriever`; a :class:`PoolRetriever` (e.g. :class:`BM25Retriever`) scores only
            the pools plus what the cutoff needs, anything else is scored in full.
        texts: ``Q`` query texts.
        pools: ``Q`` int arrays of distinct document ids.
        pool_gains: ``Q`` float arrays of gains (>= 0), aligned with ``pools``.
        k: NDCG cutoff.
        cutoff: retrieval depth, or None.

    Returns:
        ``(Q,)`` float64 in ``[0, 1]``; 0 for a query that retrieves no pool document or has no gain.
    """
    _check_texts(texts)
    if len(pools) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(pools)} pools")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if cutoff is not None and cutoff < 1:
        raise ValueError(f"cutoff must be >= 1 or None, got {cutoff}")
    ids, gains = pad_pools(pools, pool_gains, num_docs=retriever.num_docs)
    if len(texts) == 0:
        return np.zeros(0)
    if isinstance(retriever, PoolRetriever):
        pool_scores, retrieved = check_frontier(retriever.pool_frontier(texts, ids, cutoff), ids, retriever)
    else:
        scores = check_scores(retriever.scores(texts), len(texts), retriever.num_docs, retriever)
        pool_scores, retrieved = pool_frontier(scores, ids, cutoff)
    return _ndcg_of_frontier(ids, pool_scores, retrieved, gains, k)


# --------------------------------------------------------------------------------------------------------
# Checks of what a retriever returns (a user's retriever is code we did not write)
# --------------------------------------------------------------------------------------------------------


def _describe(value: object) -> str:
    """``value`` as an error message names it: its type, and its shape and dtype when it has them."""
    if value is None:
        return "None"
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is None and isinstance(value, (list, tuple)):
        with contextlib.suppress(Exception):
            as_array = np.asarray(value)
            shape, dtype = as_array.shape, as_array.dtype
    if shape is None:
        return type(value).__name__
    return f"{type(value).__name__} with shape {tuple(shape)} and dtype {dtype}"


def _retriever_error(retriever: object, method: str, returned: object, problem: str, expected: str) -> ValueError:
    name = "retriever" if retriever is None else type(retriever).__name__
    return ValueError(
        f"{name}.{method}() returned {_describe(returned)} ({problem}); expected {expected}. Fix the retriever "
        "so that it follows the ospo_gym.retrievers.Retriever protocol."
    )


def _real_array(value: object) -> np.ndarray | None:
    """``value`` as an array (no copy) if it holds real numbers (int or float dtype), else None."""
    if value is None:
        return None
    try:
        array = np.asarray(value)
    except Exception:  # e.g. a ragged list: the caller reports the value as it was returned
        return None
    return array if array.dtype.kind in "fiu" else None


def _all_finite(array: np.ndarray) -> bool:
    """Whether every entry is finite, in one pass: NaN or ±inf anywhere make the float64 sum non-finite."""
    if array.dtype.kind != "f":
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(array.sum(dtype=np.float64)):
            return True
    # Finite float64 scores can still overflow their sum: then the entries themselves decide.
    return bool(np.isfinite(array).all())


def _shape_problem(array: np.ndarray | None, shape: tuple[int, ...]) -> str | None:
    """Why ``array`` (None: not convertible to real numbers) is not real numbers of ``shape``; None if it is."""
    if array is None:
        return "not an array of real numbers"
    if array.shape != shape:
        return "wrong shape"
    return None


def check_scores(scores: object, num_texts: int, num_docs: int, retriever: object = None) -> np.ndarray:
    """Check a :meth:`Retriever.scores` result; return it as an array (not copied, dtype kept).

    Expected: ``(num_texts, num_docs)`` finite real numbers (int or float dtype). NaN and ±inf are refused:
    a NaN has no place in a ranking, and documents scored +inf would all tie.

    Raises:
        ValueError: naming what was returned (type, shape, dtype), what is wrong with it and what was expected.
    """
    expected = (
        f"a ({num_texts}, {num_docs}) array = (number of texts, catalog size) of finite real numbers "
        "(int or float dtype)"
    )
    array = _real_array(scores)
    problem = _shape_problem(array, (num_texts, num_docs))
    if problem is None and not _all_finite(array):
        problem = "NaN or infinite scores"
    if problem is not None:
        raise _retriever_error(retriever, "scores", scores, problem, expected)
    return array


def check_frontier(frontier: object, pool_ids: np.ndarray, retriever: object = None) -> tuple[np.ndarray, np.ndarray]:
    """Check a :meth:`PoolRetriever.pool_frontier` result against the padded ``pool_ids`` ``(Q, P)``.

    Expected: a pair ``(pool_scores, retrieved)`` of ``(Q, P)`` arrays: finite real scores, and a bool mask
    that is False at the padding (``pool_ids == -1``).

    Raises:
        ValueError: naming what was returned, what is wrong with it and what was expected.
    """
    shape = tuple(pool_ids.shape)
    expected = (
        f"a pair (pool_scores, retrieved) of {shape} arrays = (number of texts, pool width): finite real "
        "scores and a bool mask that is False where pool_ids is -1"
    )
    if not isinstance(frontier, (tuple, list)) or len(frontier) != 2:
        raise _retriever_error(retriever, "pool_frontier", frontier, "not a pair", expected)
    pool_scores = _real_array(frontier[0])
    problem = _shape_problem(pool_scores, shape)
    if problem is None and not _all_finite(pool_scores):
        problem = "NaN or infinite scores"
    if problem is not None:
        raise _retriever_error(retriever, "pool_frontier", frontier[0], f"pool_scores: {problem}", expected)
    retrieved = np.asarray(frontier[1]) if frontier[1] is not None else None
    if retrieved is None or retrieved.dtype != np.bool_:
        problem = "not a bool array"
    elif retrieved.shape != shape:
        problem = "wrong shape"
    elif (retrieved & (pool_ids < 0)).any():
        problem = "True at padding slots"
    if problem is not None:
        raise _retriever_error(retriever, "pool_frontier", frontier[1], f"retrieved: {problem}", expected)
    return pool_scores, retrieved


def check_ranking(
    ranking: object, num_texts: int, k: int, num_docs: int, retriever: object = None
) -> tuple[np.ndarray, np.ndarray]:
    """Check a :meth:`Retriever.rank` result: ids ``(num_texts, k)`` of ints in ``[-1, num_docs)`` (-1 pads),
    no document twice in a row, and scores ``(num_texts, k)`` of real numbers, finite where an id is listed.

    Raises:
        ValueError: naming what was returned, what is wrong with it and what was expected.
    """
    shape = (num_texts, k)
    expected = (
        f"a pair (ids, scores) of {shape} arrays = (number of texts, k): int ids in [-1, {num_docs}) (-1 pads), "
        "no document twice in a row, and finite real scores where an id is listed"
    )
    if not isinstance(ranking, (tuple, list)) or len(ranking) != 2:
        raise _retriever_error(retriever, "rank", ranking, "not a pair", expected)
    ids, scores = _real_array(ranking[0]), _real_array(ranking[1])
    problem = _shape_problem(ids, shape)
    if problem is None and ids.dtype.kind not in "iu":
        problem = "not an int array"
    if problem is None and ids.size and (ids.min() < -1 or ids.max() >= num_docs):
        problem = f"ids in [{ids.min()}, {ids.max()}]"
    if problem is None:
        ordered = np.sort(ids, axis=1)
        if (ordered[:, 1:] == ordered[:, :-1])[ordered[:, 1:] >= 0].any():
            problem = "a document listed twice in a row"
    if problem is not None:
        raise _retriever_error(retriever, "rank", ranking[0], f"ids: {problem}", expected)
    problem = _shape_problem(scores, shape)
    if problem is None and not _all_finite(scores[ids >= 0]):
        problem = "NaN or infinite scores of listed ids"
    if problem is not None:
        raise _retriever_error(retriever, "rank", ranking[1], f"scores: {problem}", expected)
    return ids, scores


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string; wrap it in a list")


# --------------------------------------------------------------------------------------------------------
# BM25
# --------------------------------------------------------------------------------------------------------


class BM25Retriever:
    """BM25 over a fixed document list, indexed by ``bm25s`` and scored in batches with scipy.sparse.

    Args:
        docs: the ``num_docs`` document texts; a document's id is its position.
        k1, b, method: BM25 parameters, passed to ``bm25s.BM25`` ("lucene", "robertson", "atire", "bm25l",
            "bm25+").
        stopwords: a bm25s stopword language ("en", "es", ...), a list of words, or None.
        stemmer: stem with PyStemmer's ``stemmer_language`` stemmer (needs the PyStemmer package).
        stemmer_language: PyStemmer language name.
        token_pattern: regex whose matches are the tokens (after lower-casing and NFKC normalisation, which
            folds full-width forms such as "ＲＥＤ" into "red"); see :data:`DEFAULT_TOKEN_PATTERN`.
        n_threads: threads for scoring large batches (numpy's selection and scipy's sparse kernels release
            the GIL); None: one per CPU, at most 8.
        dense_postings_mb: memory for the posting lists of frequent terms kept as dense rows (scoring a
            frequent term densely is several times faster than scattering its postings); 0 keeps all sparse.
        index_cache: a folder where the built index is cached on disk
            (:class:`~ospo_gym.data.bm25_cache.BM25IndexCache`: plain arrays + JSON, keyed by the texts and
            every setting above that changes the index), so that the next retriever over the same texts loads
            it instead of tokenising and indexing again; None: no cache.

    Attributes:
        bm25: the underlying ``bm25s.BM25`` index (its ``get_scores`` is the reference semantics).
        num_docs: number of documents.
        vocab_size: number of index terms.
        index_info: ``{"cached": bool, "seconds": float}`` — whether the index came from ``index_cache`` and how
            long loading or building (and saving) it took.
    """

    def __init__(
        self,
        docs: Sequence[str],
        *,
        k1: float = 1.5,
        b: float = 0.75,
        method: str = "lucene",
        stopwords: str | Sequence[str] | None = "en",
        stemmer: bool = False,
        stemmer_language: str = "english",
        token_pattern: str = DEFAULT_TOKEN_PATTERN,
        n_threads: int | None = None,
        dense_postings_mb: float = 64.0,
        index_cache: str | os.PathLike | None = None,
    ) -> None:
        import bm25s
        from bm25s.tokenization import Tokenized, Tokenizer

        _check_texts(docs)
        docs = list(docs)
        if not docs:
            raise ValueError("docs is empty; a retriever needs at least one document")
        stem_fn = None
        if stemmer:
            try:
                import Stemmer
            except ImportError as err:
                raise ImportError("stemmer=True needs PyStemmer: pip install PyStemmer") from err
            stem_fn = Stemmer.Stemmer(stemmer_language)
        self._stemmer_language = stemmer_language if stemmer else None
        self._tokenizer = Tokenizer(
            lower=True,
            splitter=_NormalisingSplitter(token_pattern),
            stopwords=list(stopwords) if isinstance(stopwords, (list, tuple)) else stopwords,
            stemmer=stem_fn,
        )
        self.bm25 = bm25s.BM25(k1=k1, b=b, method=method)
        started = time.perf_counter()
        cache = key = None
        cached = False
        if index_cache is not None:
            from ospo_gym.data.bm25_cache import BM25IndexCache, index_key

            settings = {
                "k1": k1,
                "b": b,
                "method": method,
                "stopwords": list(stopwords) if isinstance(stopwords, (list, tuple)) else stopwords,
                "stemmer_language": self._stemmer_language,
                "token_pattern": token_pattern,
            }
            cache, key = BM25IndexCache(index_cache), index_key(docs, settings)
            cached = cache.load_index(key, len(docs), self.bm25, self._tokenizer)
        if not cached:
            # allow_empty=False: an empty document gets no tokens (length 0) instead of a fake "" token that an
            # empty query would then match.
            corpus = self._tokenizer.tokenize(
                docs, update_vocab=True, return_as="tuple", show_progress=False, allow_empty=False
            )
            # A copy of the vocabulary, so that bm25s never writes into the tokenizer's own dict. A corpus
            # without any token has average length 0, which bm25s divides by (harmlessly: there is no entry).
            with np.errstate(invalid="ignore", divide="ignore"):
                self.bm25.index(
                    Tokenized(ids=corpus.ids, vocab=dict(corpus.vocab)), create_empty_token=False, show_progress=False
                )
            del corpus
            if cache is not None:
                cache.save_index(key, self.bm25, self._tokenizer, settings)
        self.index_info = {"cached": cached, "seconds": round(time.perf_counter() - started, 3)}
        raw = self.bm25.scores
        self.num_docs = int(raw["num_docs"])
        self.vocab_size = len(raw["indptr"]) - 1
        # bm25s stores a CSC matrix (num_docs x vocab): column t holds the per-document BM25 contribution
        # of term t, already including idf and the length normalisation.
        doc_term = sp.csc_matrix(
            (raw["data"], raw["indices"], raw["indptr"]), shape=(self.num_docs, self.vocab_size), dtype=np.float32
        )
        doc_term.sort_indices()
        self._doc_term = doc_term.tocsr()  # (num_docs, vocab): row d = term weights of d
        self._doc_term.sort_indices()
        self._split_terms(doc_term, dense_postings_mb)
        # BM25L / BM25+ add a per-term constant to every document (non-occurrence score).
        nonocc = getattr(self.bm25, "nonoccurrence_array", None)
        self._nonoccurrence = None if nonocc is None else np.asarray(nonocc, dtype=np.float32)
        self._n_threads = max(1, min(8, os.cpu_count() or 1)) if n_threads is None else max(1, int(n_threads))
        self._executor: ThreadPoolExecutor | None = None

    def _split_terms(self, doc_term: sp.csc_matrix, dense_postings_mb: float) -> None:
        """Partition the vocabulary into frequent terms (dense posting rows) and the rest (sparse rows).

        A dense row costs ``num_docs`` multiply-adds per query occurrence (vectorised), a sparse one about
        ``df`` scattered adds that are each ~50x slower; so terms in more than 1/64 of the documents go
        dense, most frequent first, as far as ``dense_postings_mb`` allows.
        """
        df = np.diff(doc_term.indptr)
        budget_rows = int(dense_postings_mb * 2**20 // (4 * self.num_docs))
        by_df = np.argsort(-df, kind="stable")
        frequent = by_df[: max(budget_rows, 0)]
        frequent = np.sort(frequent[df[frequent] * 64 > self.num_docs])
        is_dense = np.zeros(self.vocab_size, dtype=bool)
        is_dense[frequent] = True
        # Each term's column in its own part: dense terms 0..H-1, sparse terms 0..V-H-1.
        self._term_slot = np.where(is_dense, np.cumsum(is_dense) - 1, np.cumsum(~is_dense) - 1).astype(np.int64)
        self._term_is_dense = is_dense
        self._dense_postings = np.ascontiguousarray(doc_term[:, frequent].T.toarray(), dtype=np.float32)  # (H, N)
        self._sparse_postings = doc_term[:, np.flatnonzero(~is_dense)].T.tocsr()  # (V - H, N)

    @property
    def num_dense_terms(self) -> int:
        """How many frequent terms are scored through dense posting rows."""
        return int(self._dense_postings.shape[0])

    @property
    def n_threads(self) -> int:
        """Worker threads used for large batches."""
        return self._n_threads

    # ---- tokenisation --------------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Index term ids of each text, in text order, repeats kept and unknown words dropped."""
        _check_texts(texts)
        return self._tokenizer.tokenize(
            list(texts), update_vocab=False, return_as="ids", show_progress=False, allow_empty=False
        )

    def _query_matrix(self, texts: Sequence[str]) -> sp.csr_matrix:
        """``(Q, vocab)`` float32 CSR of query term counts (a term repeated n times weighs n, as in bm25s)."""
        ids = self.tokenize(texts)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        cols = np.fromiter((t for x in ids for t in x), dtype=np.int64, count=int(lengths.sum()))
        rows = np.repeat(np.arange(len(ids)), lengths)
        mat = sp.csr_matrix(
            (np.ones(len(cols), dtype=np.float32), (rows, cols)), shape=(len(ids), self.vocab_size)
        )
        mat.sum_duplicates()  # counts, with sorted column indices
        return mat

    def _offsets(self, queries: sp.csr_matrix) -> np.ndarray | None:
        """Per-query constant added to every document (BM25L/BM25+), ``(Q,)`` float32, or None."""
        if self._nonoccurrence is None:
            return None
        return np.asarray(queries @ self._nonoccurrence, dtype=np.float32).ravel()

    # ---- scoring ---------------------------------------------------------------------------------------

    def _dense_scores(self, queries: sp.csr_matrix) -> np.ndarray:
        """``(R, num_docs)`` float32 scores of the query rows.

        Frequent terms: a sparse-times-dense product (row-wise vectorised multiply-adds); the other terms: a
        sparse product whose few entries are added in place.
        """
        is_dense = self._term_is_dense[queries.indices]
        hi = _select_columns(queries, is_dense, self._term_slot, self._dense_postings.shape[0])
        lo = _select_columns(queries, ~is_dense, self._term_slot, self._sparse_postings.shape[0])
        out = np.asarray(hi @ self._dense_postings, dtype=np.float32)
        if lo.nnz:
            extra = (lo @ self._sparse_postings).tocoo()
            # (row, doc) pairs are distinct after the product, so a fancy-index add is exact.
            out[extra.row, extra.col] += extra.data
        offsets = self._offsets(queries)
        if offsets is not None:
            out += offsets[:, None]
        return out

    def _map_blocks(self, n_rows: int, fn: Callable[[slice], object]) -> list:
        """Run ``fn`` over contiguous row blocks (bounded memory), on threads when it pays off."""
        # Equal blocks, a multiple of the thread count, each small enough to stay in cache.
        max_rows = max(1, _BLOCK_CELLS // max(self.num_docs, 1))
        workers = self._n_threads if n_rows >= 16 * self._n_threads else 1
        n_blocks = workers * -(-n_rows // (workers * max_rows))
        per_block = -(-n_rows // n_blocks)
        blocks = [slice(i, min(i + per_block, n_rows)) for i in range(0, n_rows, per_block)]
        if n_rows * self.num_docs < _INLINE_CELLS:
            return [fn(s) for s in blocks]
        # Large work runs on the pool even with one thread: glibc then serves the multi-megabyte temporaries
        # from the worker's own arena instead of mapping fresh pages for every block, as it does on the main
        # thread (measured: ~40% of a 500-query batch went to page faults there).
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self._n_threads, thread_name_prefix="bm25")
        return list(self._executor.map(fn, blocks))

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """BM25 score of every document for every text, ``(Q, num_docs)`` float32."""
        queries = self._query_matrix(texts)
        if queries.shape[0] == 0:
            return np.zeros((0, self.num_docs), dtype=np.float32)
        parts = self._map_blocks(queries.shape[0], lambda s: self._dense_scores(queries[s]))
        return np.concatenate(parts, axis=0)

    def rank(self, texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` per text: ids ``(Q, k)`` int64 padded with -1, scores ``(Q, k)`` float32 padded with -inf;
        descending score, ties by ascending id, only documents with score > 0."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = self._query_matrix(texts)
        if queries.shape[0] == 0:
            return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
        parts = self._map_blocks(queries.shape[0], lambda s: rank_from_scores(self._dense_scores(queries[s]), k))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def kth_score(self, texts: Sequence[str], k: int) -> np.ndarray:
        """The ``k``-th highest full-catalog score per text, 0 if fewer than ``k`` are positive; ``(Q,)``."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = self._query_matrix(texts)
        if queries.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        parts = self._map_blocks(queries.shape[0], lambda s: kth_largest(self._dense_scores(queries[s]), k))
        return np.concatenate(parts)

    def score_pool(self, texts: Sequence[str], pool_ids: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Scores of only the given documents: ``pool_ids[q]`` (int array) -> float32 array of the same length.

        A row gather of the document-term matrix, so its cost grows with the pools, not the catalog.
        """
        _check_texts(texts)
        if len(pool_ids) != len(texts):
            raise ValueError(f"got {len(texts)} texts but {len(pool_ids)} pools")
        queries = self._query_matrix(texts)
        lengths = np.fromiter((len(p) for p in pool_ids), dtype=np.int64, count=len(pool_ids))
        flat = (
            np.concatenate([np.asarray(p, dtype=np.int64).ravel() for p in pool_ids])
            if len(pool_ids)
            else np.zeros(0, dtype=np.int64)
        )
        if len(flat) and (flat.min() < 0 or flat.max() >= self.num_docs):
            raise ValueError(f"pool ids must lie in [0, {self.num_docs})")
        owner = np.repeat(np.arange(len(pool_ids)), lengths)
        values = self._gather_scores(queries, owner, flat)
        return np.split(values, np.cumsum(lengths)[:-1])

    def _gather_scores(self, queries: sp.csr_matrix, owner: np.ndarray, doc_ids: np.ndarray) -> np.ndarray:
        """Scores of (query ``owner[i]``, document ``doc_ids[i]``) pairs, ``(len(doc_ids),)`` float32."""
        if len(doc_ids) == 0:
            return np.zeros(0, dtype=np.float32)
        # Row i of the elementwise product holds doc_ids[i]'s weights of its query's terms times their counts.
        pairs = self._doc_term[doc_ids].multiply(queries[owner])
        values = np.asarray(pairs.sum(axis=1), dtype=np.float32).ravel()
        offsets = self._offsets(queries)
        if offsets is not None:
            values += offsets[owner]
        return values

    def pool_frontier(
        self, texts: Sequence[str], pool_ids: np.ndarray, cutoff: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pool scores ``(Q, P)`` float32 and retrieved mask ``(Q, P)`` bool for padded ``pool_ids`` (-1 pads).

        Without an effective cutoff only the pools are scored (row gather). With one, each block of queries
        is scored in full once, and both the cutoff threshold and the pool scores come from that same array,
        so the threshold comparisons are exact.
        """
        queries = self._query_matrix(texts)
        pool_ids = np.asarray(pool_ids, dtype=np.int64)
        n_q, width = pool_ids.shape
        if cutoff is None or cutoff >= self.num_docs:
            valid = pool_ids >= 0
            r, c = np.nonzero(valid)
            pool_scores = np.zeros((n_q, width), dtype=np.float32)
            pool_scores[r, c] = self._gather_scores(queries, r, pool_ids[r, c])
            return pool_scores, valid & (pool_scores > 0)

        def block(s: slice) -> tuple[np.ndarray, np.ndarray]:
            return pool_frontier(self._dense_scores(queries[s]), pool_ids[s], cutoff)

        parts = self._map_blocks(n_q, block)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def __getstate__(self) -> dict:
        # Threads and the C stemmer do not pickle; both are rebuilt on load.
        state = self.__dict__.copy()
        state["_executor"] = None
        if self._stemmer_language is not None:
            tokenizer = copy.copy(self._tokenizer)
            tokenizer.stemmer = None
            state["_tokenizer"] = tokenizer
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self._stemmer_language is not None:
            import Stemmer

            self._tokenizer = copy.copy(self._tokenizer)
            self._tokenizer.stemmer = Stemmer.Stemmer(self._stemmer_language).stemWord

    def close(self) -> None:
        """Stop the scoring threads (they are restarted on demand)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    def __del__(self) -> None:
        # Worker threads would otherwise outlive a discarded retriever until interpreter exit.
        with contextlib.suppress(Exception):
            self.close()


def _select_columns(mat: sp.csr_matrix, keep: np.ndarray, slot: np.ndarray, width: int) -> sp.csr_matrix:
    """The entries of ``mat`` flagged by ``keep`` (aligned with ``mat.data``), columns renumbered by ``slot``."""
    rows = np.repeat(np.arange(mat.shape[0]), np.diff(mat.indptr))[keep]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=mat.shape[0]))])
    return sp.csr_matrix((mat.data[keep], slot[mat.indices[keep]], indptr), shape=(mat.shape[0], width))


class _NormalisingSplitter:
    """Tokenizer splitter: NFKC-normalise (full-width and compatibility forms), lower-case, ``findall``.

    A class rather than a closure so that a retriever can be pickled (e.g. into vector-env workers).
    """

    def __init__(self, pattern: str) -> None:
        self.pattern = re.compile(pattern)

    def __call__(self, text: str) -> list[str]:
        # NFKC can change case (e.g. full-width capitals become ASCII capitals), hence lower() after it.
        return self.pattern.findall(unicodedata.normalize("NFKC", text).lower())
