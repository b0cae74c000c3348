"""Retrieval environments: the agent's text ranks a product catalog, NDCG over the judged pool is the reward."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ospo_gym.data.synthetic_catalog import CatalogConfig, generate_catalog
from ospo_gym.data.text import catalog_texts
from ospo_gym.envs.base import GenerativeSearchEnv, GenerativeSearchVectorEnv, check_knob
from ospo_gym.joined_texts import JoinedTexts
from ospo_gym.metrics import BINARY_GAINS, ESCI_GAINS, ndcg_at_k
from ospo_gym.retrieval import (
    Retriever,
    RetrieverFactory,
    check_ranking,
    check_retriever,
    make_retriever,
    pooled_ndcg,
)

RELEVANCE = {"graded": ESCI_GAINS, "binary": BINARY_GAINS}
SPLITS = ("train", "test", "all")
MAX_K = 10_000
MAX_CUTOFF = 10**9


@dataclass(frozen=True)
class JudgedQueries:
    """Queries with their judged candidate pools, as indices into a catalog.

    Attributes:
        queries: ``{query_id: raw query text}`` in a fixed order.
        pools: ``{query_id: (P,) int64 document indices}``, the judged products of the query.
        gains: ``{query_id: (P,) float64 gains}`` aligned with ``pools``.
    """

    queries: dict[Hashable, str]
    pools: dict[Hashable, np.ndarray]
    gains: dict[Hashable, np.ndarray]


def judged_queries_from_esci(
    products: pd.DataFrame, examples: pd.DataFrame, *, relevance: str = "graded", split: str = "train"
) -> JudgedQueries:
    """Turn ESCI frames (the published schema) into :class:`JudgedQueries` over ``products``' row order.

    Examples whose product is not in ``products`` are dropped; queries with no judged product are dropped.
    """
    if relevance not in RELEVANCE:
        raise ValueError(f"unknown relevance {relevance!r}; expected one of {sorted(RELEVANCE)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if split != "all":
        examples = examples[examples["split"] == split]
    doc_index = pd.Index(products["product_id"]).get_indexer(examples["product_id"])
    gains = examples["esci_label"].map(RELEVANCE[relevance]).to_numpy(dtype=np.float64)
    known = doc_index >= 0
    frame = pd.DataFrame(
        {"query_id": examples["query_id"].to_numpy()[known], "doc": doc_index[known], "gain": gains[known]}
    )
    queries_text = dict(zip(examples["query_id"], examples["query"], strict=True))
    pools: dict[Hashable, np.ndarray] = {}
    pool_gains: dict[Hashable, np.ndarray] = {}
    for key, rows in frame.groupby("query_id", sort=True).indices.items():
        query_id = key.item() if isinstance(key, np.generic) else key  # plain ids: info is JSON-serialisable
        pools[query_id] = frame["doc"].to_numpy()[rows].astype(np.int64)
        pool_gains[query_id] = frame["gain"].to_numpy()[rows]
    return JudgedQueries({q: queries_text[q] for q in pools}, pools, pool_gains)


class RetrievalEnv(GenerativeSearchEnv):
    """Shared machinery of the retrieval envs (synthetic, ESCI, H&M): prompts, pools, retriever and reward.

    ``pool="judged"`` is the paper's pooled protocol: the retrieval text ranks the whole catalog (top
    ``cutoff``), the ranking is filtered to the query's judged pool and NDCG@k is computed over what remains,
    the ideal being the pool's own gains. ``pool=None`` is plain NDCG@k over the whole catalog (unjudged = 0).
    """

    POOLS = ("judged", None)
    noise_kinds = ("gaussian", "label_flip", "score")

    def __init__(
        self,
        judged: JudgedQueries,
        retriever: Retriever,
        *,
        prompt_template: str = "query: {query}",
        k: int = 10,
        cutoff: int | None = 1000,
        pool: str | None = "judged",
        **base_kwargs: Any,
    ) -> None:
        if pool not in self.POOLS:
            raise ValueError(f"unknown pool {pool!r}; expected one of {self.POOLS}")
        check_knob("k", k, 1, MAX_K, "NDCG@k ranks k documents of every text in memory")
        if cutoff is not None:
            check_knob("cutoff", cutoff, 1, MAX_CUTOFF, "None retrieves the whole catalog")
        if "{query}" not in prompt_template:
            raise ValueError("prompt_template must contain '{query}' where the shopper's query goes")
        if not judged.queries:
            raise ValueError("no judged queries: check the split and the data (every query needs a judged product)")
        super().__init__(**base_kwargs)
        self.judged = judged
        self.retriever = retriever
        self.k, self.cutoff, self.pool = k, cutoff, pool
        for query_id, query in judged.queries.items():
            self._prompts[query_id] = prompt_template.format(query=query)
        # BM25 scores coalition texts from their pieces' term counts (exact: its tokens never span a space), where
        # the oracle's texts reach this class's own score_texts unchanged (no noise, no override, pooled reward)
        self.oracle.joined_texts = (
            self.reward_noise is None
            and pool == "judged"
            and type(self).score_texts is RetrievalEnv.score_texts
            and type(self).score_with is RetrievalEnv.score_with
            and getattr(retriever, "scores_joined_texts", False)
        )

    def score_texts(self, prompt_ids: Sequence[Hashable], texts: Sequence[str]) -> np.ndarray:
        return self.score_with(prompt_ids, texts)

    def score_with(
        self,
        prompt_ids: Sequence[Hashable],
        texts: Sequence[str],
        *,
        gains: Mapping[Hashable, np.ndarray] | None = None,
        perturb: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    ) -> np.ndarray:
        """:meth:`score_texts` with the judged gains of some prompts replaced (``gains``: ``{prompt_id: (P,)}``) and
        the retrieved pool scores passed through ``perturb`` (see :func:`~ospo_gym.retrieval.pooled_ndcg`; needs
        ``pool="judged"``): the hooks of the label-flip and score noise of :mod:`ospo_gym.wrappers`, shape (N,)."""
        if perturb is not None and self.pool != "judged":
            raise ValueError("score noise acts on the pooled ranking and needs pool='judged'; use label_flip or gaussian")
        judged_gains = self.judged.gains if gains is None else {**self.judged.gains, **gains}
        if self.pool == "judged":
            piecewise = isinstance(texts, JoinedTexts) and getattr(self.retriever, "scores_joined_texts", False)
            texts = texts if piecewise else list(texts)  # pieces stay pieces for a retriever that scores them
            number = {p: i for i, p in enumerate(dict.fromkeys(prompt_ids))}  # each prompt's pool once
            pool_of = np.fromiter(map(number.__getitem__, prompt_ids), dtype=np.int64, count=len(prompt_ids))
            pools = [self.judged.pools[p] for p in number]
            gains = [judged_gains[p] for p in number]
            if perturb is None:
                return pooled_ndcg(self.retriever, texts, pools, gains, k=self.k, cutoff=self.cutoff, pool_of=pool_of)
            return pooled_ndcg(
                self.retriever, texts, pools, gains, k=self.k, cutoff=self.cutoff, perturb=perturb, pool_of=pool_of
            )
        pools = [self.judged.pools[p] for p in prompt_ids]
        gains = [judged_gains[p] for p in prompt_ids]
        texts = list(texts)
        ids, _ = check_ranking(
            self.retriever.rank(texts, self.k), len(texts), self.k, self.retriever.num_docs, self.retriever
        )
        ranked = np.zeros(ids.shape)
        ideal = np.zeros((len(texts), max((len(g) for g in gains), default=0)))
        for row, (pool_ids, pool_gains) in enumerate(zip(pools, gains, strict=True)):
            lookup = dict(zip(pool_ids.tolist(), pool_gains.tolist(), strict=True))
            ranked[row] = [lookup.get(int(d), 0.0) for d in ids[row]]
            ideal[row, : len(pool_gains)] = np.sort(pool_gains)[::-1]
        return ndcg_at_k(ranked, ideal, self.k)


class SyntheticRetrievalEnv(RetrievalEnv):
    """Query rewriting over a generated product catalog in the Amazon ESCI schema, with BM25 (or another) retrieval.

    ## Description
    A catalog of ``num_products`` products (type, brand, colour, material; titles with noise) and
    ``num_queries`` shopper queries with E/S/C/I judgements derived from the attributes is generated from
    ``seed`` (:mod:`ospo_gym.data.synthetic_catalog`, the real ESCI columns). The agent rewrites the shopper's
    query; BM25 (``bm25s``) over title + description ranks the catalog with it (``retriever=`` picks another
    retriever, e.g. to train on one and evaluate on another).

    ## Action Space
    ``UnicodeText``. The retrieval text is ``<answer>…</answer>`` if present, else the text without
    ``<think>…</think>``.

    ## Observation Space
    ``UnicodeText``: ``prompt_template`` filled with the query, by default ``"query: <shopper's query>"``.

    ## Rewards
    NDCG@``k`` of the pooled protocol (see :class:`RetrievalEnv`) with ESCI's graded gains E=1, S=0.1, C=0.01,
    I=0 (``relevance="graded"``) or Exact only (``"binary"``); in [0, 1]; the empty text retrieves nothing and
    scores 0. Words are the default players (queries are short), so exact Shapley values by enumeration
    (:meth:`ground_truth_credit`) are cheap.

    ## Starting State
    A query of ``split`` drawn uniformly, or ``reset(options={"prompt_id": query_id})``.

    ## Episode End
    After one step (terminated).

    ## Arguments
    * ``num_products=2000``, ``num_queries=200``, ``attributes_per_query=2`` (relevant attributes per query),
      ``title_noise=0.1``, ``pool_size=40``, ``seed=0``: the generated catalog (:class:`CatalogConfig`, which
      bounds every size: at most 10**7 products, 10**6 queries, pools of 10**5, 10**7 judged examples).
    * ``split="train"`` (or ``"test"``, ``"all"``), ``relevance="graded"``, ``k=10`` (at most 10,000),
      ``cutoff=1000`` (at most 10**9, or None), ``pool="judged"`` (or ``None``), ``prompt_template``.
    * ``retriever="bm25"`` (or ``"bm25-exhaustive"``, ``"dense"``, a callable ``docs -> Retriever``) and
      ``retriever_kwargs`` (e.g. ``{"k1": 0.9, "b": 0.4}``; for ``"dense"`` ``{"model": <name or local dir>}``),
      resolved by :func:`~ospo_gym.retrieval.make_retriever` as in ``ospo/ESCI-v0`` and ``ospo/HM-v0``.
      ``"bm25"`` and ``"bm25-exhaustive"`` give the same rewards for the same arguments (they differ in speed on
      large catalogs; ``"bm25-full"``, the old name of ``"bm25-exhaustive"``, still works with a warning).
    * ``segmentation="word"`` and the base-class arguments.

    ## Version History
    * v0: initial version; ``retriever=`` / ``retriever_kwargs=`` added later (the default, BM25 with k1=1.5,
      b=0.75 and English stopwords, and its rewards are unchanged).

    >>> import gymnasium as gym, ospo_gym
    >>> env = gym.make("ospo/SyntheticRetrieval-v0", num_products=300, num_queries=10)
    >>> obs, info = env.reset(seed=0)
    >>> obs.startswith("query: ")
    True
    >>> query = obs.removeprefix("query: ")
    >>> bool(env.step(query)[1] > env.unwrapped.rewards([info["prompt_id"]], ["zzz"])[0])
    True
    """

    default_segmentation = "word"

    def __init__(
        self,
        num_products: int = 2000,
        num_queries: int = 200,
        attributes_per_query: int = 2,
        title_noise: float = 0.1,
        pool_size: int = 40,
        seed: int = 0,
        split: str = "train",
        relevance: str = "graded",
        retriever: str | RetrieverFactory = "bm25",
        retriever_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        check_retriever(retriever)  # before the catalog is generated
        self.catalog_config = CatalogConfig(
            num_products=num_products,
            num_queries=num_queries,
            attributes_per_query=attributes_per_query,
            title_noise=title_noise,
            pool_size=pool_size,
            seed=seed,
            test_fraction=0.2 if num_queries >= 5 else 0.0,
        )
        products, examples = generate_catalog(self.catalog_config)
        judged = judged_queries_from_esci(products, examples, relevance=relevance, split=split)
        built = make_retriever(retriever, catalog_texts(products), retriever_kwargs)
        super().__init__(judged, built, **kwargs)
        words = " ".join([*judged.queries.values(), *products["product_title"].astype(str)]).lower().split()
        self.vocabulary: tuple[str, ...] = tuple(sorted(set(words)))


class SyntheticRetrievalVectorEnv(GenerativeSearchVectorEnv):
    """Native vector version of :class:`SyntheticRetrievalEnv` (one batched retriever call per step; the same
    arguments, ``retriever=`` included)."""

    env_class = SyntheticRetrievalEnv
