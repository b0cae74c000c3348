"""Next-purchase search on H&M: describe what a customer buys next, from their purchase history."""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from ospo_gym.data.hm import HmData, load_hm
from ospo_gym.data.hm_files import DEFAULT_FIELDS
from ospo_gym.data.paths import processed_cache_dir
from ospo_gym.envs.base import GenerativeSearchVectorEnv
from ospo_gym.envs.retrieval import JudgedQueries, RetrievalEnv
from ospo_gym.retrieval import Retriever, make_retriever

__all__ = ["HM_PROMPT", "QUERY_LINE", "HmEnv", "HmVectorEnv", "render_prompt"]

HM_PROMPT = (
    "You are a fashion shopping assistant. Below is a customer's purchase history at H&M: one item per entry "
    "(product name, type, colour), separated by '|', most recent last.\n"
    "First reason briefly, inside <think></think>, about their taste and what they are likely to buy next. "
    "Then describe that next item inside <answer></answer> as a catalog search query (product name, type, "
    "colour, material, style). Only the answer is searched.\n\n"
    "Purchase history: {history}"
)
QUERY_LINE = "\nWhat the customer asks for: {query}"


class HmEnv(RetrievalEnv):
    """Predict a customer's next purchase as a search query over the H&M catalog.

    ## Description
    The H&M Personalized Fashion Recommendations data (Kaggle, 2022) holds two years of purchases. The
    transactions are split by date (:func:`ospo_gym.data.hm.load_hm`): a customer's prompt is their purchase
    history before a target window ("name, type, colour" of up to ``max_history`` items, most recent last,
    plus an optional ``query``); their targets are the articles they bought in the window. The agent
    describes the next item; BM25 over the article catalog (name, type, colour, description) ranks it.

    ## Action Space
    ``UnicodeText`` (any string); the retrieval text is ``<answer>…</answer>`` if present, else the action
    without ``<think>…</think>``.

    ## Observation Space
    ``UnicodeText``: ``prompt_template`` filled with ``{history}`` (and ``{query}``), by default
    :data:`HM_PROMPT`, plus ``"What the customer asks for: <query>"`` when a query is given.

    ## Rewards
    Pooled NDCG@``k``: the retrieval text ranks the whole catalog (top ``cutoff`` = 1000), the ranking is
    filtered to the customer's pool — the targets plus 99 seeded negatives (50 from the targets' product
    groups, 30 from related groups, 19 at random; ``negatives=(50, 30, 20)`` gives 100) — and NDCG@k is
    computed over it with gain 1 per target.
    ``pool=None`` gives plain NDCG@k over the whole catalog. In [0, 1].

    ## Starting State
    A customer drawn uniformly, or ``reset(options={"prompt_id": customer_id})``.

    ## Episode End
    After one step (terminated).

    ## Arguments
    * ``split="train"`` (the window before the test window) or ``"test"`` (the last ``window_days`` days, or
      from ``cutoff_date``); ``window_days=7``; ``cutoff_date=None``; ``data_dir=None`` (then
      ``$OSPO_GYM_DATA``, then the user cache dir).
    * ``max_history=10``, ``min_history=1``, ``max_customers=None``, ``max_targets=None``,
      ``negatives=(50, 30, 19)``, ``seed=0`` (negatives and customer sample); each is bounded (``window_days``
      at most 3650, histories 10,000, customers 10**7, targets and each negative count 100,000:
      :data:`ospo_gym.data.hm.KNOB_BOUNDS`).
    * ``query=None``: a request added to every prompt (a string), or per customer (a mapping).
    * ``fields`` (article columns for the catalog text), ``k=10``, ``cutoff=1000``, ``pool="judged"`` (or
      None), ``prompt_template`` (must contain ``{history}``; may contain ``{query}``).
    * ``retriever="bm25"`` (or ``"bm25-exhaustive"``, ``"dense"``, a callable), ``retriever_kwargs``.
    * ``cache_dir=None``, ``use_cache=True``: the processed-data cache (:mod:`ospo_gym.data.cache`).
    * ``index_cache=True``: also cache the built BM25 index (``retriever="bm25"`` / ``"bm25-exhaustive"``) in
      that folder, keyed by the catalog texts, the tokenizer settings, ``k1``, ``b``, ``method`` and the bm25s
      version (:mod:`ospo_gym.retrieval.index_cache`); ``index_cache=False`` rebuilds it every time;
      ``use_cache=False`` turns off both caches.
    * ``segmentation="phrase"`` and the other base-class arguments.

    ## Version History
    * v0: initial version.

    >>> import tempfile, gymnasium as gym, ospo_gym
    >>> from ospo_gym.data.fixtures import write_hm_fixture
    >>> folder = tempfile.mkdtemp()
    >>> _ = write_hm_fixture(folder)        # small generated CSVs in the Kaggle schema
    >>> env = gym.make("ospo/HM-v0", data_dir=folder, use_cache=False)
    >>> obs, info = env.reset(seed=0)
    >>> obs.splitlines()[-1].startswith("Purchase history: ")
    True
    >>> last_item = obs.split(" | ")[-1]       # "name, type, colour" of the latest purchase
    >>> _, reward, terminated, _, _ = env.step(f"<answer>{last_item}</answer>")
    >>> terminated and 0.0 <= reward <= 1.0
    True
    """

    def __init__(
        self,
        split: str = "train",
        *,
        data_dir: str | os.PathLike | None = None,
        window_days: int = 7,
        cutoff_date: str | None = None,
        max_history: int = 10,
        min_history: int = 1,
        max_customers: int | None = None,
        max_targets: int | None = None,
        negatives: Sequence[int] = (50, 30, 19),
        fields: Sequence[str] | str = DEFAULT_FIELDS,
        seed: int = 0,
        query: str | Mapping[str, str] | None = None,
        prompt_template: str | None = None,
        retriever: str | Callable[[list[str]], Retriever] = "bm25",
        retriever_kwargs: Mapping[str, Any] | None = None,
        cache_dir: str | os.PathLike | None = None,
        use_cache: bool = True,
        index_cache: bool = True,
        **kwargs: Any,
    ) -> None:
        if prompt_template is not None and "{history}" not in prompt_template:
            raise ValueError("prompt_template must contain '{history}' where the purchase history goes")
        if query is not None and not isinstance(query, (str, Mapping)):
            raise TypeError(f"query must be a str, a mapping customer_id -> str, or None; got {type(query).__name__}")
        data = load_hm(
            data_dir,
            split=split,
            window_days=window_days,
            cutoff_date=cutoff_date,
            max_history=max_history,
            min_history=min_history,
            max_customers=max_customers,
            max_targets=max_targets,
            negatives=negatives,
            fields=fields,
            seed=seed,
            cache_dir=cache_dir,
            use_cache=use_cache,
        )
        self.data: HmData = data
        prompts = {
            cid: render_prompt(prompt_template, history, _query_for(query, cid))
            for cid, history in zip(data.customer_ids, data.histories, strict=True)
        }
        starts, ends = data.pool_offsets[:-1], data.pool_offsets[1:]
        judged = JudgedQueries(
            queries=prompts,
            pools={c: data.pool_docs[s:e] for c, s, e in zip(data.customer_ids, starts, ends, strict=True)},
            gains={c: data.pool_gains[s:e] for c, s, e in zip(data.customer_ids, starts, ends, strict=True)},
        )
        built = make_retriever(
            retriever,
            data.texts,
            retriever_kwargs,
            {"stopwords": "en"},
            index_cache=processed_cache_dir(cache_dir) if use_cache and index_cache else None,
        )
        # The prompts are rendered above, so the base class gets the identity template.
        super().__init__(judged, built, prompt_template="{query}", **kwargs)

    @property
    def article_ids(self) -> list[str]:
        """Catalog article ids; document ``i`` of the retriever is ``article_ids[i]``."""
        return self.data.article_ids

    def targets(self, customer_id: Hashable) -> list[str]:
        """The article ids the customer bought in the target window."""
        self._check_prompt_id(customer_id)
        pool, gains = self.judged.pools[customer_id], self.judged.gains[customer_id]
        return [self.data.article_ids[d] for d in pool[gains > 0].tolist()]


def _query_for(query: str | Mapping[str, str] | None, customer_id: str) -> str | None:
    if query is None or isinstance(query, str):
        return query
    return query.get(customer_id)


def render_prompt(template: str | None, history: str, query: str | None) -> str:
    """The observation: ``template`` (default :data:`HM_PROMPT`) with ``{history}`` and ``{query}`` filled in;
    with the default template a query adds the line :data:`QUERY_LINE`."""
    if template is None:
        text = HM_PROMPT.format(history=history)
        return text + QUERY_LINE.format(query=query) if query else text
    return template.format(history=history, query=query or "")


class HmVectorEnv(GenerativeSearchVectorEnv):
    """Native vector version of :class:`HmEnv` (one batched retrieval per step)."""

    env_class = HmEnv

