"""The CLI and the multi-turn id: listed by ``ospo-gym envs``, refused by the single-step training loop."""

from __future__ import annotations

import json

import pytest
from cli_support import run_main

pytest.importorskip("torch")


def test_envs_lists_the_multi_turn_id(capsys):
    code, out, _ = run_main(["envs", "--json"], capsys)
    assert code == 0 and "max_turns" in json.loads(out)["ospo/ConvSearch-v0"]


def test_train_refuses_a_multi_turn_env_in_one_line(capsys):
    code, out, err = run_main(["train", "--tiny", "--steps", "0", "--env", "ospo/ConvSearch-v0"], capsys)
    assert code == 2 and "multi-turn env" in err and "ospo_gym.agents.turn_loop" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
