"""Smoke test of benchmarks/conv_credit_accuracy.py with a tiny budget (the real run is in its committed JSON)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "conv_credit_accuracy.py"


@pytest.mark.slow
def test_conv_credit_accuracy_smoke(tmp_path):
    command = [sys.executable, str(SCRIPT), "--turns", "3", "--prompts", "2", "--group-size", "2", "--out", str(tmp_path)]
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    result = json.loads((tmp_path / "conv_credit_accuracy.json").read_text())
    assert result["command"].endswith("--turns 3 --prompts 2 --group-size 2 --seed 0")
    for setting in result["results"].values():
        assert setting["episodes"] == 4 and setting["env"]["max_turns"] == 3
        rows = setting["turn_credit"]
        assert set(rows) == {"ospo_turn", "ospo_turn (sampled outer)", "turn_grpo", "turn reward", "trajectory_grpo"}
        if rows["ospo_turn"]["episodes"]:  # at <= 7 turns the turn sums are exact by construction
            assert rows["ospo_turn"]["spearman"] == pytest.approx(1.0) and rows["trajectory_grpo"]["spearman"] == 0.0
    assert "| shaped | ospo_turn |" in (tmp_path / "conv_credit_accuracy.md").read_text()
