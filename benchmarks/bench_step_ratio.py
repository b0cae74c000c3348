"""Step time of OSPO-PROP over GRPO (M coalitions, width <= w_max), side by side on the same tiny policy.

For each env a tiny random Qwen2 is built on the env's texts (prompts and vocabulary); a GRPO agent and an
OSPO-PROP agent start from it with the same config and seed, and their steps alternate (GRPO, OSPO, GRPO, ...) so
both see the same machine load. Reported per algorithm: min and median step seconds over the timed steps, the
credit phase (segmentation, coalition sampling, oracle values, Owen estimate, token redistribution) and the oracle
alone (``oracle.values_batch``, timed by wrapping it), as seconds and as shares of OSPO's step.

    python benchmarks/bench_step_ratio.py      # writes benchmarks/results/step_ratio.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from _common import write_report

import ospo_gym  # noqa: F401
from ospo_gym.agents import Agent, AgentConfig, build_tiny_qwen2, logger

RESULTS = Path(__file__).parent / "results"
ENVS = {
    "ospo/SyntheticRetrieval-v0": {},  # BM25 over the generated catalog, pooled NDCG
    "ospo/AdditiveKeywords-v0": {},
}


def env_texts(env_id: str, env_kwargs: dict) -> list[str]:
    base = gym.make(env_id, **env_kwargs).unwrapped
    return [base.prompt(p) for p in base.prompt_ids] + [" ".join(base.vocabulary)] * 3


class OracleClock:
    """Wraps ``oracle.values_batch`` of an env and adds up the seconds spent in it."""

    def __init__(self, oracle) -> None:
        self.seconds = 0.0
        inner = oracle.values_batch

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        oracle.values_batch = timed


def stats(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 4), "median": round(float(np.median(values)), 4)}


def run_env(env_id: str, env_kwargs: dict, args: argparse.Namespace, scratch: Path) -> dict:
    policy = scratch / env_id.replace("/", "_")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_tiny_qwen2(env_texts(env_id, env_kwargs), policy)
    config = AgentConfig.tiny_cpu(
        group_size=args.group,
        prompts_per_step=args.prompts,
        max_new_tokens=args.max_new_tokens,
        w_max=args.w_max,
        max_coalitions=args.coalitions,
        torch_threads=args.threads,
        device="cpu",
        run_dir=str(scratch / "runs"),
        tensorboard=False,
        progress_bar=False,
        seed=args.seed,
        overlap_credit=args.overlap_credit,
    )
    agents = {algo: Agent(env_id, algo=algo, policy=str(policy), config=config, env_kwargs=env_kwargs)
              for algo in ("grpo", "ospo_prop")}  # fmt: skip
    if args.joined_strings:
        for agent in agents.values():
            agent.envs.oracle.joined_texts = False
    clocks = {algo: OracleClock(agent.envs.oracle) for algo, agent in agents.items()}
    rows: dict[str, list[dict]] = {algo: [] for algo in agents}
    oracle_seconds: dict[str, list[float]] = {algo: [] for algo in agents}
    for step in range(args.warmup + args.steps):
        for algo, agent in agents.items():
            before = clocks[algo].seconds
            metrics = agent.train_step()
            if step >= args.warmup:
                rows[algo].append(metrics)
                oracle_seconds[algo].append(clocks[algo].seconds - before)
    for agent in agents.values():
        agent.close()

    def summary(algo: str) -> dict:
        steps = [r[logger.PERF_STEP_SECONDS] for r in rows[algo]]
        return {
            "step_seconds": stats(steps),
            "generate_seconds_median": round(float(np.median([r[logger.PERF_GENERATE_SECONDS] for r in rows[algo]])), 4),
            "credit_seconds_median": round(float(np.median([r[logger.PERF_CREDIT_SECONDS] for r in rows[algo]])), 4),
            "oracle_seconds_median": round(float(np.median(oracle_seconds[algo])), 4),
            "update_seconds_median": round(float(np.median([r[logger.PERF_UPDATE_SECONDS] for r in rows[algo]])), 4),
            "completion_tokens_mean": round(float(np.mean([r[logger.PERF_COMPLETION_TOKENS] for r in rows[algo]])), 2),
            "oracle_values_per_step": round(float(np.mean([r[logger.CREDIT_ORACLE_VALUES] for r in rows[algo]])), 1),
        }

    grpo, ospo = summary("grpo"), summary("ospo_prop")
    ospo_total = sum(r[logger.PERF_STEP_SECONDS] for r in rows["ospo_prop"])
    return {
        "env": env_id,
        "grpo": grpo,
        "ospo_prop": ospo,
        "ratio_median": round(ospo["step_seconds"]["median"] / grpo["step_seconds"]["median"], 3),
        "ratio_min": round(ospo["step_seconds"]["min"] / grpo["step_seconds"]["min"], 3),
        "ospo_credit_share": round(sum(r[logger.PERF_CREDIT_SECONDS] for r in rows["ospo_prop"]) / ospo_total, 3),
        "ospo_oracle_share": round(sum(oracle_seconds["ospo_prop"]) / ospo_total, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coalitions", type=int, default=96, help="M, coalitions per completion")
    parser.add_argument("--w-max", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=2, help="prompts per step")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per algorithm")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a tiny model is fastest on one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--overlap-credit", action="store_true",
        help="AgentConfig.overlap_credit for both agents: credit on a worker thread while the update's forward runs",
    )
    parser.add_argument(
        "--joined-strings", action="store_true",
        help="the retrieval oracle hands BM25 joined coalition strings (the path before JoinedTexts)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "step_ratio.json")
    args = parser.parse_args()

    warnings.filterwarnings("ignore")
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        results = []
        for env_id, env_kwargs in ENVS.items():
            row = run_env(env_id, env_kwargs, args, Path(scratch))
            results.append(row)
            print(json.dumps(row), flush=True)
    report = {
        "command": "python benchmarks/bench_step_ratio.py " + " ".join(
            f"--{k.replace('_', '-')}" + ("" if isinstance(v, bool) else f" {v}")
            for k, v in vars(args).items() if k != "out" and v is not False
        ),
        "what": "seconds per training step, OSPO-PROP over GRPO, same policy / config / seed, steps alternated",
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "machine": {"cpu_count": os.cpu_count(), "threads": args.threads, "load_average_1min_at_start": round(load_at_start, 2)},
        "target": "ratio <= 1.1 (issue #17)",
        "met": all(r["ratio_median"] <= 1.1 for r in results),
        "results": results,
    }
    write_report(report, args.out)


if __name__ == "__main__":
    main()
