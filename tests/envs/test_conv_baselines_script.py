"""Smoke test of benchmarks/conv_search_baselines.py on a small env (the real run is in its committed JSON)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import gymnasium as gym

import ospo_gym  # noqa: F401

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "conv_search_baselines.py"


def test_scripted_baselines_run_and_order_as_expected():
    spec = importlib.util.spec_from_file_location("conv_search_baselines", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    env = gym.make("ospo/ConvSearch-v0", num_products=400, num_targets=6).unwrapped
    rows = {name: module.run(env, policy) for name, policy in module.POLICIES.items()}
    assert set(rows) == set(module.POLICIES)
    upper = rows["the true attributes and the type (upper bound)"]
    assert upper["mean_turns"] <= rows["ask brand, colour, material, then search all"]["mean_turns"]
    assert upper["mean_return"] >= rows["search the type every turn"]["mean_return"]
    assert all(0.0 <= row["found"] <= 1.0 and 0.0 <= row["mean_return"] <= 1.0 for row in rows.values())
