"""The retriever contract: the :class:`Retriever` and :class:`PoolRetriever` protocols and the factory type.

Retrieval semantics every retriever follows: a query retrieves the documents with score > 0, ordered by
descending score with ties broken by ascending document id; with a cutoff ``c`` only the first ``c`` of that
order are retrieved. An empty query, or one made only of unknown words, retrieves nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["PoolRetriever", "Retriever", "RetrieverFactory"]


@runtime_checkable
class Retriever(Protocol):
    """Anything that scores and ranks ``num_docs`` documents for query texts.

    What a retriever returns is checked once per call (:mod:`ospo_gym.retrieval.checks`: shape, dtype, finite
    scores), so a broken user retriever raises one ``ValueError`` saying what it returned instead of silently
    broadcasting or failing deep inside the reward.
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
    """A retriever with a fast path for :func:`~ospo_gym.retrieval.reward.pooled_ndcg` (scores only the judged
    pools)."""

    def pool_frontier(
        self, texts: Sequence[str], pool_ids: np.ndarray, cutoff: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores ``(Q, P)`` of padded pool ids ``(Q, P)`` (-1 = padding) and whether each is retrieved
        ``(Q, P)`` bool, exactly as :func:`~ospo_gym.retrieval.ranking.pool_frontier` computes them from full
        scores."""
        ...


RetrieverFactory = Callable[..., Retriever]
"""A callable ``(docs, **retriever_kwargs) -> Retriever``, accepted wherever a retriever name is."""
