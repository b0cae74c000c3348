"""Checkpoints: a folder written atomically, holding only safetensors, JSON and tensor-only ``torch.save`` files.

Layout of ``<path>/``::

    policy/            model + tokenizer (save_pretrained, safetensors)
    reference/         the frozen KL reference model (only when beta > 0)
    trainer_state.pt   optimizer state and torch RNG states (tensors and numbers; loads with weights_only=True)
    agent.json         config, step, env id and kwargs, run folder, Python and numpy global RNG states
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT_VERSION = 1
POLICY_DIR = "policy"
REFERENCE_DIR = "reference"
TRAINER_STATE = "trainer_state.pt"
AGENT_JSON = "agent.json"


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_dir)`` on a fresh sibling folder, then move it to ``path`` with ``os.replace``.

    A crash while writing leaves any previous ``path`` untouched. An existing ``path`` is first renamed aside
    and removed after the new folder is in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = path.with_name(f".{path.name}.tmp-{tag}")
    old = path.with_name(f".{path.name}.old-{tag}")
    try:
        tmp.mkdir()
        write(tmp)
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old.exists():
                os.replace(old, path)  # put the previous checkpoint back
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return path


def capture_rng() -> tuple[dict[str, Any], dict[str, Any]]:
    """Global RNG states as ``(tensors, json_ready)``: torch (CPU, CUDA) and Python ``random`` / numpy legacy."""
    tensors: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state_all()
    version, state, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()  # noqa: NPY002 — user code may use it
    plain = {
        "python": [version, list(state), gauss],
        "numpy": [name, keys.tolist(), int(position), int(has_gauss), float(cached)],
    }
    return tensors, plain


def restore_rng(tensors: dict[str, Any], plain: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(tensors["cuda"])
    version, state, gauss = plain["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, position, has_gauss, cached = plain["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))  # noqa: NPY002


def save_checkpoint(
    path: str | Path,
    *,
    model: Any,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
    reference: Any | None = None,
) -> Path:
    """Write a checkpoint folder atomically (see the module docstring)."""
    rng_tensors, rng_plain = capture_rng()

    def write(folder: Path) -> None:
        model.save_pretrained(folder / POLICY_DIR, safe_serialization=True)
        tokenizer.save_pretrained(folder / POLICY_DIR)
        if reference is not None:
            reference.save_pretrained(folder / REFERENCE_DIR, safe_serialization=True)
        torch.save({"optimizer": optimizer.state_dict(), "rng": rng_tensors}, folder / TRAINER_STATE)
        record = {"format": FORMAT_VERSION, **meta, "rng": rng_plain}
        (folder / AGENT_JSON).write_text(json.dumps(record, indent=1), encoding="utf-8")

    return write_atomically(path, write)


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(meta, trainer_state)`` of a checkpoint folder; the policy lives in ``path / POLICY_DIR``."""
    path = Path(path)
    if not (path / AGENT_JSON).is_file() or not (path / TRAINER_STATE).is_file():
        raise FileNotFoundError(
            f"{path} is not an agent checkpoint: expected {AGENT_JSON}, {TRAINER_STATE} and {POLICY_DIR}/ inside "
            "(written by Agent.save)"
        )
    meta = json.loads((path / AGENT_JSON).read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path} has checkpoint format {meta.get('format')!r}; this version reads {FORMAT_VERSION}")
    state = torch.load(path / TRAINER_STATE, map_location="cpu", weights_only=True)
    return meta, state
