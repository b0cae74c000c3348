"""Where OSPO's credit time goes: inside the training step against the same batches replayed alone.

An OSPO-PROP agent (tiny random Qwen2 built on the env's texts, the step-ratio settings) trains ``--steps`` steps;
each step's batch is kept. Reported, per batch, in milliseconds:

- ``in_step``: the credit phase as the step logs it (``perf/credit_seconds``, median);
- ``alone_fresh_offsets``: the same estimator on the same batches replayed back to back, token offsets computed
  again (what the step does);
- ``alone_cached_offsets``: the same, token offsets already computed;
- ``oracle``: ``oracle.values_batch`` alone, within the cached-offsets replay.

Every figure is the median over the same batches (those after ``--warmup``). The gap between ``in_step`` and
``alone_fresh_offsets`` is time the credit loses inside a step rather than work it does (probably caches that the
generation and update leave cold).

    python benchmarks/credit_phase_split.py      # writes benchmarks/results/credit_phase_split.json
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from _common import write_report
from bench_step_ratio import OracleClock, env_texts

import ospo_gym  # noqa: F401
from ospo_gym.agents import Agent, AgentConfig, build_tiny_qwen2, logger
from ospo_gym.agents.estimators import LazyTokenOffsets
from ospo_gym.agents.generation import batch_token_offsets

RESULTS = Path(__file__).parent / "results"
ENVS = ("ospo/SyntheticRetrieval-v0", "ospo/AdditiveKeywords-v0")


def split_env(env_id: str, args: argparse.Namespace, scratch: Path) -> dict:
    policy = scratch / env_id.replace("/", "_")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_tiny_qwen2(env_texts(env_id, {}), policy)
    config = AgentConfig.tiny_cpu(
        group_size=8, prompts_per_step=2, max_new_tokens=32, w_max=8, max_coalitions=96, torch_threads=1,
        device="cpu", run_dir=str(scratch / "runs"), tensorboard=False, progress_bar=False, seed=args.seed,
    )  # fmt: skip
    agent = Agent(env_id, algo="ospo_prop", policy=str(policy), config=config)
    estimator, kept = agent.estimator, []

    def keep(batch, oracle, cfg):
        kept.append(batch)
        return estimator(batch, oracle, cfg)

    agent.estimator = keep
    make_batch, tokens = agent._batch, []

    def keep_tokens(rollout, *rest):  # the completions' token ids, as the step's lazy offsets read them
        mask, ids = rollout.completion_mask.cpu().numpy(), rollout.completion_tokens.cpu().numpy()
        tokens.append([ids[b, : int(n)] for b, n in enumerate(mask.sum(axis=1))])
        return make_batch(rollout, *rest)

    agent._batch = keep_tokens
    in_step = [agent.train_step()[logger.PERF_CREDIT_SECONDS] for _ in range(args.steps)]
    oracle, tokenizer = agent.envs.oracle, agent.tokenizer
    clock = OracleClock(oracle)

    def replay(fresh: bool) -> tuple[list[float], list[float]]:
        """Seconds of the estimator and of the oracle within it, per kept batch."""
        seconds, in_oracle = [], []
        for batch, token_rows in zip(kept, tokens, strict=True):
            if fresh:
                compute = functools.partial(batch_token_offsets, tokenizer, token_rows, batch.texts)
                batch = dataclasses.replace(batch, token_offsets=LazyTokenOffsets(len(token_rows), compute))
            oracle_before, start = clock.seconds, time.perf_counter()
            estimator(batch, oracle, config)
            seconds.append(time.perf_counter() - start)
            in_oracle.append(clock.seconds - oracle_before)
        return seconds, in_oracle

    fresh, _ = replay(fresh=True)  # the step's batches already hold their offsets: the cached replay reads them
    cached, oracle_seconds = replay(fresh=False)
    agent.close()
    ms = lambda values: round(float(np.median(values)) * 1e3, 2)  # noqa: E731
    return {
        "env": env_id,
        "batches": len(kept),
        "in_step_ms": ms(in_step[args.warmup :]),
        "alone_fresh_offsets_ms": ms(fresh[args.warmup :]),
        "alone_cached_offsets_ms": ms(cached[args.warmup :]),
        "oracle_ms": ms(oracle_seconds[args.warmup :]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "credit_phase_split.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        results = [split_env(env_id, args, Path(scratch)) for env_id in ENVS]
    report = {
        "command": f"python benchmarks/credit_phase_split.py --steps {args.steps} --warmup {args.warmup} --seed {args.seed}",
        "machine": {"cpu_count": os.cpu_count(), "load_average_1min_at_start": round(load, 2)},
        "results": results,
    }
    write_report(report, args.out)


if __name__ == "__main__":
    main()
