"""``ospo-gym credit`` on the multi-turn id: an episode's turns get two-level Owen credit (turns as unions)."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest
from cli_support import run_main

import ospo_gym  # noqa: F401

KWARGS = {"max_turns": 2, "num_products": 300, "num_targets": 6, "exact_credit": True}
ENV_ARGS = [f"--env-arg={k}={str(v).lower()}" for k, v in KWARGS.items()]


@pytest.fixture(scope="module")
def episode():
    """A prompt and two turns whose return is positive: a question, then the target's type and the revealed value."""
    env = gym.make("ospo/ConvSearch-v0", **KWARGS).unwrapped
    for p in env.prompt_ids:
        kind = env.task.openings[p].removeprefix("I'm looking for ").rstrip(".")
        env.reset(options={"prompt_id": p})
        reply = env.step("ask: what colour?")[0].rsplit("The colour is ", 1)[-1].rstrip(".")
        turns = ["ask: what colour?", f"{kind} {reply}"]
        if env.replay_returns([p], [[(t, t) for t in turns]])[0] > 0:
            return env, p, turns
    pytest.fail("no prompt of the small env gives a positive return to a colour search")


def numbers(out, label):
    return [float(x) for x in re.findall(rf"{label} ([+-]\d+\.\d+)", out)]


def test_turn_credit_is_efficient_and_the_exact_turn_sums_are_turn_shapley(episode, capsys):
    env, p, turns = episode
    args = ["credit", "--env", "ospo/ConvSearch-v0", *ENV_ARGS, "--prompt-id", str(p), "--exact", "--no-color"]
    code, out, err = run_main([*args, *(f"--turn={t}" for t in turns)], capsys)
    assert code == 0, err
    total = float(re.search(r"return: (\d+\.\d+)", out).group(1))
    assert total == pytest.approx(env.replay_returns([p], [[(t, t) for t in turns]])[0], abs=1e-4) and total > 0
    turn_credit = numbers(out, "turn \\d+: credit")
    assert len(turn_credit) == 2 and sum(turn_credit) == pytest.approx(total, abs=1e-3)  # efficient: v(N) - v(∅)
    exact_turns = [float(x) for x in re.findall(r"exact ([+-]\d+\.\d+)\n", out)][: len(turns)]
    rows = re.findall(r"turn \d+: credit [+-]\d+\.\d+ {3}exact ([+-]\d+\.\d+)", out)
    np.testing.assert_allclose([float(r) for r in rows], env.ground_truth_turn_credit(p, turns), atol=1e-3)
    assert exact_turns  # the segment rows carry their exact Owen values too


def test_html_view_of_the_whole_episode(episode, tmp_path, capsys):
    env, p, turns = episode
    path = tmp_path / "episode.html"
    args = ["credit", "--env", "ospo/ConvSearch-v0", *ENV_ARGS, "--prompt-id", str(p), "--html", str(path)]
    code, out, _ = run_main([*args, *(f"--turn={t}" for t in turns)], capsys)
    assert code == 0 and path.is_file()
    html = path.read_text(encoding="utf-8")
    assert all(word in html for t in turns for word in t.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "ospo/ConvSearch-v0", "--text", "red shoes"], "is multi-turn: give the episode's turns with --turn"),
        (["--env", "ospo/AdditiveKeywords-v0", "--turn", "x"], "is single-turn: give the completion with --text"),
        (["--env", "ospo/ConvSearch-v0", "--turn", "x", "--credit-variant", "released"], "two-level Owen"),
        (["--env", "ospo/ConvSearch-v0", "--env-arg", "num_products=300", "--turn", "x", "--exact"], "--exact: "),
    ],
)
def test_bad_use_is_one_line(args, message, capsys):
    code, _, err = run_main(["credit", *args], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
