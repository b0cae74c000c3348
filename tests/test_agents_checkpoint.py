"""Checkpoint plumbing: atomic folder writes and the global RNG round trip."""

from __future__ import annotations

import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ospo_gym.agents.checkpoint import capture_rng, restore_rng, write_atomically  # noqa: E402


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path):
    target = tmp_path / "ckpt"
    write_atomically(target, lambda folder: (folder / "a.txt").write_text("old"))

    def broken(folder):
        (folder / "a.txt").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomically(target, broken)
    assert (target / "a.txt").read_text() == "old"
    write_atomically(target, lambda folder: (folder / "b.txt").write_text("new"))
    assert [p.name for p in target.iterdir()] == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp or old folders left


def test_rng_states_round_trip():
    tensors, plain = capture_rng()
    expected = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002 — the legacy global state
    torch.rand(5), np.random.rand(5), random.random()  # noqa: NPY002
    restore_rng(tensors, plain)
    again = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]
