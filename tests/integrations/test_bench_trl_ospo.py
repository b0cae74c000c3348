"""Smoke test of benchmarks/bench_trl_ospo.py: the four interleaved arms run one step each and the ratios are theirs."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from doc_snippets import repo_root


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="needs the trl extra: pip install 'ospo-gym[trl]'")
def test_bench_trl_ospo_runs_every_arm(tmp_path):
    out = tmp_path / "trl_ospo.json"
    command = [sys.executable, str(repo_root() / "benchmarks" / "bench_trl_ospo.py"), "--steps", "2", "--warmup", "0",
               "--group", "4", "--prompts", "1", "--max-new-tokens", "8", "--out", str(out)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    arms = ("grpo", "ospo_prop", "ours_grpo", "ours_ospo_prop")
    assert all(report[arm]["n"] == 2 and report[arm]["median"] > 0 for arm in arms)
    assert report["ratio_median"] == round(report["ospo_prop"]["median"] / report["grpo"]["median"], 3)
    against = report["against_ours"]
    assert against["grpo_over_ours_grpo"]["median"] == round(report["grpo"]["median"] / report["ours_grpo"]["median"], 3)
    assert set(against) == {"grpo_over_ours_grpo", "ospo_prop_over_ours_ospo_prop", "ours_ospo_prop_over_ours_grpo"}
    assert report["ours_ospo_credit_seconds"]["median"] > 0  # our OSPO arm did credit (M coalitions per completion)
