"""Exhaustive BM25: :class:`BM25Retriever` scores every document of the catalog for a batch of query texts.

The index is built by the real ``bm25s`` package (or loaded from :mod:`ospo_gym.retrieval.index_cache`) and
scored through bm25s's own precomputed score matrix, read as a ``scipy.sparse`` matrix: a batch of queries is
a (query x term) count matrix times that (term x document) matrix, so the scores equal
``bm25s.BM25.get_scores`` (every occurrence of a repeated query term counts, unknown terms are ignored)
without a Python loop over queries. Frequent terms' rows are kept dense, which makes their part of the product
a vectorised sparse-times-dense one. Ranking follows :mod:`ospo_gym.retrieval.protocol`'s rule through
:mod:`ospo_gym.retrieval.ranking`.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
import time
import unicodedata
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp

from ospo_gym.joined_texts import JoinedTexts
from ospo_gym.retrieval.checks import check_texts
from ospo_gym.retrieval.index_cache import BM25IndexCache, index_key
from ospo_gym.retrieval.ranking import kth_largest, kth_largest_weighted, pool_frontier, rank_from_scores
from ospo_gym.runs import run_positions

__all__ = ["DEFAULT_TOKEN_PATTERN", "BM25Retriever"]

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
# Distinct space-separated chunks whose token ids are remembered (cleared when full).
_CHUNK_MEMO_SIZE = 1 << 17
# The grouped frontier (BM25Retriever._grouped_frontier) groups queries whose terms together number at most this
# many (a completion's coalitions use its ~16 words), and is used from _GROUP_MIN_DOCS documents on (below, its
# per-group work costs more than scoring every document: measured 0.46x at 2,000 documents, 1.0x at 5,000, 1.2-1.8x
# at 10,000) while a group's (terms x documents) weight table stays under _GROUP_CELLS cells.
_GROUP_TERMS = 24
_GROUP_MIN_DOCS = 8_000
_GROUP_CELLS = 1 << 22
# The grouped frontier's groups go to the scoring threads only when a group's weight table has this many cells:
# below, the Python around each group's numpy calls holds the GIL for longer than the calls release it (measured on
# 2 cores, one thread against two, alternated: 1.04-1.10x faster inline at 10,000 documents, even at 40,000).
_THREAD_GROUP_CELLS = 1 << 19
# Odd 64-bit multipliers of the document signature hash (fixed: the grouping never depends on a random draw).
_SIGNATURE_MULTIPLIERS = np.random.default_rng(17).integers(1, 1 << 62, size=_GROUP_TERMS, dtype=np.uint64) * 2 + 1


# glibc's malloc serves blocks above its mmap threshold (128 KiB at start) with a fresh mmap, whose pages all fault
# on first touch, and raises the threshold to the size of any such block that is freed (up to 32 MiB). Building an
# index frees many large blocks, so a process that built its index allocates its scoring temporaries (MBs per
# call at 10^6 documents) from already-mapped heap; one that loaded the index from the cache did not, and paid
# 17,000-30,000 page faults per oracle batch (benchmarks/RESULTS.md, "Real-data scale"). Freeing one block of
# this size, untouched (no page is faulted), puts a loading process in the building process's state. A threshold
# the user fixed (mallopt, GLIBC_TUNABLES) is left alone by glibc; other allocators just allocate and free it.
_ALLOCATOR_WARM_BYTES = 31 << 20
_allocator_warmed = False


def _warm_allocator() -> None:
    """Raise glibc's dynamic mmap threshold as an index build does (once per process; see the comment above)."""
    global _allocator_warmed
    if not _allocator_warmed:
        _allocator_warmed = True
        block = np.empty(_ALLOCATOR_WARM_BYTES, dtype=np.uint8)
        del block


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
            (:class:`~ospo_gym.retrieval.index_cache.BM25IndexCache`: plain arrays + JSON, keyed by the texts and
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

        check_texts(docs)
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
        _warm_allocator()
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
        self._df = np.diff(doc_term.indptr).astype(np.int64)  # each term's document frequency
        # BM25L / BM25+ add a per-term constant to every document (non-occurrence score).
        nonocc = getattr(self.bm25, "nonoccurrence_array", None)
        self._nonoccurrence = None if nonocc is None else np.asarray(nonocc, dtype=np.float32)
        self._n_threads = max(1, min(8, os.cpu_count() or 1)) if n_threads is None else max(1, int(n_threads))
        self._executor: ThreadPoolExecutor | None = None
        self._chunk_ids: dict[str, list[int]] = {}

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

    @property
    def scores_joined_texts(self) -> bool:
        """Whether a :class:`~ospo_gym.joined_texts.JoinedTexts` is scored from its pieces' term counts, without
        joining or tokenising its texts (not with a stemmer, whose bm25s tokenizer keeps its own tables)."""
        return self._tokenizer.stemmer is None

    # ---- tokenisation --------------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Index term ids of each text, in text order, repeats kept and unknown words dropped.

        The same ids as ``bm25s``'s tokenizer (``update_vocab=False``), computed once per distinct space-separated
        chunk of the texts: coalition texts are the same words in many combinations, and a token never spans an
        ASCII space (lower-casing, NFKC and the token pattern give the same tokens for ``a + " " + b`` as for ``a``
        and ``b``; ``tests/core/test_bm25_tokenize.py`` checks it on adversarial Unicode). With a stemmer bm25s
        also records each new word in its tables, so that case keeps bm25s's own loop.
        """
        check_texts(texts)
        if self._tokenizer.stemmer is not None:
            return self._tokenizer.tokenize(
                list(texts), update_vocab=False, return_as="ids", show_progress=False, allow_empty=False
            )
        if isinstance(texts, JoinedTexts):  # a text's tokens are its pieces' tokens, piece after piece
            of_piece = self.tokenize(texts.pieces)
            return [list(itertools.chain.from_iterable(map(of_piece.__getitem__, row))) for row in texts.rows()]
        memo = self._chunk_ids
        if len(memo) > _CHUNK_MEMO_SIZE:
            memo.clear()
        known = memo.get
        split = [text.split(" ") for text in texts]
        parts = [list(map(known, chunks)) for chunks in split]  # C-level loops: the memo answers most chunks
        missing = [c for chunks, got in zip(split, parts, strict=True) if None in got for c, g in zip(chunks, got, strict=True) if g is None]
        if missing:  # every new chunk of the batch in one bm25s call (one call per chunk costs ten times more)
            missing = list(dict.fromkeys(missing))
            memo.update(zip(missing, self._tokenizer.tokenize(
                missing, update_vocab=False, return_as="ids", show_progress=False, allow_empty=False
            ), strict=True))  # fmt: skip
            parts = [list(map(memo.__getitem__, chunks)) if None in got else got for chunks, got in zip(split, parts, strict=True)]
        return [list(itertools.chain.from_iterable(got)) for got in parts]

    def _query_matrix(self, texts: Sequence[str]) -> sp.csr_matrix:
        """``(Q, vocab)`` float32 CSR of query term counts (a term repeated n times weighs n, as in bm25s), columns
        sorted within each row (what ``sum_duplicates`` of the COO form gives, built without scipy's checks).

        :class:`~ospo_gym.joined_texts.JoinedTexts` (without a stemmer): each text's terms gathered from its pieces'
        (each distinct piece tokenised once); the same matrix, since a text's tokens are its pieces' tokens (see
        :meth:`tokenize`)."""
        if isinstance(texts, JoinedTexts) and self.scores_joined_texts:
            check_texts(texts)
            of_piece = self.tokenize(texts.pieces)
            piece_lengths = np.fromiter(map(len, of_piece), dtype=np.int64, count=len(of_piece))
            piece_terms = np.fromiter(itertools.chain.from_iterable(of_piece), dtype=np.int64, count=int(piece_lengths.sum()))
            # every piece occurrence of every text expanded into the piece's terms, text by text
            lengths = piece_lengths[texts.indices]
            at = run_positions((np.cumsum(piece_lengths) - piece_lengths)[texts.indices], lengths)
            owner = np.repeat(np.repeat(np.arange(len(texts)), np.diff(texts.indptr)), lengths)
            return self._counts_matrix(owner, piece_terms[at], len(texts))
        ids = self.tokenize(texts)
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        cols = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
        return self._counts_matrix(np.repeat(np.arange(len(ids), dtype=np.int64), lengths), cols, len(ids))

    def _counts_matrix(self, rows: np.ndarray, cols: np.ndarray, n_rows: int) -> sp.csr_matrix:
        """:meth:`_query_matrix` from each token's text (``rows``, non-decreasing) and term id (``cols``)."""
        cells, counts = np.unique(rows * self.vocab_size + cols, return_counts=True)
        indptr = np.zeros(n_rows + 1, dtype=np.int32)
        np.cumsum(np.bincount(cells // self.vocab_size, minlength=n_rows), out=indptr[1:])
        return sp.csr_matrix(
            (counts.astype(np.float32), (cells % self.vocab_size).astype(np.int32), indptr),
            shape=(n_rows, self.vocab_size),
        )

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
        check_texts(texts)
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

        Without an effective cutoff only the pools are scored (row gather). With one, a query that cannot have
        ``cutoff`` positive scores (its terms' document frequencies sum to less) has its pools scored alone, by the
        same products in the same order as full scoring; every other block of queries is scored in full once, and
        both the cutoff threshold and the pool scores come from that same array, so the comparisons are exact.
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

        if self._nonoccurrence is None:
            # A query whose terms' document frequencies sum to less than `cutoff` has fewer positive scores than
            # that (no term adds a constant under lucene / robertson / atire): it retrieves every pool document with
            # a positive score, and only its pools need scoring.
            owner = np.repeat(np.arange(n_q), np.diff(queries.indptr))
            reach = np.bincount(owner, weights=self._df[queries.indices], minlength=n_q)
            easy = reach < cutoff
            if easy.any():
                pool_scores = np.zeros((n_q, width), dtype=np.float32)
                retrieved = np.zeros((n_q, width), dtype=bool)
                easy_ids = pool_ids[easy]
                easy_scores = self._pool_scores(queries, easy_ids, rows=np.flatnonzero(easy))
                pool_scores[easy] = easy_scores
                retrieved[easy] = (easy_ids >= 0) & (easy_scores > 0)
                if not easy.all():
                    busy = ~easy
                    pool_scores[busy], retrieved[busy] = self._scored_frontier(queries[busy], pool_ids[busy], cutoff)
                return pool_scores, retrieved
        return self._scored_frontier(queries, pool_ids, cutoff)

    def _scored_frontier(
        self, queries: sp.csr_matrix, pool_ids: np.ndarray, cutoff: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`pool_frontier` with a cutoff by scoring every document, block by block (threshold and pool scores
        from the same array, so the comparisons are exact), or the same arrays by :meth:`_grouped_frontier`."""
        if self._nonoccurrence is None and _GROUP_MIN_DOCS <= self.num_docs <= _GROUP_CELLS // _GROUP_TERMS:
            return self._grouped_frontier(queries, pool_ids, cutoff)

        def block(s: slice) -> tuple[np.ndarray, np.ndarray]:
            return pool_frontier(self._dense_scores(queries[s]), pool_ids[s], cutoff)

        parts = self._map_blocks(queries.shape[0], block)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _grouped_frontier(
        self, queries: sp.csr_matrix, pool_ids: np.ndarray, cutoff: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_scored_frontier` without a ``(Q, num_docs)`` score array: the same two arrays, bit for bit.

        Queries are grouped by their terms (:func:`_term_groups`: a completion's coalition texts are subsets of its
        words). Documents with the same weights for every term of a group score alike for every query of it, to the
        last bit (the same products added in the same order; an absent term adds nothing), so each such *signature*
        is scored once, through its lowest-id document, and the threshold is the ``cutoff``-th largest over
        signatures counted with their documents (:func:`~ospo_gym.retrieval.ranking.kth_largest_weighted`, one call
        for all groups). A document with none of the group's terms scores exactly 0 (no non-occurrence term here).
        Ties at the threshold take the ascending-id rule of :func:`~ospo_gym.retrieval.ranking.pool_frontier`.
        """
        n_q = queries.shape[0]
        groups = _term_groups(queries, _GROUP_TERMS)
        pool_scores = np.zeros(pool_ids.shape, dtype=np.float32)
        retrieved = np.zeros(pool_ids.shape, dtype=bool)
        for rows, terms in groups:
            if len(terms) > _GROUP_TERMS:  # one long query: its full scores
                sub = queries[rows]
                pool_scores[rows], retrieved[rows] = pool_frontier(self._dense_scores(sub), pool_ids[rows], cutoff)
        groups = [g for g in groups if len(g[1]) <= _GROUP_TERMS]
        if not groups:
            return pool_scores, retrieved

        def scored(group: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            rows, terms = group
            signature_of, members, starts = self._signatures(terms)
            values = self._scores_at(queries, members[starts[:-1]], rows if len(rows) < n_q else None)
            return signature_of, members, starts, values  # values (R_g, G_g): each signature's score

        widest = max(len(terms) for _, terms in groups)
        if len(groups) > 1 and self._n_threads > 1 and widest * self.num_docs >= _THREAD_GROUP_CELLS:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self._n_threads, thread_name_prefix="bm25")
            parts = list(self._executor.map(scored, groups))  # numpy's sorts and products release the GIL
        else:
            parts = [scored(g) for g in groups]
        # Every group's rows in one (rows, signatures) table, padded with count-0 columns, for one selection.
        rows_all = np.concatenate([g[0] for g in groups])
        width = max(1, *(p[3].shape[1] for p in parts))  # >= 1: a pool document gathers from column 0
        values = np.zeros((len(rows_all), width), dtype=np.float32)
        counts = np.zeros((len(rows_all), width), dtype=np.int32)  # documents per signature (< num_docs)
        pools = pool_ids[rows_all]
        valid = pools >= 0
        sig = np.empty(pools.shape, dtype=np.int64)  # each pool document's signature (-1: none of the terms)
        at = 0
        for (rows, _), (signature_of, _, starts, v) in zip(groups, parts, strict=True):
            block = slice(at, at + len(rows))
            values[block, : v.shape[1]] = v
            counts[block, : v.shape[1]] = np.diff(starts)
            sig[block] = signature_of[np.where(valid[block], pools[block], 0)]
            at += len(rows)
        thr = kth_largest_weighted(values, counts, cutoff)
        sig[~valid] = -1
        ps = np.where(sig >= 0, values[np.arange(len(rows_all))[:, None], np.maximum(sig, 0)], np.float32(0))
        hit = valid & (ps > 0)
        thr_p = thr[:, None]
        on_edge = hit & (ps == thr_p)
        tie_rows = np.flatnonzero(on_edge.any(axis=1) & (thr > 0))
        last_id = np.full(len(rows_all), np.iinfo(np.int64).max, dtype=np.int64)
        if len(tie_rows):
            # As ranking._tie_last_ids: of the documents at the threshold, by ascending id, the last that still makes
            # the top `cutoff` (the slots-th); only documents with a group term can score the positive threshold.
            at_thr, t = values[tie_rows], thr[tie_rows, None]
            slots = cutoff - np.einsum("ij,ij->i", at_thr > t, counts[tie_rows], dtype=np.int64)
            r, g = np.nonzero(at_thr == t)  # each row's tied signatures (never padding: t > 0), holding the tied docs
            # signatures and member lists of all groups end to end
            group_of = np.repeat(np.arange(len(groups)), [len(rows) for rows, _ in groups])[tie_rows[r]]
            first_sig = np.cumsum([0] + [len(p[2]) - 1 for p in parts])[group_of] + g
            starts = np.concatenate([p[2][:-1] + base for p, base in zip(parts, np.cumsum([0] + [len(p[1]) for p in parts]), strict=False)])
            members = np.concatenate([p[1] for p in parts])
            per_pair = counts[tie_rows[r], g].astype(np.int64)
            owner = np.repeat(r, per_pair)
            tied = members[run_positions(starts[first_sig], per_pair)]
            # each tie row's tied ids in ascending order: one sort of (row, id) keys (owner is non-decreasing already)
            ordered = np.sort(owner * self.num_docs + tied) - owner * self.num_docs
            begin = np.searchsorted(owner, np.arange(len(tie_rows)))
            last_id[tie_rows] = ordered[begin + slots - 1]
        hit &= (ps > thr_p) | (on_edge & (pools <= last_id[:, None]))
        pool_scores[rows_all], retrieved[rows_all] = ps, hit
        return pool_scores, retrieved

    def _signatures(self, terms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The documents' distinct weight vectors over ``terms`` (of the documents with at least one of them).

        Returns:
            ``signature_of`` ``(num_docs,)`` each document's signature (-1: none of the terms), ``members``
            ``(D,)`` those documents by signature and ascending id within one, and ``starts`` ``(G + 1,)`` where
            each signature's documents begin in ``members`` (so ``members[starts[:-1]]`` is each one's lowest id).
        """
        weights = np.zeros((len(terms), self.num_docs), dtype=np.float32)  # (T, num_docs)
        dense = self._term_is_dense[terms]
        if dense.any():
            weights[dense] = self._dense_postings[self._term_slot[terms[dense]]]
        if not dense.all():
            weights[~dense] = self._sparse_postings[self._term_slot[terms[~dense]]].toarray()
        present = np.flatnonzero((weights > 0).any(axis=0))  # weights are >= 0 (no non-occurrence term here)
        cols = weights[:, present]
        # A hash of each column's bits groups the columns; a check of every column against its group's first
        # makes the grouping exact (on a collision, an exact row-wise unique instead). The hash's top bits and the
        # column's position below them make one sort key: a signature's columns come out together, in id order.
        key = np.zeros(len(present), dtype=np.uint64)
        for t, row in enumerate(cols.view(np.uint32)):
            key += _SIGNATURE_MULTIPLIERS[t] * row.astype(np.uint64)
        low = max(int(len(present)).bit_length(), 1)
        key = np.sort((key >> np.uint64(low) << np.uint64(low)) | np.arange(len(present), dtype=np.uint64))
        order = (key & np.uint64((1 << low) - 1)).astype(np.int64)
        new = np.empty(len(order), dtype=bool)
        new[:1] = True
        np.not_equal(key[1:] >> np.uint64(low), key[:-1] >> np.uint64(low), out=new[1:])
        sig_sorted = np.cumsum(new) - 1
        heads = np.flatnonzero(new)
        first = np.empty(len(order), dtype=np.int64)  # each column's group's first column
        first[order] = order[heads[sig_sorted]]
        if not np.array_equal(cols, cols[:, first]):
            _, inverse = np.unique(cols.T, axis=0, return_inverse=True)
            order = np.argsort(inverse.ravel(), kind="stable")
            sig_sorted = inverse.ravel()[order]
            heads = np.flatnonzero(np.diff(sig_sorted, prepend=-1))
        signature_of = np.full(self.num_docs, -1, dtype=np.int64)
        signature_of[present[order]] = sig_sorted
        return signature_of, present[order], np.append(heads, len(order))

    def _scores_at(self, queries: sp.csr_matrix, docs: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """``(Q, len(docs))`` float32 scores of the documents ``docs`` (distinct ids), the very numbers of
        :meth:`_dense_scores`: the same products added in the same order, on those documents' columns only.
        ``rows``: only those query rows (ascending ids), as for ``queries[rows]``, without slicing the matrix."""
        indptr = queries.indptr
        if rows is None:
            lengths = np.diff(indptr)
            data, terms = queries.data, queries.indices
        else:
            lengths = indptr[rows + 1] - indptr[rows]
            take = run_positions(indptr[rows], lengths)
            data, terms = queries.data[take], queries.indices[take]
        owner = np.repeat(np.arange(len(lengths)), lengths)
        is_dense = self._term_is_dense[terms]
        # the dense rows the queries use, renumbered in their (ascending) order, each row's entries kept in their
        # order: each score's products are then added in the order of the product against all dense rows
        used, column = np.unique(self._term_slot[terms[is_dense]], return_inverse=True)
        hi_used = _csr_rows(data[is_dense], column.ravel(), owner[is_dense], len(lengths), len(used))
        out = np.asarray(hi_used @ self._dense_postings[np.ix_(used, docs)], dtype=np.float32)
        if not is_dense.all():
            rare = ~is_dense
            lo = _csr_rows(data[rare], self._term_slot[terms[rare]], owner[rare], len(lengths), self._sparse_postings.shape[0])
            extra = (lo @ self._sparse_postings[:, docs]).tocoo()
            out[extra.row, extra.col] += extra.data
        return out

    def _pool_scores(self, queries: sp.csr_matrix, pool_ids: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """``(Q, P)`` float32 scores of the padded ``pool_ids`` (0 at padding), the very numbers of
        :meth:`_dense_scores` (through :meth:`_scores_at`); ``rows``: the query rows the pools belong to (all)."""
        valid = pool_ids >= 0
        # the pools' distinct documents in ascending order and each one's column, by marking (a batch repeats a
        # few prompts' pools many times, so this beats sorting all of its entries)
        mark = np.zeros(self.num_docs, dtype=bool)
        mark[pool_ids[valid]] = True
        docs = np.flatnonzero(mark)
        if len(docs) == 0:
            return np.zeros(pool_ids.shape, dtype=np.float32)
        out = self._scores_at(queries, docs, rows)
        column = np.cumsum(mark) - 1
        # each entry's place in the flattened (Q, len(docs)) scores: one 1-D take instead of a 2-D fancy index
        at = column[np.where(valid, pool_ids, docs[0])] + (np.arange(len(pool_ids)) * len(docs))[:, None]
        return np.where(valid, np.take(out.ravel(), at), np.float32(0))

    def __getstate__(self) -> dict:
        # Threads and the C stemmer do not pickle; both are rebuilt on load.
        state = self.__dict__.copy()
        state["_executor"] = None
        state["_chunk_ids"] = {}
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
        # Worker threads would otherwise outlive a discarded retriever until interpreter exit. No contextlib
        # here: at interpreter exit module globals may already be None, and only builtins are safe.
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


def _term_groups(queries: sp.csr_matrix, max_terms: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Query rows grouped so that each row's terms lie in its group's term set, as (rows, sorted term ids).

    Rows are visited by decreasing number of terms (ties in row order). A row goes to the first group, in order of
    creation, whose terms hold its own; a row in no group seeds a new one, unless it has one or two terms and some
    group stays within ``max_terms`` terms with them, which it then widens. The rows with the most terms seed the
    groups (a completion's whole text, whose coalitions are all subsets of it). Every row is in exactly one group
    (a row with more than ``max_terms`` terms alone).

    Vectorised: until the first row of one or two terms, no group widens, so each new group claims at once every
    later row within its terms; from there, rows go to the first group that holds them, one containment test for
    all of them, until a row has to widen a group (then the test is redone for the rows after it).
    """
    n_q = queries.shape[0]
    local, inverse = np.unique(queries.indices, return_inverse=True)  # term ids renumbered 0..L-1
    member = np.zeros((n_q, len(local)), dtype=bool)
    member[np.repeat(np.arange(n_q), np.diff(queries.indptr)), inverse.ravel()] = True
    sizes = np.count_nonzero(member, axis=1)
    order = np.argsort(-sizes, kind="stable")
    weights = member.astype(np.float32)  # outside-term counts by one product (exact: at most L ones per row)
    group_of = np.full(n_q, -1, dtype=np.int64)
    masks: list[np.ndarray] = []
    long_rows = order[sizes[order] > 2]
    while True:
        left = long_rows[group_of[long_rows] < 0]
        if len(left) == 0:
            break
        seed = member[left[0]].copy()
        outside = weights[left] @ (~seed).astype(np.float32)
        group_of[left[outside == 0]] = len(masks)
        masks.append(seed)
    pending = order[sizes[order] <= 2]
    while len(pending):
        if masks:
            outside = weights[pending] @ (~np.stack(masks)).T.astype(np.float32)  # (rows, groups)
            held = outside == 0
            first = np.where(held.any(axis=1), np.argmax(held, axis=1), -1)
        else:
            first = np.full(len(pending), -1)
        stuck = np.flatnonzero(first < 0)
        upto = stuck[0] if len(stuck) else len(pending)
        group_of[pending[:upto]] = first[:upto]
        if not len(stuck):
            break
        row = pending[upto]
        fits = [g for g, m in enumerate(masks) if np.count_nonzero(m | member[row]) <= max_terms]
        if fits:
            masks[fits[0]] = masks[fits[0]] | member[row]
            group_of[row] = fits[0]
        else:
            group_of[row] = len(masks)
            masks.append(member[row].copy())
        pending = pending[upto + 1 :]
    by_group = np.argsort(group_of, kind="stable")  # rows ascending within each group
    bounds = np.searchsorted(group_of[by_group], np.arange(len(masks) + 1))
    return [
        (by_group[bounds[g] : bounds[g + 1]].astype(np.int64), local[np.flatnonzero(masks[g])].astype(np.int64))
        for g in range(len(masks))
    ]


def _csr_rows(data: np.ndarray, columns: np.ndarray, owner: np.ndarray, n_rows: int, width: int) -> sp.csr_matrix:
    """``(n_rows, width)`` CSR of the entries ``(owner[e], columns[e]) = data[e]``, ``owner`` non-decreasing; each
    row's entries in the order given."""
    indptr = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=n_rows))])
    return sp.csr_matrix((data, columns, indptr), shape=(n_rows, width))


def _select_columns(mat: sp.csr_matrix, keep: np.ndarray, slot: np.ndarray, width: int) -> sp.csr_matrix:
    """The entries of ``mat`` flagged by ``keep`` (aligned with ``mat.data``), columns renumbered by ``slot``."""
    rows = np.repeat(np.arange(mat.shape[0]), np.diff(mat.indptr))[keep]
    return _csr_rows(mat.data[keep], slot[mat.indices[keep]], rows, mat.shape[0], width)


class _NormalisingSplitter:
    """Tokenizer splitter: NFKC-normalise (full-width and compatibility forms), lower-case, ``findall``.

    A class rather than a closure so that a retriever can be pickled (e.g. into vector-env workers).
    """

    def __init__(self, pattern: str) -> None:
        self.pattern = re.compile(pattern)

    def __call__(self, text: str) -> list[str]:
        # NFKC can change case (e.g. full-width capitals become ASCII capitals), hence lower() after it.
        return self.pattern.findall(unicodedata.normalize("NFKC", text).lower())
