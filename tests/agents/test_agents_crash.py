"""Crash-safe training: a run killed with SIGKILL (between steps, or in the middle of writing a checkpoint)
resumes from its run folder to the same metrics and weights as a run that was never interrupted; a damaged
checkpoint is refused with a clear error, and a run folder falls back to its newest intact checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_agents_support import ENV_ID, ENV_KWARGS, fast_config, tiny_policy_path

torch = pytest.importorskip("torch")

from ospo_gym.agents import Agent  # noqa: E402
from ospo_gym.agents.checkpoint import CheckpointError, find_checkpoint, verify_checkpoint  # noqa: E402
from ospo_gym.agents.logger import read_metrics  # noqa: E402

TESTS = Path(__file__).resolve().parents[1]  # tests/: where test_agents_support lives
TOTAL_STEPS = 6
SETTINGS = dict(algo="ospo_prop", save_every=2, keep_checkpoints=2, seed=3)

# Trains in a child process and kills itself with SIGKILL: after step KILL_AT ("step"), or while writing the
# checkpoint of step KILL_AT, after its weights are on disk but before its manifest ("save").
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_agents_support import ENV_ID, ENV_KWARGS, fast_config
    from ospo_gym.agents import Agent
    from ospo_gym.agents import checkpoint

    policy, run_root, mode, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    agent = Agent(ENV_ID, policy=policy, config=fast_config(run_dir=run_root, **{settings!r}), env_kwargs=ENV_KWARGS)
    if mode == "save":
        manifest = checkpoint._manifest
        def dying_manifest(folder):
            if agent.num_steps == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return manifest(folder)
        checkpoint._manifest = dying_manifest
    def callback(agent, metrics):
        if mode == "step" and agent.num_steps == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    agent.learn({total}, callback=callback)
    """
)


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    return tiny_policy_path(tmp_path_factory)


@pytest.fixture(scope="module")
def straight(tiny_policy, tmp_path_factory):
    """The uninterrupted run."""
    root = tmp_path_factory.mktemp("straight")
    return Agent(ENV_ID, policy=tiny_policy, config=fast_config(run_dir=str(root), **SETTINGS), env_kwargs=ENV_KWARGS).learn(
        TOTAL_STEPS
    )


def _kill_run(tiny_policy: Path, root: Path, mode: str, kill_at: int) -> Path:
    script = root / "child.py"
    script.write_text(CHILD.format(tests=str(TESTS), settings=SETTINGS, total=TOTAL_STEPS), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script), str(tiny_policy), str(root / "runs"), mode, str(kill_at)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    (run_dir,) = (root / "runs").iterdir()
    return run_dir


def _comparable(records: list[dict]) -> list[dict]:
    """Metrics without timings (they differ between any two runs)."""
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in records]


@pytest.mark.parametrize(("mode", "kill_at", "resume_from"), [("step", 5, 4), ("save", 6, 4)])
def test_sigkill_then_resume_gives_the_uninterrupted_run(tiny_policy, straight, tmp_path, mode, kill_at, resume_from):
    run_dir = _kill_run(tiny_policy, tmp_path, mode, kill_at)
    logged = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")]
    assert logged == list(range(1, kill_at + 1))  # the crash happened after these steps were logged

    assert find_checkpoint(run_dir).name == f"step-{resume_from:08d}"  # a half-written checkpoint never counts
    resumed = Agent.load(run_dir, progress_bar=False)
    assert resumed.num_steps == resume_from and resumed.run_dir == run_dir
    resumed.learn(TOTAL_STEPS - resume_from)

    assert _comparable(read_metrics(run_dir / "metrics.jsonl")) == _comparable(read_metrics(straight.run_dir / "metrics.jsonl"))
    for (name, a), (_, b) in zip(straight.model.named_parameters(), resumed.model.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    assert resumed.evaluate(2) == straight.evaluate(2)


def _damage(path: Path, how: str) -> None:
    weights = path / "policy" / "model.safetensors"
    data = weights.read_bytes()
    if how == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    elif how == "flip":
        weights.write_bytes(data[:-9] + bytes([data[-9] ^ 0xFF]) + data[-8:])
    elif how == "manifest":
        (path / "manifest.json").write_text("{not json", encoding="utf-8")
    elif how == "agent_json":
        (path / "agent.json").unlink()


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncate", "has .* bytes, expected .*truncated"),
        ("flip", "does not match its SHA-256"),
        ("manifest", "manifest.json is damaged"),
        ("agent_json", "agent.json is missing"),
    ],
)
def test_a_damaged_checkpoint_is_refused_and_the_previous_good_one_used(straight, tmp_path, how, message):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    for name in ("step-00000004", "step-00000006"):
        source = straight.run_dir / "checkpoints" / name
        target = run_dir / "checkpoints" / name
        target.mkdir()
        for file in source.rglob("*"):
            if file.is_file():
                (target / file.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
                (target / file.relative_to(source)).write_bytes(file.read_bytes())
    newest = run_dir / "checkpoints" / "step-00000006"
    before = {p: p.read_bytes() for p in newest.rglob("*") if p.is_file()}
    _damage(newest, how)
    damaged = {p: p.read_bytes() for p in newest.rglob("*") if p.is_file()}

    with pytest.raises(CheckpointError, match=message) as error:
        Agent.load(newest)
    assert "step-00000004" in str(error.value)  # it names the intact checkpoint to use instead
    with pytest.warns(UserWarning, match="skipping a damaged checkpoint"):
        agent = Agent.load(run_dir, progress_bar=False)
    assert agent.num_steps == 4
    assert {p: p.read_bytes() for p in newest.rglob("*") if p.is_file()} == damaged  # nothing deleted or "repaired"
    assert before != damaged


def test_a_run_without_any_intact_checkpoint_says_so(straight, tmp_path):
    source = straight.run_dir / "checkpoints" / "step-00000006"
    target = tmp_path / "run" / "checkpoints" / "step-00000006"
    target.mkdir(parents=True)
    for file in source.rglob("*"):
        if file.is_file():
            (target / file.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            (target / file.relative_to(source)).write_bytes(file.read_bytes())
    _damage(target, "truncate")
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="no intact checkpoint"):
        Agent.load(tmp_path / "run")


def test_checkpoints_carry_a_manifest_of_every_file(straight):
    checkpoint = straight.run_dir / "checkpoints" / "step-00000006"
    verify_checkpoint(checkpoint)
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    on_disk = {p.relative_to(checkpoint).as_posix() for p in checkpoint.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk and "policy/model.safetensors" in on_disk
