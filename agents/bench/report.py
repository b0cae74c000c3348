"""Summaries, Markdown tables and learning-curve PNGs of a benchmark's ``results.json`` (:mod:`ospo_gym.agents.bench`).

Definitions used in every table:

* **final reward**: the last evaluation of a run (mean reward over all prompts, fixed eval seed); mean ± sample
  std over seeds.
* **threshold**: ``THRESHOLD_FRACTION`` (90%) of the best final reward of the task, the best being the highest
  mean over seeds among the task's agents.
* **steps to threshold**: the first evaluation step whose reward reaches the threshold (resolution:
  ``eval_every``). A run that never reaches it counts as the full budget, so a mean that includes such runs is a
  lower bound (shown with ``≥``); the number of runs that reached it is shown beside it.
* **steps vs GRPO**: the ratio of mean steps to threshold against GRPO's on the same task with the same overrides
  (for the ``group`` preset: GRPO at the same G), a bound (≤ / ≥) when censoring makes it one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ospo_gym.output_files import write_atomic

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
THRESHOLD_FRACTION = 0.9


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Per task: threshold and per-variant statistics (see the module docstring)."""
    summary: dict[str, Any] = {}
    variants = [v["label"] for v in results["plan"]["variants"]]
    for task in results["plan"]["tasks"]:
        runs = [r for r in results["runs"] if r is not None and r["task"] == task["name"]]
        by_variant = {label: [r for r in runs if r["variant"] == label] for label in variants}
        by_variant = {label: rs for label, rs in by_variant.items() if rs}
        finals = {label: float(np.mean([r["final_reward"] for r in rs])) for label, rs in by_variant.items()}
        best_label = max(finals, key=finals.get)
        threshold = THRESHOLD_FRACTION * finals[best_label]
        budget = task["steps"]
        stats: dict[str, Any] = {}
        for label, rs in by_variant.items():
            reached = [_first_step(r["eval_curve"], threshold) for r in rs]
            censored = [budget if s is None else s for s in reached]
            hits = [s for s in reached if s is not None]
            final = [r["final_reward"] for r in rs]
            entry = {
                "algo": rs[0]["algo"],
                "n": len(rs),
                "final_mean": float(np.mean(final)),
                "final_std": _std(final),
                "initial_mean": float(np.mean([r["initial_reward"] for r in rs])),
                "steps_to_threshold": reached,
                "reached": len(hits),
                "steps_mean": float(np.mean(censored)),
                "steps_std": _std(censored),
                "steps_lower_bound": len(hits) < len(rs),
                "wall_seconds_mean": float(np.mean([r["wall_seconds"] for r in rs])),
                "train_seconds_mean": float(np.mean([r["train_seconds"] for r in rs])),
                "step_seconds_mean": _mean([r["perf"].get("perf/step_seconds") for r in rs]),
            }
            if "shift_final_reward" in rs[0]:
                shifted = [r["shift_final_reward"] for r in rs]
                entry.update(shift_final_mean=float(np.mean(shifted)), shift_final_std=_std(shifted))
            stats[label] = entry
        overrides = {v["label"]: v.get("overrides", {}) for v in results["plan"]["variants"]}
        for label, entry in stats.items():
            entry["baseline"] = _baseline(label, stats, overrides)
            entry["steps_ratio_vs_baseline"] = _ratio(entry, stats[entry["baseline"]])
        baseline = _baseline(next(iter(stats)), stats, {})
        summary[task["name"]] = {
            "env_id": task["env_id"],
            "budget_steps": budget,
            "eval_every": task["eval_every"],
            "best_variant": best_label,
            "best_final_mean": finals[best_label],
            "threshold": threshold,
            "baseline": baseline,
            "variants": stats,
        }
    return summary


def _baseline(label: str, stats: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> str:
    """The GRPO variant with the same overrides as ``label`` (the group preset: GRPO at the same G), else the GRPO
    variant without overrides, else any GRPO variant, else the first variant."""
    grpo = [other for other, entry in stats.items() if entry["algo"] == "grpo"]
    mine = overrides.get(label, {})
    same = [other for other in grpo if overrides.get(other, {}) == mine]
    plain = [other for other in grpo if not overrides.get(other)]
    return (same or plain or grpo or [next(iter(stats))])[0]


def _first_step(curve: list[list[float]], threshold: float) -> int | None:
    return next((int(step) for step, reward in curve if reward >= threshold), None)


def _std(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _ratio(entry: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Mean steps / baseline's mean steps, with what censoring makes of it (``exact``, ``lower``, ``upper``, ``unknown``)."""
    if base["steps_mean"] == 0:
        return {"value": None, "bound": "unknown"}
    value = entry["steps_mean"] / base["steps_mean"]
    mine, theirs = entry["steps_lower_bound"], base["steps_lower_bound"]
    bound = "unknown" if mine and theirs else "lower" if mine else "upper" if theirs else "exact"
    return {"value": value, "bound": bound}


# -- text ---------------------------------------------------------------------------------------------------------
def _pm(mean: float, std: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _steps_cell(entry: dict[str, Any]) -> str:
    if entry["reached"] == 0:
        return "not reached"
    prefix = "≥ " if entry["steps_lower_bound"] else ""
    return f"{prefix}{entry['steps_mean']:.0f} ± {entry['steps_std']:.0f}"


def _ratio_cell(ratio: dict[str, Any], is_baseline: bool) -> str:
    if is_baseline:
        return "1 (baseline)"
    if ratio["value"] is None or ratio["bound"] == "unknown":
        return "n/a"
    sign = {"exact": "", "lower": "≥ ", "upper": "≤ "}[ratio["bound"]]
    return f"{sign}{ratio['value']:.2f}×"


def task_table(name: str, task: dict[str, Any]) -> list[str]:
    shift = any("shift_final_mean" in e for e in task["variants"].values())
    header = (
        "| agent | final reward | steps to threshold | reached | steps vs GRPO | start reward | s / run |"
    )
    rule = "|---|---|---|---|---|---|---|"
    if shift:
        header = header.replace("| start reward", "| final reward, shifted env | start reward")
        rule += "---|"
    rows = [header, rule]
    for label, e in task["variants"].items():
        cells = [
            f"`{label}`",
            _pm(e["final_mean"], e["final_std"]),
            _steps_cell(e),
            f"{e['reached']}/{e['n']}",
            _ratio_cell(e["steps_ratio_vs_baseline"], label == e["baseline"]),
        ]
        if shift:
            cells.append(_pm(e["shift_final_mean"], e["shift_final_std"]))
        cells += [f"{e['initial_mean']:.3f}", f"{e['wall_seconds_mean']:.0f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def tables_text(results: dict[str, Any]) -> str:
    lines: list[str] = []
    for name, task in results["summary"].items():
        lines.append(
            f"{name} ({task['env_id']}): threshold {task['threshold']:.3f} = 90% of {task['best_final_mean']:.3f}"
        )
        lines += task_table(name, task)
        lines.append("")
    return "\n".join(lines)


def render(out: str | Path) -> dict[str, Any]:
    """Recompute the summary of ``<out>/results.json`` and rewrite it, results.md and the PNGs (no training)."""
    import json

    path = Path(out) / RESULTS_JSON
    results = json.loads(path.read_text(encoding="utf-8"))
    results["summary"] = summarise(results)
    write_atomic(path, json.dumps(results, indent=1))
    write_markdown(results, Path(out) / RESULTS_MD, plot_curves(results, out))
    return results


def write_markdown(results: dict[str, Any], path: str | Path, images: list[Path] | None = None) -> Path:
    """``results.md``: the protocol, then per task its settings, the table and its PNG (if in ``images``)."""
    drawn = {Path(p).name for p in images or []}
    path = Path(path)
    plan = results["plan"]
    v = results["versions"]
    n_seeds = len(plan["seeds"])
    lines = [
        f"# ospo-gym benchmark: {results['preset']}",
        "",
        f"{results['description']}. Command: `{results['command']}`",
        "",
        f"Wall time {results['wall_seconds']:.0f} s with {results['workers']} worker process(es) on {v['cpus']} CPU(s) "
        f"({v['platform']}); Python {v['python']}, torch {v['torch']}, transformers {v['transformers']}, "
        f"ospo-gym {v['ospo-gym']}. Started {results['started']}; load average (1/5/15 min) "
        f"{_load(results, 'start')} at the start, {_load(results, 'end')} at the end (other work on the machine "
        "inflates the wall times, not the rewards).",
        "",
        "Protocol: every agent of a task gets the same tiny Qwen2 per seed (same initial weights), the same steps, "
        f"prompts per step and group size; seeds {plan['seeds']}. Evaluation: mean reward over all prompts of the env, "
        f"{plan['eval_samples']} sampled completions each, fixed sampling seed {plan['eval_seed']}, at step 0, every "
        "`eval_every` steps and at the end. *Final reward*: last evaluation, mean ± std over seeds. *Threshold*: "
        f"{THRESHOLD_FRACTION:.0%} of the task's best mean final reward. *Steps to threshold*: first evaluation at or above "
        "it, mean ± std over seeds; runs that never reach it count as the full budget, which makes the mean a lower "
        "bound (marked ≥). *Steps vs GRPO*: ratio of those means to GRPO's with the same settings (≤ / ≥ when "
        "censoring makes it a bound; n/a when both are censored). "
        "*s / run*: wall time of a run including its evaluations, with runs sharing the CPUs.",
        "",
    ]
    for name, task in results["summary"].items():
        spec = next(t for t in plan["tasks"] if t["name"] == name)
        lines += [
            f"## {name}: `{task['env_id']}`",
            "",
            f"{spec['note']}. Env arguments `{spec['env_kwargs']}`; agent settings over `AgentConfig.tiny_cpu()`: "
            f"`{spec['config']}`"
            + (f", overrides `{plan['config_overrides']}`" if plan["config_overrides"] else "")
            + f"; {task['budget_steps']} steps, evaluation every {task['eval_every']}"
            + (f", tiny policy warm-started for {spec['warm_start']} steps" if spec["warm_start"] else "")
            + (
                f"; shifted evaluation env arguments `{spec['eval_env_kwargs']}`"
                if spec["eval_env_kwargs"]
                else ""
            )
            + ".",
            "",
            f"Threshold {task['threshold']:.3f} = {THRESHOLD_FRACTION:.0%} of {task['best_final_mean']:.3f} "
            f"(`{task['best_variant']}`); {n_seeds} seed(s).",
            "",
            *task_table(name, task),
            "",
            f"![learning curves]({curve_file(name)})"
            if curve_file(name) in drawn
            else "(no learning-curve PNG: matplotlib is not installed; pip install 'ospo-gym[bench]')",
            "",
        ]
    return write_atomic(path, "\n".join(lines))


def _load(results: dict[str, Any], when: str) -> str:
    values = (results.get("load_average") or {}).get(when)
    return "/".join(f"{x:.2f}" for x in values) if values else "n/a"


# -- plots --------------------------------------------------------------------------------------------------------
def curve_file(task: str) -> str:
    return f"curves_{task}.png"


def plot_curves(results: dict[str, Any], out: str | Path) -> list[Path]:
    """One PNG per task: evaluation reward against step, mean over seeds with a ±1 std band, threshold dashed.

    Needs matplotlib (``pip install 'ospo-gym[bench]'``); without it no PNG is written (an empty list is returned
    and the Markdown says so) rather than failing the benchmark after all its runs.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    for name, task in results["summary"].items():
        runs = [r for r in results["runs"] if r is not None and r["task"] == name]
        keys = ["eval_curve"] + (["shift_eval_curve"] if any("shift_eval_curve" in r for r in runs) else [])
        fig, axes = plt.subplots(1, len(keys), figsize=(6.4 * len(keys), 4.2), squeeze=False)
        for ax, key in zip(axes[0], keys, strict=True):
            for index, label in enumerate(task["variants"]):
                curves = [r[key] for r in runs if r["variant"] == label]
                length = min(len(c) for c in curves)
                steps = np.array([p[0] for p in curves[0][:length]])
                values = np.array([[p[1] for p in c[:length]] for c in curves])
                mean = values.mean(axis=0)
                std = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros_like(mean)
                color = f"C{index}"
                ax.plot(steps, mean, color=color, label=f"{label} (n={len(values)})")
                ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.18, linewidth=0)
            if key == "eval_curve":
                ax.axhline(
                    task["threshold"], color="grey", linestyle="--", linewidth=1, label="90% of best final"
                )
            ax.set_xlabel("training step")
            ax.set_ylabel("eval reward (mean over prompts)")
            title = f"{name}: {task['env_id']}" + (" — shifted eval env" if key != "eval_curve" else "")
            ax.set_title(f"{title}\nmean ± 1 std over seeds", fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        try:
            path = write_atomic(Path(out) / curve_file(name), lambda tmp, f=fig: f.savefig(tmp, format="png", dpi=110))
        finally:
            plt.close(fig)
        written.append(path)
    return written


def console_summary(results: dict[str, Any], out: str | Path) -> str:
    """A few lines for the terminal: the tables and where the files are."""
    lines = [
        tables_text(results),
        f"wrote {Path(out) / RESULTS_JSON}, {RESULTS_MD} and the PNG curves",
    ]
    lines.append(f"wall time {results['wall_seconds']:.0f} s with {results['workers']} worker(s)")
    return "\n".join(lines)
