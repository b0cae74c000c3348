"""Why the 1M-product oracle was slower after loading the BM25 index than after building it.

Each timed process loads the index of ``benchmarks/real_data_scale.py``'s catalog from its index cache (run that
script first) and times the same oracle batches (one warm-up batch first, as that script does), in one of two
states, alternated over ``--rounds``: ``loaded`` as it is, or ``build-like`` after one 31 MiB block was allocated
and freed untouched, which raises glibc's dynamic mmap threshold to that size as an index build does (a build frees
many large temporaries). Reported per process: coalition values per second and minor page faults per batch
(``resource.getrusage``); the values of every process must be identical.

    python benchmarks/real_data_scale.py                     # once: the catalog and its index cache
    python benchmarks/bench_index_load_state.py --data-dir ~/.cache/ospo-gym/benchmarks/<folder>

Writes ``benchmarks/results/index_load_state.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_data_scale  # noqa: E402
from _common import write_report  # noqa: E402


def timed_process(data_dir: Path, cache_dir: Path, batches: int, build_like: bool) -> dict:
    """One process's measurement (see the module doc); prints and returns its row."""
    import gymnasium as gym

    import ospo_gym  # noqa: F401
    from ospo_gym.envs.esci import BM25_LOCALE_DEFAULTS
    from ospo_gym.retrieval import make_retriever

    env = gym.make(
        "ospo/ESCI-v0", data_dir=data_dir, cache_dir=cache_dir, segmentation="word",
        retriever=lambda docs: make_retriever("bm25", docs, {}, BM25_LOCALE_DEFAULTS["us"], index_cache=cache_dir),
    ).unwrapped  # fmt: skip
    if not env.retriever.index_info["cached"]:
        raise SystemExit(f"no index cache in {cache_dir}: run benchmarks/real_data_scale.py first")
    if build_like:
        block = np.empty(31 << 20, dtype=np.uint8)  # freed untouched: no page is faulted, the threshold rises
        del block
    batch_args = argparse.Namespace(batch=8, words=16, w_max=8, max_coalitions=96, repeats=batches,
                                    reference_batches=0)  # fmt: skip
    work = real_data_scale.make_batches(env, np.random.default_rng(0), batch_args)
    oracle = env.oracle
    oracle.values_batch(*work[0])  # warm-up, as in real_data_scale.py
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    started, values = time.perf_counter(), []
    for batch in work[1:]:
        values += oracle.values_batch(*batch)
    seconds = time.perf_counter() - started
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    digest = hashlib.sha256(np.concatenate(values).tobytes()).hexdigest()
    return {
        "state": "build-like" if build_like else "loaded",
        "values_per_second": round(sum(len(v) for v in values) / seconds),
        "minor_faults_per_batch": faults // batches,
        "values_sha256": digest,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True, help="real_data_scale.py's --data-dir")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default <data-dir>/cache")
    parser.add_argument("--batches", type=int, default=6, help="timed batches per process")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of processes (loaded, build-like)")
    parser.add_argument("--out", type=Path, default=real_data_scale.RESULTS / "index_load_state.json")
    parser.add_argument("--one", choices=["loaded", "build-like"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cache_dir = args.cache_dir or args.data_dir / "cache"
    if args.one is not None:
        print(json.dumps(timed_process(args.data_dir, cache_dir, args.batches, args.one == "build-like")))
        return
    load_at_start = os.getloadavg()[0]
    rows = []
    for _ in range(args.rounds):
        for state in ("loaded", "build-like"):
            command = [sys.executable, __file__, "--data-dir", str(args.data_dir), "--cache-dir", str(cache_dir),
                       "--batches", str(args.batches), "--one", state]  # fmt: skip
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    report = {
        "command": f"python benchmarks/bench_index_load_state.py --data-dir DATA --batches {args.batches} --rounds {args.rounds}",
        "load_average_1min_at_start": round(load_at_start, 2),
        "processes": rows,
        "values_identical": len({r["values_sha256"] for r in rows}) == 1,
    }
    write_report(report, args.out)


if __name__ == "__main__":
    main()
