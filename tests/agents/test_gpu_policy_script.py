"""Smoke test of ``benchmarks/gpu_policy.py --tiny`` (the GPU policy benchmark's small CPU configuration)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_policy.py"


def test_tiny_run_writes_the_report(tmp_path):
    out = tmp_path / "gpu_policy.json"
    command = [sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--rollouts", "hf", "--overlap-credit", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert {"command", "device", "versions", "settings", "model", "results", "skipped"} <= set(report)
    assert report["device"].startswith("cpu") and report["settings"]["tiny"]
    model = report["model"]
    assert model["shape"] == "tiny" and model["config"]["vocab_size"] >= model["tokenizer_tokens"]
    assert model["in_tokenizer_mass"] > 0.9  # the random policy writes the tokenizer's tokens
    rows = [(r["rollout"], r["algo"], r["overlap_credit"]) for r in report["results"]]
    assert rows == [("hf", "grpo", False), ("hf", "ospo_prop", False), ("hf", "ospo_prop", True)]
    for row in report["results"]:
        assert row["timed_steps"] == 2
        for key in ("step_seconds_median", "wall_step_seconds_median", "generate_seconds_median",
                    "credit_seconds_median", "update_seconds_median", "tokens_per_second_step",
                    "tokens_per_second_generation", "completion_tokens_per_step_mean"):  # fmt: skip
            assert row[key] > 0, key
        assert "process_max_rss_mib" in row  # peak_memory_allocated_mib on CUDA
