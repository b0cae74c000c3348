"""The `noise` and `controls` bench presets and the smoke run of benchmarks/noise_credit_accuracy.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("torch")  # the harness is part of ospo_gym.agents

from ospo_gym.agents import bench  # noqa: E402
from ospo_gym.agents.bench.presets import NOISE_LEVELS, TASKS  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "noise_credit_accuracy.py"


def test_noise_preset_trains_on_each_level_and_evaluates_on_the_clean_reward():
    plan = bench.make_plan("noise")
    assert [v.algo for v in plan.variants] == ["grpo", "ospo_prop", "ospo_rank"]
    levels = [t.env_kwargs["reward_noise"]["level"] for t in plan.tasks]
    assert levels == list(NOISE_LEVELS) == [0.0, 0.05, 0.1, 0.2]
    for task in plan.tasks:
        assert task.eval_env_kwargs == {"reward_noise": None}
        base = {k: v for k, v in task.env_kwargs.items() if k != "reward_noise"}
        assert base == TASKS["additive"].env_kwargs  # the same task as the main job's, plus the noise
    label_flip = bench.make_plan("noise", tasks=["retrieval@label_flip=0.1"]).tasks[0]
    assert label_flip.env_kwargs["reward_noise"] == {"kind": "label_flip", "level": 0.1, "seed": 0}
    noisy = gym.make(label_flip.env_id, **label_flip.env_kwargs).unwrapped
    clean = gym.make(label_flip.env_id, **{**label_flip.env_kwargs, **label_flip.eval_env_kwargs}).unwrapped
    queries = [noisy.prompt(p).removeprefix("query: ") for p in noisy.prompt_ids]
    assert not np.array_equal(
        noisy.rewards(noisy.prompt_ids, queries), clean.rewards(clean.prompt_ids, queries)
    )



def test_noise_preset_has_score_noise_tasks_on_retrieval():
    task = bench.make_plan("noise", tasks=["retrieval@score=0.2"]).tasks[0]
    assert task.env_kwargs["reward_noise"] == {"kind": "score", "level": 0.2, "seed": 0}
    base = {k: v for k, v in task.env_kwargs.items() if k != "reward_noise"}
    assert base == TASKS["retrieval"].env_kwargs and task.eval_env_kwargs == {"reward_noise": None}
    noisy = gym.make(task.env_id, **task.env_kwargs).unwrapped
    clean = gym.make(task.env_id, **{**task.env_kwargs, **task.eval_env_kwargs}).unwrapped
    queries = [noisy.prompt(p).removeprefix("query: ") for p in noisy.prompt_ids]
    assert not np.array_equal(noisy.rewards(noisy.prompt_ids, queries), clean.rewards(clean.prompt_ids, queries))


def test_controls_preset_lists_the_controls_on_the_synthetic_tasks():
    plan = bench.make_plan("controls")
    assert [v.algo for v in plan.variants] == [
        "grpo",
        "ospo_prop",
        "ospo_shuffled",
        "ospo_loo",
        "grpo_lambda",
    ]
    assert [t.name for t in plan.tasks] == ["additive", "interaction", "retrieval"]


@pytest.mark.slow
def test_noise_credit_accuracy_smoke(tmp_path):
    command = [
        sys.executable,
        str(SCRIPT),
        "--texts",
        "2",
        "--noise-seeds",
        "1",
        "--max-players",
        "4",
        "--out",
        str(tmp_path),
    ]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=600)
    rows = json.loads((tmp_path / "noise_credit_accuracy.json").read_text())["rows"]
    clean = [r for r in rows if r["level"] == 0.0 and r["estimator"] == "exact"]
    # exact Shapley of the clean game is exact (None: no rankable completion was drawn for that task)
    assert all(r["spearman"] in (1.0, None) and r["l1"] in (0.0, None) for r in clean)
    assert any(r["spearman"] == 1.0 for r in clean)
    gains = [r["noise_gain"] for r in rows if r["kind"] == "gaussian" and r["level"] > 0]
    assert gains and all(g > 0 for g in gains)
    assert "| additive | gaussian | 0.2 |" in (tmp_path / "noise_credit_accuracy.md").read_text()
