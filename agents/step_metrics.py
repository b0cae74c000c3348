"""The metrics of one training step (reward, credit, oracle and timing statistics beside the update's loss
metrics), each of the whole global batch: under torchrun every rank gathers the pieces and reports the same."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ospo_gym.agents.estimators import group_advantages, zero_variance_groups
from ospo_gym.agents.logger import (
    CREDIT_ORACLE_CALLS,
    CREDIT_ORACLE_VALUES,
    CREDIT_SEQUENCE_ADVANTAGE_ABS,
    CREDIT_TOKEN_ADVANTAGE_MAX,
    CREDIT_TOKEN_ADVANTAGE_MEAN,
    CREDIT_TOKEN_ADVANTAGE_MIN,
    CREDIT_TOKEN_ADVANTAGE_STD,
    CREDIT_WITHIN_SEQUENCE_STD,
    PERF_COMPLETION_TOKENS,
    PERF_CREDIT_SECONDS,
    PERF_GENERATE_SECONDS,
    PERF_STEP_SECONDS,
    PERF_UPDATE_SECONDS,
    REWARD_MAX,
    REWARD_MEAN,
    REWARD_STD,
    REWARD_ZERO_VARIANCE_GROUPS,
)

if TYPE_CHECKING:
    from ospo_gym.agents.distributed import World


@dataclass
class StepClock:
    """``time.perf_counter()`` readings of one step: its start, after sampling and scoring, after the
    advantages, after the update."""

    start: float
    generated: float
    credited: float
    done: float


def step_metrics(
    world: World,
    *,
    rewards: np.ndarray,
    group_index: np.ndarray,
    update: dict[str, Any],
    advantages: np.ndarray,
    mask: np.ndarray,
    oracle_counts: tuple[int, int],
    clock: StepClock,
    scale_rewards: str,
    std_ddof: int = 1,
) -> dict[str, Any]:
    """The step's metrics, in the order they are logged: reward, the update's (``update``), credit, perf.

    Args:
        world: the processes of the run (every rank calls this: the pieces are gathered).
        rewards: (B_global,) rewards of the whole batch; group_index: (B_global,) their groups.
        update: the metrics :class:`~ospo_gym.agents.update.PolicyUpdate` returned.
        advantages: (B, T) this rank's token advantages; mask: (B, T) bool, its valid tokens.
        oracle_counts: the oracle calls and values this rank made in the step.
        clock: the step's timings on this rank (the slowest rank's are reported).
        scale_rewards, std_ddof: the config's ``scale_rewards`` and ``std_ddof``, for the sequence advantage Â.
    """
    # per-rank pieces gathered so that every rank reports the metrics of the whole batch
    pieces = world.gather((advantages[mask], row_stds(advantages, mask), mask.sum(axis=1)))
    oracle = world.sum(list(oracle_counts))
    seconds = world.max(
        [clock.done - clock.start, clock.generated - clock.start, clock.credited - clock.generated, clock.done - clock.credited]
    )
    return {
        **reward_metrics(rewards, group_index),
        **update,
        **credit_metrics(
            np.concatenate([p[0] for p in pieces]),
            np.concatenate([p[1] for p in pieces]),
            group_advantages(rewards, group_index, scale_rewards, ddof=std_ddof),
        ),
        CREDIT_ORACLE_CALLS: int(oracle[0]),
        CREDIT_ORACLE_VALUES: int(oracle[1]),
        PERF_STEP_SECONDS: float(seconds[0]),
        PERF_GENERATE_SECONDS: float(seconds[1]),
        PERF_CREDIT_SECONDS: float(seconds[2]),
        PERF_UPDATE_SECONDS: float(seconds[3]),
        PERF_COMPLETION_TOKENS: float(np.concatenate([p[2] for p in pieces]).mean()),
    }


def reward_metrics(rewards: np.ndarray, group_index: np.ndarray) -> dict[str, float]:
    """Mean, std and max of the rewards (B,), and the fraction of completions in groups whose rewards are equal."""
    flat = zero_variance_groups(rewards, group_index)
    return {
        REWARD_MEAN: float(rewards.mean()),
        REWARD_STD: float(rewards.std()),
        REWARD_MAX: float(rewards.max()),
        REWARD_ZERO_VARIANCE_GROUPS: float(flat.mean()),
    }


def row_stds(advantages: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(B,) std of each completion's token advantages over its valid tokens."""
    counts = np.maximum(mask.sum(axis=1), 1)
    row_mean = np.where(mask, advantages, 0.0).sum(axis=1) / counts
    return np.sqrt(np.where(mask, (advantages - row_mean[:, None]) ** 2, 0.0).sum(axis=1) / counts)


def credit_metrics(valid: np.ndarray, stds: np.ndarray, sequence: np.ndarray) -> dict[str, float]:
    """Advantage statistics from the valid token advantages (N,), each completion's std (B,) and Â (B,)."""
    return {
        CREDIT_SEQUENCE_ADVANTAGE_ABS: float(np.abs(sequence).mean()),
        CREDIT_TOKEN_ADVANTAGE_MEAN: float(valid.mean()) if valid.size else 0.0,
        CREDIT_TOKEN_ADVANTAGE_STD: float(valid.std()) if valid.size else 0.0,
        CREDIT_TOKEN_ADVANTAGE_MIN: float(valid.min()) if valid.size else 0.0,
        CREDIT_TOKEN_ADVANTAGE_MAX: float(valid.max()) if valid.size else 0.0,
        CREDIT_WITHIN_SEQUENCE_STD: float(stds.mean()),
    }
