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


def test_the_run_folder_of_a_checkpoint_is_where_it_lies(tmp_path):
    from ospo_gym.agents.checkpoint import run_folder_of

    run = tmp_path / "run"
    assert run_folder_of(run / "checkpoints" / "step-00000004") == run
    assert run_folder_of(run / "checkpoint") == run
    assert run_folder_of(tmp_path / "downloads" / "ckpt") is None
    assert run_folder_of(run / "other" / "step-00000004") is None  # not in a checkpoints/ folder


def test_later_checkpoints_are_set_aside_with_their_records(tmp_path):
    import json

    from ospo_gym.agents.checkpoint import set_aside_later_checkpoints

    run = tmp_path / "run"
    for name in ("step-00000002", "step-00000004", "step-00000006"):
        (run / "checkpoints" / name).mkdir(parents=True)
        (run / "checkpoints" / name / "agent.json").write_text(json.dumps({"step": int(name[5:])}))
    (run / "checkpoint").mkdir()
    (run / "checkpoint" / "agent.json").write_text(json.dumps({"step": 6}))
    assert set_aside_later_checkpoints(run, 6, ["{}"]) is None  # nothing later: nothing moves

    with pytest.warns(UserWarning, match="abandoned branch"):
        branch = set_aside_later_checkpoints(run, 2, ['{"step": 3}', '{"step": 4}'])
    assert branch.parent == run / "abandoned" and branch.name.startswith("after-step-00000002__")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000002"]
    assert sorted(p.name for p in (branch / "checkpoints").iterdir()) == ["step-00000004", "step-00000006"]
    assert json.loads((branch / "checkpoint" / "agent.json").read_text()) == {"step": 6}
    assert (branch / "metrics.jsonl").read_text() == '{"step": 3}\n{"step": 4}\n'
    (run / "checkpoints" / "step-00000005").mkdir()
    with pytest.warns(UserWarning):
        again = set_aside_later_checkpoints(run, 2)  # the same second: a fresh folder beside the first
    assert again != branch and (again / "checkpoints" / "step-00000005").is_dir()
