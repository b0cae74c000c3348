"""What every trainer adapter needs of an ospo-gym env: the one single env behind an id, an env or a vector env.

Core only (gymnasium, no trainer, no torch), so that each adapter (TRL, verifiers, verl) resolves envs the same way
in whatever virtualenv its trainer needs.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from gymnasium.vector import VectorEnv

from ospo_gym.registration import ENV_IDS

__all__ = ["ENV_HINT", "ospo_env"]

ENV_HINT = "pass an ospo-gym env id such as 'ospo/SyntheticRetrieval-v0', gym.make(...) of one, or its vector env"


def ospo_env(env: str | gym.Env | VectorEnv, env_kwargs: dict[str, Any] | None = None) -> Any:
    """The single ospo-gym env behind ``env``: an env id (built with ``gym.make(id, **env_kwargs)``), an env
    (wrappers are looked through) or a vector env of one (its first sub-env's, for a Sync/Async one).

    Raises:
        ValueError: ``env`` is an id that no package registered, or it has no ``prompt_ids`` / ``prompt`` /
            ``rewards`` (it is not a generative-search env).
    """
    if isinstance(env, str):
        if env not in gym.registry:  # gymnasium's own error would not say which ids there are
            raise ValueError(f"unknown env id {env!r}; ospo-gym registers {', '.join(ENV_IDS)}; {ENV_HINT}")
        env = gym.make(env, **(env_kwargs or {}))
    elif env_kwargs:
        raise ValueError("env_kwargs only apply when env is an id string; this env is already built")
    base = getattr(env, "unwrapped", env)
    if isinstance(base, VectorEnv):
        inner = getattr(base, "env", None)  # ospo-gym's native vector env holds one single env
        if inner is None and getattr(base, "envs", None):
            inner = base.envs[0]
        base = getattr(inner, "unwrapped", inner)
    missing = [name for name in ("prompt_ids", "prompt", "rewards") if not hasattr(base, name)]
    if base is None or missing:
        raise ValueError(
            f"{type(base).__name__} is not an ospo-gym generative-search env (it lacks {', '.join(missing)}); "
            f"{ENV_HINT}"
        )
    return base
