"""A whole benchmark: every (task, variant, seed) run of a plan, in this process or in worker processes, then
``results.json``, ``results.md`` and one PNG of learning curves per task (:mod:`ospo_gym.agents.bench.report`)."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

from ospo_gym.agents.bench import pool, report
from ospo_gym.agents.bench.plan import Plan
from ospo_gym.agents.bench.report import RESULTS_JSON, RESULTS_MD
from ospo_gym.agents.bench.runner import PolicyJob, RunJob
from ospo_gym.output_files import check_output_file, check_output_folder, write_atomic


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
        (task.name, seed): PolicyJob(
            task, seed, str(runs_root / "policies" / f"{task.name}__seed{seed}__{stamp}")
        )
        for task in plan.tasks
        for seed in plan.seeds
    }
    run_jobs = [
        RunJob(
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
    try:
        if workers == 1:
            records = pool.run_in_process(policy_jobs.values(), run_jobs, bar)
        else:
            records = pool.run_in_pool(policy_jobs.values(), run_jobs, workers, bar)
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
    results["summary"] = report.summarise(results)
    write_atomic(out / RESULTS_JSON, json.dumps(results, indent=1))
    images = report.plot_curves(results, out)
    report.write_markdown(results, out / RESULTS_MD, images)
    return results


def check_outputs(plan: Plan, out: str | Path, runs_dir: str | Path | None = None) -> None:
    """Raise ``OutputPathError`` unless ``out`` and ``runs_dir`` (default ``<out>/runs``) are folders or can be
    created, and every file :func:`run_bench` writes in ``out`` is new or a regular file (not a link, a pipe, a
    device ...; see :mod:`ospo_gym.output_files`)."""
    out = check_output_folder(out, what="bench output folder")
    check_output_folder(out / "runs" if runs_dir is None else runs_dir, what="bench runs folder")
    names = [RESULTS_JSON, RESULTS_MD, *(report.curve_file(task.name) for task in plan.tasks)]
    for name in names:
        check_output_file(out / name, what="bench output file")


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


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", label)

