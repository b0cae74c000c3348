"""Metric names (defined once, with fixed prefixes) and the run logger: JSONL always, TensorBoard when available
(the ``tensorboard`` extra; asked for but missing, it is one warning per process)."""

from __future__ import annotations

import json
import math
import re
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ospo_gym.agents.distributed import World

STEP = "step"

REWARD_MEAN = "reward/mean"
REWARD_STD = "reward/std"
REWARD_MAX = "reward/max"
REWARD_ZERO_VARIANCE_GROUPS = "reward/zero_variance_group_fraction"
REWARD_TURNS_MEAN = "reward/turns_mean"  # multi-turn envs: mean number of policy turns per episode

LOSS_POLICY = "loss/policy"
LOSS_KL = "loss/kl"
LOSS_CLIP_FRACTION = "loss/clip_fraction"
LOSS_CLIP_LOW_FRACTION = "loss/clip_low_fraction"
LOSS_CLIP_HIGH_FRACTION = "loss/clip_high_fraction"
LOSS_RATIO_MEAN = "loss/ratio_mean"
LOSS_GRAD_NORM = "loss/grad_norm"
LOSS_SKIPPED_UPDATES = "loss/skipped_updates"  # updates dropped for a non-finite loss or grad norm ("skip")

CREDIT_SEQUENCE_ADVANTAGE_ABS = "credit/sequence_advantage_abs_mean"
CREDIT_TOKEN_ADVANTAGE_MEAN = "credit/token_advantage_mean"
CREDIT_TOKEN_ADVANTAGE_STD = "credit/token_advantage_std"
CREDIT_TOKEN_ADVANTAGE_MIN = "credit/token_advantage_min"
CREDIT_TOKEN_ADVANTAGE_MAX = "credit/token_advantage_max"
CREDIT_WITHIN_SEQUENCE_STD = "credit/within_sequence_std"
CREDIT_ORACLE_CALLS = "credit/oracle_calls"
CREDIT_ORACLE_VALUES = "credit/oracle_values"

PERF_STEP_SECONDS = "perf/step_seconds"
PERF_GENERATE_SECONDS = "perf/generate_seconds"
PERF_CREDIT_SECONDS = "perf/credit_seconds"
PERF_UPDATE_SECONDS = "perf/update_seconds"
PERF_SYNC_SECONDS = "perf/sync_seconds"  # of the update: loading the new weights into the rollout engine (vllm)
PERF_COMPLETION_TOKENS = "perf/completion_tokens_mean"

METRIC_PREFIXES = ("reward/", "loss/", "credit/", "perf/")


def run_name(env_id: str, algo: str, seed: int, when: float | None = None) -> str:
    """``{env}__{algo}__{seed}__{time}`` with path-unsafe characters of the env id replaced by ``_``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if when is None else when))
    safe_env = re.sub(r"[^A-Za-z0-9._-]+", "_", env_id)
    return f"{safe_env}__{algo}__{seed}__{stamp}"


_MAX_SUFFIX = 999  # a run folder name taken this many times over is a leftover loop, not a race


def create_run_dir(
    parent: str | Path,
    env_id: str,
    algo: str,
    seed: int,
    *,
    when: float | None = None,
    world: World | None = None,
) -> Path:
    """Create a new, empty run folder ``<parent>/<run_name(...)>`` and return its path.

    The folder is created exclusively: when the name is taken (another run of the same env, algo and seed
    started in the same second, in this process or another), ``-1``, ``-2``, ... is appended until a name is
    free, so two runs never share a folder. Under torchrun pass the
    :class:`~ospo_gym.agents.distributed.World` and call this on every rank: rank 0 creates the folder (its
    clock decides) and broadcasts the name.
    """
    path: Path | None = None
    if world is None or world.is_main:
        base = Path(parent) / run_name(env_id, algo, seed, when)
        base.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(_MAX_SUFFIX + 1):
            candidate = base if attempt == 0 else base.with_name(f"{base.name}-{attempt}")
            try:
                candidate.mkdir()
            except FileExistsError:  # taken: try the next suffix
                continue
            path = candidate
            break
        else:
            raise FileExistsError(
                f"{base} and {_MAX_SUFFIX} suffixed variants of it exist already; clean up {base.parent}"
            )
    if world is None:
        return path
    return Path(world.broadcast(str(path) if path is not None else None))


TENSORBOARD_MISSING = (
    "TensorBoard logging is on (tensorboard=True, the default) but torch.utils.tensorboard cannot be imported "
    "({error}): metrics go to metrics.jsonl only. Install it with pip install 'ospo-gym[tensorboard]', or turn "
    "it off (--no-tensorboard, AgentConfig(tensorboard=False)) to silence this warning"
)
_tensorboard_warned = False  # one warning per process, however many runs it starts


class RunLogger:
    """Appends one JSON object per step to ``<run_dir>/metrics.jsonl``; mirrors scalars to TensorBoard if asked
    and ``torch.utils.tensorboard`` imports (it needs the ``tensorboard`` package: the ``tensorboard`` extra).
    Asked for but not importable, the first logger of the process warns (:data:`TENSORBOARD_MISSING`)."""

    def __init__(self, run_dir: str | Path, *, tensorboard: bool = True, resume_step: int = 0) -> None:
        """``resume_step > 0``: the run continues after that step; records of later steps (written by a run that
        crashed after its last checkpoint) are removed from metrics.jsonl and purged from TensorBoard."""
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        if resume_step > 0 and self.path.exists():
            self._truncate_after(resume_step)
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:  # tensorboard is optional: say so once, then log to JSONL alone
                SummaryWriter = None  # noqa: N806
                _warn_tensorboard_missing(err)
            if SummaryWriter is not None:
                purge = {"purge_step": resume_step + 1} if resume_step > 0 else {}
                self._writer = SummaryWriter(log_dir=str(self.run_dir), **purge)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        record = {STEP: step, **{k: _plain(v) for k, v in metrics.items()}}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for key, value in record.items():
                if key != STEP and isinstance(value, int | float) and math.isfinite(value):
                    self._writer.add_scalar(key, value, step)

    def _truncate_after(self, step: int) -> None:
        """Keep the records with ``step <= step`` (and drop a last line cut short by a crash), atomically.

        When the run also has checkpoints of later steps, the resume starts a new branch: those checkpoints
        and the records after ``step`` are moved to ``<run>/abandoned/...``
        (:func:`~ospo_gym.agents.checkpoint.set_aside_later_checkpoints`) before metrics.jsonl is rewritten.
        Without such checkpoints (a crash after the last one) the later records are dropped: the resumed run
        repeats those steps.
        """
        kept, later = [], []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                continue  # a line cut short by the crash
            if isinstance(record, dict) and isinstance(record.get(STEP), int):
                (kept if record[STEP] <= step else later).append(line)
        from ospo_gym.agents.checkpoint import set_aside_later_checkpoints  # torch: only on a resume

        set_aside_later_checkpoints(self.run_dir, step, later)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
        tmp.replace(self.path)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _warn_tensorboard_missing(err: ImportError) -> None:
    global _tensorboard_warned
    if not _tensorboard_warned:
        _tensorboard_warned = True
        warnings.warn(TENSORBOARD_MISSING.format(error=err), stacklevel=3)


def _plain(value: Any) -> Any:
    """numpy / torch scalars to Python numbers, non-finite floats to None (JSON has no NaN)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, in order."""
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
