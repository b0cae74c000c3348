"""The retrieval rule on score arrays: the k-th largest score, the top-k list, and which pool documents a
cutoff retrieves (:mod:`ospo_gym.retrieval.protocol` states the rule; every retriever's fast path must agree
with these functions)."""

from __future__ import annotations

import numpy as np

__all__ = ["kth_largest", "pool_frontier", "rank_from_scores"]

# kth_largest samples every (k // _SAMPLE_RANK)-th column, so the answer sits near rank _SAMPLE_RANK there.
_SAMPLE_RANK = 128


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
