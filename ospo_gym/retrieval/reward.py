"""The reward: pooled NDCG@k of each query's ranking filtered to its judged pool (:func:`pooled_ndcg`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ospo_gym.metrics import dcg, ideal_dcg, ndcg_of_dcg
from ospo_gym.retrieval.checks import check_frontier, check_scores, check_texts
from ospo_gym.retrieval.protocol import PoolRetriever, Retriever
from ospo_gym.retrieval.ranking import pool_frontier
from ospo_gym.runs import offsets_in_runs

__all__ = ["pad_pools", "pooled_ndcg"]


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
    if pool_gains is not None and len(pool_gains) != len(pools):
        raise ValueError(f"got {len(pools)} pools but {len(pool_gains)} gain arrays")
    # A batch of coalition texts repeats a few prompts' pools hundreds of times: pad each (pool, gains) pair of
    # objects once and copy its rows (the same arrays as padding every row).
    gains_of = pool_gains if pool_gains is not None else [None] * len(pools)
    keys = list(zip(map(id, pools), map(id, gains_of), strict=True))
    pairs: dict[tuple[int, int], int] = dict.fromkeys(keys)  # in order of first use
    for number, key in enumerate(pairs):
        pairs[key] = number
    row_of = np.fromiter(map(pairs.__getitem__, keys), dtype=np.int64, count=len(pools))
    if len(pairs) < len(pools):
        first = np.unique(row_of, return_index=True)[1]
        ids, gains = _pad_each(
            [pools[i] for i in first], None if pool_gains is None else [pool_gains[i] for i in first], num_docs, first
        )
        return ids[row_of], gains[row_of]
    return _pad_each(pools, pool_gains, num_docs, np.arange(len(pools)))


def _pad_each(
    pools: Sequence[np.ndarray], pool_gains: Sequence[np.ndarray] | None, num_docs: int | None, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pad_pools` of distinct pools; ``labels`` (len(pools),) are their positions in the caller's list."""
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
    cols = offsets_in_runs(lengths)
    ids[rows, cols] = flat
    if pool_gains is not None:
        gain_lengths = np.fromiter((len(g) for g in pool_gains), dtype=np.int64, count=len(pool_gains))
        if not np.array_equal(gain_lengths, lengths):
            bad = int(np.flatnonzero(gain_lengths != lengths)[0])
            raise ValueError(f"pool {labels[bad]} has {lengths[bad]} ids but {gain_lengths[bad]} gains")
        gains[rows, cols] = np.concatenate([np.asarray(g, dtype=np.float64).ravel() for g in pool_gains])
    return ids, gains


_KEY_BITS = 64  # the width of _ndcg_of_frontier's one sort key (a test narrows it to reach the lexsort)


def _ndcg_of_frontier(
    pool_ids: np.ndarray,
    pool_scores: np.ndarray,
    retrieved: np.ndarray,
    gains: np.ndarray,
    k: int,
    pool_of: np.ndarray | None = None,
) -> np.ndarray:
    """NDCG@k of the retrieved pool documents ranked by (score desc, id asc); ideal from all pool gains.

    ``pool_ids``, ``pool_scores``, ``retrieved``: ``(Q, P)``; ``gains``: ``(D, P)`` of the distinct pools, row
    ``pool_of[q]`` being query ``q``'s (``pool_of=None``: ``D = Q``, one row per query). Returns ``(Q,)``.
    """
    n_q, width = pool_ids.shape
    best = ideal_dcg(gains, k, pool_of)  # each distinct pool sorted once
    pool_of = np.arange(n_q) if pool_of is None else pool_of
    rows, cols = np.divmod(np.flatnonzero(retrieved), width)  # row-major: rows non-decreasing
    scores = pool_scores[rows, cols]
    if pool_scores.dtype == np.float32 and len(rows) and bool((scores > 0).all()):
        # Positive float32 scores order as their bits. Only the retrieved documents are ranked (a coalition text
        # retrieves a few of its pool; the others' gains count as 0), all rows in one sort of one uint64 key
        # (row, score desc, id asc), the id by its rank within the row's pool, or by a lexsort where that overflows.
        descending = np.uint64(0x7FFFFFFF) - scores.view(np.uint32).astype(np.uint64)
        id_bits = max(1, (width - 1).bit_length())
        if (n_q - 1).bit_length() + 31 + id_bits <= _KEY_BITS:
            _, first, distinct = np.unique(pool_of, return_index=True, return_inverse=True)
            id_rank = np.argsort(np.argsort(pool_ids[first], axis=1), axis=1)  # each distinct pool's ids ranked once
            key = (rows.astype(np.uint64) << np.uint64(31 + id_bits)) | (descending << np.uint64(id_bits))
            order = np.argsort(key | id_rank[distinct[rows], cols].astype(np.uint64))
        else:
            order = np.lexsort((pool_ids[rows, cols], descending, rows))
        rank = offsets_in_runs(np.bincount(rows, minlength=n_q))  # each entry's place in its row (rows[order] is rows)
        near = rank < min(k, width)
        top = np.zeros((n_q, min(k, width)))
        top[rows[near], rank[near]] = gains[pool_of[rows], cols][order][near]
        return ndcg_of_dcg(dcg(top, k), best)
    key = np.where(retrieved, -pool_scores.astype(np.float64), np.inf)
    order = np.lexsort((pool_ids, key), axis=-1)
    ranked = np.take_along_axis(np.where(retrieved, gains[pool_of], 0.0), order, axis=1)
    return ndcg_of_dcg(dcg(ranked, k) if width else np.zeros(n_q), best)


def pooled_ndcg(
    retriever: Retriever,
    texts: Sequence[str],
    pools: Sequence[np.ndarray],
    pool_gains: Sequence[np.ndarray],
    *,
    k: int = 10,
    cutoff: int | None = 1000,
    perturb: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    pool_of: np.ndarray | None = None,
) -> np.ndarray:
    """The reward: NDCG@k of each query's ranking filtered to its judged pool.

    The query ranks the whole catalog; only the top ``cutoff`` documents with score > 0 are retrieved
    (``cutoff=None``: all with score > 0); the retrieved list is filtered to ``pools[q]`` and NDCG@k is
    computed over it, the ideal being the best ordering of all of ``pool_gains[q]``. A document whose score
    ties the cutoff-th best score is retrieved only if it is within the top ``cutoff`` under the
    ascending-id tie-break.

    Args:
        retriever: any :class:`Retriever`; a :class:`PoolRetriever` (e.g. the BM25 and dense retrievers) scores
            only the pools plus what the cutoff needs, anything else is scored in full.
        texts: ``Q`` query texts.
        pools: ``Q`` int arrays of distinct document ids.
        pool_gains: ``Q`` float arrays of gains (>= 0), aligned with ``pools``.
        k: NDCG cutoff.
        cutoff: retrieval depth, or None.
        perturb: ``(pool_scores (Q, P), retrieved (Q, P) bool) -> (Q, P)`` new pool scores, applied after the
            retrieved set is fixed and before the pool is ranked (the score noise of :mod:`ospo_gym.wrappers`).
        pool_of: ``(Q,)`` ints: query ``q``'s pool is ``pools[pool_of[q]]`` (then ``pools`` and ``pool_gains`` list
            each distinct pool once: a batch of coalition texts asks about a few prompts' pools many times).

    Returns:
        ``(Q,)`` float64 in ``[0, 1]``; 0 for a query that retrieves no pool document or has no gain.
    """
    check_texts(texts)
    if pool_of is not None:
        pool_of = np.asarray(pool_of)
        if pool_of.shape != (len(texts),) or pool_of.dtype.kind not in "iu" or (
            len(pool_of) and (pool_of.min() < 0 or pool_of.max() >= len(pools))
        ):
            raise ValueError(f"pool_of must hold one index into the {len(pools)} pools per text ({len(texts)})")
    elif len(pools) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(pools)} pools")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if cutoff is not None and cutoff < 1:
        raise ValueError(f"cutoff must be >= 1 or None, got {cutoff}")
    ids, gains = pad_pools(pools, pool_gains, num_docs=retriever.num_docs)
    if pool_of is not None:
        ids = ids[pool_of]
    if len(texts) == 0:
        return np.zeros(0)
    if isinstance(retriever, PoolRetriever):
        pool_scores, retrieved = check_frontier(retriever.pool_frontier(texts, ids, cutoff), ids, retriever)
    else:
        scores = check_scores(retriever.scores(texts), len(texts), retriever.num_docs, retriever)
        pool_scores, retrieved = pool_frontier(scores, ids, cutoff)
    if perturb is not None:
        pool_scores = np.asarray(perturb(pool_scores, retrieved), dtype=np.float64)
    return _ndcg_of_frontier(ids, pool_scores, retrieved, gains, k, pool_of)
