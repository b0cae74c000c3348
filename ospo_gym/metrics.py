"""Ranking metrics over graded relevance gains (pure numpy).

Gains are linear (``gain / log2(rank + 1)``, ranks from 1), which is what trec_eval's and ir-measures'
``nDCG`` compute for graded judgements; the ESCI gain table below is the one used by the Amazon
Shopping Queries benchmark (Exact 1.0, Substitute 0.1, Complement 0.01, Irrelevant 0.0).
"""

from __future__ import annotations

import numpy as np

ESCI_GAINS: dict[str, float] = {"E": 1.0, "S": 0.1, "C": 0.01, "I": 0.0}
BINARY_GAINS: dict[str, float] = {"E": 1.0, "S": 0.0, "C": 0.0, "I": 0.0}

__all__ = ["BINARY_GAINS", "ESCI_GAINS", "check_gains", "dcg", "discounts", "ideal_dcg", "ndcg_at_k", "ndcg_of_dcg"]


def discounts(k: int) -> np.ndarray:
    """Rank discounts ``1 / log2(rank + 1)`` for ranks ``1..k``; shape ``(k,)`` float64."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def dcg(gains_in_rank_order: np.ndarray, k: int) -> np.ndarray:
    """Discounted cumulative gain of the first ``k`` positions.

    Args:
        gains_in_rank_order: ``(L,)`` or ``(Q, L)`` gains, best-ranked first; pad short lists with 0.
        k: cutoff (``k >= 1``); lists shorter than ``k`` count as padded with zeros.

    Returns:
        A float for 1-D input, else ``(Q,)`` float64.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    gains = np.asarray(gains_in_rank_order, dtype=np.float64)
    if gains.ndim not in (1, 2):
        raise ValueError(f"gains must be 1-D (L,) or 2-D (Q, L), got shape {gains.shape}")
    top = gains[..., :k]
    out = top @ discounts(top.shape[-1])
    return float(out) if gains.ndim == 1 else out


def ndcg_at_k(ranked_gains: np.ndarray, ideal_gains: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k per query: DCG of the ranking over DCG of the ideal ordering, 0 where the ideal DCG is 0.

    Args:
        ranked_gains: ``(Q, L)`` gains in retrieved order, padded with 0 past each list's end.
        ideal_gains: ``(Q, P)`` all judged gains of each query in any order, padded with 0; they are
            sorted here, so the ideal is the best possible ordering of exactly these gains.
        k: cutoff, ``k >= 1``.

    Returns:
        ``(Q,)`` float64, finite and in ``[0, 1]`` (clipped, because a ranking whose gains are not a
        subset of the ideal's, or float round-off, could otherwise step outside).
    """
    ranked = np.atleast_2d(np.asarray(ranked_gains, dtype=np.float64))
    ideal = np.atleast_2d(np.asarray(ideal_gains, dtype=np.float64))
    if ranked.shape[0] != ideal.shape[0]:
        raise ValueError(f"ranked_gains has {ranked.shape[0]} rows but ideal_gains has {ideal.shape[0]}")
    check_gains(ranked)
    actual = dcg(ranked, k) if ranked.shape[1] else np.zeros(ranked.shape[0])
    return ndcg_of_dcg(actual, ideal_dcg(ideal, k))


def check_gains(gains: np.ndarray) -> None:
    """ValueError unless every gain is finite and >= 0 (what keeps NDCG in [0, 1]; ESCI gains are never negative)."""
    if not np.all(np.isfinite(gains)):
        raise ValueError("gains must be finite; pad with 0, not NaN or inf")
    if gains.size and gains.min() < 0:
        raise ValueError("gains must be >= 0")


def ideal_dcg(ideal_gains: np.ndarray, k: int, rows: np.ndarray | None = None) -> np.ndarray:
    """DCG@k of the best ordering of each row's gains: ``(D, P)`` gains in any order, padded with 0 -> ``(D,)``.

    ``rows``: ``(Q,)`` row numbers; the result is then ``(Q,)``, row ``rows[q]``'s ideal, each row sorted once.
    The dot products run on the gathered ``(Q, k)`` rectangle, as :func:`ndcg_at_k` on the gathered gains would:
    BLAS's product of one row can differ in the last bit with the row's place in the matrix.
    """
    ideal = np.atleast_2d(np.asarray(ideal_gains, dtype=np.float64))
    check_gains(ideal)
    if not ideal.shape[1]:
        return np.zeros(ideal.shape[0] if rows is None else len(rows))
    best = -np.sort(-ideal, axis=1)[:, :k]
    return dcg(best if rows is None else best[rows], k)


def ndcg_of_dcg(actual: np.ndarray, best: np.ndarray) -> np.ndarray:
    """``actual / best`` per query ``(Q,)``, 0 where ``best`` is 0, clipped to ``[0, 1]``."""
    out = np.zeros_like(actual)
    # A subnormal ideal DCG under a larger actual DCG (gains outside the ideal) can overflow: clipped below.
    with np.errstate(over="ignore"):
        np.divide(actual, best, out=out, where=best > 0)
    return np.clip(out, 0.0, 1.0)
