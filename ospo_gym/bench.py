"""Head-to-head benchmark: agent variants × tasks × seeds with identical budgets (``ospo-gym bench``).

Protocol, the same for every agent of a task:

* the same tiny Qwen2 per seed (:func:`ospo_gym.tiny_policy.build_env_policy`: weights seeded by the seed, and the
  task's warm start), so every agent of a seed starts from the same weights;
* the same number of steps, prompts per step and group size G (the task's settings, then the command line's
  overrides); the per-step prompts and sampling seeds derive from ``(seed, step)``, so they match across agents
  until the policies differ;
* evaluation at step 0, every ``eval_every`` steps and at the end: mean reward over *all* the env's prompts,
  ``eval_samples`` sampled completions each, with a fixed sampling seed (``eval_seed``).

Runs are spread over ``jobs`` worker processes (spawned; one torch thread each). :func:`run_bench` writes
``results.json``, ``results.md`` and one PNG of learning curves per task (:mod:`ospo_gym.bench_report`).

This module does not import torch; the workers do.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ospo_gym import bench_report
from ospo_gym.output_files import check_output_file, check_output_folder, write_atomic

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"


class PlanError(ValueError):
    """A preset, task or variant that does not exist or does not fit together."""


@dataclass(frozen=True)
class Task:
    """An env with the settings every agent of the benchmark gets on it."""

    name: str
    env_id: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    """AgentConfig overrides over ``AgentConfig.tiny_cpu()`` (prompts per step, new tokens, ...)."""
    steps: int = 300
    eval_every: int = 20
    warm_start: int = 0
    """Warm-start steps of the tiny policy (see :mod:`ospo_gym.tiny_policy`)."""
    eval_env_kwargs: dict[str, Any] = field(default_factory=dict)
    """When set, every evaluation also scores on the env built with these arguments over ``env_kwargs``."""
    note: str = ""


@dataclass(frozen=True)
class Variant:
    """An agent: an estimator and AgentConfig overrides on top of the task's."""

    label: str
    algo: str
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Preset:
    description: str
    tasks: tuple[str, ...]
    variants: tuple[Variant, ...]
    eval_env_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    preset: str
    description: str
    tasks: list[Task]
    variants: list[Variant]
    seeds: list[int]
    eval_samples: int
    eval_seed: int
    config_overrides: dict[str, Any]


TASKS: dict[str, Task] = {
    "additive": Task(
        "additive",
        "ospo/AdditiveKeywords-v0",
        dict(vocab_size=24, num_prompts=8, num_positive=3, num_negative=3, shared_weights=False),
        config=dict(prompts_per_step=4),
        steps=400,
        eval_every=20,
        note="per-prompt keyword weights: the policy must read the prompt; additive, so exact credit is known",
    ),
    "interaction": Task(
        "interaction",
        "ospo/Interaction-v0",
        dict(num_phrases=16, num_prompts=8, num_targets=4, num_distractors=3, num_synergies=2),
        config=dict(prompts_per_step=4, max_new_tokens=12),
        steps=300,
        eval_every=20,
        warm_start=100,
        note="two-word phrases with synergy between adjacent targets; the tiny policy is warm-started to write "
        "random phrases of the vocabulary (no reward signal otherwise)",
    ),
    "retrieval": Task(
        "retrieval",
        "ospo/SyntheticRetrieval-v0",
        dict(num_products=300, num_queries=20),
        config=dict(prompts_per_step=4),
        steps=300,
        eval_every=20,
        warm_start=50,
        note="query rewriting against BM25 over a generated ESCI-schema catalog (pooled NDCG@10)",
    ),
    "esci": Task(
        "esci",
        "ospo/ESCI-v0",
        dict(max_queries=32, prompt_template="query: {query}"),
        config=dict(prompts_per_step=4),
        steps=200,
        eval_every=20,
        warm_start=50,
        note="real ESCI data: needs --env-arg data_dir=... (ospo-gym data esci)",
    ),
}

_MAIN = (Variant("grpo", "grpo"), Variant("ospo_prop", "ospo_prop"), Variant("ospo_rank", "ospo_rank"))


SHIFTED_BM25: dict[str, Any] = {"retriever": "bm25-full", "retriever_kwargs": {"k1": 0.9, "b": 0.4}}
"""The retriever-shift preset's evaluation env arguments. ``"bm25"`` and ``"bm25-full"`` alone give the same
rewards (same scores, only the fast path differs), so the shift is the BM25 parameters."""


def _sweep(algo: str, name: str, values: Iterable[Any]) -> tuple[Variant, ...]:
    return tuple(Variant(f"{algo}[{name}={v}]", algo, {name: v}) for v in values)


PRESETS: dict[str, Preset] = {
    "main": Preset("GRPO vs OSPO-PROP vs OSPO-RANK", ("additive", "interaction", "retrieval"), _MAIN),
    "width": Preset(
        "OSPO-PROP with coalition width w_max in {1, 2, 4, 8, 12} (GRPO for reference)",
        ("interaction",),
        (Variant("grpo", "grpo"), *_sweep("ospo_prop", "w_max", (1, 2, 4, 8, 12))),
    ),
    "budget": Preset(
        "OSPO-PROP with coalition budget M in {8, 16, 32, 64, 96} (GRPO for reference)",
        ("interaction",),
        (Variant("grpo", "grpo"), *_sweep("ospo_prop", "max_coalitions", (8, 16, 32, 64, 96))),
    ),
    "contiguity": Preset(
        "contiguous vs non-contiguous coalitions for OSPO-PROP and OSPO-RANK (GRPO for reference)",
        ("interaction",),
        (
            Variant("grpo", "grpo"),
            *_sweep("ospo_prop", "contiguous", (True, False)),
            *_sweep("ospo_rank", "contiguous", (True, False)),
        ),
    ),
    "group": Preset(
        "group size G in {2, 4, 8} for every agent",
        ("additive",),
        tuple(
            v for algo in ("grpo", "ospo_prop", "ospo_rank") for v in _sweep(algo, "group_size", (2, 4, 8))
        ),
    ),
    "retriever-shift": Preset(
        "train with one retriever, evaluate with another: BM25 k1=1.5, b=0.75 (bm25s' defaults) for training, "
        "BM25 k1=0.9, b=0.4 (Anserini's defaults: weaker term-frequency saturation and length normalisation) "
        "scored over the whole catalog for the shifted evaluation; on the synthetic retrieval task by default "
        "(no data files), on ESCI with --envs esci --env-arg data_dir=...",
        ("retrieval",),
        _MAIN,
        eval_env_kwargs=SHIFTED_BM25,
    ),
}


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


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", label)


# -- jobs ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _PolicyJob:
    task: Task
    seed: int
    directory: str


@dataclass(frozen=True)
class _RunJob:
    index: int
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


_PROGRESS: Any = None  # the worker's queue to the parent's progress bar


def _init_worker(queue: Any) -> None:
    global _PROGRESS
    _PROGRESS = queue
    # one thread per worker process, set before torch loads: several processes with one OpenMP pool per core each
    # oversubscribe the CPUs (measured: a 6 s warm start took over 100 s with two such workers on 2 cores)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    _quiet()


def _quiet() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _build_policy(job: _PolicyJob) -> str:
    import gymnasium as gym

    import ospo_gym  # noqa: F401  (registers the ids in a spawned worker)
    from ospo_gym.tiny_policy import build_env_policy

    env = gym.make(job.task.env_id, **job.task.env_kwargs)
    try:
        build_env_policy(env, job.directory, seed=job.seed, warm_start=job.task.warm_start)
    finally:
        env.close()
    return job.directory


def _report(steps: int, sink: Any) -> None:
    if sink is not None:
        sink(steps)
    elif _PROGRESS is not None:
        _PROGRESS.put(steps)


def _run(job: _RunJob, sink: Any = None) -> dict[str, Any]:
    """Train one agent, evaluating periodically; returns its record for results.json."""
    import gymnasium as gym
    import numpy as np

    import ospo_gym  # noqa: F401
    from ospo_gym.agents import Agent, AgentConfig
    from ospo_gym.agents import logger as M
    from ospo_gym.agents.groups import GroupedEnv

    task, variant = job.task, job.variant
    settings = {**task.config, **variant.overrides, **job.config_overrides}
    settings.update(seed=job.seed, run_dir=job.run_parent, progress_bar=False, tensorboard=False)
    config = AgentConfig.tiny_cpu(**settings)
    started = time.perf_counter()
    agent = Agent(
        task.env_id, algo=variant.algo, policy=job.policy, config=config, env_kwargs=task.env_kwargs
    )
    agent.run_dir = M.create_run_dir(job.run_parent, task.env_id, variant.algo, job.seed)  # never shared
    shifted = None
    if task.eval_env_kwargs:
        shifted = GroupedEnv(
            gym.make(task.env_id, **{**task.env_kwargs, **task.eval_env_kwargs}), 1, job.seed
        )
    curve: list[list[float]] = []
    shift_curve: list[list[float]] = []
    eval_seconds = 0.0

    def evaluate() -> None:
        nonlocal eval_seconds
        tick = time.perf_counter()
        curve.append([agent.num_steps, agent.evaluate(job.eval_samples, seed=job.eval_seed)])
        if shifted is not None:
            training_env, agent.envs = agent.envs, shifted
            try:
                shift_curve.append([agent.num_steps, agent.evaluate(job.eval_samples, seed=job.eval_seed)])
            finally:
                agent.envs = training_env
        eval_seconds += time.perf_counter() - tick

    pending = 0

    def callback(_agent: Any, _metrics: dict[str, Any]) -> None:
        nonlocal pending
        pending += 1
        if agent.num_steps % task.eval_every == 0 or agent.num_steps == task.steps:
            evaluate()
            _report(pending, sink)
            pending = 0

    evaluate()
    agent.learn(task.steps, callback=callback)
    if pending:
        _report(pending, sink)
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
        "train_reward": [round(float(h[M.REWARD_MEAN]), 5) for h in history],
        "wall_seconds": wall,
        "eval_seconds": eval_seconds,
        "train_seconds": float(sum(h[M.PERF_STEP_SECONDS] for h in history)),
        "perf": {
            key: mean_of(key)
            for key in (
                M.PERF_STEP_SECONDS,
                M.PERF_GENERATE_SECONDS,
                M.PERF_CREDIT_SECONDS,
                M.PERF_UPDATE_SECONDS,
                M.PERF_COMPLETION_TOKENS,
                M.CREDIT_ORACLE_VALUES,
            )
        },
        "run_dir": str(agent.run_dir),
        "config": config.to_dict(),
    }
    if shifted is not None:
        record["shift_eval_curve"] = [[int(s), round(float(r), 6)] for s, r in shift_curve]
        record["shift_final_reward"] = float(shift_curve[-1][1])
    agent.close()
    return record


# -- the benchmark ---------------------------------------------------------------------------------------------------
def run_bench(
    plan: Plan,
    out: str | Path,
    *,
    runs_dir: str | Path | None = None,
    jobs: int = 0,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Run every (task, variant, seed) of ``plan``; write results.json, results.md and the PNGs to ``out``."""
    from tqdm.auto import tqdm

    out = Path(out)
    runs_root = Path(runs_dir) if runs_dir is not None else out / "runs"
    check_outputs(plan, out, runs_root)  # before any run: a results file that cannot be written fails now
    started = time.time()
    load_before = _load_average()
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    policy_jobs = {
        (task.name, seed): _PolicyJob(
            task, seed, str(runs_root / "policies" / f"{task.name}__seed{seed}__{stamp}")
        )
        for task in plan.tasks
        for seed in plan.seeds
    }
    run_jobs = [
        _RunJob(
            0,
            task,
            variant,
            seed,
            policy_jobs[task.name, seed].directory,
            str(runs_root / task.name / _safe(variant.label)),
            plan.eval_samples,
            plan.eval_seed,
            plan.config_overrides,
        )
        for task in plan.tasks
        for variant in plan.variants
        for seed in plan.seeds
    ]
    run_jobs = [dataclasses.replace(job, index=i) for i, job in enumerate(run_jobs)]
    workers = max(1, min(jobs or os.cpu_count() or 1, len(run_jobs)))
    total = sum(job.task.steps for job in run_jobs)
    bar = tqdm(
        total=total, unit="step", desc=f"bench {plan.preset}", disable=not progress, dynamic_ncols=True
    )
    records: list[dict[str, Any] | None] = [None] * len(run_jobs)
    try:
        if workers == 1:
            _quiet()
            bar.set_postfix_str("building policies")
            for job in policy_jobs.values():
                _build_policy(job)
            for job in run_jobs:
                bar.set_postfix_str(f"{job.task.name} {job.variant.label} seed {job.seed}")
                records[job.index] = _run(job, sink=bar.update)
        else:
            records = _run_parallel(policy_jobs.values(), run_jobs, workers, bar)
    finally:
        bar.close()
    wall = time.time() - started
    results = {
        "preset": plan.preset,
        "description": plan.description,
        "command": command,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "wall_seconds": wall,
        "workers": workers,
        "load_average": {"start": load_before, "end": _load_average()},
        "versions": versions(),
        "plan": {
            "tasks": [dataclasses.asdict(t) for t in plan.tasks],
            "variants": [dataclasses.asdict(v) for v in plan.variants],
            "seeds": plan.seeds,
            "eval_samples": plan.eval_samples,
            "eval_seed": plan.eval_seed,
            "config_overrides": plan.config_overrides,
            "base_config": "AgentConfig.tiny_cpu() + task.config + variant.overrides + config_overrides",
        },
        "runs": records,
    }
    results["summary"] = bench_report.summarise(results)
    write_atomic(out / RESULTS_JSON, json.dumps(results, indent=1))
    images = bench_report.plot_curves(results, out)
    bench_report.write_markdown(results, out / RESULTS_MD, images)
    return results


def check_outputs(plan: Plan, out: str | Path, runs_dir: str | Path | None = None) -> None:
    """Raise ``OutputPathError`` unless ``out`` and ``runs_dir`` (default ``<out>/runs``) are folders or can be
    created, and every file :func:`run_bench` writes in ``out`` is new or a regular file (not a link, a pipe, a
    device ...; see :mod:`ospo_gym.output_files`)."""
    out = check_output_folder(out, what="bench output folder")
    check_output_folder(out / "runs" if runs_dir is None else runs_dir, what="bench runs folder")
    names = [RESULTS_JSON, RESULTS_MD, *(bench_report.curve_file(task.name) for task in plan.tasks)]
    for name in names:
        check_output_file(out / name, what="bench output file")


def _run_parallel(
    policy_jobs: Iterable[_PolicyJob], run_jobs: list[_RunJob], workers: int, bar: Any
) -> list[dict[str, Any] | None]:
    import multiprocessing as mp
    import queue as queue_module

    context = mp.get_context("spawn")  # no fork after torch / OpenMP started in the parent
    progress = context.Queue()
    records: list[dict[str, Any] | None] = [None] * len(run_jobs)

    def drain() -> None:
        while True:
            try:
                bar.update(progress.get_nowait())
            except queue_module.Empty:
                return

    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(progress,)
    ) as pool:
        bar.set_postfix_str("building policies")
        for future in [pool.submit(_build_policy, job) for job in policy_jobs]:
            future.result()
        bar.set_postfix_str("training")
        ordered = sorted(run_jobs, key=lambda job: -job.cost)
        pending: dict[Future, _RunJob] = {pool.submit(_run, job): job for job in ordered}
        try:
            while pending:
                done, _ = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                drain()
                for future in done:
                    job = pending.pop(future)
                    records[job.index] = future.result()
                    bar.set_postfix_str(f"done {job.task.name} {job.variant.label} seed {job.seed}")
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        drain()
    return records


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (other work on the machine slows the runs down), where the OS has them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def versions() -> dict[str, Any]:
    """Versions of what produced the numbers, and the machine."""
    from importlib import metadata

    found: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    for name in ("ospo-gym", "numpy", "torch", "transformers", "tokenizers", "gymnasium", "bm25s"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def console_summary(results: dict[str, Any], out: str | Path) -> str:
    """A few lines for the terminal: the tables and where the files are."""
    lines = [
        bench_report.tables_text(results),
        f"wrote {Path(out) / RESULTS_JSON}, {RESULTS_MD} and the PNG curves",
    ]
    lines.append(f"wall time {results['wall_seconds']:.0f} s with {results['workers']} worker(s)")
    return "\n".join(lines)
