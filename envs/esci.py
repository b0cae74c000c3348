"""Query rewriting on Amazon Shopping Queries (ESCI): the real catalog, the real judgements."""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from ospo_gym.data.esci import EsciData, load_esci
from ospo_gym.data.esci_schema import LABELS
from ospo_gym.data.paths import processed_cache_dir
from ospo_gym.envs.base import GenerativeSearchVectorEnv
from ospo_gym.envs.retrieval import RELEVANCE, JudgedQueries, RetrievalEnv
from ospo_gym.knobs import check_knob
from ospo_gym.retrieval import RETRIEVERS, Retriever, make_retriever

__all__ = ["ESCI_PROMPT", "RETRIEVERS", "EsciEnv", "EsciVectorEnv", "make_retriever"]  # the last two re-exported

MAX_QUERIES = 10**7
"""Upper bound of ``max_queries`` (ESCI has 130,652 queries in all locales)."""
ESCI_PROMPT = (
    "You are a product search assistant. A shopper typed the query below into an online store's search box.\n"
    "First analyse briefly, inside <think></think>, what the shopper wants: the product category, and the "
    "attributes that tell the right products from similar ones (brand, type, material, size, colour, "
    "intended use).\n"
    "Then write an enriched search query inside <answer></answer>: keep every term of the original query and "
    "add the category and those attributes. Only the answer is searched.\n\n"
    "Query: {query}"
)

# BM25 defaults per locale: the stopword list, and for Japanese (no spaces between words) overlapping character
# bigrams of CJK runs plus isolated CJK characters, as Lucene's CJK bigram analyser does; other words whole.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff々〆"
_WORD = f"[^\\W{_CJK}]"
JP_TOKEN_PATTERN = (
    f"(?=([{_CJK}]{{2}}|(?<![{_CJK}])[{_CJK}](?![{_CJK}])|(?<!{_WORD}){_WORD}+|[\U0001F000-\U0001FAFF\u2600-\u27BF]))"
)
BM25_LOCALE_DEFAULTS: dict[str, dict[str, Any]] = {
    "us": {"stopwords": "en"},
    "es": {"stopwords": "es"},
    "jp": {"stopwords": None, "token_pattern": JP_TOKEN_PATTERN},
}
class EsciEnv(RetrievalEnv):
    """Rewrite a shopper's query so that it retrieves the products judged Exact for it (Amazon ESCI).

    ## Description
    The Shopping Queries dataset (Reddy et al., 2022) pairs real Amazon queries with up to 40 products judged
    Exact / Substitute / Complement / Irrelevant. The agent reads an instruction plus the shopper's raw query,
    writes a short analysis and an enriched query; BM25 over the locale's whole catalog (title + description,
    HTML stripped) ranks the products with that query. Data is read from the published parquet files
    (:func:`ospo_gym.data.esci.load_esci`; get them with ``ospo-gym data esci``).

    ## Action Space
    ``UnicodeText`` (any string). The retrieval text is the content of ``<answer>…</answer>`` if present,
    else the action without ``<think>…</think>``.

    ## Observation Space
    ``UnicodeText``: ``prompt_template`` with the query, by default :data:`ESCI_PROMPT` (the instruction above
    plus ``"Query: <raw query>"``).

    ## Rewards
    The paper's pooled NDCG@``k``: the retrieval text ranks the whole catalog (top ``cutoff`` = 1000), the
    ranking is filtered to the products judged for the query, and NDCG@k is computed over what remains, the
    ideal being the pool's own gains. Gains E=1, S=0.1, C=0.01, I=0 (``relevance="graded"``) or Exact only
    (``"binary"``); ``pool=None`` gives plain NDCG@k over the catalog. In [0, 1]; the empty text scores 0.

    ## Starting State
    A query of ``split`` drawn uniformly, or ``reset(options={"prompt_id": query_id})`` (the dataset's
    ``query_id``).

    ## Episode End
    After one step (terminated).

    ## Arguments
    * ``split="train"`` (the dataset's own ``split`` column; or ``"test"``, ``"all"``), ``locale="us"`` (or
      ``"es"``, ``"jp"``), ``data_dir=None`` (then ``$OSPO_GYM_DATA``, then the user cache dir).
    * ``version="small"`` (Task 1, ``small_version == 1``) or ``"large"``; ``min_exact=3``, ``max_exact=10``
      (queries with that many Exact products, at most 10,000; None: no bound); ``max_queries=None`` (a seeded
      sample of that many queries, at most 10**7) and ``seed=0``.
    * ``fields=("product_title", "product_description")`` (or short names: title, description, bullets,
      brand, color); ``catalog="locale"`` (every product of the locale) or ``"judged"``.
    * ``relevance="graded"``, ``k=10``, ``cutoff=1000``, ``pool="judged"`` (or None), ``prompt_template``.
    * ``retriever="bm25"`` (or ``"bm25-exhaustive"``, ``"dense"``, a callable ``docs -> Retriever``),
      ``retriever_kwargs`` (e.g. ``{"k1": 1.2}``; BM25 defaults per locale: English / Spanish stopwords, a
      script-run tokenizer for Japanese).
    * ``cache_dir=None``, ``use_cache=True``: the processed-data cache (:mod:`ospo_gym.data.cache`).
    * ``index_cache=True``: also cache the built BM25 index (``retriever="bm25"`` / ``"bm25-exhaustive"``) in
      that folder, keyed by the catalog texts, the tokenizer settings, ``k1``, ``b``, ``method`` and the bm25s
      version (:mod:`ospo_gym.retrieval.index_cache`); the same rewards, without the index build (51.6 s at a
      million products). ``index_cache=False`` rebuilds it every time; ``use_cache=False`` turns off both caches.
    * ``segmentation="phrase"`` and the other base-class arguments.

    ## Version History
    * v0: initial version.

    >>> import tempfile, gymnasium as gym, ospo_gym
    >>> from ospo_gym.data.fixtures import write_esci_fixture
    >>> folder = tempfile.mkdtemp()
    >>> _ = write_esci_fixture(folder)      # a small generated catalog in the published schema
    >>> env = gym.make("ospo/ESCI-v0", data_dir=folder, use_cache=False)
    >>> obs, info = env.reset(seed=0)
    >>> obs.splitlines()[-1] == "Query: " + env.unwrapped.judged.queries[info["prompt_id"]]
    True
    >>> query = env.unwrapped.judged.queries[info["prompt_id"]]
    >>> _, reward, terminated, _, _ = env.step(f"<think>shopper wants {query}</think><answer>{query}</answer>")
    >>> terminated and 0.0 < reward <= 1.0
    True
    """

    def __init__(
        self,
        split: str = "train",
        locale: str = "us",
        *,
        data_dir: str | os.PathLike | None = None,
        version: str = "small",
        min_exact: int | None = 3,
        max_exact: int | None = 10,
        fields: Sequence[str] | str = ("product_title", "product_description"),
        catalog: str = "locale",
        relevance: str = "graded",
        max_queries: int | None = None,
        seed: int = 0,
        retriever: str | Callable[[list[str]], Retriever] = "bm25",
        retriever_kwargs: Mapping[str, Any] | None = None,
        prompt_template: str = ESCI_PROMPT,
        cache_dir: str | os.PathLike | None = None,
        use_cache: bool = True,
        index_cache: bool = True,
        **kwargs: Any,
    ) -> None:
        if relevance not in RELEVANCE:
            raise ValueError(f"unknown relevance {relevance!r}; expected one of {sorted(RELEVANCE)}")
        check_knob("max_queries", max_queries, 1, MAX_QUERIES, "a seeded sample of that many; None keeps all", optional=True)
        check_knob("seed", seed, 0, 2**63 - 1, "seeds numpy's generator for the query sample")
        data = load_esci(
            data_dir,
            locale=locale,
            version=version,
            min_exact=min_exact,
            max_exact=max_exact,
            fields=fields,
            catalog=catalog,
            cache_dir=cache_dir,
            use_cache=use_cache,
        )
        rows = data.split_rows(split)
        if max_queries is not None and len(rows) > max_queries:
            rows = np.sort(np.random.default_rng(seed).choice(rows, size=max_queries, replace=False))
        if len(rows) == 0:
            raise ValueError(
                f"no ESCI query of locale {locale!r}, version {version!r}, split {split!r} has between "
                f"{min_exact} and {max_exact} Exact products (in {data.info['folder']}); widen min_exact/max_exact"
            )
        self.data: EsciData = data
        self.locale = locale
        judged = judged_from_arrays(
            data.query_ids, data.queries, data.pool_offsets, data.pool_docs, data.pool_labels, rows, relevance
        )
        built = make_retriever(
            retriever,
            data.texts,
            retriever_kwargs,
            BM25_LOCALE_DEFAULTS[locale],
            index_cache=processed_cache_dir(cache_dir) if use_cache and index_cache else None,
        )
        super().__init__(judged, built, prompt_template=prompt_template, **kwargs)

    @property
    def product_ids(self) -> list[str]:
        """Catalog product ids; document ``i`` of the retriever is ``product_ids[i]``."""
        return self.data.product_ids


def judged_from_arrays(
    query_ids: np.ndarray,
    queries: Sequence[str],
    offsets: np.ndarray,
    docs: np.ndarray,
    labels: np.ndarray,
    rows: np.ndarray,
    relevance: str,
) -> JudgedQueries:
    """:class:`JudgedQueries` of the query rows ``rows`` from CSR-style pools with E/S/C/I codes."""
    table = np.array([RELEVANCE[relevance][c] for c in LABELS], dtype=np.float64)
    ids: list[Hashable] = [int(q) for q in query_ids[rows]]
    starts, ends = offsets[rows], offsets[rows + 1]
    return JudgedQueries(
        queries={q: queries[r] for q, r in zip(ids, rows.tolist(), strict=True)},
        pools={q: docs[s:e] for q, s, e in zip(ids, starts, ends, strict=True)},
        gains={q: table[labels[s:e]] for q, s, e in zip(ids, starts, ends, strict=True)},
    )


class EsciVectorEnv(GenerativeSearchVectorEnv):
    """Native vector version of :class:`EsciEnv` (one batched retrieval per step)."""

    env_class = EsciEnv
