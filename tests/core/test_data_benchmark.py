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
    # the load-state probe runs on the catalog and index cache the script left behind
    probe = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_index_load_state.py"
    probe_out = tmp_path / "probe.json"
    command = [sys.executable, str(probe), "--data-dir", str(tmp_path / "data"), "--batches", "1", "--rounds", "1",
               "--out", str(probe_out)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
    report = json.loads(probe_out.read_text())
    assert report["values_identical"] and [p["state"] for p in report["processes"]] == ["loaded", "build-like"]
    assert all(p["values_per_second"] > 0 for p in report["processes"])
