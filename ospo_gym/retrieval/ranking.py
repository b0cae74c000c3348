"""The retrieval rule on score arrays: the k-th largest score, the top-k list, and which pool documents a
cutoff retrieves (:mod:`ospo_gym.retrieval.protocol` states the rule; every retriever's fast path must agree
with these functions)."""

from __future__ import annotations

import numpy as np

__all__ = ["kth_largest", "kth_largest_weighted", "pool_frontier", "rank_from_scores"]

# kth_largest samples every (k // _SAMPLE_RANK)-th column, so the answer sits near rank _SAMPLE_RANK there.
_SAMPLE_RANK = 128
# kth_largest_weighted's sample (of the repeated columns) has the answer near this rank: a short sample, since its
# candidates are columns (each standing for several scores), sorted rather than partitioned.
_WEIGHTED_SAMPLE_RANK = 64
_LEAST32 = np.nextafter(np.float32(0), np.float32(1))  # the least positive float32: ">= _LEAST32" is "> 0"


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


def kth_largest_weighted(values: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    """:func:`kth_largest` of rows in which column ``j`` stands for ``counts[j]`` (or row ``i``'s ``counts[i, j]``)
    equal scores.

    Row ``i`` of the answer is ``kth_largest(np.repeat(values[i], counts[i])[None], k)`` bit for bit, without
    building the repeated rows: a retriever whose documents fall into groups that score alike for a batch of
    queries selects over the groups (``BM25Retriever``'s grouped pool frontier).

    Exact. As in :func:`kth_largest`, a sample (here of the repeated columns, taken through ``counts``, per run of
    rows with the same counts) brackets the answer: a value a little below it and one a little above. Where at least
    ``k`` scores lie at or above the lower one and fewer than ``k`` at or above the upper one, only the columns in
    between are sorted (one sort per row of (score bits, count) keys); other rows sort all their positive columns.
    The sample only affects speed, never the result.

    Args:
        values: ``(R, G)`` float32 scores, one column per group of equal scores.
        counts: ``(G,)`` or ``(R, G)`` non-negative ints below ``2**32``, how many scores each column stands for.
        k: rank, ``k >= 1``.

    Returns:
        ``(R,)`` float32, the ``k``-th largest score per row, or 0 where fewer than ``k`` scores are positive.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    values = np.asarray(values)
    if values.ndim != 2 or values.dtype != np.float32:
        raise ValueError(f"values must be a 2-D float32 array (their bits are the sort key), got {values.dtype}")
    counts = np.asarray(counts)
    if counts.dtype.kind not in "iu":  # any int dtype, as it comes: an int32 (R, G) table halves the passes' bytes
        raise ValueError(f"counts must be ints, got {counts.dtype}")
    rows, cols = values.shape
    narrow = counts.dtype.itemsize <= 4  # every value below 2**32 already
    if counts.shape not in ((cols,), (rows, cols)) or (
        counts.size and (counts.min() < 0 or (not narrow and counts.max() >= 1 << 32))
    ):
        raise ValueError(f"counts must be ({cols},) or ({rows}, {cols}) ints in [0, 2**32), one per value")
    out = np.zeros(rows, dtype=np.float32)
    if rows == 0 or cols == 0:
        return out
    flat_counts = counts.ndim == 1
    given = counts
    counts = np.broadcast_to(counts, (rows, cols))
    total = counts.sum(axis=1)
    if total.max() < k:
        return out
    # Masked sums of the counts, in float32 where every row's total is below 2**24 (integer sums stay exact there,
    # and the float product is several times faster than an int64 one), else in int64.
    if int(total.max()) < 1 << 24:
        weights = given.astype(np.float32)

        def counted(mask: np.ndarray, rows_at: slice | np.ndarray = slice(None)) -> np.ndarray:
            if flat_counts:
                return np.einsum("ij,j->i", mask, weights).astype(np.int64)
            return np.einsum("ij,ij->i", mask, weights[rows_at]).astype(np.int64)
    else:

        def counted(mask: np.ndarray, rows_at: slice | np.ndarray = slice(None)) -> np.ndarray:
            return np.einsum("ij,ij->i", mask, counts[rows_at], dtype=np.int64)
    floor = np.full(rows, _LEAST32)  # candidates: the columns with values >= floor (so > 0) ...
    ceiling = np.full(rows, np.inf, dtype=np.float32)  # ... and < ceiling, above which fewer than k scores lie
    stride = k // _WEIGHTED_SAMPLE_RANK
    if stride >= 2 and total.max() >= 4 * k:
        # Every stride-th of the repeated columns, for each run of rows with the same counts (a retriever's group),
        # told apart by their totals: a row whose counts differ from its run's first row's only samples worse.
        starts = [0] if flat_counts else np.flatnonzero(np.r_[True, total[1:] != total[:-1]]).tolist()
        target = -(-k // stride)
        low = target + int(3 * np.sqrt(target)) + 2  # sample ranks that bracket the answer (3 standard deviations)
        high = max(target - int(3 * np.sqrt(target)) - 2, 1)
        for a, b in zip(starts, [*starts[1:], rows], strict=True):
            picked = np.repeat(np.arange(cols), counts[a])[::stride]
            if len(picked) < low:
                continue
            sample = np.negative(values[a:b, picked])
            sample.sort(axis=1)  # SIMD sorts of short rows: several times faster than a two-point partition
            floor[a:b] = np.maximum(-sample[:, low - 1], _LEAST32)
            ceiling[a:b] = -sample[:, high - 1]
    above = values >= ceiling[:, None]
    at_floor = values >= floor[:, None]
    over = counted(above)  # scores at or above the ceiling
    reach = counted(at_floor)  # scores at or above the floor
    no_ceiling = np.flatnonzero(over >= k)  # the ceiling is not above the answer: no ceiling
    over[no_ceiling] = 0
    above[no_ceiling] = False
    candidate = at_floor > above  # floor <= value < ceiling (bools: a > b is a and not b)
    short = np.flatnonzero(reach < k)  # the sample overshot (or too few positive scores): all positive columns
    if len(short):
        candidate[short] = values[short] > 0
        over[short] = 0
        reach[short] = counted(candidate[short], short)
    busy = np.flatnonzero(reach >= k)  # the other rows have fewer than k positive scores: 0
    if len(busy) == 0:
        return out
    if len(busy) < rows:
        candidate[reach < k] = False
    per_row = np.count_nonzero(candidate, axis=1)[busy]
    width = int(per_row.max())
    # A positive float32's bits, read as an unsigned int, order as the float does; with the column's count in the
    # low 32 bits one sort per row orders the candidates and carries their counts.
    flat = np.flatnonzero(candidate)  # row-major: each row's candidates are contiguous
    shift = np.zeros(rows, dtype=np.int64)  # candidate e of packed row p goes to p * width + (e - p's first)
    shift[busy] = np.arange(len(busy)) * width - (np.cumsum(per_row) - per_row)
    keys = np.zeros((len(busy), width), dtype=np.uint64)  # padding (key 0) sorts first
    bits = values.ravel()[flat].view(np.uint32).astype(np.uint64)
    weight = counts[0, flat % cols] if flat_counts else counts.ravel()[flat]
    keys.ravel()[np.arange(len(flat)) + shift[flat // cols]] = (bits << np.uint64(32)) | weight.astype(np.uint64)
    keys.sort(axis=1)
    # Counts from the top down (after the scores above the ceiling): the k-th largest is where they reach k.
    down = keys[:, ::-1]
    # a row's counts add up to at most its total: int32 where every total fits (half the bytes of int64)
    wide = np.int32 if int(total.max()) < 1 << 31 else np.int64
    running = np.cumsum((down & np.uint64(0xFFFFFFFF)).astype(wide), axis=1, dtype=wide)
    top = down[np.arange(len(busy)), np.argmax(running >= (k - over[busy])[:, None], axis=1)] >> np.uint64(32)
    out[busy] = top.astype(np.uint32).view(np.float32)
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
