"""Retrieval: the protocol, the retrievers, the pooled NDCG reward, and the one name -> factory table
(:data:`RETRIEVERS`, :func:`make_retriever`) that every retrieval env's ``retriever=`` goes through.

Numpy and scipy only; the dense retriever imports torch when one is built. Modules, each importing only
modules listed above it:

* :mod:`~ospo_gym.retrieval.protocol` — the ``Retriever`` / ``PoolRetriever`` protocols, the retrieval rule;
* :mod:`~ospo_gym.retrieval.checks` — checks of what a retriever returns (one clear ``ValueError``);
* :mod:`~ospo_gym.retrieval.ranking` — the rule on score arrays: k-th largest, top-k list, pool frontier;
* :mod:`~ospo_gym.retrieval.reward` — the pooled NDCG@k reward, :func:`pooled_ndcg`;
* :mod:`~ospo_gym.retrieval.index_cache` — the on-disk cache of built BM25 indexes;
* :mod:`~ospo_gym.retrieval.bm25` — exhaustive BM25, :class:`BM25Retriever` (``"bm25-exhaustive"``);
* :mod:`~ospo_gym.retrieval.pooled_bm25` — pooled BM25, :class:`TopListBM25Retriever` (``"bm25"``);
* :mod:`~ospo_gym.retrieval.dense_cache` — the dense retriever's embedding / HNSW cache;
* :mod:`~ospo_gym.retrieval.pretrained` — pretrained encoders installed as model data (``"minilm"``), hash-checked;
* :mod:`~ospo_gym.retrieval.dense` — dense retrieval, :class:`DenseRetriever` (``"dense"``);
* :mod:`~ospo_gym.retrieval.random_model` — a random sentence-transformers model (offline tests, benchmarks).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from ospo_gym.retrieval.bm25 import DEFAULT_TOKEN_PATTERN, BM25Retriever
from ospo_gym.retrieval.checks import check_frontier, check_ranking, check_scores
from ospo_gym.retrieval.dense import DenseRetriever
from ospo_gym.retrieval.pooled_bm25 import TopListBM25Retriever
from ospo_gym.retrieval.protocol import PoolRetriever, Retriever, RetrieverFactory
from ospo_gym.retrieval.ranking import kth_largest, pool_frontier, rank_from_scores
from ospo_gym.retrieval.reward import pad_pools, pooled_ndcg

__all__ = [
    "DEFAULT_TOKEN_PATTERN",
    "DEPRECATED_RETRIEVERS",
    "RETRIEVERS",
    "BM25Retriever",
    "DenseRetriever",
    "PoolRetriever",
    "Retriever",
    "RetrieverFactory",
    "TopListBM25Retriever",
    "check_frontier",
    "check_ranking",
    "check_retriever",
    "check_scores",
    "kth_largest",
    "make_retriever",
    "pad_pools",
    "pool_frontier",
    "pooled_ndcg",
    "rank_from_scores",
]

RETRIEVERS: dict[str, RetrieverFactory] = {
    "bm25": TopListBM25Retriever,
    "bm25-exhaustive": BM25Retriever,
    "dense": DenseRetriever,
}
"""Retriever names -> factories ``(docs, **kwargs) -> Retriever``. ``"bm25"`` (the default) is pooled BM25: the
exact pooled reward without scoring the whole catalog; ``"bm25-exhaustive"`` scores every document (the same
rewards, slower on large catalogs); ``"dense"`` needs ``ospo-gym[dense]``."""

DEPRECATED_RETRIEVERS: dict[str, str] = {"bm25-full": "bm25-exhaustive"}
"""Old names -> the names that replace them; an old name works for one more version, with a DeprecationWarning."""


def check_retriever(retriever: object) -> None:
    """Raise ``ValueError`` listing :data:`RETRIEVERS` unless ``retriever`` is one of them (or a deprecated
    alias of one) or a callable."""
    if callable(retriever):
        return
    known = isinstance(retriever, str) and (retriever in RETRIEVERS or retriever in DEPRECATED_RETRIEVERS)
    if not known:
        raise ValueError(
            f"unknown retriever {retriever!r}; expected one of {tuple(RETRIEVERS)} or a callable "
            "docs -> Retriever"
        )


def make_retriever(
    retriever: str | RetrieverFactory,
    docs: list[str],
    kwargs: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    *,
    index_cache: str | os.PathLike | None = None,
) -> Retriever:
    """Build the retriever over ``docs``; the one resolver of every retrieval env's ``retriever=`` argument.

    ``retriever`` is a name of :data:`RETRIEVERS` or any callable ``docs -> Retriever``. ``kwargs`` go to the
    constructor; for the BM25 names on top of the env's ``defaults`` (e.g. a locale's stopwords), which the
    other retrievers ignore. ``index_cache``: for the BM25 names, the folder of the on-disk index cache (one
    entry serves both; :mod:`ospo_gym.retrieval.index_cache`), unless ``kwargs`` name their own; ignored by the
    others. A deprecated name (:data:`DEPRECATED_RETRIEVERS`) warns and builds the retriever that replaces it.

    Raises:
        ValueError: an unknown name (the message lists :data:`RETRIEVERS`), or a factory whose retriever's
            ``num_docs`` is not ``len(docs)``.
        TypeError: a factory that returns something without ``num_docs`` / ``rank`` / ``scores``.
    """
    check_retriever(retriever)
    kwargs = dict(kwargs or {})
    defaults = dict(defaults or {})
    if callable(retriever):
        built = retriever(docs, **kwargs)
        if not isinstance(built, Retriever):
            raise TypeError(
                f"the retriever factory returned {type(built).__name__}, which lacks num_docs/rank/scores"
            )
        num_docs = built.num_docs
        # Pools are document positions in ``docs``: a retriever over another catalog would score the wrong
        # ones.
        if isinstance(num_docs, bool) or not isinstance(num_docs, (int, np.integer)) or num_docs != len(docs):
            raise ValueError(
                f"the retriever factory returned a {type(built).__name__} with num_docs={num_docs!r}; "
                f"expected the catalog size {len(docs)} (document i of the retriever is docs[i])"
            )
        return built
    if retriever in DEPRECATED_RETRIEVERS:
        replacement = DEPRECATED_RETRIEVERS[retriever]
        warnings.warn(
            f"retriever={retriever!r} is deprecated and will be removed in the next version; use "
            f"retriever={replacement!r} (the same retriever under a name that says what it does)",
            DeprecationWarning,
            stacklevel=_user_stacklevel(),
        )
        retriever = replacement
    factory = RETRIEVERS[retriever]
    if isinstance(factory, type) and issubclass(factory, BM25Retriever):
        if index_cache is not None:
            defaults["index_cache"] = index_cache
        return factory(docs, **{**defaults, **kwargs})
    return factory(docs, **kwargs)


def _user_stacklevel() -> int:
    """The ``stacklevel`` of the first caller outside ospo-gym and Gymnasium: the code that wrote the deprecated
    name, so that Python's default filters show the warning there (they hide DeprecationWarnings raised for
    library frames)."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").partition(".")[0] in _LIBRARIES:
        frame, level = frame.f_back, level + 1
    return level


_LIBRARIES = ("ospo_gym", "gymnasium")
