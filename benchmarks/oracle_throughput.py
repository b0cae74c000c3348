"""Coalition values per second of the retrieval task's oracle (BM25, pooled NDCG, 10,000 products).

Each batch is ``--batch`` completions of ``--words`` words (query words plus catalog words), each with its
OSPO coalitions (``w_max``, ``M``); one ``oracle.values_batch`` call evaluates them all. Reported:
values returned per second (what an agent gets) and distinct texts scored per second (what BM25 does).

    python benchmarks/oracle_throughput.py         # writes benchmarks/results/oracle_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from _common import make_batch

import ospo_gym  # noqa: F401
from ospo_gym.credit import sample_coalitions

RESULTS = Path(__file__).parent / "results"
TARGET = 50_000  # coalition values per second on the 10,000-product task (issue 17)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--words", type=int, default=16)
    parser.add_argument("--w-max", type=int, default=8)
    parser.add_argument("--max-coalitions", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--joined-strings", action="store_true",
        help="hand BM25 the coalition texts as joined strings (the path before JoinedTexts), for a before/after",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    load_at_start = os.getloadavg()[0]  # other processes on a 2-core machine halve the throughput
    started = time.perf_counter()
    env = gym.make("ospo/SyntheticRetrieval-v0", num_products=args.products, num_queries=500).unwrapped
    build_seconds = time.perf_counter() - started
    rng = np.random.default_rng(0)
    oracle = env.oracle
    if args.joined_strings:
        oracle.joined_texts = False
    batches = []
    for repeat in range(args.repeats + 1):
        prompt_ids, texts = make_batch(env, rng, args.batch, args.words)
        spans = [oracle.segment(t) for t in texts]
        coalitions = [
            sample_coalitions(len(s), args.w_max, args.max_coalitions, rng=repeat * 100 + i) for i, s in enumerate(spans)
        ]
        batches.append((prompt_ids, texts, spans, coalitions))
    oracle.values_batch(*batches[0])  # warm-up (first call allocates)
    values = scored = 0
    before_scored = oracle.num_scored
    elapsed = 0.0
    for batch in batches[1:]:
        t0 = time.perf_counter()
        out = oracle.values_batch(*batch)
        elapsed += time.perf_counter() - t0
        values += sum(len(v) for v in out)
    scored = oracle.num_scored - before_scored
    result = {
        "command": "python benchmarks/oracle_throughput.py " + " ".join(
            f"--{k.replace('_', '-')}" + ("" if isinstance(v, bool) else f" {v}")
            for k, v in vars(args).items() if k != "out" and v is not False
        ),
        "coalition_texts_as": "joined strings" if args.joined_strings else "JoinedTexts (segment pieces)",
        "cpu_count": os.cpu_count(),
        "load_average_1min_at_start": round(load_at_start, 2),
        "catalog_products": args.products,
        "env_build_seconds": round(build_seconds, 2),
        "coalitions_per_completion": round(values / (args.repeats * args.batch), 1),
        "coalition_values_per_second": round(values / elapsed),
        "distinct_texts_scored_per_second": round(scored / elapsed),
        "seconds_per_batch": round(elapsed / args.repeats, 4),
        "target_values_per_second": TARGET,
        "met": values / elapsed >= TARGET,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "oracle_throughput.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
