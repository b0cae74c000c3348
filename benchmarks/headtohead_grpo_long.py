"""How many steps GRPO needs to reach the main benchmark's thresholds, from a longer GRPO-only run.

The main job (``ospo-gym bench``) stops every agent at the task's budget, so a GRPO run that has not reached the
threshold by then only gives a bound on OSPO's speed-up. This script reads the main job's ``results.json`` and a
GRPO-only run of the same tasks with a longer budget, checks that the long runs repeat the main runs exactly over
the main budget (same seeds, same evaluation seed: training is deterministic on the CPU), and measures the steps
to the *main job's* thresholds over the longer budget. Usage (the numbers in results/headtohead/grpo_long)::

    ospo-gym bench --envs additive interaction retrieval --algos grpo --steps 900 \\
        --out benchmarks/results/headtohead/grpo_long
    python benchmarks/headtohead_grpo_long.py benchmarks/results/headtohead \\
        benchmarks/results/headtohead/grpo_long
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def first_step(curve: list[list[float]], threshold: float) -> int | None:
    return next((int(step) for step, reward in curve if reward >= threshold), None)


def compare(main_dir: Path, long_dir: Path) -> str:
    main = json.loads((main_dir / "results.json").read_text(encoding="utf-8"))
    long = json.loads((long_dir / "results.json").read_text(encoding="utf-8"))
    lines = [
        "# GRPO over a longer budget, against the main job's thresholds",
        "",
        f"Main job: `{main['command']}`. Long GRPO runs: `{long['command']}`.",
        "",
        "Steps to the main job's threshold (90% of its best mean final reward); a run that never reaches it counts as "
        "the long budget (so GRPO's mean is a lower bound, marked ≥, and the ratio an upper bound, marked ≤).",
        "",
        "| task | threshold | GRPO steps per seed (long budget) | GRPO mean | agent | agent steps per seed | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, summary in main["summary"].items():
        threshold = summary["threshold"]
        main_grpo = {
            r["seed"]: r["eval_curve"] for r in main["runs"] if r["task"] == task and r["algo"] == "grpo"
        }
        long_grpo = {
            r["seed"]: r["eval_curve"] for r in long["runs"] if r["task"] == task and r["algo"] == "grpo"
        }
        if not long_grpo:
            continue
        for seed, curve in main_grpo.items():
            if long_grpo[seed][: len(curve)] != curve:
                raise SystemExit(
                    f"{task} seed {seed}: the long GRPO run does not repeat the main run; compare like with like"
                )
        budget = max(r["steps"] for r in long["runs"] if r["task"] == task)
        grpo_steps = [first_step(long_grpo[s], threshold) for s in sorted(long_grpo)]
        grpo_mean = float(np.mean([budget if s is None else s for s in grpo_steps]))
        grpo_censored = None in grpo_steps
        for label, entry in summary["variants"].items():
            if entry["algo"] == "grpo":
                continue
            steps = entry["steps_to_threshold"]
            if None in steps:
                ratio = "n/a (agent censored at the main budget)"
            else:
                ratio = ("≤ " if grpo_censored else "") + f"{np.mean(steps) / grpo_mean:.2f}×"
            lines.append(
                f"| {task} | {threshold:.3f} | {_steps(grpo_steps)} (of {budget}) | "
                f"{'≥ ' if grpo_censored else ''}{grpo_mean:.0f} | `{label}` | {_steps(steps)} | {ratio} |"
            )
    return "\n".join(lines) + "\n"


def _steps(steps: list[int | None]) -> str:
    return ", ".join("not reached" if s is None else str(s) for s in steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("main_dir", type=Path, help="the main job's output folder (holds results.json)")
    parser.add_argument("long_dir", type=Path, help="the longer GRPO-only run's folder (vs_main.md is written here)")
    args = parser.parse_args()
    main_dir, long_dir = args.main_dir, args.long_dir
    for folder in (main_dir, long_dir):
        if not (folder / "results.json").is_file():
            parser.error(f"{folder} holds no results.json: pass the folders that 'ospo-gym bench --out' wrote")
    text = compare(main_dir, long_dir)
    (long_dir / "vs_main.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
