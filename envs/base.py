"""Machinery shared by every generative-search environment: the one-step episode, the oracle, the vector env.

An env subclass provides its prompts and :meth:`GenerativeSearchEnv.score_texts`; everything else — spaces,
seeding, the action-to-retrieval-text rule, truncation, the oracle, batching — lives here once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from functools import cached_property
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv

from ospo_gym.credit.shapley import MAX_EXACT_PLAYERS, shapley_exact
from ospo_gym.knobs import check_knob
from ospo_gym.oracle import CoalitionOracle
from ospo_gym.segment import retrieval_text
from ospo_gym.spaces import UnicodeText
from ospo_gym.wrappers import NoisyScorer, RewardNoise

RESET_OPTIONS = ("prompt_id",)
VECTOR_RESET_OPTIONS = ("prompt_id", "prompt_ids")
PER_SUB_ENV_PINNING = (
    "options={'prompt_ids': [...]} pins one prompt per sub-env and needs the native vector env, "
    "gym.make_vec(id, num_envs=N, vectorization_mode='vector_entry_point'): 'sync' and 'async' hand every sub-env "
    "the same options, so there use options={'prompt_id': p} to pin all of them to one prompt"
)
# Upper bounds of the shared size knobs (every knob has one, so that no setting can hang or exhaust memory).
MAX_ACTION_CHARS = 10**9
MAX_NUM_ENVS = 1 << 16
MAX_TABLE_CELLS = 1 << 25
"""Cells of the largest per-prompt table a synthetic env holds in memory (float64: 256 MiB)."""


def check_batch(name: str, items: Any, what: str) -> list[Any]:
    """``items`` as a list, refusing a bare ``str`` / ``bytes`` (one item, not a batch) and non-sequences."""
    expected = f"{name} must be a sequence (a list) of {what}, one per batch entry, got {type(items).__name__}"
    if isinstance(items, (str, bytes)):
        raise ValueError(f"{expected}; wrap a single one in a list")
    try:
        return list(items)
    except TypeError:  # not iterable (an int, None, a 0-d array)
        raise ValueError(expected) from None


def truncate_action(action: Any, max_chars: int) -> str:
    """Check the action's type and cut it to ``max_chars`` characters (the documented rule for long actions)."""
    if not isinstance(action, str):
        raise TypeError(f"the action must be a str (the generated text), got {type(action).__name__}")
    return action[:max_chars]


def object_array(items: Sequence[Any]) -> np.ndarray:
    """A 1-D object array holding ``items`` as they are (numpy would turn equal-length lists into a 2-D array)."""
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


def seeded_generators(seed: int | Sequence[int | None], num_envs: int) -> list[np.random.Generator]:
    """A vector env's sub-env generators for ``reset(seed=...)``: ``seed + i`` for sub-env ``i`` from an int, or
    one seed each from a sequence of ``num_envs``."""
    seeds = [seed + i for i in range(num_envs)] if isinstance(seed, int) else list(seed)
    if len(seeds) != num_envs:
        raise ValueError(f"got {len(seeds)} seeds for {num_envs} sub-envs")
    return [seeding.np_random(s)[0] for s in seeds]


def pinned_prompt_ids(
    options: dict[str, Any] | None, num_envs: int, check_prompt_id: Callable[[Hashable], None]
) -> list[Hashable] | None:
    """The prompt ids a vector env's reset ``options`` pin, one per sub-env (each checked with
    ``check_prompt_id``); ``None`` when they pin none (each sub-env draws its own)."""
    options = dict(options or {})
    unknown = set(options) - set(VECTOR_RESET_OPTIONS)
    if unknown:
        raise ValueError(f"unknown reset options {sorted(unknown)}; allowed: {list(VECTOR_RESET_OPTIONS)}")
    if "prompt_id" in options and "prompt_ids" in options:
        raise ValueError("pass options['prompt_id'] (every sub-env) or options['prompt_ids'] (one each), not both")
    if "prompt_id" in options:
        check_prompt_id(options["prompt_id"])
        return [options["prompt_id"]] * num_envs
    if "prompt_ids" in options:
        pinned = check_batch("options['prompt_ids']", options["prompt_ids"], "prompt ids")
        if len(pinned) != num_envs:
            raise ValueError(f"prompt_ids has {len(pinned)} entries; expected one per sub-env ({num_envs})")
        for prompt_id in pinned:
            check_prompt_id(prompt_id)
        return pinned
    return None


def hold_single_env(vector: Any, env: gym.Env, num_envs: int) -> None:
    """Set up a native vector env over one single ``env``: its batched spaces, no render mode, and one unseeded
    generator per sub-env (``reset(seed=...)`` seeds them with :func:`seeded_generators`)."""
    vector.env = env
    vector.num_envs = num_envs
    vector.single_observation_space = env.observation_space
    vector.single_action_space = env.action_space
    vector.observation_space = gym.vector.utils.batch_space(env.observation_space, num_envs)
    vector.action_space = gym.vector.utils.batch_space(env.action_space, num_envs)
    vector.render_mode = None
    vector._generators = [seeding.np_random()[0] for _ in range(num_envs)]


def check_actions(actions: Any, num_envs: int, max_chars: int) -> list[str]:
    """A vector env's ``step`` actions: a sequence of ``num_envs`` str, each cut to ``max_chars``."""
    actions = check_batch("actions", actions, f"{num_envs} str actions")
    if len(actions) != num_envs:
        raise ValueError(f"got {len(actions)} actions; expected a sequence of {num_envs}, one per sub-env")
    return [truncate_action(a, max_chars) for a in actions]


class GenerativeSearchEnv(gym.Env[str, str]):
    """Base class: a prompt is shown, the agent answers with text once, the env scores it.

    Subclasses set ``self._prompts`` (an ordered ``{prompt_id: prompt text}``) and implement
    :meth:`score_texts`. Actions longer than ``max_action_chars`` (1 to 10**9) are truncated to their first
    ``max_action_chars`` characters before anything else (retrieval text, segments, reward).

    ``reward_noise={"kind": ..., "level": ..., "seed": ...}`` (default None: no noise) makes the reward and every
    oracle value noisy in the same seeded way (:mod:`ospo_gym.wrappers`; the kinds an env supports are its
    ``noise_kinds``); :meth:`ground_truth_credit` stays that of the noise-free game.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 1}
    default_segmentation: ClassVar[str] = "phrase"
    noise_kinds: ClassVar[tuple[str, ...]] = ("gaussian",)
    """The kinds of ``reward_noise`` this env supports (see :mod:`ospo_gym.wrappers`)."""

    def __init__(
        self,
        *,
        segmentation: str | None = None,
        segmentation_backend: str = "rules",
        max_action_chars: int = 100_000,
        render_mode: str | None = None,
        reward_noise: RewardNoise | dict[str, Any] | None = None,
    ) -> None:
        self.reward_noise = RewardNoise.from_spec(reward_noise)
        if self.reward_noise is not None and self.reward_noise.kind not in self.noise_kinds:
            raise ValueError(
                f"{type(self).__name__} does not support reward noise {self.reward_noise.kind!r}; it supports "
                f"{list(self.noise_kinds)} (label flips and score noise need a retrieval env)"
            )
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unknown render_mode {render_mode!r}; expected one of {self.metadata['render_modes']}")
        check_knob("max_action_chars", max_action_chars, 1, MAX_ACTION_CHARS, "actions are cut to that many characters")
        self.render_mode = render_mode
        self.segmentation = segmentation or self.default_segmentation
        self.segmentation_backend = segmentation_backend
        self.max_action_chars = max_action_chars
        self._observation_space: gym.Space | None = None
        self.action_space = UnicodeText()
        self._prompts: dict[Hashable, str] = {}
        self._prompt_id: Hashable | None = None
        self._last: dict[str, Any] | None = None
        self.oracle  # noqa: B018 — validates the segmentation arguments at construction

    # -- what a subclass provides -------------------------------------------------------------------------
    def score_texts(self, prompt_ids: Sequence[Hashable], texts: Sequence[str]) -> np.ndarray:
        """Rewards of retrieval texts for their prompts, shape (N,), finite and in [0, 1]."""
        raise NotImplementedError

    # -- public API ---------------------------------------------------------------------------------------
    @property
    def prompt_ids(self) -> list[Hashable]:
        """Every prompt id, in a fixed order."""
        return list(self._prompts)

    @property
    def observation_space(self) -> gym.Space:
        """``UnicodeText`` with ``max_length`` the longest prompt's length, so that ``AsyncVectorEnv``'s shared
        memory holds every observation (fixed once the prompts exist; a subclass may assign another space)."""
        if getattr(self, "_observation_space", None) is not None:
            return self._observation_space
        if not getattr(self, "_prompts", None):  # still being constructed: subclasses add the prompts after __init__
            return UnicodeText()
        self._observation_space = UnicodeText(max(1, max(len(p) for p in self._prompts.values())))
        return self._observation_space

    @observation_space.setter
    def observation_space(self, space: gym.Space) -> None:
        self._observation_space = space

    def prompt(self, prompt_id: Hashable) -> str:
        """The prompt text (the observation) of ``prompt_id``."""
        self._check_prompt_id(prompt_id)
        return self._prompts[prompt_id]

    @cached_property
    def oracle(self) -> CoalitionOracle:
        """The coalition-value oracle of this env (see :class:`ospo_gym.oracle.CoalitionOracle`)."""
        return CoalitionOracle(
            self._scorer, segmentation=self.segmentation, segmentation_backend=self.segmentation_backend
        )

    @property
    def _scorer(self) -> Any:
        """What scores retrieval texts: :meth:`score_texts` (looked up at each use), or its noisy version (one
        :class:`~ospo_gym.wrappers.NoisyScorer`, built on first use) under ``reward_noise``."""
        if self.reward_noise is None:
            return self.score_texts
        if "_noisy_scorer" not in self.__dict__:
            self._noisy_scorer = NoisyScorer(self, self.reward_noise)
        return self._noisy_scorer

    def rewards(
        self, prompt_ids: Sequence[Hashable], actions: Sequence[str], *, scorer: Any = None
    ) -> np.ndarray:
        """Rewards of whole actions (completions) in one batch, shape (N,); ``scorer`` (default: the env's own,
        noisy under ``reward_noise``) replaces the ``score_texts`` it uses.

        Raises:
            ValueError: ``prompt_ids`` and ``actions`` are not sequences of the same length (a bare ``str`` is
                one action, not a batch), or a prompt id is unknown.
            TypeError: an action is not a ``str``.
        """
        prompt_ids = check_batch("prompt_ids", prompt_ids, "prompt ids")
        actions = check_batch("actions", actions, "str actions")
        if len(prompt_ids) != len(actions):
            raise ValueError(
                f"got {len(prompt_ids)} prompt_ids but {len(actions)} actions; pass one prompt id per action"
            )
        for prompt_id in prompt_ids:
            self._check_prompt_id(prompt_id)
        texts = [retrieval_text(truncate_action(a, self.max_action_chars)) for a in actions]
        return np.asarray((self._scorer if scorer is None else scorer)(prompt_ids, texts), dtype=np.float64)

    def ground_truth_credit(self, prompt_id: Hashable, text: str) -> np.ndarray:
        """Exact Shapley value of each segment of ``text`` (its :meth:`oracle` segments), shape (n,).

        Computed by enumerating all ``2**n`` coalitions through the oracle (the noise-free one under
        ``reward_noise``); ``n`` must be at most ``MAX_EXACT_PLAYERS``. Envs with a closed form override this.
        """
        self._check_prompt_id(prompt_id)
        text = truncate_action(text, self.max_action_chars)
        spans = self.oracle.segment(text)
        if len(spans) > MAX_EXACT_PLAYERS:
            raise ValueError(
                f"the text has {len(spans)} segments; exact Shapley values enumerate 2**n coalitions and allow at "
                f"most {MAX_EXACT_PLAYERS}. Shorten the text or use ospo_gym.credit.segment_credit."
            )
        oracle = self.oracle
        if self.reward_noise is not None:
            oracle = CoalitionOracle(self.score_texts, segmentation=self.segmentation, segmentation_backend=self.segmentation_backend)
        return shapley_exact(lambda cs: oracle.values(prompt_id, text, spans, cs), len(spans))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        super().reset(seed=seed)
        options = dict(options or {})
        if "prompt_ids" in options:
            raise ValueError(f"a single env has one prompt; {PER_SUB_ENV_PINNING}")
        unknown = set(options) - set(RESET_OPTIONS)
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; allowed: {list(RESET_OPTIONS)}")
        if "prompt_id" in options:
            self._check_prompt_id(options["prompt_id"])
            self._prompt_id = options["prompt_id"]
        else:
            ids = self.prompt_ids
            self._prompt_id = ids[int(self.np_random.integers(len(ids)))]
        self._last = None
        return self._prompts[self._prompt_id], {"prompt_id": self._prompt_id}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._prompt_id is None:
            raise gym.error.ResetNeeded("call reset() before step(): each episode is one prompt and one answer")
        action = truncate_action(action, self.max_action_chars)
        reward = float(self.rewards([self._prompt_id], [action])[0])
        info = {
            "prompt_id": self._prompt_id,
            "segments": self.oracle.segment(action),
            "retrieval_text": retrieval_text(action),
        }
        obs = self._prompts[self._prompt_id]
        self._last = {"prompt": obs, "action": action, "reward": reward}
        self._prompt_id = None  # one-step episodes: the next step needs a reset
        return obs, reward, True, False, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        if self._last is None:
            return "(no step taken yet)"
        return f"prompt: {self._last['prompt']}\naction: {self._last['action']}\nreward: {self._last['reward']:.4f}"

    def _check_prompt_id(self, prompt_id: Hashable) -> None:
        if prompt_id not in self._prompts:
            sample = self.prompt_ids[:5]
            raise ValueError(
                f"unknown prompt_id {prompt_id!r}; this env has {len(self._prompts)} prompts, e.g. {sample} "
                "(see env.unwrapped.prompt_ids)"
            )


class GenerativeSearchVectorEnv(VectorEnv):
    """``num_envs`` copies (1 to 65,536) of one env that score all actions in one batched call.

    Built by ``gym.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point", **kwargs)``. Episodes are one
    step, so every step ends all sub-episodes and (``SAME_STEP`` autoreset) the returned observations are the
    next prompts; the finished episodes' observations and info are in ``info["final_obs"]`` and
    ``info["final_info"]``. ``reset(options={"prompt_ids": [...]})`` pins one prompt per sub-env — G copies of one
    prompt make a GRPO group — and ``options={"prompt_id": p}`` pins all of them to ``p``. Seeding sub-env ``i``
    with ``seed + i`` draws the same prompts as the single env reset with that seed.

    The ``"sync"`` and ``"async"`` modes give the same observations, rewards, infos and prompts for the same seeds
    and options when built with ``vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}``
    (Gymnasium's default there, ``NEXT_STEP``, spends every other step on a reset that ignores the actions and
    returns reward 0). They cannot pin one prompt per sub-env: ``prompt_ids`` raises a ``ValueError`` that
    names this mode.
    """

    env_class: ClassVar[type[GenerativeSearchEnv]] = GenerativeSearchEnv
    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 1, **env_kwargs: Any) -> None:
        check_knob("num_envs", num_envs, 1, MAX_NUM_ENVS, "each sub-env keeps its own random generator")
        hold_single_env(self, self.env_class(**env_kwargs), num_envs)
        self._prompt_ids: list[Hashable] | None = None

    @property
    def oracle(self) -> CoalitionOracle:
        return self.env.oracle

    def _draw(self, count: int) -> list[Hashable]:
        ids = self.env.prompt_ids
        return [ids[int(self._generators[i].integers(len(ids)))] for i in range(count)]

    def _observe(self) -> tuple[str, ...]:
        return tuple(self.env.prompt(p) for p in self._prompt_ids)

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[tuple[str, ...], dict[str, Any]]:
        if seed is not None:
            self._generators = seeded_generators(seed, self.num_envs)
        pinned = pinned_prompt_ids(options, self.num_envs, self.env._check_prompt_id)
        self._prompt_ids = self._draw(self.num_envs) if pinned is None else pinned
        return self._observe(), self._info(self._prompt_ids)

    def step(self, actions: Sequence[str]) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._prompt_ids is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        actions = check_actions(actions, self.num_envs, self.env.max_action_chars)
        finished = self._prompt_ids
        rewards = self.env.rewards(finished, actions)
        final_info = self._info(finished)
        final_info["segments"] = object_array([self.env.oracle.segment(a) for a in actions])
        final_info["retrieval_text"] = object_array([retrieval_text(a) for a in actions])
        final_info["_segments"] = final_info["_retrieval_text"] = np.ones(self.num_envs, dtype=bool)
        final_obs = object_array(self._observe())
        self._prompt_ids = self._draw(self.num_envs)
        info = self._info(self._prompt_ids)
        info["final_obs"], info["final_info"] = final_obs, final_info
        info["_final_obs"] = np.ones(self.num_envs, dtype=bool)
        info["_final_info"] = np.ones(self.num_envs, dtype=bool)
        terminated = np.ones(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        return self._observe(), rewards, terminated, truncated, info

    def _info(self, prompt_ids: Sequence[Hashable]) -> dict[str, Any]:
        return {"prompt_id": object_array(prompt_ids), "_prompt_id": np.ones(len(prompt_ids), dtype=bool)}
