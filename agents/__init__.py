"""Agents (GRPO, OSPO-PROP, OSPO-RANK) that learn in the ospo-gym environments; needs the ``agents`` extra.

An algorithm is an advantage estimator registered by name (:func:`register_estimator`); the loop, the clipped
surrogate loss, logging and checkpoints are shared (:class:`Agent`).
"""

from ospo_gym.agents import controls  # noqa: F401 — registers ospo_shuffled, ospo_loo, grpo_lambda
from ospo_gym.agents.agent import Agent, Callback
from ospo_gym.agents.config import AgentConfig
from ospo_gym.agents.estimators import (
    AdvantageEstimator,
    RolloutBatch,
    get_estimator,
    group_advantages,
    list_estimators,
    register_estimator,
)
from ospo_gym.agents.generation import Rollout, completion_logprobs, generate, token_offsets
from ospo_gym.agents.guard import TrainingDivergedError
from ospo_gym.agents.loss import policy_loss
from ospo_gym.agents.policy import build_tiny_qwen2, load_policy
from ospo_gym.agents.turn_estimators import MultiTurnRolloutBatch  # registers the multi-turn estimators

__all__ = [
    "AdvantageEstimator",
    "Agent",
    "AgentConfig",
    "Callback",
    "MultiTurnRolloutBatch",
    "Rollout",
    "RolloutBatch",
    "TrainingDivergedError",
    "build_tiny_qwen2",
    "completion_logprobs",
    "generate",
    "get_estimator",
    "group_advantages",
    "list_estimators",
    "load_policy",
    "policy_loss",
    "register_estimator",
    "token_offsets",
]
