"""Conversational product search: a simulated shopper with a hidden target, several turns of questions and searches."""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Mapping, Sequence
from functools import cached_property
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from ospo_gym.credit.owen import MAX_EXACT_OWEN_PLAYERS, owen_exact
from ospo_gym.credit.shapley import shapley_exact
from ospo_gym.data.synthetic_catalog import CatalogConfig
from ospo_gym.envs.base import (
    MAX_NUM_ENVS,
    PER_SUB_ENV_PINNING,
    check_actions,
    check_batch,
    hold_single_env,
    object_array,
    pinned_prompt_ids,
    seeded_generators,
    truncate_action,
)
from ospo_gym.envs.shopper import (
    RELEVANCE_GAINS,
    Conversation,
    Rules,
    ShopperTask,
    advance,
    esci_task,
    hm_task,
    make_shopper,
    synthetic_task,
    task_vocabulary,
    turn_kind,
)
from ospo_gym.knobs import check_knob
from ospo_gym.retrieval import RetrieverFactory, check_ranking, check_retriever, make_retriever
from ospo_gym.segment import retrieval_text
from ospo_gym.spaces import UnicodeText
from ospo_gym.turn_oracle import ReplayTurn, TurnOracle

MAX_TURNS = 64
DATASETS = ("esci", "hm")
"""The data files ``data_dir`` may hold (``dataset=``)."""
MAX_EXACT_TURNS = 8
"""``exact_credit=True`` allows at most this many turns: exact turn credit replays all ``2**turns`` coalitions."""
MAX_TARGETS = 10**5
MAX_TURN_CHARS = 10**6
MAX_K = 10_000
SHOPPER = "shopper: "
POLICY = "you: "


class ConvSearchEnv(gym.Env[str, str]):
    """Conversational search: ask a simulated shopper about its hidden target product and search the catalog until
    the target is in the top k.

    ## Description
    Each episode has a hidden target product. The shopper opens with its type ("I'm looking for running shoes.")
    and knows the target's other attributes (generated catalog: brand, colour, material). Each turn the policy
    writes either a **clarifying question** — a text that starts with ``ask:`` or ends with ``?`` — or a **search
    query**, any other text. A question that names an attribute ("ask: what colour?", "which brand?") gets it
    revealed ("The colour is red."); one that names none gets the attribute the shopper would volunteer next. A
    search ranks the catalog with BM25 (the retrieval text, as in the single-turn envs); the shopper looks at the
    top ``k`` and, unless the target is among them, says which of its attributes none of them has ("None of these
    are red."). At most ``reveal_per_turn`` attributes are revealed per turn. With ``shopper_noise`` the shopper
    misremembers an attribute (it states another value, consistently for the whole episode). Everything after
    construction is deterministic: the same prompt and turns give the same replies and rewards.
    ``env.unwrapped.vocabulary`` lists the words of the task (openings, attribute values, ``ask:``).

    Data: a generated catalog in the ESCI schema (:mod:`ospo_gym.data.synthetic_catalog`), or with ``data_dir``
    the ESCI files (:func:`ospo_gym.data.esci.load_esci`): the opening is a real query, the target its first Exact
    product, the hidden attributes its ``product_brand`` and ``product_color``, the gains its judgements; or, with
    ``dataset="hm"``, the H&M files (:func:`ospo_gym.data.hm.load_hm`): the target is a customer's first purchase
    of the target window, the opening names its product type, the hidden attributes are its colour group,
    graphical appearance and index group (``color``, ``pattern``, ``section``), the gains as for the generated
    catalog.

    ## Action Space
    ``UnicodeText``: one turn of the policy, cut to ``max_turn_chars`` characters.

    ## Observation Space
    ``UnicodeText``: the conversation so far, one line per message, ``"shopper: ..."`` and ``"you: ..."``.

    ## Rewards
    On the turn that ends the episode: the NDCG@``k`` of the last search's ranking over the whole catalog
    (generated catalog: gain 1 for a product matching the target's type and every attribute, 0.1 for another
    product of its type, ``relevance="binary"``: 0; ESCI: the query's graded judgements; no search: 0). Every turn
    also pays ``reveal_reward`` per newly revealed attribute (shaping, 0 by default) and costs ``turn_cost``
    (0 by default), so with the defaults the return is in [0, 1]. ``env.unwrapped.oracle`` is a
    :class:`~ospo_gym.turn_oracle.TurnOracle`: the return of any subset of the turns, or of the segments within
    them, replayed with the shopper's replies recomputed; the full set reproduces the episode's return exactly.

    ## Starting State
    A prompt (a hidden target) drawn uniformly, or ``reset(options={"prompt_id": i})``; the observation is the
    shopper's opening.

    ## Episode End
    Terminated when a search puts the target in the top ``k`` (``info["found"]``) or after ``max_turns`` turns
    (the shopper leaves; also ``terminated``: the episode's end is part of the task).

    ## Arguments
    * ``max_turns=4`` (1 to 64), ``reveal_per_turn=1`` (1 to the number of hidden attributes),
      ``shopper_noise=0.0`` (a probability): the difficulty knobs.
    * ``turn_cost=0.0``, ``reveal_reward=0.0`` (finite, >= 0): per-turn cost and shaped reward; ``k=10`` (1 to
      10,000), ``relevance="graded"`` (or ``"binary"``).
    * ``exact_credit=False``: the variant with ground-truth turn credit — at most 8 turns, and
      :meth:`ground_truth_turn_credit` (exact Shapley over turns, all ``2**T`` coalitions replayed) and
      :meth:`ground_truth_credit` (exact two-level Owen over segments, at most 16 segments) are available.
    * ``num_products=2000``, ``num_targets=100`` (at most 100,000), ``title_noise=0.1``, ``seed=0``: the
      generated catalog, the targets and the shopper's noise.
    * ``data_dir=None`` (a folder with the ESCI parquet files, or the H&M CSV files), ``dataset="esci"`` (or
      ``"hm"``), ``locale="us"`` (ESCI), ``cache_dir=None``, ``use_cache=True``: the data path (ESCI: queries of
      both splits with an Exact product; H&M: the customers of ``load_hm``'s test window; ``num_products`` and
      ``title_noise`` are then unused).
    * ``retriever="bm25"`` (or another name or factory of :func:`~ospo_gym.retrieval.make_retriever`),
      ``retriever_kwargs``; ``segmentation="word"`` (the oracle's players within a turn),
      ``segmentation_backend="rules"``, ``max_turn_chars=1000`` (1 to 10**6), ``render_mode=None`` or ``"ansi"``.
      It takes none of the base-class arguments below (``max_turn_chars`` plays the part of ``max_action_chars``).

    ## Version History
    * v0: initial version.

    >>> import gymnasium as gym, ospo_gym
    >>> env = gym.make("ospo/ConvSearch-v0", num_products=300, num_targets=5)
    >>> obs, info = env.reset(seed=0)
    >>> obs.startswith("shopper: I'm looking for")
    True
    >>> obs, reward, terminated, truncated, info = env.step("ask: which colour?")
    >>> info["kind"], info["revealed"]
    ('ask', ['color'])
    >>> obs.splitlines()[-1].startswith("shopper: The colour is")
    True
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 1}

    def __init__(
        self,
        max_turns: int = 4,
        reveal_per_turn: int = 1,
        shopper_noise: float = 0.0,
        turn_cost: float = 0.0,
        reveal_reward: float = 0.0,
        k: int = 10,
        relevance: str = "graded",
        exact_credit: bool = False,
        num_products: int = 2000,
        num_targets: int = 100,
        title_noise: float = 0.1,
        seed: int = 0,
        data_dir: str | os.PathLike | None = None,
        dataset: str = "esci",
        locale: str = "us",
        cache_dir: str | os.PathLike | None = None,
        use_cache: bool = True,
        retriever: str | RetrieverFactory = "bm25",
        retriever_kwargs: Mapping[str, Any] | None = None,
        segmentation: str = "word",
        segmentation_backend: str = "rules",
        max_turn_chars: int = 1000,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unknown render_mode {render_mode!r}; expected one of {self.metadata['render_modes']}")
        if not isinstance(exact_credit, bool):
            raise ValueError(f"exact_credit must be a bool, got {exact_credit!r}")
        turn_bound = MAX_EXACT_TURNS if exact_credit else MAX_TURNS
        why = "exact turn credit replays all 2**max_turns coalitions" if exact_credit else "every turn is a BM25 call"
        check_knob("max_turns", max_turns, 1, turn_bound, why)
        check_knob("num_targets", num_targets, 1, MAX_TARGETS, "one hidden target per prompt")
        check_knob("k", k, 1, MAX_K, "the shopper reads the top k of every search")
        check_knob("max_turn_chars", max_turn_chars, 1, MAX_TURN_CHARS, "turns are cut to that many characters")
        check_knob("seed", seed, 0, 2**63 - 1, "seeds the catalog, the targets and the shopper")
        _check_number("shopper_noise", shopper_noise, 0.0, 1.0, "a probability")
        _check_number("turn_cost", turn_cost, 0.0, math.inf, "a non-negative cost per turn")
        _check_number("reveal_reward", reveal_reward, 0.0, math.inf, "a non-negative reward per revealed attribute")
        if relevance not in RELEVANCE_GAINS:
            raise ValueError(f"unknown relevance {relevance!r}; expected one of {sorted(RELEVANCE_GAINS)}")
        check_retriever(retriever)
        if dataset not in DATASETS:
            raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS} (the files in data_dir)")
        rng = np.random.default_rng([seed, 0])
        if data_dir is None:
            config = CatalogConfig(num_products=num_products, num_queries=1, title_noise=title_noise, seed=seed, test_fraction=0.0)
            self.task: ShopperTask = synthetic_task(config, num_targets, relevance, rng)
        elif dataset == "hm":
            self.task = hm_task(data_dir, num_targets, relevance, rng, cache_dir=cache_dir, use_cache=use_cache)
        else:
            self.task = esci_task(data_dir, num_targets, relevance, rng, locale=locale, cache_dir=cache_dir, use_cache=use_cache)
        check_knob(
            "reveal_per_turn", reveal_per_turn, 1, len(self.task.attributes),
            f"the shopper has {len(self.task.attributes)} hidden attributes ({', '.join(self.task.attributes)})",
        )
        self.shopper = make_shopper(self.task, shopper_noise, seed)
        self.vocabulary: tuple[str, ...] = task_vocabulary(self.task)
        self.rules = Rules(max_turns, reveal_per_turn, k, float(turn_cost), float(reveal_reward))
        self.retriever = make_retriever(retriever, self.task.texts, retriever_kwargs)
        self.exact_credit = exact_credit
        self.segmentation = segmentation
        self.segmentation_backend = segmentation_backend
        self.max_turn_chars = max_turn_chars
        self.render_mode = render_mode
        self.action_space = UnicodeText()
        longest_value = max((len(v) for values in self.task.vocab.values() for v in values), default=0)
        reply = 64 + len(self.task.attributes) * (64 + longest_value)
        opening = len(SHOPPER) + max(len(o) for o in self.task.openings)
        self.observation_space = UnicodeText(opening + max_turns * (2 + len(POLICY) + max_turn_chars + len(SHOPPER) + reply))
        self._conv: Conversation | None = None
        self._transcript = ""
        self._turns: list[str] = []
        self.oracle  # noqa: B018 — validates the segmentation arguments at construction

    # -- prompts --------------------------------------------------------------------------------------------
    @property
    def prompt_ids(self) -> list[int]:
        """Every prompt id (0 .. num_targets − 1), one hidden target each."""
        return list(range(len(self.task.targets)))

    def prompt(self, prompt_id: Hashable) -> str:
        """The first observation of ``prompt_id``: the shopper's opening, ``"shopper: "`` first."""
        return SHOPPER + self.opening(prompt_id)

    def opening(self, prompt_id: Hashable) -> str:
        """The shopper's first message for ``prompt_id`` (the first ``user`` message of a chat conversation)."""
        self._check_prompt_id(prompt_id)
        return self.task.openings[prompt_id]

    def _check_prompt_id(self, prompt_id: Hashable) -> None:
        if isinstance(prompt_id, bool) or not isinstance(prompt_id, (int, np.integer)) or not 0 <= prompt_id < len(self.task.targets):
            raise ValueError(
                f"unknown prompt_id {prompt_id!r}; this env has prompts 0..{len(self.task.targets) - 1} "
                "(see env.unwrapped.prompt_ids)"
            )

    # -- the simulation -------------------------------------------------------------------------------------
    def rank(self, texts: Sequence[str]) -> np.ndarray:
        """Top-k catalog rows of retrieval texts, (N, k) int64 padded with -1, in one retriever call."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.rules.k), dtype=np.int64)
        ids, _ = check_ranking(self.retriever.rank(texts, self.rules.k), len(texts), self.rules.k, self.retriever.num_docs, self.retriever)
        return ids

    def play(self, convs: Sequence[Conversation], actions: Sequence[str], kept: Sequence[str] | None = None) -> list[str]:
        """One turn of several conversations (in place) with one retriever call; returns the shopper's replies.

        ``actions`` decide each turn's kind; ``kept`` (default ``actions``) is the text that acts — the oracle's
        replays pass the kept segments of a turn there.
        """
        kept = actions if kept is None else kept
        kinds = [turn_kind(a) for a in actions]
        searching = [i for i, kind in enumerate(kinds) if kind == "search"]
        rankings = self.rank([retrieval_text(kept[i]) for i in searching])
        ranking_of = dict(zip(searching, rankings, strict=True))
        return [
            advance(self.task, self.shopper, self.rules, conv, kind, text, ranking_of.get(i))[0]
            for i, (conv, kind, text) in enumerate(zip(convs, kinds, kept, strict=True))
        ]

    def replay_returns(self, prompt_ids: Sequence[Hashable], sessions: Sequence[Sequence[ReplayTurn]]) -> np.ndarray:
        """Returns of sessions replayed from the start (turns as ``(original, kept)`` texts), shape (N,): the turn
        oracle's value function. Turns after the episode's end are ignored; one retriever call per turn index."""
        for prompt_id in prompt_ids:
            self._check_prompt_id(prompt_id)
        sessions = [
            [(truncate_action(o, self.max_turn_chars), truncate_action(k, self.max_turn_chars)) for o, k in s] for s in sessions
        ]
        convs = [Conversation(int(p)) for p in prompt_ids]
        for t in range(max((len(s) for s in sessions), default=0)):
            active = [i for i, s in enumerate(sessions) if t < len(s) and not convs[i].done]
            if active:
                self.play([convs[i] for i in active], [sessions[i][t][0] for i in active], [sessions[i][t][1] for i in active])
        return np.array([c.total for c in convs], dtype=np.float64)

    @cached_property
    def oracle(self) -> TurnOracle:
        """The turn-level coalition-value oracle (see :class:`ospo_gym.turn_oracle.TurnOracle`)."""
        return TurnOracle(self.replay_returns, segmentation=self.segmentation, segmentation_backend=self.segmentation_backend)

    def ground_truth_turn_credit(self, prompt_id: Hashable, turns: Sequence[str]) -> np.ndarray:
        """Exact Shapley values of the turns of an episode, shape (T,) (``exact_credit=True`` only)."""
        self._check_exact(prompt_id, turns)
        return shapley_exact(lambda cs: self.oracle.turn_values(prompt_id, turns, cs), len(turns))

    def ground_truth_credit(self, prompt_id: Hashable, turns: Sequence[str]) -> np.ndarray:
        """Exact two-level Owen values of the episode's segments (turns as unions), flat in turn order, shape (P,)
        (``exact_credit=True`` only; at most 16 segments in all)."""
        self._check_exact(prompt_id, turns)
        spans = self.oracle.segment_turns(turns)
        sizes = [len(s) for s in spans]
        if sum(sizes) > MAX_EXACT_OWEN_PLAYERS:
            raise ValueError(
                f"the turns have {sum(sizes)} segments; exact Owen values enumerate 2**P coalitions and allow at most "
                f"{MAX_EXACT_OWEN_PLAYERS}. Shorten the turns or use ground_truth_turn_credit."
            )
        return owen_exact(lambda cs: self.oracle.values(prompt_id, turns, spans, cs), sizes)

    def _check_exact(self, prompt_id: Hashable, turns: Sequence[str]) -> None:
        if not self.exact_credit:
            raise ValueError("ground-truth credit is the exact_credit variant's: build the env with exact_credit=True")
        self._check_prompt_id(prompt_id)
        turns = check_batch("turns", turns, "str turns")
        if len(turns) > MAX_EXACT_TURNS:
            raise ValueError(f"got {len(turns)} turns; exact credit allows at most {MAX_EXACT_TURNS}")

    # -- Gymnasium API --------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        options = dict(options or {})
        if "prompt_ids" in options:
            raise ValueError(f"a single env has one prompt; {PER_SUB_ENV_PINNING}")
        unknown = set(options) - {"prompt_id"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; allowed: ['prompt_id']")
        if "prompt_id" in options:
            self._check_prompt_id(options["prompt_id"])
            prompt_id = int(options["prompt_id"])
        else:
            prompt_id = int(self.np_random.integers(len(self.task.targets)))
        self._conv = Conversation(prompt_id)
        self._transcript = self.prompt(prompt_id)
        self._turns = []
        return self._transcript, {"prompt_id": prompt_id, "turn": 0}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._conv is None or self._conv.done:
            raise gym.error.ResetNeeded("call reset() before step(): the conversation has not started or has ended")
        action = truncate_action(action, self.max_turn_chars)
        conv = self._conv
        before = len(conv.revealed)
        total_before = conv.total
        (reply,) = self.play([conv], [action])
        self._turns.append(action)
        self._transcript += f"\n{POLICY}{action}\n{SHOPPER}{reply}"
        info = {
            "prompt_id": conv.prompt_id,
            "turn": conv.turns,
            "kind": turn_kind(action),
            "reply": reply,
            "revealed": [self.task.attributes[a] for a in conv.revealed[before:]],
            "found": conv.found,
            "segments": self.oracle.segment(action),
            "retrieval_text": retrieval_text(action),
            "turns": list(self._turns),
            "return": conv.total,
        }
        return self._transcript, conv.total - total_before, conv.done, False, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        return self._transcript or "(not reset yet)"


def _check_number(name: str, value: Any, low: float, high: float, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not low <= value <= high:
        bound = f"[{low}, {high}]" if math.isfinite(high) else f">= {low} and finite"
        raise ValueError(f"{name} must be {what}, a number in {bound}, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")


class ConvSearchVectorEnv(VectorEnv):
    """``num_envs`` conversations (1 to 65,536) of one :class:`ConvSearchEnv` that search in one retriever call per
    step; built by ``gym.make_vec("ospo/ConvSearch-v0", num_envs=N, vectorization_mode="vector_entry_point")``.

    ``SAME_STEP`` autoreset: a sub-env whose conversation ends returns the next prompt's opening, and the finished
    conversation's last observation and info are in ``info["final_obs"]`` / ``info["final_info"]``. Sub-env ``i``
    reset with ``seed + i`` draws the prompt the single env draws with that seed; ``options={"prompt_ids": [...]}``
    pins one prompt per sub-env (a GRPO group is G copies of one prompt), ``{"prompt_id": p}`` all of them.
    """

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 1, **env_kwargs: Any) -> None:
        check_knob("num_envs", num_envs, 1, MAX_NUM_ENVS, "each sub-env keeps its own conversation")
        hold_single_env(self, ConvSearchEnv(**env_kwargs), num_envs)
        self._convs: list[Conversation] | None = None
        self._transcripts: list[str] = []
        self._turns: list[list[str]] = []

    @property
    def oracle(self) -> TurnOracle:
        return self.env.oracle

    def _start(self, i: int, prompt_id: int) -> None:
        self._convs[i] = Conversation(prompt_id)
        self._transcripts[i] = self.env.prompt(prompt_id)
        self._turns[i] = []

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[tuple[str, ...], dict[str, Any]]:
        if seed is not None:
            self._generators = seeded_generators(seed, self.num_envs)
        pinned = pinned_prompt_ids(options, self.num_envs, self.env._check_prompt_id)
        if pinned is None:  # drawn ids are in range: no check needed
            pinned = [self._draw(i) for i in range(self.num_envs)]
        self._convs = [None] * self.num_envs
        self._transcripts = [""] * self.num_envs
        self._turns = [[] for _ in range(self.num_envs)]
        for i, prompt_id in enumerate(pinned):
            self._start(i, int(prompt_id))
        return tuple(self._transcripts), self._info()

    def _draw(self, i: int) -> int:
        return int(self._generators[i].integers(len(self.env.task.targets)))

    def step(self, actions: Sequence[str]) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._convs is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        actions = check_actions(actions, self.num_envs, self.env.max_turn_chars)
        before = np.array([c.total for c in self._convs])
        replies = self.env.play(self._convs, actions)
        rewards = np.array([c.total for c in self._convs]) - before
        done = np.array([c.done for c in self._convs], dtype=bool)
        final_obs = np.empty(self.num_envs, dtype=object)
        final_info = {
            "prompt_id": np.zeros(self.num_envs, dtype=np.int64),
            "found": np.zeros(self.num_envs, dtype=bool),
            "return": np.zeros(self.num_envs),
            "turns": np.empty(self.num_envs, dtype=object),
        }
        for i, (action, reply) in enumerate(zip(actions, replies, strict=True)):
            self._turns[i].append(action)
            self._transcripts[i] += f"\n{POLICY}{action}\n{SHOPPER}{reply}"
            if done[i]:
                conv = self._convs[i]
                final_obs[i] = self._transcripts[i]
                final_info["prompt_id"][i], final_info["found"][i], final_info["return"][i] = conv.prompt_id, conv.found, conv.total
                final_info["turns"][i] = list(self._turns[i])
                self._start(i, self._draw(i))
        info = self._info()
        info["reply"] = object_array(replies)
        info["_reply"] = np.ones(self.num_envs, dtype=bool)
        if done.any():
            for key in list(final_info):
                final_info[f"_{key}"] = done.copy()
            info["final_obs"], info["final_info"] = final_obs, final_info
            info["_final_obs"] = info["_final_info"] = done.copy()
        return tuple(self._transcripts), rewards, done, np.zeros(self.num_envs, dtype=bool), info

    def _info(self) -> dict[str, Any]:
        ones = np.ones(self.num_envs, dtype=bool)
        return {
            "prompt_id": np.array([c.prompt_id for c in self._convs], dtype=np.int64),
            "_prompt_id": ones,
            "turn": np.array([c.turns for c in self._convs], dtype=np.int64),
            "_turn": ones.copy(),
        }
