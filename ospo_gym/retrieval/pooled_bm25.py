"""Pooled BM25 (the default ``"bm25"``): an exact pooled-reward path that does not score the whole catalog.

:func:`ospo_gym.retrieval.reward.pooled_ndcg` needs, per query, the scores of its judged pool and whether each
pool document is in the top ``cutoff`` of the *whole* catalog (10^5-10^6 products in the real data).
:class:`~ospo_gym.retrieval.bm25.BM25Retriever` answers by scoring every document: ~5 ms per query at a
million products. Coalition texts come in families that share words (every coalition of a completion uses
only the completion's words), so here a *group* of queries whose terms all lie in one term set ``T`` is
answered together:

* a document with exactly one term ``t`` of ``T`` scores ``x_q[t] * w(t, d)`` for query ``q`` (``x_q`` the
  query's term counts), so of those documents only the ``cutoff`` largest weights of each term can be in
  anyone's top ``cutoff``: a short list per term (cut from a per-term cache of its best postings);
* the documents with two or more terms of ``T`` (the *multi* documents) are scored exactly, as a dense
  ``(terms x documents)`` weight matrix times the queries' counts;
* a query's threshold (its ``cutoff``-th largest score) is the ``cutoff``-th largest of those candidates. A
  short query only looks at the multi documents that contain one of its own terms; a long one looks at all,
  and is skipped altogether when every judged document scoring above the per-term lists' own threshold has
  fewer than ``cutoff`` candidates above it.

A pool document is retrieved iff its score is positive and above the threshold, or equal to it and within the
ascending-id tie-break: the tied documents are the tied candidates plus the single-term documents whose weight
gives exactly the threshold (a scan of the query's postings; frequent, since BM25 weights repeat across
documents of equal length). BM25 variants with a non-occurrence term (``bm25l``, ``bm25+``), under which every
document scores, use full scoring.
Sums are float32 like full scoring's, but in another order, so scores can differ in the last bit; the
retrieved sets are identical except where that flips a comparison with the threshold.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from ospo_gym.retrieval.bm25 import BM25Retriever
from ospo_gym.retrieval.ranking import kth_largest

__all__ = ["TopListBM25Retriever"]

# A group's term set grows by absorbing short queries up to this many terms.
_MAX_GROUP_TERMS = 48
# Per-term lists of best postings kept (each 2 * cutoff postings: ~16 KiB at cutoff 1000).
_TOPS_CACHE_TERMS = 4096
# Below this many postings a sort is cheaper than an O(num_docs) count array.
_SORT_POSTINGS = 1 << 16
# A query whose terms touch fewer than this share of the group's multi documents is handled on its own.
_SMALL_ROW_SHARE = 0.25
_TINY = np.float32(np.finfo(np.float32).tiny)
_NO_DOCS = np.zeros(0, dtype=np.int64)


class TopListBM25Retriever(BM25Retriever):
    """:class:`~ospo_gym.retrieval.bm25.BM25Retriever` whose :meth:`pool_frontier` with a cutoff avoids scoring
    the whole catalog (same arguments, same results; see the module doc).

    Args:
        docs, **kwargs: as for :class:`~ospo_gym.retrieval.bm25.BM25Retriever`.
        full_scoring_below: catalogs with fewer documents are scored in full, which is faster there
            (measured on 2 CPUs: full scoring wins at 20,000 documents, this path from ~50,000 on, 1.6x at
            100,000 and 12x at 1,000,000).

    Attributes:
        num_tie_rows: rows since construction with a pool document tied at the threshold (resolved by scanning
            the row's terms' postings for the tied weight).
    """

    def __init__(self, docs: Sequence[str], *, full_scoring_below: int = 50_000, **kwargs) -> None:
        super().__init__(docs, **kwargs)
        self.full_scoring_below = full_scoring_below
        raw = self.bm25.scores
        # Views of bm25s's (documents x terms) CSC arrays: column t lists term t's documents and weights.
        self._post_ptr = np.asarray(raw["indptr"], dtype=np.int64)
        self._post_doc = np.asarray(raw["indices"])
        self._post_w = np.asarray(raw["data"], dtype=np.float32)
        # BM25L / BM25+ add a constant for absent terms, so a document outside the postings can score > 0.
        self._exact_postings = getattr(self.bm25, "nonoccurrence_array", None) is None
        self._tops_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._scratch = _Scratch()
        self.num_tie_rows = 0

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_tops_cache"] = {}  # rebuilt on demand
        return state

    def pool_frontier(
        self, texts: Sequence[str], pool_ids: np.ndarray, cutoff: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pool scores ``(Q, P)`` float32 and retrieved mask ``(Q, P)`` bool for padded ``pool_ids`` (-1 pads)."""
        pool_ids = np.asarray(pool_ids, dtype=np.int64)
        full = self.num_docs < self.full_scoring_below or not self._exact_postings
        if full or cutoff is None or cutoff >= self.num_docs or len(texts) == 0:
            return super().pool_frontier(texts, pool_ids, cutoff)
        if cutoff < 1:
            raise ValueError(f"cutoff must be >= 1 or None, got {cutoff}")
        token_ids = self.tokenize(texts)
        pool_scores = np.zeros(pool_ids.shape, dtype=np.float32)
        retrieved = np.zeros(pool_ids.shape, dtype=bool)
        scratch = self._scratch.take(self.num_docs)
        try:
            for terms, rows in _groups(token_ids):
                self._group_frontier(terms, rows, token_ids, pool_ids, cutoff, pool_scores, retrieved, scratch)
        finally:
            self._scratch.give_back(scratch)
        return pool_scores, retrieved

    def _term_tops(self, term: int, cutoff: int) -> tuple[np.ndarray, np.ndarray]:
        """The term's ``2 * cutoff`` highest-weight postings by descending weight (doc ids, weights); cached."""
        key = (term, cutoff)
        cached = self._tops_cache.get(key)
        if cached is None:
            start, end = self._post_ptr[term], self._post_ptr[term + 1]
            docs, weights = self._post_doc[start:end], self._post_w[start:end]
            if len(docs) > 2 * cutoff:
                top = np.argpartition(-weights, 2 * cutoff - 1)[: 2 * cutoff]
                docs, weights = docs[top], weights[top]
            order = np.argsort(-weights, kind="stable")
            cached = (docs[order], weights[order])
            if len(self._tops_cache) >= _TOPS_CACHE_TERMS:
                self._tops_cache.clear()
            self._tops_cache[key] = cached
        return cached

    def _group_frontier(
        self,
        terms: np.ndarray,
        rows: list[int],
        token_ids: list[list[int]],
        pool_ids: np.ndarray,
        cutoff: int,
        pool_scores: np.ndarray,
        retrieved: np.ndarray,
        scratch: _DocTables,
    ) -> None:
        """Fill ``pool_scores`` / ``retrieved`` for ``rows`` (whose terms all lie in ``terms``); ``scratch``'s tables
        are used and left as they were found."""
        if len(terms) == 0:  # only empty or unknown-word queries: nothing is retrieved
            return
        starts, ends = self._post_ptr[terms], self._post_ptr[terms + 1]
        docs = np.concatenate([self._post_doc[s:e] for s, e in zip(starts, ends, strict=True)])
        dense = len(docs) >= _SORT_POSTINGS
        try:
            self._group_frontier_with(
                terms, rows, token_ids, pool_ids, cutoff, pool_scores, retrieved, scratch, starts, ends, docs, dense
            )
        finally:
            if dense:  # back to all zeros / all -1 for the next group
                scratch.counts[docs] = 0
                scratch.rows[scratch.rows_set] = -1
                scratch.rows_set = _NO_DOCS

    def _group_frontier_with(
        self,
        terms: np.ndarray,
        rows: list[int],
        token_ids: list[list[int]],
        pool_ids: np.ndarray,
        cutoff: int,
        pool_scores: np.ndarray,
        retrieved: np.ndarray,
        scratch: _DocTables,
        starts: np.ndarray,
        ends: np.ndarray,
        docs: np.ndarray,
        dense: bool,
    ) -> None:
        """The body of :meth:`_group_frontier`, given the group's postings ``docs`` (term by term)."""
        n_terms, n_rows = len(terms), len(rows)
        rows_a = np.asarray(rows)
        slot = {int(t): j for j, t in enumerate(terms)}
        counts = np.zeros((n_rows, n_terms), dtype=np.float32)
        for i, r in enumerate(rows):
            for t in token_ids[r]:
                counts[i, slot[t]] += 1.0
        lengths = ends - starts

        # Documents with two or more of the group's terms are the multi documents (sorted ids).
        if dense:
            # Counted in the retriever's persistent (num_docs,) table rather than a fresh bincount: at a million
            # documents each fresh table is 8 MB of new pages, faulted in group after group (see _Scratch).
            per_doc = scratch.counts
            for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
                per_doc[self._post_doc[s:e]] += 1  # a term's postings name distinct documents
            multi_docs = np.flatnonzero(per_doc > 1)
        else:
            uniq, per_uniq = np.unique(docs, return_counts=True)
            multi_docs = uniq[per_uniq > 1]

        def is_single(ids: np.ndarray) -> np.ndarray:
            return (per_doc[ids] == 1) if dense else ~_sorted_member(multi_docs, ids)

        # Each term's `cutoff` best single-term weights, descending (zeros pad short lists).
        tops = np.zeros((n_terms, cutoff), dtype=np.float32)
        for j, term in enumerate(terms.tolist()):
            top_docs, top_w = self._term_tops(term, cutoff)
            w = top_w[is_single(top_docs)][:cutoff]
            if len(w) < cutoff and lengths[j] > len(top_docs):  # multi documents crowd the cached list
                all_docs, all_w = self._post_doc[starts[j] : ends[j]], self._post_w[starts[j] : ends[j]]
                w = all_w[is_single(all_docs)]
                w = -np.sort(-w)[:cutoff] if len(w) <= cutoff else -np.sort(np.partition(-w, cutoff - 1)[:cutoff])
            tops[j, : len(w)] = w

        # Exact weights (terms x documents) of the multi documents, then of the other pool documents.
        pools = pool_ids[rows_a]
        valid = pools >= 0
        pool_docs = np.unique(pools[valid])
        matrix_docs = np.concatenate([multi_docs, pool_docs[~_sorted_member(multi_docs, pool_docs)]])
        n_multi = len(multi_docs)
        row_of = _RowLookup(matrix_docs, self.num_docs, dense=dense, tables=scratch)
        pos = row_of(docs)
        keep = pos >= 0
        term_of = np.repeat(np.arange(n_terms), lengths)
        weight_t = np.zeros((n_terms, len(matrix_docs)), dtype=np.float32)
        weight_t.ravel()[term_of[keep] * len(matrix_docs) + pos[keep]] = np.concatenate(
            [self._post_w[s:e] for s, e in zip(starts, ends, strict=True)]
        )[keep]
        # Positions of each term's multi documents (entries are grouped by term, documents ascending).
        multi_entry = keep & (pos < n_multi)
        bounds = np.concatenate([[0], np.cumsum(np.bincount(term_of[multi_entry], minlength=n_terms))])
        multi_pos = pos[multi_entry]

        # Pool scores (einsum: only to find the rows that need a threshold; a row's scores are recomputed
        # below by the same product as its candidates, so that equal scores compare equal).
        col = row_of(np.where(valid, pools, 0))
        found = valid & (col >= 0)
        col = np.where(found, col, 0)
        ps = np.where(found, np.einsum("kt,tkp->kp", counts, weight_t[:, col]), np.float32(0)).astype(np.float32)
        tops_of_rows = (counts[:, :, None] * tops[None]).reshape(n_rows, -1)
        singles_floor = kth_largest(tops_of_rows, cutoff)
        # Judged documents that could make the top `cutoff` (with a margin for rounding); rows without any
        # retrieve no pool document, since at least `cutoff` single-term documents score above them.
        uncertain = (ps > 0) & (ps >= singles_floor[:, None] * np.float32(1 - 1e-5))
        hit = np.zeros_like(uncertain)
        active = np.flatnonzero(uncertain.any(axis=1))
        touched = (counts[active] > 0).astype(np.int64) @ np.diff(bounds)
        is_small = touched <= _SMALL_ROW_SHARE * max(n_multi, 1)

        def decide(i: int, threshold: float, singles: np.ndarray, values: np.ndarray, value_docs: np.ndarray) -> None:
            """Row i's hits from its threshold; its candidates are ``singles`` and ``values`` (of documents
            ``value_docs``), computed by the same products as ``ps[i]`` so that equal scores compare equal."""
            hit[i] = (ps[i] > 0) & ((ps[i] > threshold) | (threshold <= 0))
            tie = found[i] & (ps[i] > 0) & (ps[i] == threshold) & (threshold > 0)
            if not tie.any():
                return
            # Tied pool documents are retrieved while they are among the first (cutoff - #scores above) of
            # all the catalog's documents at that score, by ascending id.
            above = int(np.count_nonzero(singles > threshold) + np.count_nonzero(values > threshold))
            tied = [value_docs[values == threshold]]
            for j in np.flatnonzero(counts[i]).tolist():
                term_docs = self._post_doc[starts[j] : ends[j]]
                at = term_docs[counts[i, j] * self._post_w[starts[j] : ends[j]] == threshold]
                tied.append(at[is_single(at)])
            last = np.sort(np.concatenate(tied))[cutoff - above - 1]
            hit[i] |= tie & (pools[i] <= last)
            self.num_tie_rows += 1

        for i in active[is_small].tolist():
            mine = np.flatnonzero(counts[i])
            multi_cols = np.unique(np.concatenate([multi_pos[bounds[j] : bounds[j + 1]] for j in mine]))
            cols = np.concatenate([multi_cols, col[i][found[i]]])
            values = counts[i, mine] @ weight_t[np.ix_(mine, cols)]
            ps[i][found[i]] = values[len(multi_cols) :]
            singles = (counts[i, mine, None] * tops[mine]).ravel()
            multi_values = values[: len(multi_cols)]
            threshold = kth_largest(np.concatenate([singles, multi_values])[None], cutoff)[0]
            decide(i, threshold, singles, multi_values, matrix_docs[multi_cols])
        large = active[~is_small]
        if len(large):
            scores = counts[large] @ weight_t  # (R, |multi| + |extra|)
            ps[large] = np.where(found[large], np.take_along_axis(scores, col[large], axis=1), np.float32(0))
            thresholds, decided = _large_rows_threshold(
                tops_of_rows[large], scores[:, :n_multi], ps[large], singles_floor[large], cutoff
            )
            for r, i in enumerate(large.tolist()):
                if decided[r]:  # fewer than `cutoff` candidates reach its lowest uncertain pool document
                    hit[i] = (ps[i] > 0) & (ps[i] >= singles_floor[i])
                else:
                    decide(i, thresholds[r], tops_of_rows[i], scores[r, :n_multi], multi_docs)
        pool_scores[rows_a] = ps
        retrieved[rows_a] = hit


def _large_rows_threshold(
    singles: np.ndarray, scores: np.ndarray, ps: np.ndarray, singles_floor: np.ndarray, cutoff: int
) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds of rows that touch many multi documents: ``singles`` ``(R, terms * cutoff)`` and multi
    ``scores`` ``(R, |multi|)`` are the candidates, ``ps`` ``(R, P)`` the pool scores.

    Only the pool documents at or above ``singles_floor`` can be retrieved. A row where fewer than ``cutoff``
    candidates score at or above the lowest of them retrieves all of them (and no other): it is *decided*,
    without a threshold.

    Returns:
        thresholds ``(R,)`` (meaningful where not decided) and decided ``(R,)`` bool.
    """
    uncertain = (ps > 0) & (ps >= singles_floor[:, None])
    lowest = np.where(uncertain, ps, np.float32(np.inf)).min(axis=1)
    at_least = np.count_nonzero(singles >= lowest[:, None], axis=1) + np.count_nonzero(scores >= lowest[:, None], axis=1)
    decided = at_least < cutoff
    threshold = np.zeros(len(singles), dtype=np.float32)
    contested = np.flatnonzero(~decided)
    if len(contested):
        s, m = singles[contested], scores[contested]
        # The cutoff-th largest of both sides is that of everything at or above the larger of the two sides'
        # own cutoff-th largest values (and above 0).
        floor = np.maximum(np.maximum(singles_floor[contested], kth_largest(m, cutoff)), _TINY)[:, None]
        parts = np.concatenate([_values_at_least(s, floor), _values_at_least(m, floor)], axis=1)
        threshold[contested] = kth_largest(parts, cutoff)
    return threshold, decided


def _values_at_least(values: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """Per row, the values ``>= floor`` (row-wise), left-packed into a 2-D array padded with 0."""
    mask = values >= floor
    per_row = np.count_nonzero(mask, axis=1)
    out = np.zeros((values.shape[0], int(per_row.max(initial=0))), dtype=values.dtype)
    r, c = np.nonzero(mask)
    out[r, np.arange(len(r)) - np.repeat(np.cumsum(per_row) - per_row, per_row)] = values[r, c]
    return out


def _sorted_member(sorted_values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Whether each of ``queries`` is in the sorted array ``sorted_values``."""
    if len(sorted_values) == 0:
        return np.zeros(len(queries), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_values, queries), len(sorted_values) - 1)
    return sorted_values[at] == queries


class _RowLookup:
    """Maps document ids to their row in ``docs`` (distinct ids), -1 when absent.

    ``dense``: one ``num_docs`` table (O(1) lookups, worth it for many lookups); else a binary search. ``tables``:
    whose ``rows`` (all -1) to use as that table; ``tables.rows_set`` then names the entries set, for the caller to
    reset.
    """

    def __init__(self, docs: np.ndarray, num_docs: int, *, dense: bool, tables: _DocTables | None = None) -> None:
        self._dense = dense
        if dense:
            if tables is None:
                self._table = np.full(num_docs, -1, dtype=np.int64)
            else:
                self._table, tables.rows_set = tables.rows, docs
            self._table[docs] = np.arange(len(docs))
        else:
            self._order = np.argsort(docs, kind="stable")
            self._sorted = docs[self._order]

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        if self._dense:
            return self._table[ids]
        if len(self._sorted) == 0:
            return np.full(np.shape(ids), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._sorted, ids), len(self._sorted) - 1)
        return np.where(self._sorted[at] == ids, self._order[at], -1)


class _DocTables:
    """Two ``(num_docs,)`` tables for one group at a time: ``counts`` int32 all 0 and ``rows`` int64 all -1 between
    uses."""

    def __init__(self, num_docs: int) -> None:
        self.counts = np.zeros(num_docs, dtype=np.int32)
        self.rows = np.full(num_docs, -1, dtype=np.int64)
        self.rows_set: np.ndarray = _NO_DOCS  # the entries of rows that are not -1


class _Scratch:
    """The retriever's :class:`_DocTables`, kept between calls: a group no longer allocates and zero-fills two
    ``(num_docs,)`` tables (8 MB each at a million documents) of which it touches only its postings' entries.
    A second thread that finds them in use gets tables of its own.
    """

    def __init__(self) -> None:
        self._free: _DocTables | None = None
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple:
        return (_Scratch, ())  # a copy starts without tables (and with a lock of its own)

    def take(self, num_docs: int) -> _DocTables:
        with self._lock:
            tables, self._free = self._free, None
        return tables if tables is not None and len(tables.counts) == num_docs else _DocTables(num_docs)

    def give_back(self, tables: _DocTables) -> None:
        with self._lock:
            self._free = tables


def _groups(token_ids: list[list[int]]) -> list[tuple[np.ndarray, list[int]]]:
    """Query rows grouped so that each row's terms lie in its group's term set (longest queries seed groups;
    one- and two-term queries may widen a group up to ``_MAX_GROUP_TERMS`` terms)."""
    order = sorted(range(len(token_ids)), key=lambda i: -len(set(token_ids[i])))
    groups: list[tuple[set[int], list[int]]] = []
    for i in order:
        terms = set(token_ids[i])
        home = next((g for g in groups if terms <= g[0]), None)
        if home is None and len(terms) <= 2:
            home = next((g for g in groups if len(g[0] | terms) <= _MAX_GROUP_TERMS), None)
        if home is None:
            groups.append((terms, [i]))
        else:
            home[0].update(terms)
            home[1].append(i)
    return [(np.asarray(sorted(t), dtype=np.int64), rows) for t, rows in groups]
