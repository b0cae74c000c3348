"""The one place where every ``ospo/...`` environment id is registered."""

from __future__ import annotations

import gymnasium as gym

# id -> (entry point, vector entry point, default kwargs)
_ENVS: dict[str, tuple[str, str, dict]] = {
    "ospo/AdditiveKeywords-v0": (
        "ospo_gym.envs.additive:AdditiveKeywordsEnv",
        "ospo_gym.envs.additive:AdditiveKeywordsVectorEnv",
        {},
    ),
    "ospo/SyntheticRetrieval-v0": (
        "ospo_gym.envs.retrieval:SyntheticRetrievalEnv",
        "ospo_gym.envs.retrieval:SyntheticRetrievalVectorEnv",
        {},
    ),
    "ospo/Interaction-v0": (
        "ospo_gym.envs.interaction:InteractionEnv",
        "ospo_gym.envs.interaction:InteractionVectorEnv",
        {},
    ),
    "ospo/LongRange-v0": (
        "ospo_gym.envs.long_range:LongRangeEnv",
        "ospo_gym.envs.long_range:LongRangeVectorEnv",
        {},
    ),
    # Real data: the files are read from data_dir=, $OSPO_GYM_DATA or the user cache dir (ospo-gym data ...).
    "ospo/ESCI-v0": ("ospo_gym.envs.esci:EsciEnv", "ospo_gym.envs.esci:EsciVectorEnv", {}),
    "ospo/HM-v0": ("ospo_gym.envs.hm:HmEnv", "ospo_gym.envs.hm:HmVectorEnv", {}),
}

# Multi-turn ids: episodes of several steps and a turn-level oracle (ospo_gym.turn_oracle.TurnOracle); the
# single-step contract tests run over ENV_IDS, the multi-turn ones over MULTI_TURN_ENV_IDS.
_MULTI_TURN_ENVS: dict[str, tuple[str, str, dict]] = {
    "ospo/ConvSearch-v0": (
        "ospo_gym.envs.conv_search:ConvSearchEnv",
        "ospo_gym.envs.conv_search:ConvSearchVectorEnv",
        {},
    ),
}

ENV_IDS: tuple[str, ...] = tuple(_ENVS)
"""The single-step ids (one prompt, one answer)."""
MULTI_TURN_ENV_IDS: tuple[str, ...] = tuple(_MULTI_TURN_ENVS)
"""The multi-turn ids."""
ALL_ENV_IDS: tuple[str, ...] = ENV_IDS + MULTI_TURN_ENV_IDS
"""Every registered id."""


def register_envs() -> None:
    """Register every id; safe to call more than once."""
    for env_id, (entry_point, vector_entry_point, kwargs) in {**_ENVS, **_MULTI_TURN_ENVS}.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point=entry_point,
            vector_entry_point=vector_entry_point,
            kwargs=dict(kwargs),
        )
