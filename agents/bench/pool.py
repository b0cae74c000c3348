"""Where a benchmark's jobs run: one after the other in this process, or spread over worker processes (spawned,
one torch thread each), the progress bar fed from either."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_module
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

import torch

from ospo_gym.agents.bench import runner
from ospo_gym.agents.bench.runner import PolicyJob, RunJob
from ospo_gym.agents.policy import quiet_transformers

Records = list[dict[str, Any] | None]
"""One record per run job, at the job's ``index``."""


def quiet_process() -> None:
    """No tokenizers thread pool (benchmark processes run side by side) and no transformers logs."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_transformers()


def run_in_process(policy_jobs: Iterable[PolicyJob], run_jobs: list[RunJob], bar: Any) -> Records:
    """Build every policy, then train every run, in this process and in the plan's order."""
    quiet_process()
    records: Records = [None] * len(run_jobs)
    bar.set_postfix_str("building policies")
    for job in policy_jobs:
        runner.build_policy(job)
    for job in run_jobs:
        bar.set_postfix_str(f"{job.task.name} {job.variant.label} seed {job.seed}")
        records[job.index] = runner.run(job, progress=bar.update)
    return records


_PROGRESS: Any = None
"""In a worker: its queue to the parent's progress bar (set by :func:`_init_worker`)."""


def _init_worker(progress: Any) -> None:
    global _PROGRESS
    _PROGRESS = progress
    # one thread per worker process: several processes with one OpenMP pool per core each oversubscribe the CPUs
    # (measured: a 6 s warm start took over 100 s with two such workers on 2 cores). torch is loaded already
    # (importing this module loads ospo_gym.agents), so its pool is sized here; the variables are for the
    # libraries that read them later
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"
    torch.set_num_threads(1)
    quiet_process()


def _run_in_worker(job: RunJob) -> dict[str, Any]:
    return runner.run(job, progress=_PROGRESS.put)


def run_in_pool(policy_jobs: Iterable[PolicyJob], run_jobs: list[RunJob], workers: int, bar: Any) -> Records:
    """Build every policy, then train every run (the costliest first), in ``workers`` spawned processes."""
    context = mp.get_context("spawn")  # no fork after torch / OpenMP started in the parent
    progress = context.Queue()
    records: Records = [None] * len(run_jobs)

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
        for future in [pool.submit(runner.build_policy, job) for job in policy_jobs]:
            future.result()
        bar.set_postfix_str("training")
        ordered = sorted(run_jobs, key=lambda job: -job.cost)
        pending: dict[Future, RunJob] = {pool.submit(_run_in_worker, job): job for job in ordered}
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
