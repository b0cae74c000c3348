"""Smoke test of benchmarks/real_data_scale.py with a tiny budget (the real run is documented in its JSON)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "real_data_scale.py"


def test_real_data_scale_smoke(tmp_path):
    out = tmp_path / "result.json"
    command = [
        sys.executable, str(SCRIPT), "--products", "3000", "--judgements", "600", "--repeats", "1", "--full-scoring-below", "0",
        "--data-dir", str(tmp_path / "data"), "--out", str(out),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
    result = json.loads(out.read_text())
    assert result["generated"]["products"] == 3000 and result["generated"]["judgements"] == 600
    assert not result["load_cold"]["cached"] and result["load_cached"]["cached"]
    index = result["bm25_index"]
    assert not index["build"]["cached"] and index["cached"]["cached"] and index["rewards_identical"]
    assert index["build"]["entry_mb"] > 0 and index["speedup"] > 0
    oracle = result["index_and_oracle"]
    assert oracle["coalition_values_per_second"] > 0 and oracle["coalitions_per_completion"] > 1
    assert oracle["reference_full_scoring"]["max_abs_difference"] == 0.0
    assert result["load_cold"]["peak_rss_mb"] > 0
