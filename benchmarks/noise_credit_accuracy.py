"""Does coalition averaging denoise segment credit, or amplify the reward noise?

For the bench tasks (additive, interaction, retrieval; the env settings of ``ospo-gym bench``) it draws
completions, computes their *noise-free* exact Shapley values (``ground_truth_credit``), then estimates the credit
from the *noisy* oracle (``reward_noise``, :mod:`ospo_gym.wrappers`; 0, 0.05, 0.1, 0.2; several noise seeds) with

* ``ospo``: the Owen–Shapley estimate over contiguous windows (``sample_coalitions`` + ``segment_credit`` with the
  agents' defaults w_max = 8, M = 96: what OSPO-PROP / OSPO-RANK redistribute),
* ``loo``: leave-one-segment-out, ``v(N) − v(N ∖ {i})`` (the ``ospo_loo`` control),
* ``exact``: exact Shapley by enumeration of the noisy game (every coalition, the most averaging possible),

and reports the Spearman rank correlation (mean over completions whose exact values are not all equal) and the
normalised L1 (``Σ|φ̂ − φ| / Σ|φ|``, both sums over every segment of every completion) against the noise-free exact
values, and — for Gaussian noise of std σ — the *noise gain* ``RMS(φ̂_noisy − φ̂_clean) / σ``: the std of the
credit error the noise causes, per segment, in units of the noise on one reward. A gain below 1 means the estimate
averages the noise down below that of a single reward (the scalar GRPO spreads over every token); LOO, one
difference of two noisy values, has gain ≈ √2 before clipping.

    python benchmarks/noise_credit_accuracy.py     # writes benchmarks/results/noise_credit_accuracy.{json,md}
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from _common import credit_accuracy
from estimator_accuracy import interaction_completions, retrieval_completions

import ospo_gym  # noqa: F401  (registers the env ids)
from ospo_gym.agents.bench.presets import TASKS
from ospo_gym.credit import sample_coalitions, segment_credit, shapley_exact
from ospo_gym.credit.defaults import DEFAULT_MAX_COALITIONS, DEFAULT_W_MAX

LEVELS = (0.0, 0.05, 0.1, 0.2)
ESTIMATORS = ("ospo", "loo", "exact")
CASES = (
    ("additive", "gaussian"),
    ("interaction", "gaussian"),
    ("retrieval", "gaussian"),
    ("retrieval", "label_flip"),
    ("retrieval", "score"),
)
RESULTS = Path(__file__).parent / "results"


def additive_completions(env, rng: np.random.Generator, count: int, min_words: int, max_words: int):
    """Distinct keywords of the vocabulary (helpful, harmful and neutral alike), in random order."""
    out = []
    for _ in range(count):
        prompt_id = env.prompt_ids[int(rng.integers(len(env.prompt_ids)))]
        n = int(rng.integers(min_words, max_words + 1))
        out.append((prompt_id, " ".join(rng.choice(env.vocabulary, size=n, replace=False))))
    return out


def estimate(oracle, prompt_id, text: str, spans, name: str, rng_seed: int) -> np.ndarray:
    """(n,) segment credit of ``text`` by estimator ``name`` from ``oracle``."""
    n = len(spans)
    if name == "exact":
        return shapley_exact(lambda cs: oracle.values(prompt_id, text, spans, cs), n)
    if name == "loo":
        everyone = tuple(range(n))
        coalitions = [everyone, *(everyone[:i] + everyone[i + 1 :] for i in range(n))]
        values = oracle.values(prompt_id, text, spans, coalitions)
        return values[0] - values[1:]
    coalitions = sample_coalitions(n, DEFAULT_W_MAX, DEFAULT_MAX_COALITIONS, rng=rng_seed)
    return segment_credit(coalitions, oracle.values(prompt_id, text, spans, coalitions), n)


def evaluate(task: str, kind: str, completions, noise_seeds: int) -> list[dict]:
    spec = TASKS[task]
    clean = gym.make(spec.env_id, **spec.env_kwargs).unwrapped
    truth, reference = {}, {}
    for index, (prompt_id, text) in enumerate(completions):
        spans = clean.oracle.segment(text)
        truth[index] = clean.ground_truth_credit(prompt_id, text)
        reference[index] = {e: estimate(clean.oracle, prompt_id, text, spans, e, index) for e in ESTIMATORS}
    rows = []
    for level in LEVELS:
        scores: dict[str, list[float]] = {e: [] for e in ESTIMATORS}
        deviations: dict[str, list[np.ndarray]] = {e: [] for e in ESTIMATORS}  # estimate − noise-free exact
        errors: dict[str, list[np.ndarray]] = {
            e: [] for e in ESTIMATORS
        }  # estimate − same estimate without noise
        for noise_seed in range(noise_seeds):
            noisy = gym.make(
                spec.env_id,
                **spec.env_kwargs,
                reward_noise={"kind": kind, "level": level, "seed": noise_seed},
            ).unwrapped
            for index, (prompt_id, text) in enumerate(completions):
                spans = noisy.oracle.segment(text)
                for e in ESTIMATORS:
                    credit = estimate(noisy.oracle, prompt_id, text, spans, e, index)
                    if np.ptp(truth[index]) > 0:  # an all-equal truth has no ranking to recover
                        scores[e].append(credit_accuracy(credit, truth[index])[0])
                    deviations[e].append(np.abs(credit - truth[index]))
                    errors[e].append(credit - reference[index][e])
        for e in ESTIMATORS:
            arr = np.array(scores[e])
            error = np.concatenate(errors[e])
            magnitude = sum(np.abs(truth[i]).sum() for i in truth) * noise_seeds
            rows.append(
                {
                    "task": task,
                    "kind": kind,
                    "level": level,
                    "estimator": e,
                    # None where no completion has a ranking to recover / no credit to compare with
                    "spearman": float(arr.mean()) if arr.size else None,
                    "spearman_std": float(arr.std()) if arr.size else None,
                    "l1": float(np.concatenate(deviations[e]).sum() / magnitude) if magnitude > 0 else None,
                    "noise_gain": float(np.sqrt(np.mean(error**2)) / level)
                    if kind == "gaussian" and level
                    else None,
                    "n": len(arr),
                }
            )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| task | noise | level | " + " | ".join(f"{e}: Spearman / L1 / gain" for e in ESTIMATORS) + " |",
        "|---|---|---|" + "---|" * len(ESTIMATORS),
    ]
    index = {(r["task"], r["kind"], r["level"], r["estimator"]): r for r in rows}
    for task, kind in dict.fromkeys((r["task"], r["kind"]) for r in rows):
        for level in LEVELS:
            cells = []
            for e in ESTIMATORS:
                r = index[(task, kind, level, e)]
                cells.append(
                    " / ".join(
                        "—" if r[k] is None else f"{r[k]:.2f}" for k in ("spearman", "l1", "noise_gain")
                    )
                )
            lines.append(f"| {task} | {kind} | {level:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--texts", type=int, default=16, help="completions per task")
    parser.add_argument("--noise-seeds", type=int, default=3, help="noise seeds per level")
    parser.add_argument(
        "--max-players", type=int, default=10, help="longest completion (exact needs 2**n calls)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = time.perf_counter()
    rows = []
    for task, kind in CASES:
        spec = TASKS[task]
        env = gym.make(spec.env_id, **spec.env_kwargs).unwrapped
        rng = np.random.default_rng(0)  # the same completions for every noise kind of a task
        if task == "additive":
            completions = additive_completions(env, rng, args.texts, 4, args.max_players)
        elif task == "interaction":
            completions = interaction_completions(env, rng, args.texts, 4, min(args.max_players, 8))
        else:
            completions = retrieval_completions(env, rng, args.texts, 4, args.max_players)
        rows += evaluate(task, kind, completions, args.noise_seeds)
    command = "python benchmarks/noise_credit_accuracy.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"
    )
    summary = {"command": command, "seconds": round(time.perf_counter() - started, 1), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "noise_credit_accuracy.json").write_text(json.dumps(summary, indent=1))
    md = [
        f"Command: `{command}` ({summary['seconds']} s). Spearman and normalised L1 against the noise-free exact "
        "Shapley values; gain = RMS credit error caused by the noise / σ (Gaussian only).\n",
        markdown(rows),
    ]
    (args.out / "noise_credit_accuracy.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
