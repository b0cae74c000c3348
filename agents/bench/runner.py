"""One benchmark run: build the seed's tiny policy (:class:`PolicyJob`), then train one agent variant on one task
and evaluate it periodically (:class:`RunJob`), returning its record for ``results.json``.

Both are plain functions of a picklable job, so that they run alike in this process or in a worker
(:mod:`ospo_gym.agents.bench.pool`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from ospo_gym.agents import Agent, AgentConfig, logger
from ospo_gym.agents.bench.presets import Task, Variant
from ospo_gym.agents.tiny_policy import build_env_policy

ProgressSink = Callable[[int], Any]
"""Called with a number of training steps just done (the progress bar's ``update``, or a queue's ``put``)."""


@dataclass(frozen=True)
class PolicyJob:
    """The tiny policy of one task and seed, built once and shared by every variant."""

    task: Task
    seed: int
    directory: str


@dataclass(frozen=True)
class RunJob:
    """One agent variant trained on one task with one seed."""

    index: int
    """Its place in ``results.json``'s ``runs`` (the plan's order, whatever order the runs finish in)."""
    task: Task
    variant: Variant
    seed: int
    policy: str
    run_parent: str
    eval_samples: int
    eval_seed: int
    config_overrides: dict[str, Any]

    @property
    def cost(self) -> float:
        """Rough relative cost, to start the longest runs first."""
        config = {**self.task.config, **self.variant.overrides, **self.config_overrides}
        tokens = (
            config.get("max_new_tokens", 8) * config.get("group_size", 8) * config.get("prompts_per_step", 2)
        )
        credit = 1.5 if self.variant.algo != "grpo" else 1.0
        return self.task.steps * tokens * credit


def build_policy(job: PolicyJob) -> str:
    """Build (and warm-start) the job's tiny policy in ``job.directory``; returns the directory."""
    env = gym.make(job.task.env_id, **job.task.env_kwargs)
    try:
        build_env_policy(env, job.directory, seed=job.seed, warm_start=job.task.warm_start)
    finally:
        env.close()
    return job.directory


PERF_KEYS = (
    logger.PERF_STEP_SECONDS,
    logger.PERF_GENERATE_SECONDS,
    logger.PERF_CREDIT_SECONDS,
    logger.PERF_UPDATE_SECONDS,
    logger.PERF_COMPLETION_TOKENS,
    logger.CREDIT_ORACLE_VALUES,
)
"""Metrics whose mean over the run's steps goes into its record's ``perf``."""


def run(job: RunJob, progress: ProgressSink | None = None) -> dict[str, Any]:
    """Train one agent, evaluating at step 0, every ``eval_every`` steps and at the end (also on the shifted env
    when the task has one); returns its record for results.json. ``progress`` hears of the steps done at each
    evaluation."""
    task, variant = job.task, job.variant
    settings = {**task.config, **variant.overrides, **job.config_overrides}
    settings.update(seed=job.seed, run_dir=job.run_parent, progress_bar=False, tensorboard=False)
    config = AgentConfig.tiny_cpu(**settings)
    started = time.perf_counter()
    agent = Agent(
        task.env_id, algo=variant.algo, policy=job.policy, config=config, env_kwargs=task.env_kwargs
    )
    agent.run_dir = logger.create_run_dir(job.run_parent, task.env_id, variant.algo, job.seed)  # never shared
    shifted = gym.make(task.env_id, **{**task.env_kwargs, **task.eval_env_kwargs}) if task.eval_env_kwargs else None
    curve: list[list[float]] = []
    shift_curve: list[list[float]] = []
    eval_seconds = 0.0

    def evaluate() -> None:
        nonlocal eval_seconds
        tick = time.perf_counter()
        curve.append([agent.num_steps, agent.evaluate(job.eval_samples, seed=job.eval_seed)])
        if shifted is not None:
            shift_curve.append([agent.num_steps, agent.evaluate(job.eval_samples, seed=job.eval_seed, env=shifted)])
        eval_seconds += time.perf_counter() - tick

    pending = 0

    def report(steps: int) -> None:
        if progress is not None:
            progress(steps)

    def callback(_agent: Any, _metrics: dict[str, Any]) -> None:
        nonlocal pending
        pending += 1
        if agent.num_steps % task.eval_every == 0 or agent.num_steps == task.steps:
            evaluate()
            report(pending)
            pending = 0

    evaluate()
    agent.learn(task.steps, callback=callback)
    if pending:
        report(pending)
    if curve[-1][0] != agent.num_steps:
        evaluate()
    wall = time.perf_counter() - started
    history = agent.history

    def mean_of(key: str) -> float | None:
        values = [h[key] for h in history if h.get(key) is not None]
        return float(np.mean(values)) if values else None

    record = {
        "task": task.name,
        "env_id": task.env_id,
        "variant": variant.label,
        "algo": variant.algo,
        "seed": job.seed,
        "steps": agent.num_steps,
        "eval_curve": [[int(s), round(float(r), 6)] for s, r in curve],
        "final_reward": float(curve[-1][1]),
        "initial_reward": float(curve[0][1]),
        "train_reward": [round(float(h[logger.REWARD_MEAN]), 5) for h in history],
        "wall_seconds": wall,
        "eval_seconds": eval_seconds,
        "train_seconds": float(sum(h[logger.PERF_STEP_SECONDS] for h in history)),
        "perf": {key: mean_of(key) for key in PERF_KEYS},
        "run_dir": str(agent.run_dir),
        "config": config.to_dict(),
    }
    if shifted is not None:
        record["shift_eval_curve"] = [[int(s), round(float(r), 6)] for s, r in shift_curve]
        record["shift_final_reward"] = float(shift_curve[-1][1])
        shifted.close()
    agent.close()
    return record
