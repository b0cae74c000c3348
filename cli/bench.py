"""``ospo-gym bench``: the head-to-head benchmark (:mod:`ospo_gym.agents.bench`) from the command line.

Its options are :class:`BenchOptions` and the :class:`~ospo_gym.agents.AgentConfig` fields that every run may
override (all but :data:`BENCH_EXCLUDE`); every plan, env, variant and output path is checked before any run starts.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ospo_gym.agents import AgentConfig, bench
from ospo_gym.cli.options import (
    ENV_ARG,
    UsageError,
    add_config_option,
    add_dataclass_options,
    command_line,
    known_keys,
    load_yaml,
    resolve_options,
)
from ospo_gym.cli.train import check_agent_config, check_algo, make_single_env
from ospo_gym.output_files import check_output_folder


@dataclass
class BenchOptions:
    """What ``ospo-gym bench`` runs: every agent variant of ``preset`` × task × seed, with identical budgets."""

    preset: str = "main"
    """``main`` (GRPO vs OSPO-PROP vs OSPO-RANK) or another of ``agents/bench/presets.py``: the ablations ``width``,
    ``budget``, ``contiguity``, ``group``; ``retriever-shift`` (and ``retriever-shift-minilm``,
    ``retriever-shift-minilm-train`` with the pretrained encoder); ``noise`` (reward noise); ``controls``
    (shuffled credit, leave-one-out, GRPO-λ); ``long-range``; ``conv-search`` (multi-turn: ospo_turn vs trajectory
    and turn-level GRPO)."""
    envs: list[str] | None = None
    """Tasks to run: names of built-in bench tasks (``additive``, ``interaction``, ``retrieval``, ``esci``) or env
    ids; default: the preset's."""
    algos: list[str] | None = None
    """Keep only the variants of these estimators; default: all of the preset's."""
    seeds: int = 3
    """Seeds 0..N-1; a seed fixes the tiny policy's initial weights (the same for every agent), sampling and prompts."""
    steps: int | None = None
    """Training steps per run; default: the task's (identical for every agent of a task)."""
    eval_every: int | None = None
    """Evaluate every this many steps (and at steps 0 and the last); default: the task's."""
    eval_samples: int = 16
    """Sampled completions per prompt of every evaluation (all the env's prompts, a fixed seed)."""
    eval_seed: int = 12345
    """Seed of every evaluation's sampling (identical across runs and steps)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict, metadata=ENV_ARG)
    """Env constructor argument for every task, repeatable (over the task's own)."""
    eval_env_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata={"flag": "--eval-env-arg", "metavar": "NAME=VALUE"}
    )
    """Also evaluate on the env built with these arguments over the training ones (e.g. another retriever)."""
    out: str | None = None
    """Output folder for results.json, results.md and the PNG curves; default: ``bench_results/<preset>``."""
    runs_dir: str | None = None
    """Parent of the run folders (metrics.jsonl per run); default: ``<out>/runs``."""
    jobs: int = 0
    """Runs in parallel, one process and one torch thread each; 0: one per CPU core."""
    progress: bool = True
    """Show the progress bar (on stderr)."""


BENCH_EXCLUDE = ("algo", "seed", "run_dir", "progress_bar", "save_every")
"""AgentConfig fields that ``bench`` sets itself (the variant's estimator, the seed, the run folders)."""


def cmd_bench(args: argparse.Namespace) -> int:
    file_values = load_yaml(args.config, known_keys(BenchOptions, AgentConfig, exclude=BENCH_EXCLUDE))
    opts = BenchOptions(**resolve_options(BenchOptions, args, file_values))
    overrides = {
        k: v for k, v in resolve_options(AgentConfig, args, file_values).items() if k not in BENCH_EXCLUDE
    }
    try:
        plan = bench.make_plan(
            opts.preset,
            tasks=opts.envs,
            algos=opts.algos,
            seeds=opts.seeds,
            steps=opts.steps,
            eval_every=opts.eval_every,
            eval_samples=opts.eval_samples,
            eval_seed=opts.eval_seed,
            env_kwargs=opts.env_kwargs,
            eval_env_kwargs=opts.eval_env_kwargs,
            config_overrides=overrides,
        )
        for task in plan.tasks:  # fail before any run starts
            make_single_env(task.env_id, task.env_kwargs).close()
            if task.eval_env_kwargs:
                make_single_env(task.env_id, {**task.env_kwargs, **task.eval_env_kwargs}).close()
        for variant in plan.variants:
            for task in plan.tasks:
                check_algo(variant.algo, task.env_id)
            check_agent_config(AgentConfig.tiny_cpu(**{**variant.overrides, **overrides}))  # every variant's is valid
    except bench.PlanError as err:
        raise UsageError(str(err)) from None
    if opts.jobs < 0:
        raise UsageError(f"--jobs must be >= 0 (0: one per CPU core), got {opts.jobs}")
    out = check_output_folder(opts.out, what="--out") if opts.out else Path("bench_results") / opts.preset
    if opts.runs_dir is not None:
        check_output_folder(opts.runs_dir, what="--runs-dir")
    bench.check_outputs(plan, out, opts.runs_dir)  # results.json, results.md, the PNGs: before any run starts
    command = command_line(args.command_parser, args)
    results = bench.run_bench(
        plan, out, runs_dir=opts.runs_dir, jobs=opts.jobs, progress=opts.progress, command=command
    )
    print(bench.console_summary(results, out))
    return 0


def add_options(parser: argparse.ArgumentParser) -> None:
    add_config_option(parser)
    add_dataclass_options(parser, BenchOptions, title="benchmark")
    add_dataclass_options(
        parser, AgentConfig, exclude=BENCH_EXCLUDE, title="agent overrides for every run (AgentConfig)"
    )
