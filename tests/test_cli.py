"""The `ospo-gym` command line: envs and credit; bad input exits 2 with one line and no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import ospo_gym
from ospo_gym.cli import main


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ospo_gym.cli", *args], capture_output=True, text=True)


def test_envs_lists_every_id_with_its_knobs(capsys):
    assert main(["envs", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert set(ospo_gym.ENV_IDS) <= set(listing)
    assert listing["ospo/AdditiveKeywords-v0"]["vocab_size"] == "32"


def test_credit_prints_a_row_per_segment(capsys):
    assert main(["credit", "--env", "ospo/Interaction-v0", "--prompt-id", "0", "--text", "alpha beta, gamma delta", "--exact"]) == 0
    out = capsys.readouterr().out
    assert "segments: 2" in out and "exact" in out and "gamma delta" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["credit", "--env", "ospo/Nope-v0", "--text", "x"], "unknown env"),
        (["credit", "--prompt-id", "nope", "--text", "x"], "unknown prompt id"),
        (["credit", "--env-arg", "vocab_size", "--text", "x"], "NAME=VALUE"),
        (["credit", "--env-arg", "vocab_size=2", "--text", "x"], "cannot build"),
        (["credit", "--w-max", "0", "--text", "a b c"], "w_max"),
    ],
)
def test_bad_input_exits_2_without_traceback(args, message):
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
