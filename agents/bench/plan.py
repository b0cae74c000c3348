"""The plan of a benchmark: a preset's tasks × variants × seeds, with the command line's overrides."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ospo_gym.agents.bench.presets import PRESETS, TASKS, Task, Variant


class PlanError(ValueError):
    """A preset, task or variant that does not exist or does not fit together."""


@dataclass
class Plan:
    """What :func:`~ospo_gym.agents.bench.run_bench` runs: every task × variant × seed, evaluated alike."""

    preset: str
    description: str
    tasks: list[Task]
    variants: list[Variant]
    seeds: list[int]
    eval_samples: int
    eval_seed: int
    config_overrides: dict[str, Any]


def make_plan(
    preset: str = "main",
    *,
    tasks: Sequence[str] | None = None,
    algos: Sequence[str] | None = None,
    seeds: int = 3,
    steps: int | None = None,
    eval_every: int | None = None,
    eval_samples: int = 16,
    eval_seed: int = 12345,
    env_kwargs: dict[str, Any] | None = None,
    eval_env_kwargs: dict[str, Any] | None = None,
    config_overrides: dict[str, Any] | None = None,
) -> Plan:
    """The runs of ``preset``: its tasks (or ``tasks``: names of :data:`TASKS` or env ids) × its variants (those
    of ``algos`` only, if given) × seeds ``0..seeds-1``; ``steps`` / ``eval_every`` replace every task's."""
    if preset not in PRESETS:
        raise PlanError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    if seeds < 1:
        raise PlanError(f"--seeds must be >= 1, got {seeds}")
    if steps is not None and steps < 1:
        raise PlanError(f"--steps must be >= 1, got {steps}")
    if eval_every is not None and eval_every < 1:
        raise PlanError(f"--eval-every must be >= 1, got {eval_every}")
    if eval_samples < 1:
        raise PlanError(f"--eval-samples must be >= 1, got {eval_samples}")
    spec = PRESETS[preset]
    chosen: list[Task] = []
    for name in tasks or spec.tasks:
        if name in TASKS:
            task = TASKS[name]
        elif name.startswith("ospo/"):
            task = Task(_task_name(name), name, steps=steps or 200)
        else:
            raise PlanError(
                f"unknown task {name!r}; built-in tasks: {', '.join(TASKS)} (or an env id ospo/...)"
            )
        shift = {**spec.eval_env_kwargs, **(eval_env_kwargs or {})}
        task = dataclasses.replace(
            task,
            env_kwargs={**task.env_kwargs, **(env_kwargs or {})},
            steps=steps or task.steps,
            eval_every=min(eval_every or task.eval_every, steps or task.steps),
            eval_env_kwargs={**task.eval_env_kwargs, **shift},
        )
        chosen.append(task)
    if len({t.name for t in chosen}) != len(chosen):
        raise PlanError("the same task is listed twice")
    variants = [v for v in spec.variants if algos is None or v.algo in algos]
    if not variants:
        raise PlanError(
            f"no variant of preset {preset!r} uses {list(algos or [])}; it has {[v.algo for v in spec.variants]}"
        )
    return Plan(
        preset,
        spec.description,
        chosen,
        variants,
        list(range(seeds)),
        eval_samples,
        eval_seed,
        dict(config_overrides or {}),
    )


def _task_name(env_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", env_id.removeprefix("ospo/")).strip("_").lower()

