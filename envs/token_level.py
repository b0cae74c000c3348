"""A token-level view of a synthetic text task, for classic RL libraries (e.g. stable-baselines3 PPO)."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

# The text envs read lowercased runs of letters and digits as words; a trailing ':' marks a section label.
_PROMPT_WORD = re.compile(r"([^\W_]+)(:?)")

# The keyword arguments that belong to the wrapper in :func:`make_token_env`; every other one goes to the env.
_WRAPPER_KWARGS = ("max_tokens", "separator")

# float32 holds t / max_tokens exactly distinct for every step t only up to 2**24 steps.
MAX_TOKENS = 1 << 24

# The registered envs whose unwrapped has a `vocabulary` (for the error message and the docs).
VOCABULARY_ENVS = ("ospo/AdditiveKeywords-v0", "ospo/Interaction-v0", "ospo/SyntheticRetrieval-v0")


class TokenLevelEnv(gym.Env[np.ndarray, np.int64]):
    """Write the answer of a one-step text env one vocabulary word at a time.

    ## Description
    The wrapped (inner) env is a one-step text task with a word vocabulary, e.g. ``ospo/AdditiveKeywords-v0``
    or ``ospo/Interaction-v0``. Each step of this env appends one word of the inner env's ``vocabulary`` to
    the answer or ends it; when the answer ends, the words joined by ``separator`` are sent to the inner env
    as its one action and its reward is this episode's reward. Spaces are a ``Discrete`` and a flat ``Box``,
    so off-the-shelf agents such as stable-baselines3 ``PPO("MlpPolicy", ...)`` can act in the task.

    ## Action Space
    ``Discrete(V + 1)`` with ``V = len(vocabulary)``: action ``i < V`` appends ``vocabulary[i]``, action ``V``
    is EOS (end of answer). Anything else raises ``ValueError``.

    ## Observation Space
    ``Box(0, 1, shape=(2V + 1,), float32)``, three parts:

    * ``obs[:V]``, the prompt: ``obs[i] > 0`` if and only if the prompt mentions ``vocabulary[i]``. The value
      tells which section of the prompt the word is in: a prompt word ending in ``:`` (e.g. ``want:``,
      ``avoid:``) is a section label, and ``obs[i] = (1 + s) / (1 + S)`` where ``S`` is the number of labels
      in the prompt and ``s`` the number of labels before the word's first mention. ``"want: a b avoid: c"``
      gives ``a, b -> 2/3`` and ``c -> 1``; a prompt without labels is a plain bag of words (all ones). Labels
      themselves are not mentions, and words are matched like the inner env reads them (lowercased).
    * ``obs[V:2V]``, the answer so far: ``obs[V + i] = t / max_tokens`` where ``t`` is the (1-based) step at
      which ``vocabulary[i]`` was last written, ``0`` if it was not written. Positive entries are the bag of
      written words; the largest one is the last word, whose value equals ``obs[-1]`` — so a policy can tell
      which word it just wrote (phrases in ``ospo/Interaction-v0`` are adjacent word pairs).
    * ``obs[2V]``: the fraction of the token budget used, ``len(words) / max_tokens``.

    ## Rewards
    ``0`` on every step but the last; on the last step, the inner env's reward for the text
    ``separator.join(words)`` (in [0, 1] for the ospo tasks), i.e. ``inner.step(text)``.

    ## Starting State
    ``reset(seed, options)`` resets the inner env with the same ``seed`` and ``options`` (so
    ``options={"prompt_id": i}`` pins the prompt; otherwise the inner env draws one with its ``np_random``)
    and clears the answer: the answer part and the budget entry are 0.

    ## Episode End
    * Termination: the agent chooses EOS, or it has written ``max_tokens`` words. The budget ends the episode
      inside the task, not outside it: the text is scored at that step, no reward can follow, and the budget
      is part of the observation. So it is ``terminated=True``, not ``truncated`` — reporting truncation would
      make agents such as PPO bootstrap a value after the final reward. ``info["budget_exhausted"]`` tells
      the two endings apart.
    * Truncation: never; every episode ends with the inner env's reward.

    The info of the last step has ``text`` (the answer sent to the inner env), ``reward``, ``inner_info``
    (the inner env's step info) and ``budget_exhausted``; every info has ``num_tokens`` and the reset info
    also has ``prompt`` and ``inner_info`` (the inner reset info, e.g. ``prompt_id``).

    ## Arguments
    * ``env``: an env id (made with ``gymnasium.make(env, **env_kwargs)``) or an env instance whose
      ``unwrapped`` has a non-empty ``vocabulary``; see ``VOCABULARY_ENVS``.
    * ``max_tokens=8``: the most words an answer can have (EOS is not counted), at most ``2**24`` (the
      observation's ``t / max_tokens`` tells steps apart in float32 up to there).
    * ``env_kwargs=None``: keyword arguments for ``gymnasium.make`` when ``env`` is an id.
    * ``separator=" "``: joins the words into the answer text.

    >>> env = TokenLevelEnv("ospo/AdditiveKeywords-v0", max_tokens=4, env_kwargs={"vocab_size": 8})
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, env.action_space
    ((17,), Discrete(9))
    >>> _, reward, terminated, truncated, info = env.step(8)  # EOS at once: the empty answer
    >>> pid = info["inner_info"]["prompt_id"]
    >>> terminated, info["text"], bool(reward == env.env.unwrapped.rewards([pid], [""])[0])
    (True, '', True)
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(
        self,
        env: gym.Env | str,
        *,
        max_tokens: int = 8,
        env_kwargs: dict[str, Any] | None = None,
        separator: str = " ",
    ) -> None:
        if isinstance(env, str):
            env = gym.make(env, **(env_kwargs or {}))
        elif env_kwargs:
            raise ValueError("env_kwargs only apply when env is an id; pass a configured instance instead")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int | np.integer) or not 1 <= max_tokens <= MAX_TOKENS:
            raise ValueError(
                f"max_tokens must be an int in [1, {MAX_TOKENS}] (the observation holds step / max_tokens in float32, "
                f"which tells steps apart only up to 2**24), got {max_tokens!r}"
            )
        if not isinstance(separator, str):
            raise TypeError(f"separator must be a str, got {type(separator).__name__}")
        vocabulary = getattr(env.unwrapped, "vocabulary", None)
        if not vocabulary:
            raise ValueError(
                f"{env.unwrapped!r} has no vocabulary to act with; the token-level env needs an env whose "
                f"unwrapped has a non-empty `vocabulary`, such as {', '.join(VOCABULARY_ENVS)}"
            )
        self.env = env
        self.max_tokens = int(max_tokens)
        self.separator = separator
        self.vocabulary: tuple[str, ...] = tuple(vocabulary)
        self.eos: int = len(self.vocabulary)
        # setdefault: a duplicated word keeps its first index, so every action still writes the word it names.
        self._index: dict[str, int] = {}
        for i, word in enumerate(self.vocabulary):
            self._index.setdefault(word.lower(), i)
        size = len(self.vocabulary)
        self.action_space = spaces.Discrete(size + 1)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(2 * size + 1,), dtype=np.float32)
        self.render_mode = None
        self._prompt_part = np.zeros(size, dtype=np.float32)
        self._tokens: list[int] = []
        self._done = True

    def encode_prompt(self, prompt: str) -> np.ndarray:
        """The prompt part of the observation, shape (V,) float32 (see Observation Space)."""
        words = _PROMPT_WORD.findall(prompt.lower())
        labels_total = sum(1 for _, colon in words if colon)
        out = np.zeros(len(self.vocabulary), dtype=np.float32)
        labels_seen = 0
        for word, colon in words:
            if colon:
                labels_seen += 1
            elif word in self._index and out[self._index[word]] == 0:  # the first mention decides the section
                out[self._index[word]] = (1 + labels_seen) / (1 + labels_total)
        return out

    def text(self) -> str:
        """The answer written so far, as the inner env will read it."""
        return self.separator.join(self.vocabulary[i] for i in self._tokens)

    def _observation(self) -> np.ndarray:
        size = len(self.vocabulary)
        obs = np.zeros(2 * size + 1, dtype=np.float32)
        obs[:size] = self._prompt_part
        for step, token in enumerate(self._tokens, start=1):  # later writes overwrite: the latest step wins
            obs[size + token] = step / self.max_tokens
        obs[-1] = len(self._tokens) / self.max_tokens
        return obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        # The only random choice is the prompt, drawn by the inner env's np_random; the seed goes to it as is.
        prompt, inner_info = self.env.reset(seed=seed, options=options)
        self._prompt_part = self.encode_prompt(prompt)
        self._tokens = []
        self._done = False
        return self._observation(), {"prompt": prompt, "inner_info": inner_info, "num_tokens": 0}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if isinstance(action, bool | np.bool_) or not self.action_space.contains(action):
            raise ValueError(f"invalid action {action!r}: expected an int in [0, {self.eos}], EOS included")
        if self._done:
            raise gym.error.ResetNeeded("the episode has ended; call reset() before step()")
        token = int(action)
        if token != self.eos:
            self._tokens.append(token)
        budget_exhausted = token != self.eos and len(self._tokens) >= self.max_tokens
        if token != self.eos and not budget_exhausted:
            return self._observation(), 0.0, False, False, {"num_tokens": len(self._tokens)}
        text = self.text()
        _, reward, _, _, inner_info = self.env.step(text)
        self._done = True
        info = {
            "text": text,
            "reward": float(reward),
            "inner_info": inner_info,
            "budget_exhausted": budget_exhausted,
            "num_tokens": len(self._tokens),
        }
        return self._observation(), float(reward), True, False, info

    def close(self) -> None:
        self.env.close()
        super().close()


def make_token_env(env_id: str, **kwargs: Any) -> TokenLevelEnv:
    """A :class:`TokenLevelEnv` over ``gymnasium.make(env_id, ...)``.

    ``max_tokens`` and ``separator`` go to the wrapper, every other keyword to the inner env, e.g.
    ``make_token_env("ospo/AdditiveKeywords-v0", max_tokens=4, vocab_size=8)``.
    """
    wrapper_kwargs = {key: kwargs.pop(key) for key in _WRAPPER_KWARGS if key in kwargs}
    return TokenLevelEnv(env_id, env_kwargs=kwargs, **wrapper_kwargs)
