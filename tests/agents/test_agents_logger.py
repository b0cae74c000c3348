"""The run logger: metrics.jsonl always; TensorBoard asked for but not installed is one warning per process
(saying how to install it or turn it off), not silence; tensorboard is an extra of its own."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

pytest.importorskip("torch")

from ospo_gym.agents import logger  # noqa: E402

ROOT = next(parent for parent in Path(__file__).resolve().parents if (parent / "pyproject.toml").is_file())


def tensorboard_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if "TensorBoard" in str(w.message)]


def test_tensorboard_asked_for_but_missing_warns_once_per_process(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # its import now fails, installed or not
    monkeypatch.setattr(logger, "_tensorboard_warned", False)  # as in a fresh process
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = logger.RunLogger(tmp_path / "a", tensorboard=True)
        second = logger.RunLogger(tmp_path / "b", tensorboard=True)  # another run of the same process
        first.log(1, {logger.REWARD_MEAN: 0.5})
    (message,) = tensorboard_warnings(caught)
    assert "pip install 'ospo-gym[tensorboard]'" in message and "--no-tensorboard" in message
    assert logger.read_metrics(first.path) == [{logger.STEP: 1, logger.REWARD_MEAN: 0.5}]  # JSONL goes on
    first.close(), second.close()


def test_tensorboard_turned_off_does_not_warn(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setattr(logger, "_tensorboard_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger.RunLogger(tmp_path, tensorboard=False).close()
    assert tensorboard_warnings(caught) == []


def test_tensorboard_is_an_extra_of_its_own():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    assert extras["tensorboard"] == ["tensorboard>=2.14"]
    elsewhere = [name for name, requirements in extras.items() if name != "tensorboard"
                 for r in requirements if r.lower().startswith("tensorboard")]  # fmt: skip
    assert elsewhere == []  # not in dev either: the default test run checks the warning, not the writer
