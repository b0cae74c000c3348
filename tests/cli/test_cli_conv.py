"""The CLI and the multi-turn id: listed by ``ospo-gym envs``, trained and resumed by ``ospo-gym train``."""

from __future__ import annotations

import json

import pytest
from cli_support import run_main

pytest.importorskip("torch")

ENV_ARGS = ["--env", "ospo/ConvSearch-v0", "--env-arg", "num_products=300", "--env-arg", "num_targets=4",
            "--env-arg", "max_turns=2"]  # fmt: skip


def test_envs_lists_the_multi_turn_id(capsys):
    code, out, _ = run_main(["envs", "--json"], capsys)
    assert code == 0 and "max_turns" in json.loads(out)["ospo/ConvSearch-v0"]


def test_train_refuses_a_single_step_estimator_on_a_multi_turn_env_in_one_line(capsys, tmp_path):
    code, _, err = run_main(["train", "--tiny", "--steps", "0", "--algo", "ospo_prop", "--run-dir", str(tmp_path), *ENV_ARGS], capsys)
    assert code == 2 and "multi-turn env: use one of trajectory_grpo" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow  # a tiny policy is built and trained for 2 + 1 steps: ~15 s on a shared CPU
def test_train_and_resume_on_the_multi_turn_env(capsys, tmp_path):
    args = ["train", "--tiny", "--algo", "ospo_turn", "--group-size", "2", "--run-dir", str(tmp_path), "--no-progress-bar",
            "--no-tensorboard", "--save-every", "1", *ENV_ARGS]  # fmt: skip
    code, out, err = run_main([*args, "--steps", "2"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["env"] == "ospo/ConvSearch-v0" and summary["steps"] == 2 and summary["algo"] == "ospo_turn"
    code, out, err = run_main(["train", "--resume", summary["run_dir"], "--steps", "3", "--no-progress-bar"], capsys)
    assert code == 0, err
    assert json.loads(out)["steps"] == 3
