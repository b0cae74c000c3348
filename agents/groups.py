"""The agent's view of an environment: pin a batch of prompts (G copies each), read prompts, score completions."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import VectorEnv

from ospo_gym.oracle import CoalitionOracle


def make_env(env: str | gym.Env | VectorEnv, env_kwargs: dict[str, Any] | None, num_envs: int) -> gym.Env | VectorEnv:
    """An env id becomes ``gym.make_vec(id, num_envs, vectorization_mode="vector_entry_point", **env_kwargs)``
    (one batched reward call per step); an env instance is used as it is."""
    if isinstance(env, str):
        return gym.make_vec(env, num_envs=num_envs, vectorization_mode="vector_entry_point", **(env_kwargs or {}))
    if env_kwargs:
        raise ValueError("env_kwargs only apply when env is an id string; this env is already built")
    if not isinstance(env, gym.Env | VectorEnv):
        raise ValueError(f"env must be an env id or a gymnasium Env / VectorEnv, got {type(env).__name__}")
    return env


def env_name(env: str | gym.Env | VectorEnv) -> str:
    """The env id (from its spec) or, failing that, its class name."""
    if isinstance(env, str):
        return env
    spec = getattr(env, "spec", None) or getattr(env.unwrapped, "spec", None)
    return spec.id if spec is not None else type(env.unwrapped).__name__


def _search_view(env: gym.Env) -> gym.Env:
    """The outermost layer of ``env`` that is an ospo-gym search env itself (a wrapper such as
    :class:`ospo_gym.wrappers.NoisyReward` that brings its own oracle and rewards), else ``env.unwrapped``."""
    layer = env
    while isinstance(layer, gym.Wrapper):
        if all(name in vars(type(layer)) or name in vars(layer) for name in ("oracle", "rewards", "prompt_ids")):
            return layer
        layer = layer.env
    return env.unwrapped


class GroupedEnv:
    """Adapter over a single ospo-gym env or its native vector env.

    A vector env must have one sub-env per completion (``num_envs == B``); its ``reset(options={"prompt_ids":
    ...})`` pins the prompts and its ``step`` scores all completions at once. A single env is reset once per
    distinct prompt and scores with ``env.unwrapped.rewards``.
    """

    def __init__(self, env: gym.Env | VectorEnv, batch_size: int, seed: int) -> None:
        self.env = env
        self.vector = isinstance(env, VectorEnv)
        base = env.unwrapped
        self._single = getattr(base, "env", None) if self.vector else _search_view(env)
        if self._single is None or not hasattr(self._single, "prompt_ids") or not hasattr(self._single, "oracle"):
            raise ValueError(
                f"{type(base).__name__} is not an ospo-gym generative-search env (it needs prompt_ids, oracle and "
                "rewards); build one with gym.make('ospo/...') or gym.make_vec(..., vectorization_mode="
                "'vector_entry_point')"
            )
        if self.vector and env.num_envs != batch_size:
            raise ValueError(
                f"the vector env has {env.num_envs} sub-envs but a step needs {batch_size} (prompts_per_step × "
                "group_size); build it with that num_envs or pass the env id"
            )
        self._pinned: list[Hashable] | None = None
        env.reset(seed=seed)

    @property
    def base(self) -> gym.Env:
        """The single ospo-gym env behind the adapter (a vector env's own single env), e.g. for a multi-turn
        env's batched ``play``."""
        return self._single

    @property
    def prompt_ids(self) -> list[Hashable]:
        return list(self._single.prompt_ids)

    @property
    def oracle(self) -> CoalitionOracle:
        return self._single.oracle

    def prompt(self, prompt_id: Hashable) -> str:
        return self._single.prompt(prompt_id)

    def score(self, prompt_ids: Sequence[Hashable], completions: Sequence[str]) -> np.ndarray:
        """(N,) rewards of any number of completions, outside the episode flow (for evaluation)."""
        return np.asarray(self._single.rewards(list(prompt_ids), list(completions)), dtype=np.float64)

    def start(self, prompt_ids: Sequence[Hashable]) -> list[str]:
        """Reset on these prompts (one per completion); returns the observations (prompt texts)."""
        self._pinned = list(prompt_ids)
        if self.vector:
            observations, _ = self.env.reset(options={"prompt_ids": self._pinned})
            return list(observations)
        texts: dict[Hashable, str] = {}
        for prompt_id in dict.fromkeys(self._pinned):
            texts[prompt_id], _ = self.env.reset(options={"prompt_id": prompt_id})
        return [texts[p] for p in self._pinned]

    def rewards(self, completions: Sequence[str]) -> np.ndarray:
        """(B,) rewards of the completions for the prompts of the last :meth:`start`."""
        if self._pinned is None or len(completions) != len(self._pinned):
            raise ValueError("call start(prompt_ids) first, then rewards() with one completion per prompt id")
        if self.vector:
            _, rewards, *_ = self.env.step(list(completions))
        else:
            rewards = self._single.rewards(self._pinned, list(completions))
        self._pinned = None
        return np.asarray(rewards, dtype=np.float64)
