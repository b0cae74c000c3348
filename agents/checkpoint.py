"""Checkpoints: a folder written atomically, holding only safetensors, JSON and tensor-only ``torch.save`` files.

Layout of ``<path>/``::

    policy/            model + tokenizer (save_pretrained, safetensors)
    reference/         the frozen KL reference model (only when beta > 0)
    trainer_state.pt   optimizer state and torch RNG states (tensors and numbers; loads with weights_only=True)
    agent.json         config, step, env id and kwargs, run folder, Python and numpy global RNG states
    manifest.json      size and SHA-256 of every other file, written last

Periodic checkpoints of a run go to ``<run folder>/checkpoints/step-00000012``; the newest ``keep`` are kept.
A crash (SIGKILL, power loss) can leave at most a hidden ``.step-*.tmp-*`` folder behind, never a half-written
checkpoint under its final name. A checkpoint damaged afterwards (a truncated copy, a full disk during an
rsync) fails its manifest check: loading it raises :class:`CheckpointError` naming the file, and loading a run
folder skips it, with a warning, for the newest checkpoint that is intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT_VERSION = 2
POLICY_DIR = "policy"
REFERENCE_DIR = "reference"
TRAINER_STATE = "trainer_state.pt"
AGENT_JSON = "agent.json"
MANIFEST = "manifest.json"
CHECKPOINTS_DIR = "checkpoints"
FINAL_DIR = "checkpoint"
_PERIODIC = re.compile(r"^step-(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete or damaged; the message names the file and what to do."""


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
    optimizer_state: dict[str, Any],
    meta: dict[str, Any],
    reference: Any | None = None,
    model_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder atomically (see the module docstring).

    ``optimizer_state``: tensors and numbers only (``distributed.full_state_dicts``); ``model_state``: the full
    weights when ``model`` itself holds only a shard of them (FSDP2), else ``None``.
    """
    rng_tensors, rng_plain = capture_rng()

    def write(folder: Path) -> None:
        extra = {"state_dict": model_state} if model_state is not None else {}
        model.save_pretrained(folder / POLICY_DIR, safe_serialization=True, **extra)
        tokenizer.save_pretrained(folder / POLICY_DIR)
        if reference is not None:
            reference.save_pretrained(folder / REFERENCE_DIR, safe_serialization=True)
        torch.save({"optimizer": optimizer_state, "rng": rng_tensors}, folder / TRAINER_STATE)
        record = {"format": FORMAT_VERSION, **meta, "rng": rng_plain}
        (folder / AGENT_JSON).write_text(json.dumps(record, indent=1), encoding="utf-8")
        (folder / MANIFEST).write_text(json.dumps(_manifest(folder), indent=1), encoding="utf-8")

    return write_atomically(path, write)


def periodic_path(run_dir: str | Path, step: int) -> Path:
    """``<run_dir>/checkpoints/step-<step, 8 digits>``."""
    return Path(run_dir) / CHECKPOINTS_DIR / f"step-{step:08d}"


def prune_checkpoints(run_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest periodic checkpoints of a run (and stale temp folders); returns the
    deleted paths. Intact or not does not matter here: the newest are kept so that one damaged file never leaves
    the run without an older intact checkpoint, as long as ``keep >= 2``."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    periodic = sorted((p for p in folder.iterdir() if _PERIODIC.match(p.name)), key=lambda p: p.name)
    doomed = periodic[: max(len(periodic) - keep, 0)]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def verify_checkpoint(path: str | Path) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is a complete checkpoint whose files match its manifest."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} does not exist or is not a folder; expected a checkpoint written by Agent.save")
    for required in (AGENT_JSON, TRAINER_STATE, MANIFEST):
        if not (path / required).is_file():
            raise CheckpointError(
                f"{path} is not a complete agent checkpoint: {required} is missing (expected {AGENT_JSON}, "
                f"{TRAINER_STATE}, {MANIFEST} and {POLICY_DIR}/, as written by Agent.save)"
            )
    try:
        expected = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        entries = {str(k): (int(v["size"]), str(v["sha256"])) for k, v in expected["files"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path / MANIFEST} is damaged ({type(err).__name__}: {err}); the checkpoint cannot be trusted") from None
    for name, (size, digest) in entries.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{file} is missing from the checkpoint (listed in its {MANIFEST})")
        actual = file.stat().st_size
        if actual != size:
            raise CheckpointError(f"{file} has {actual} bytes, expected {size}: the file is truncated or damaged")
        if _sha256(file) != digest:
            raise CheckpointError(f"{file} does not match its SHA-256 in {MANIFEST}: the file is damaged")


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint to resume from: ``path`` itself when it is a checkpoint folder, else the newest intact one
    of a run folder (``checkpoints/step-*`` and the final ``checkpoint``, by step), warning about each damaged one
    skipped on the way.

    Raises:
        CheckpointError: ``path`` is a damaged checkpoint (the message names an intact older one, if the run has
            one), or a run folder without any intact checkpoint.
    """
    path = Path(path)
    if (path / AGENT_JSON).exists() or (path / MANIFEST).exists() or (path / TRAINER_STATE).exists():
        try:
            verify_checkpoint(path)
        except CheckpointError as err:
            fallback = _newest_intact(path.parent.parent if path.parent.name == CHECKPOINTS_DIR else path.parent, skip=path)
            hint = f"; the newest intact checkpoint of this run is {fallback}: load it, or pass the run folder" if fallback else ""
            raise CheckpointError(f"{err}{hint}") from None
        return path
    candidates = _candidates(path)
    if not candidates:
        raise CheckpointError(
            f"{path} is neither a checkpoint folder nor a run folder with checkpoints (expected {AGENT_JSON} inside, "
            f"or {CHECKPOINTS_DIR}/step-*/ or {FINAL_DIR}/); pass the folder Agent.save or training wrote"
        )
    problems = []
    for candidate in candidates:
        try:
            verify_checkpoint(candidate)
        except CheckpointError as err:
            problems.append(str(err))
            warnings.warn(f"skipping a damaged checkpoint: {err}", stacklevel=2)
            continue
        return candidate
    raise CheckpointError(f"no intact checkpoint in {path}: " + "; ".join(problems))


def _candidates(run_dir: Path) -> list[Path]:
    """Checkpoint folders of a run, newest step first (the final one before a periodic one of the same step)."""
    found: list[tuple[int, int, Path]] = []
    folder = run_dir / CHECKPOINTS_DIR
    if folder.is_dir():
        for child in folder.iterdir():
            match = _PERIODIC.match(child.name)
            if match and child.is_dir():
                found.append((int(match.group(1)), 0, child))
    final = run_dir / FINAL_DIR
    if final.is_dir():
        found.append((_step_of(final), 1, final))
    return [p for _, _, p in sorted(found, key=lambda item: (item[0], item[1]), reverse=True)]


def _newest_intact(run_dir: Path, skip: Path) -> Path | None:
    for candidate in _candidates(run_dir):
        if candidate.resolve() == skip.resolve():
            continue
        try:
            verify_checkpoint(candidate)
        except CheckpointError:
            continue
        return candidate
    return None


def _step_of(path: Path) -> int:
    try:
        return int(json.loads((path / AGENT_JSON).read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1  # unreadable: tried last


def _manifest(folder: Path) -> dict[str, Any]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    return {
        "format": FORMAT_VERSION,
        "files": {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files},
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(path: str | Path, *, verified: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(meta, trainer_state)`` of a verified checkpoint folder; the policy lives in ``path / POLICY_DIR``.

    ``verified=True``: ``path`` was just returned by :func:`find_checkpoint`, which checked its manifest (hashing
    every file, model weights included), so it is not checked again.

    Raises :class:`CheckpointError` when the folder is incomplete, fails its manifest, or holds another format.
    """
    path = Path(path)
    if not verified:
        verify_checkpoint(path)
    try:
        meta = json.loads((path / AGENT_JSON).read_text(encoding="utf-8"))
    except ValueError as err:
        raise CheckpointError(f"{path / AGENT_JSON} is not valid JSON ({err})") from None
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {meta.get('format')!r}; this version of ospo-gym reads format {FORMAT_VERSION}"
        )
    try:
        state = torch.load(path / TRAINER_STATE, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 — any unpickling failure is a damaged file to the user
        raise CheckpointError(f"{path / TRAINER_STATE} cannot be read ({type(err).__name__}: {err})") from None
    return meta, state
