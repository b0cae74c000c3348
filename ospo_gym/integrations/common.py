"""What every trainer adapter needs: the single ospo-gym env behind an id, an env or a vector env; its
coalition-value oracle; an estimator from the registry; the estimator's AgentConfig from the adapter's OSPO knobs;
prompt ids as Arrow holds them; the check of the token advantages an estimator returns.

Imports neither a trainer nor torch at module level (the estimator registry is imported only by the helpers that
credit tokens), so that each adapter (TRL, verifiers, verl) uses it in whatever virtualenv its trainer needs.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import VectorEnv

from ospo_gym.oracle import CoalitionOracle
from ospo_gym.registration import ENV_IDS

__all__ = [
    "ENV_HINT",
    "OSPO_KNOBS",
    "check_advantages",
    "env_oracle",
    "id_column",
    "ospo_agent_config",
    "ospo_env",
    "registered_estimator",
]

ENV_HINT = "pass an ospo-gym env id such as 'ospo/SyntheticRetrieval-v0', gym.make(...) of one, or its vector env"


def ospo_env(
    env: str | gym.Env | VectorEnv,
    env_kwargs: dict[str, Any] | None = None,
    *,
    needs: tuple[str, ...] = ("prompt_ids", "prompt", "rewards"),
) -> Any:
    """The single ospo-gym env behind ``env``: an env id (built with ``gym.make(id, **env_kwargs)``), an env
    (wrappers are looked through) or a vector env of one (its first sub-env's, for a Sync/Async one).

    ``needs`` are the attributes the caller uses: the single-turn ones by default; a multi-turn adapter asks for
    less (``ospo/ConvSearch-v0`` has prompts but no one-shot ``rewards``).

    Raises:
        ValueError: ``env`` is an id that no package registered, or it lacks one of ``needs`` (for the default:
            it is not a generative-search env).
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
    missing = [name for name in needs if not hasattr(base, name)]
    if base is None or missing:
        raise ValueError(
            f"{type(base).__name__} is not an ospo-gym generative-search env (it lacks {', '.join(missing)}); "
            f"{ENV_HINT}"
        )
    return base


def env_oracle(base: Any, segmentation: str | None, *, user: str, without_oracle: str) -> Any:
    """The env's coalition-value oracle (re-segmenting with ``segmentation`` when given).

    Args:
        base: the env (see :func:`ospo_env`).
        segmentation: a segmentation mode, or ``None`` for the env's own.
        user: who credits tokens through the oracle, for the error message (e.g. ``"OSPOTrainer"``).
        without_oracle: what to use instead when the env has no oracle, for the error message.
    """
    oracle = getattr(base, "oracle", None)
    if not (callable(getattr(oracle, "segment", None)) and callable(getattr(oracle, "values_batch", None))):
        raise ValueError(
            f"{type(base).__name__} has no coalition-value oracle (env.unwrapped.oracle with segment() and "
            f"values_batch()), through which {user} credits tokens; pass an ospo-gym env "
            "(gym.make('ospo/...')) or give yours one (ospo_gym.oracle.CoalitionOracle(score_texts)); "
            f"{without_oracle}"
        )
    if segmentation is None or segmentation == getattr(oracle, "segmentation", None):
        return oracle
    if not callable(getattr(oracle, "score_texts", None)):
        raise ValueError(
            f"segmentation={segmentation!r} needs an oracle built on score_texts (ospo_gym.oracle.CoalitionOracle); "
            f"{type(oracle).__name__} is not: leave segmentation=None to use the env's own"
        )
    backend = getattr(oracle, "segmentation_backend", "rules")
    joined = getattr(oracle, "joined_texts", False)  # the same score_texts takes the same hand-over
    return CoalitionOracle(oracle.score_texts, segmentation=segmentation, segmentation_backend=backend, joined_texts=joined)


def registered_estimator(name: str, before: str) -> Any:
    """The ospo-gym estimator registered as ``name``; an unknown name lists the known ones and says to register
    a user estimator ``before`` (e.g. "building OSPOConfig")."""
    # the agents package: only the adapters that credit tokens need it
    from ospo_gym.agents.estimators import get_estimator

    try:
        return get_estimator(name)
    except ValueError as err:
        raise ValueError(f"{err}; register your own with ospo_gym.agents.register_estimator(name, fn) {before}") from None


OSPO_KNOBS = ("std_ddof", "w_max", "max_coalitions", "contiguous", "credit_variant", "clip_token_advantages", "seed")
"""The AgentConfig fields every adapter's config holds under the same names and hands to the estimator as they are."""


def ospo_agent_config(
    knobs: Any, *, algo: str, group_size: int, prompts_per_step: int, scale_rewards: str, **fields: Any
) -> Any:
    """The :class:`~ospo_gym.agents.AgentConfig` an adapter's estimator receives.

    Args:
        knobs: the adapter's config, whose attributes named in :data:`OSPO_KNOBS` are copied as they are.
        algo: the registered estimator's name.
        group_size: rollouts per prompt.
        prompts_per_step: groups in the batch; clamped to at least 1 (a batch smaller than one group still
            credits as one group).
        scale_rewards: "group", "batch" or "none".
        fields: other AgentConfig fields the adapter sets (e.g. ``max_new_tokens``); the rest keep their defaults.
    """
    # the agents package imports torch: only the adapters that credit tokens need it
    from ospo_gym.agents.config import AgentConfig

    return AgentConfig(
        algo=algo,
        group_size=group_size,
        prompts_per_step=max(1, prompts_per_step),
        scale_rewards=scale_rewards,
        **{name: getattr(knobs, name) for name in OSPO_KNOBS},
        **fields,
    )


def id_column(ids: list[Hashable]) -> Any:
    """Prompt ids as Arrow can hold them exactly: integer ids as an int64 (or, beyond it, uint64) array —
    Arrow reads a list of Python ints as int64 and numpy would turn large ones into floats."""
    integers = all(isinstance(p, int | np.integer) and not isinstance(p, bool | np.bool_) for p in ids)
    if integers:
        values = [int(p) for p in ids]
        if -(2**63) <= min(values) and max(values) < 2**63:
            return np.asarray(values, dtype=np.int64)
        if min(values) >= 0 and max(values) < 2**64:
            return np.asarray(values, dtype=np.uint64)
    return [p.item() if isinstance(p, np.generic) else p for p in ids]


def check_advantages(advantages: np.ndarray, shape: tuple[int, ...], algo: str) -> None:
    """Raise unless the estimator returned (B, T) values that are finite in float32, the precision of the
    trainers' losses."""
    if advantages.shape != shape:
        raise ValueError(
            f"estimator {algo!r} returned advantages of shape {advantages.shape}; expected (B, T) = {shape}"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        bad = int(np.count_nonzero(~np.isfinite(advantages.astype(np.float32))))
    if bad:
        from ospo_gym.agents.guard import TrainingDivergedError

        raise TrainingDivergedError(
            f"estimator {algo!r} returned {bad} of {advantages.size} token advantages that are not finite in float32 "
            "(NaN, inf or beyond float32's range); nothing of this step was applied. The estimator must return finite "
            "(B, T) token advantages"
        )
