"""The simulated shopper of ``ospo/ConvSearch-v0``: a hidden target product, what the shopper believes about it, and
its replies to the policy's questions and searches (deterministic: no randomness after construction).

A :class:`ShopperTask` is the catalog side (documents, product attributes, targets, relevance); a :class:`Shopper`
adds, per target, the values the shopper states (with noise: a misremembered value stays wrong for the whole
episode) and the order in which it volunteers attributes. :func:`advance` is the one transition rule, shared by
the live env, its vector env and the replays of the turn oracle, so a replay of the full session reproduces the
episode exactly.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ospo_gym.data.synthetic_catalog import CatalogConfig, generate_catalog, product_attributes
from ospo_gym.data.text import catalog_texts
from ospo_gym.metrics import ndcg_at_k

ASK_PREFIX = "ask:"
TURN_KINDS = ("search", "ask")
# Words that name an attribute in a question (lower case, whole words).
ATTRIBUTE_WORDS: dict[str, tuple[str, ...]] = {
    "brand": ("brand", "brands", "make", "maker", "label", "manufacturer"),
    "color": ("color", "colour", "colors", "colours", "shade"),
    "material": ("material", "materials", "fabric", "made"),
    "pattern": ("pattern", "patterns", "print", "design", "look"),
    "section": ("section", "department", "range", "collection", "who"),
}
_STATED = {
    "brand": "The brand is {}.", "color": "The colour is {}.", "material": "It is made of {}.",
    "pattern": "The pattern is {}.", "section": "It is from {}.",
}  # fmt: skip
_NONE_OF = {
    "brand": "None of these are by {}.", "color": "None of these are {}.", "material": "None of these are made of {}.",
    "pattern": "None of these are {}.", "section": "None of these are from {}.",
}  # fmt: skip
FOUND_REPLY = "That's it, thank you!"
NOTHING_REPLY = "Nothing came up."
NOT_QUITE_REPLY = "Not quite what I want."
ALL_SAID_REPLY = "That's all I can tell you."
_WORD = re.compile(r"\w+")
RELEVANCE_GAINS = {"graded": (1.0, 0.1), "binary": (1.0, 0.0)}
"""(gain of an exact match, gain of another product of the same type) of the generated catalog."""


def turn_kind(text: str) -> str:
    """``"ask"`` for a clarifying question (the text starts with ``ask:`` or ends with ``?``, case and surrounding
    whitespace ignored), else ``"search"``."""
    stripped = text.strip()
    return "ask" if stripped.lower().startswith(ASK_PREFIX) or stripped.endswith("?") else "search"


def task_vocabulary(task: ShopperTask) -> tuple[str, ...]:
    """The words a policy of the task may need, sorted: those of the openings and of every attribute value, a
    word that names each attribute in a question, and ``"ask:"`` (a tiny policy's tokenizer and warm start are
    built from them; :mod:`ospo_gym.agents.tiny_policy`)."""
    words = {w for text in task.openings for w in _WORD.findall(text.lower())}
    words |= {w for values in task.vocab.values() for v in values for w in _WORD.findall(v.lower())}
    words |= {ATTRIBUTE_WORDS.get(a, (a,))[0] for a in task.attributes}
    return tuple(sorted(words | {ASK_PREFIX}))


def named_attributes(text: str, attributes: tuple[str, ...]) -> list[str]:
    """The attributes a question names (by the words of :data:`ATTRIBUTE_WORDS`), in ``attributes`` order."""
    words = set(_WORD.findall(text.lower()))
    return [a for a in attributes if words & set(ATTRIBUTE_WORDS.get(a, (a,)))]


@dataclass(frozen=True)
class ShopperTask:
    """The catalog side of the conversational task.

    Attributes:
        texts: (N,) catalog documents the retriever ranks.
        attributes: the hidden attribute names, e.g. ``("brand", "color", "material")``.
        vocab: per attribute, its values (strings).
        product_values: per attribute, (N,) int64 index into ``vocab[attribute]`` of each product (-1: unknown).
        targets: (Q,) int64 catalog row of each prompt's hidden target.
        openings: (Q,) the shopper's first message.
        relevant: Q sorted (P_q,) int64 arrays: the products with a positive gain for prompt q.
        gains: Q (P_q,) float64 arrays aligned with ``relevant``.
    """

    texts: list[str]
    attributes: tuple[str, ...]
    vocab: dict[str, tuple[str, ...]]
    product_values: dict[str, np.ndarray]
    targets: np.ndarray
    openings: list[str]
    relevant: list[np.ndarray]
    gains: list[np.ndarray]

    def ndcg(self, prompt_ids: np.ndarray, rankings: np.ndarray, k: int) -> np.ndarray:
        """NDCG@k of rankings (R, k) of catalog rows (-1 pads) for their prompts (R,); 0 for an empty ranking."""
        prompt_ids = np.asarray(prompt_ids, dtype=np.int64)
        ranked = np.zeros(rankings.shape)
        ideal = np.zeros((len(prompt_ids), max((len(self.gains[p]) for p in prompt_ids), default=0)))
        for row, p in enumerate(prompt_ids):  # R rows; each one vectorised lookup into the prompt's relevant set
            relevant, gains = self.relevant[p], self.gains[p]
            ideal[row, : len(gains)] = gains
            if len(relevant):
                ids = rankings[row]
                at = np.minimum(np.searchsorted(relevant, ids), len(relevant) - 1)
                ranked[row] = np.where((ids >= 0) & (relevant[at] == ids), gains[at], 0.0)
        return ndcg_at_k(ranked, ideal, k)


def type_gains(
    types: np.ndarray, values: dict[str, np.ndarray], targets: np.ndarray, relevance: str
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per target, the products with a positive gain (sorted (P,) int64) and their gains ((P,) float64): an
    exact match (the target's type and every attribute in ``values``) gains 1, another product of its type
    ``RELEVANCE_GAINS[relevance][1]``. ``types`` (N,) and each ``values[a]`` (N,) are per product."""
    exact_gain, same_type_gain = RELEVANCE_GAINS[relevance]
    relevant, gains = [], []
    for target in targets:
        same_type = types == types[target]
        exact = same_type.copy()
        for a in values:
            exact &= values[a] == values[a][target]
        gain = np.where(exact, exact_gain, np.where(same_type, same_type_gain, 0.0))
        rows = np.flatnonzero(gain > 0)
        relevant.append(rows.astype(np.int64))
        gains.append(gain[rows])
    return relevant, gains


def synthetic_task(config: CatalogConfig, num_targets: int, relevance: str, rng: np.random.Generator) -> ShopperTask:
    """A task over the generated ESCI-schema catalog: ``num_targets`` distinct products drawn by ``rng`` are the
    hidden targets; the opening names the target's type; exact matches (type and every attribute) have gain 1,
    other products of the type ``RELEVANCE_GAINS[relevance][1]``."""
    products, _ = generate_catalog(config)
    table = product_attributes(products, config)
    attributes = ("brand", "color", "material")
    vocab = {a: tuple(sorted(set(table[a]))) for a in attributes}
    values = {a: np.searchsorted(np.array(vocab[a], dtype=object), table[a].to_numpy()).astype(np.int64) for a in attributes}
    types = table["type"].to_numpy()
    targets = np.sort(rng.choice(len(products), size=min(num_targets, len(products)), replace=False)).astype(np.int64)
    relevant, gains = type_gains(types, values, targets, relevance)
    openings = [f"I'm looking for {types[t]}." for t in targets]
    return ShopperTask(catalog_texts(products), attributes, vocab, values, targets, openings, relevant, gains)


def _value_index(words: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """The sorted vocabulary of ``words`` (N,) (object, "" for unknown) and each one's (N,) int64 index (-1)."""
    known = words != ""
    vocab = tuple(sorted(set(words[known])))
    index = np.full(len(words), -1, dtype=np.int64)
    index[known] = np.searchsorted(np.array(vocab, dtype=object), words[known])
    return vocab, index


def esci_task(
    data_dir: str | os.PathLike | None, num_targets: int, relevance: str, rng: np.random.Generator, **load_kwargs
) -> ShopperTask:
    """A task over ESCI files (:func:`ospo_gym.data.esci.load_esci`, both splits): a seeded sample of ``num_targets`` queries;
    each one's hidden target is the first of its Exact products, the opening is the query, the hidden attributes
    are the target's ``product_brand`` and ``product_color`` (read from the products file; null: unknown to the
    shopper), and the gains are the query's judgements (E=1, S=0.1, C=0.01, I=0, or Exact only)."""
    import pandas as pd

    from ospo_gym.data.esci import load_esci
    from ospo_gym.data.esci_schema import LABELS, PRODUCTS_FILE
    from ospo_gym.envs.retrieval import RELEVANCE

    data = load_esci(data_dir, **load_kwargs)
    table = np.array([RELEVANCE[relevance][c] for c in LABELS], dtype=np.float64)
    exact_code = LABELS.index("E")
    query_of = np.repeat(np.arange(len(data.query_ids)), np.diff(data.pool_offsets))
    rows = np.flatnonzero(np.bincount(query_of[data.pool_labels == exact_code], minlength=len(data.query_ids)) > 0)
    if not len(rows):
        raise ValueError(f"no ESCI query in {data.info.get('folder')} has an Exact product; widen min_exact/max_exact")
    rows = np.sort(rng.choice(rows, size=min(num_targets, len(rows)), replace=False))
    folder = Path(data.info["folder"])
    products = pd.read_parquet(folder / PRODUCTS_FILE, columns=["product_id", "product_brand", "product_color", "product_locale"])
    products = products[products["product_locale"] == load_kwargs.get("locale", "us")].drop_duplicates("product_id")
    aligned = products.set_index("product_id").reindex(data.product_ids)
    attributes = ("brand", "color")
    vocab, values = {}, {}
    for a in attributes:
        column = aligned[f"product_{a}"]
        words = column.where(column.notna(), "").astype(str).str.strip().str.lower().to_numpy(dtype=object)
        vocab[a], values[a] = _value_index(words)  # a null or blank value: unknown to the shopper
    targets, openings, relevant, gains = [], [], [], []
    for q in rows:
        docs = data.pool_docs[data.pool_offsets[q] : data.pool_offsets[q + 1]]
        labels = data.pool_labels[data.pool_offsets[q] : data.pool_offsets[q + 1]]
        targets.append(int(docs[np.flatnonzero(labels == exact_code)[0]]))
        gain = table[labels]
        keep = gain > 0
        order = np.argsort(docs[keep], kind="stable")
        relevant.append(docs[keep][order].astype(np.int64))
        gains.append(gain[keep][order])
        openings.append(f"I'm looking for {data.queries[q]}.")
    return ShopperTask(list(data.texts), attributes, vocab, values, np.array(targets, dtype=np.int64), openings, relevant, gains)


HM_ATTRIBUTES = {"color": "colour_group_name", "pattern": "graphical_appearance_name", "section": "index_group_name"}
"""The shopper's hidden attributes of an H&M article and the ``articles.csv`` columns they come from."""


def hm_task(
    data_dir: str | os.PathLike | None, num_targets: int, relevance: str, rng: np.random.Generator, **load_kwargs
) -> ShopperTask:
    """A task over the H&M files (:func:`ospo_gym.data.hm.load_hm`, ``split="test"`` by default): a seeded sample of
    ``num_targets`` customers; each one's hidden target is the first article they bought in the target window, the
    opening names its ``product_type_name``, the hidden attributes are its colour group, graphical appearance and
    index group (:data:`HM_ATTRIBUTES`; empty: unknown to the shopper), and the gains are those of the generated
    catalog — 1 for an article of the target's type with every hidden attribute equal, ``RELEVANCE_GAINS[relevance][1]``
    for another article of its type."""
    from ospo_gym.data.hm import load_hm
    from ospo_gym.data.hm_files import ARTICLES_FILE, read_articles

    data = load_hm(data_dir, **{"split": "test", **load_kwargs})
    folder = Path(data.info["folder"])
    table, ids, _ = read_articles(folder / ARTICLES_FILE, tuple(HM_ATTRIBUTES.values()))
    row_of = {a: i for i, a in enumerate(ids.to_pylist())}
    order = np.array([row_of[a] for a in data.article_ids], dtype=np.int64)  # table rows in catalog order

    def column(name: str) -> np.ndarray:
        values = table.column(name).to_pylist()
        return np.array([(values[i] or "").strip().lower() for i in order], dtype=object)

    attributes = tuple(HM_ATTRIBUTES)
    vocab, values = {}, {}
    for a, name in HM_ATTRIBUTES.items():
        vocab[a], values[a] = _value_index(column(name))
    types = column("product_type_name")
    firsts = data.pool_docs[data.pool_offsets[:-1]]  # each pool lists its customer's targets first
    customers = np.sort(rng.choice(len(firsts), size=min(num_targets, len(firsts)), replace=False))
    targets = firsts[customers].astype(np.int64)
    relevant, gains = type_gains(types, values, targets, relevance)
    openings = [f"I'm looking for {types[t] or 'something'}." for t in targets]
    return ShopperTask(list(data.texts), attributes, vocab, values, targets, openings, relevant, gains)


@dataclass(frozen=True)
class Shopper:
    """What the shopper of each prompt states and in which order it volunteers attributes.

    Attributes:
        beliefs: (Q, A) int64, the value index the shopper states for attribute ``a`` (-1: it does not know);
            with probability ``noise`` a value other than the target's.
        order: (Q, A) int64, a permutation of the attribute indices per prompt.
    """

    beliefs: np.ndarray
    order: np.ndarray


def make_shopper(task: ShopperTask, noise: float, seed: int) -> Shopper:
    """The shopper of every prompt, drawn from ``seed``: misremembered values (probability ``noise`` each) and
    the order of volunteered attributes."""
    rng = np.random.default_rng([seed, 1])
    q, a = len(task.targets), len(task.attributes)
    truth = np.stack([task.product_values[name][task.targets] for name in task.attributes], axis=1).reshape(q, a)
    sizes = np.array([len(task.vocab[name]) for name in task.attributes], dtype=np.int64)
    wrong = (rng.random((q, a)) < noise) & (sizes[None, :] > 1) & (truth >= 0)
    shift = 1 + (rng.integers(0, 2**31, size=(q, a)) % np.maximum(sizes[None, :] - 1, 1))
    beliefs = np.where(wrong, (truth + shift) % np.maximum(sizes[None, :], 1), truth)
    order = np.argsort(rng.random((q, a)), axis=1).astype(np.int64)
    return Shopper(beliefs.astype(np.int64), order)


@dataclass(frozen=True)
class Rules:
    """The episode's rules (the env's difficulty and reward knobs; see ``ConvSearchEnv``)."""

    max_turns: int
    reveal_per_turn: int
    k: int
    turn_cost: float
    reveal_reward: float


@dataclass
class Conversation:
    """The state of one episode: what was revealed, the last search's ranking, turns taken, whether it ended."""

    prompt_id: int
    revealed: list[int] = field(default_factory=list)
    ranking: np.ndarray | None = None
    turns: int = 0
    found: bool = False
    done: bool = False
    total: float = 0.0


def advance(
    task: ShopperTask, shopper: Shopper, rules: Rules, conv: Conversation, kind: str, text: str, ranking: np.ndarray | None
) -> tuple[str, float, list[int]]:
    """Apply one policy turn to ``conv`` (in place): the shopper's reply, the step reward, the newly revealed
    attribute indices. ``ranking`` is the (k,) top-k of the turn's search (None for a question).

    The step reward is ``reveal_reward`` per newly revealed attribute, minus ``turn_cost``, plus — on the turn that
    ends the episode (the target in the top k, or the last of ``max_turns``) — the NDCG@k of the last search's
    ranking (0 if the episode had no search).
    """
    if conv.done:
        raise ValueError("the conversation has ended; reset the env")
    p = conv.prompt_id
    names = task.attributes
    beliefs, order = shopper.beliefs[p], shopper.order[p]
    fresh: list[int] = []
    parts: list[str] = []
    if kind == "ask":
        asked = [names.index(a) for a in named_attributes(text, names)]
        if asked:
            candidates = [a for a in asked if a not in conv.revealed and beliefs[a] >= 0]
            for a in asked:
                if beliefs[a] < 0:
                    parts.append(f"I don't know the {names[a]}.")
                elif a in conv.revealed:
                    parts.append(f"I already told you the {names[a]}.")
        else:  # a question that names nothing: the shopper volunteers what it has not said yet
            candidates = [int(a) for a in order if a not in conv.revealed and beliefs[a] >= 0]
        fresh = candidates[: rules.reveal_per_turn]
        parts = [_STATED[names[a]].format(task.vocab[names[a]][beliefs[a]]) for a in fresh] + parts
        if not parts:
            parts = [ALL_SAID_REPLY]
    else:
        conv.ranking = ranking
        listed = ranking[ranking >= 0] if ranking is not None else np.zeros(0, dtype=np.int64)
        if len(listed) and np.any(listed == task.targets[p]):
            conv.found = True
            parts = [FOUND_REPLY]
        elif not len(listed):
            parts = [NOTHING_REPLY]
        else:
            for a in order:
                a = int(a)
                if len(fresh) == rules.reveal_per_turn:
                    break
                if a in conv.revealed or beliefs[a] < 0:
                    continue
                if not np.any(task.product_values[names[a]][listed] == beliefs[a]):
                    fresh.append(a)
                    parts.append(_NONE_OF[names[a]].format(task.vocab[names[a]][beliefs[a]]))
            if not parts:
                parts = [NOT_QUITE_REPLY]
    conv.revealed.extend(fresh)
    conv.turns += 1
    reward = rules.reveal_reward * len(fresh) - rules.turn_cost
    if conv.found or conv.turns >= rules.max_turns:
        conv.done = True
        if conv.ranking is not None:
            reward += float(task.ndcg(np.array([p]), conv.ranking[None, :], rules.k)[0])
    conv.total += reward
    return " ".join(parts), reward, fresh
