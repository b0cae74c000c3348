"""Checkpoints: a folder written atomically, holding only safetensors, JSON and tensor-only ``torch.save`` files.

Layout of ``<path>/``::

    policy/            model + tokenizer (save_pretrained, safetensors)
    reference/         the frozen KL reference model (only when beta > 0)
    trainer_state.pt   optimizer state and torch RNG states (tensors and numbers; loads with weights_only=True)
    agent.json         config, step, env id and kwargs, run folder (informative), Python / numpy RNG states
    manifest.json      size and SHA-256 of every other file, written last

Periodic checkpoints of a run go to ``<run folder>/checkpoints/step-00000012``; the newest ``keep`` are kept.
A crash (SIGKILL, power loss) can leave at most a hidden ``.step-*.tmp-*`` folder behind, never a half-written
checkpoint under its final name. A checkpoint damaged afterwards (a truncated copy, a full disk during an
rsync) fails its manifest check: loading it raises :class:`CheckpointError` naming the file, and loading a run
folder skips it, with a warning, for the newest intact checkpoint.

A checkpoint is data to verify, never a source of paths: its manifest must list every file of the folder (and
nothing outside it: relative POSIX paths only, no links), and nothing in it says where a resumed run writes --
that is the run folder the checkpoint lies in (:func:`run_folder_of`). The manifest detects damage, not
tampering: anyone can recompute it, so load checkpoints from people you trust (see SECURITY.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import stat
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ospo_gym.errors import one_line

FORMAT_VERSION = 2
POLICY_DIR = "policy"
REFERENCE_DIR = "reference"
TRAINER_STATE = "trainer_state.pt"
AGENT_JSON = "agent.json"
MANIFEST = "manifest.json"
CHECKPOINTS_DIR = "checkpoints"
FINAL_DIR = "checkpoint"
ABANDONED_DIR = "abandoned"
MAX_JSON_BYTES = 8 << 20
"""Largest manifest.json / agent.json read; ospo-gym writes a few KB (agent.json: ~20 KB of RNG states)."""
MAX_STEP = 10**9
"""Largest step count an agent.json may hold."""
_PERIODIC = re.compile(r"^step-(\d+)$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_POLICY_WEIGHTS = re.compile(rf"^{POLICY_DIR}/[^/]+\.safetensors$")


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
    """Raise :class:`CheckpointError` unless ``path`` is a complete checkpoint whose files match its manifest.

    Checked: the manifest is a small JSON object listing each file as a relative POSIX path inside the folder
    (no ``..``, absolute paths, backslashes or empty parts) with its size and SHA-256; it lists agent.json,
    trainer_state.pt and the policy weights; the folder holds exactly the listed files (and the manifest), all
    regular files, with no symbolic link anywhere inside; every size and digest matches; and agent.json holds
    fields of the right types and ranges.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} does not exist or is not a folder; expected a checkpoint written by Agent.save")
    for required in (AGENT_JSON, TRAINER_STATE, MANIFEST):
        if not (path / required).is_file():
            raise CheckpointError(
                f"{path} is not a complete agent checkpoint: {required} is missing (expected {AGENT_JSON}, "
                f"{TRAINER_STATE}, {MANIFEST} and {POLICY_DIR}/, as written by Agent.save)"
            )
    entries = _manifest_entries(path)
    on_disk = _files_inside(path)
    unlisted = sorted(on_disk - entries.keys())
    if unlisted:
        raise CheckpointError(
            f"{path / unlisted[0]} is in the checkpoint but not in its {MANIFEST} ({len(unlisted)} such "
            "file(s)): every file must be listed, since the loader may read it; remove what was added, or "
            "use another checkpoint"
        )
    for name, (size, digest) in sorted(entries.items()):
        file = path / name
        if name not in on_disk:
            raise CheckpointError(f"{file} is missing from the checkpoint (listed in its {MANIFEST})")
        actual = file.stat().st_size
        if actual != size:
            raise CheckpointError(f"{file} has {actual} bytes, expected {size}: the file is truncated or damaged")
        if _sha256(file) != digest:
            raise CheckpointError(f"{file} does not match its SHA-256 in {MANIFEST}: the file is damaged")
    _read_meta(path)


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
    """The step in ``path``'s agent.json, read before the folder is verified (to order a run's checkpoints);
    -1 when unreadable or out of range, which sorts it last."""
    try:
        step = _read_json(path / AGENT_JSON).get("step")
    except (CheckpointError, AttributeError):
        return -1
    return step if type(step) is int and 0 <= step <= MAX_STEP else -1


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
    every file, model weights included), so it is not checked again. The fields of agent.json and the layout
    of trainer_state.pt are checked either way (it is cheap).

    Raises :class:`CheckpointError` when the folder is incomplete, fails its manifest, holds another format or
    malformed metadata.
    """
    path = Path(path)
    if not verified:
        verify_checkpoint(path)
    meta = _read_meta(path)
    try:
        state = torch.load(path / TRAINER_STATE, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 — any unpickling failure is a damaged file to the user
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))  # torch's paragraph, reduced to its point
        if refused:
            raise CheckpointError(
                f"{path / TRAINER_STATE} holds a pickled Python object ({refused[1]}), which is never loaded "
                "(torch.load with weights_only=True); Agent.save writes only tensors and numbers: use a checkpoint "
                "you trust"
            ) from None
        reason = f"{type(err).__name__}: {one_line(str(err))}"
        raise CheckpointError(f"{path / TRAINER_STATE} cannot be read ({reason})") from None
    problem = _trainer_state_problem(state)
    if problem:
        raise CheckpointError(f"{path / TRAINER_STATE} is damaged or not ospo-gym's: {problem}")
    return meta, state


def run_folder_of(checkpoint: str | Path) -> Path | None:
    """The run folder a checkpoint belongs to, judged only by where it lies (never by what is inside it):
    ``<run>/checkpoints/step-N`` and ``<run>/checkpoint`` give ``<run>``; a checkpoint anywhere else gives
    ``None`` (it belongs to no run folder)."""
    checkpoint = Path(checkpoint)
    if checkpoint.name == FINAL_DIR:
        return checkpoint.parent
    if _PERIODIC.match(checkpoint.name) and checkpoint.parent.name == CHECKPOINTS_DIR:
        return checkpoint.parent.parent
    return None


def set_aside_later_checkpoints(run_dir: str | Path, step: int, records: Sequence[str] = ()) -> Path | None:
    """Start a new branch of a run resumed at ``step``: move its checkpoints of later steps (the periodic
    ``checkpoints/step-N`` with N > step, and the final ``checkpoint`` when its step is later or unreadable)
    into a fresh ``<run>/abandoned/after-step-<step>__<time>/`` folder, with ``records`` (the metrics.jsonl
    lines of the steps after ``step``) as its ``metrics.jsonl``. Nothing is deleted. Returns that folder, or
    ``None`` when the run has no later checkpoint (a crash after the last one: its records are simply re-run).

    Without this, a later resume of the run folder would continue the abandoned branch's newest checkpoint,
    mixing the two timelines in metrics.jsonl.
    """
    run_dir = Path(run_dir)
    later: list[tuple[Path, Path]] = []  # (where it is, where it goes inside the branch folder)
    folder = run_dir / CHECKPOINTS_DIR
    if folder.is_dir():
        for child in sorted(folder.iterdir()):
            match = _PERIODIC.match(child.name)
            if match and int(match.group(1)) > step:
                later.append((child, Path(CHECKPOINTS_DIR) / child.name))
    final = run_dir / FINAL_DIR
    if final.is_dir() and not final.is_symlink() and not 0 <= _step_of(final) <= step:
        later.append((final, Path(FINAL_DIR)))
    if not later:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    branch = _fresh_folder(run_dir / ABANDONED_DIR, f"after-step-{step:08d}__{stamp}")
    if records:
        (branch / "metrics.jsonl").write_text("".join(f"{line}\n" for line in records), encoding="utf-8")
    for source, target in later:
        (branch / target).parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, branch / target)  # a rename inside the run folder: nothing is copied or lost
    warnings.warn(
        f"{run_dir} resumes at step {step} while it has checkpoints of later steps: they belong to an "
        f"abandoned branch and were moved, with their metrics, to {branch}",
        stacklevel=3,
    )
    return branch


def _fresh_folder(parent: Path, name: str) -> Path:
    """Create ``parent / name`` (or ``name-2``, ``name-3``, ... when taken) exclusively and return it."""
    parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        folder = parent / (name if attempt == 1 else f"{name}-{attempt}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise CheckpointError(f"cannot create a fresh folder {name} in {parent}: 999 names are taken; tidy it up")


def _read_json(file: Path) -> Any:
    """A checkpoint's small JSON file, parsed as data: a regular file of at most MAX_JSON_BYTES, strict UTF-8,
    no duplicate keys; anything else (deep nesting included) is a :class:`CheckpointError`."""
    try:
        if not stat.S_ISREG(os.lstat(file).st_mode):
            raise CheckpointError(f"{file} is not a regular file; the checkpoint cannot be trusted")
        with file.open("rb") as handle:
            data = handle.read(MAX_JSON_BYTES + 1)
    except OSError as err:
        raise CheckpointError(f"{file} cannot be read ({err.strerror or err})") from None
    if len(data) > MAX_JSON_BYTES:
        raise CheckpointError(
            f"{file} is larger than {MAX_JSON_BYTES} bytes, far more than ospo-gym writes: it is damaged or "
            "not a checkpoint's; the checkpoint cannot be trusted"
        )
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)
    except RecursionError:
        reason = "nested too deeply"
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, a duplicate key
        reason = f"not valid JSON: {one_line(err)}"
    raise CheckpointError(f"{file} is damaged ({reason}); the checkpoint cannot be trusted")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:  # two values for one file or field: which one a reader takes is not defined
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _manifest_entries(path: Path) -> dict[str, tuple[int, str]]:
    """``{relative path: (size, sha256)}`` of ``path``'s manifest, every entry checked (CheckpointError)."""
    file = path / MANIFEST
    data = _read_json(file)
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        raise CheckpointError(
            f"{file} is damaged (expected a JSON object whose \"files\" maps each file to its size and "
            "sha256); the checkpoint cannot be trusted"
        )
    entries: dict[str, tuple[int, str]] = {}
    for name, entry in files.items():
        problem = _entry_name_problem(name)
        if problem:
            raise CheckpointError(
                f"{file} lists {name[:200]!r}, {problem}; entries must be relative POSIX paths of files "
                "inside the checkpoint: it cannot be trusted"
            )
        size = entry.get("size") if isinstance(entry, dict) else None
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if type(size) is not int or size < 0 or not isinstance(digest, str) or not _SHA256.match(digest):
            raise CheckpointError(
                f"{file} has a damaged entry for {name!r}: expected {{\"size\": <bytes>, \"sha256\": <64 hex "
                f"digits>}}, got {one_line(entry)[:120]}; the checkpoint cannot be trusted"
            )
        entries[name] = (size, digest)
    missing = [name for name in (AGENT_JSON, TRAINER_STATE) if name not in entries]
    if not any(_POLICY_WEIGHTS.match(name) for name in entries):
        missing.append("policy weights")
    if missing:
        raise CheckpointError(
            f"{file} does not list {', '.join(missing)} (expected {AGENT_JSON}, {TRAINER_STATE} and "
            f"{POLICY_DIR}/*.safetensors, as Agent.save writes): the checkpoint cannot be trusted"
        )
    return entries


def _entry_name_problem(name: str) -> str | None:
    """Why ``name`` is not a plain relative POSIX path of a file inside the checkpoint, or None."""
    if not name:
        return "an empty path"
    if "\\" in name or "\x00" in name:
        return "a path with a backslash or NUL"
    if name.startswith("/"):
        return "an absolute path"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "a path with an empty, '.' or '..' part"
    if name == MANIFEST:
        return "the manifest itself"
    return None


def _files_inside(path: Path) -> set[str]:
    """Relative POSIX paths of the files in the checkpoint folder ``path`` (not its manifest); a symbolic
    link, device, FIFO or socket anywhere inside is a :class:`CheckpointError` (links are never followed)."""

    def unreadable(err: OSError) -> None:
        reason = err.strerror or err
        raise CheckpointError(f"{err.filename} cannot be read ({reason}): the checkpoint cannot be verified")

    found: set[str] = set()
    for folder, dirs, files in os.walk(path, onerror=unreadable):
        here = Path(folder)
        for name in dirs + files:
            mode = os.lstat(here / name).st_mode
            if stat.S_ISLNK(mode):
                raise CheckpointError(
                    f"{here / name} is a symbolic link; a checkpoint holds only plain files and folders (a "
                    "link could lead outside it): replace it with the file it points to, or use another "
                    "checkpoint"
                )
            if name in files and not stat.S_ISREG(mode):
                raise CheckpointError(f"{here / name} is not a regular file; a checkpoint holds plain files")
            if name in files:
                found.add((here / name).relative_to(path).as_posix())
    found.discard(MANIFEST)
    return found


def _read_meta(path: Path) -> dict[str, Any]:
    """agent.json of ``path``, its fields checked (types, ranges, RNG state shapes)."""
    file = path / AGENT_JSON
    meta = _read_json(file)
    if not isinstance(meta, dict):
        raise CheckpointError(f"{file} is damaged (expected a JSON object, got {type(meta).__name__})")
    if type(meta.get("format")) is not int or meta["format"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {meta.get('format')!r}; this version of ospo-gym reads format {FORMAT_VERSION}"
        )
    problem = _meta_problem(meta)
    if problem:
        raise CheckpointError(f"{file} is damaged or not ospo-gym's: {problem}; the checkpoint is not usable")
    return meta


def _meta_problem(meta: dict[str, Any]) -> str | None:
    step = meta.get("step")
    if type(step) is not int or not 0 <= step <= MAX_STEP:
        return f"step must be an integer from 0 to {MAX_STEP}, got {one_line(step)[:60]}"
    if not isinstance(meta.get("config"), dict):
        return "config must be an object of AgentConfig fields"
    if not isinstance(meta.get("env_id"), str) or not meta["env_id"]:
        return "env_id must be a non-empty string"
    if meta.get("env_kwargs") is not None and not isinstance(meta["env_kwargs"], dict):
        return "env_kwargs must be an object or null"
    if meta.get("run_dir") is not None and not isinstance(meta["run_dir"], str):
        return "run_dir must be a string or null"
    rng = meta.get("rng")
    if not isinstance(rng, dict):
        return "rng must be an object with the python and numpy states"
    return _python_rng_problem(rng.get("python")) or _numpy_rng_problem(rng.get("numpy"))


def _words(values: Any, count: int) -> bool:
    """Is ``values`` a list of ``count`` unsigned 32-bit integers?"""
    return (
        isinstance(values, list)
        and len(values) == count
        and all(type(v) is int and 0 <= v < 1 << 32 for v in values)
    )


def _python_rng_problem(state: Any) -> str | None:
    """random.getstate() as saved: [3, 624 words + position (0..624), gauss (null or a float)]."""
    if not (isinstance(state, list) and len(state) == 3):
        return "rng.python must be [version, state, gauss] as random.getstate() gives"
    version, words, gauss = state
    twister = type(version) is int and version == 3 and _words(words, 625) and words[-1] <= 624
    if not twister or not (gauss is None or type(gauss) is float):
        return "rng.python does not hold a Mersenne Twister state (version 3, 625 words, gauss null or float)"
    return None


def _numpy_rng_problem(state: Any) -> str | None:
    """np.random.get_state() as saved: ["MT19937", 624 words, position (0..624), has_gauss (0/1), cached]."""
    if not (isinstance(state, list) and len(state) == 5):
        return "rng.numpy must be [name, keys, position, has_gauss, cached] as numpy.random.get_state() gives"
    name, keys, position, has_gauss, cached = state
    if (
        name != "MT19937"
        or not _words(keys, 624)
        or type(position) is not int
        or not 0 <= position <= 624
        or has_gauss not in (0, 1)
        or type(has_gauss) is not int
        or type(cached) not in (int, float)
    ):
        return "rng.numpy does not hold an MT19937 state (624 keys, position 0..624, has_gauss 0/1, a number)"
    return None


def _trainer_state_problem(state: Any) -> str | None:
    """What is wrong with the layout of a loaded trainer_state.pt, or None."""
    if not isinstance(state, dict) or not all(isinstance(state.get(k), dict) for k in ("optimizer", "rng")):
        return "expected a dict with an optimizer state dict and the RNG states"
    optimizer = state["optimizer"]
    if not isinstance(optimizer.get("state"), dict) or not isinstance(optimizer.get("param_groups"), list):
        return "the optimizer state lacks its state / param_groups"
    rng = state["rng"]
    shape = torch.get_rng_state().shape
    saved = rng.get("torch")
    if not (isinstance(saved, torch.Tensor) and saved.dtype == torch.uint8 and saved.shape == shape):
        return f"rng.torch must be a uint8 tensor of shape {tuple(shape)}, as torch.get_rng_state() gives"
    cuda = rng.get("cuda")
    if cuda is not None and not (
        isinstance(cuda, list | tuple)
        and all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.dim() == 1 for t in cuda)
    ):
        return "rng.cuda must be a list of uint8 tensors, as torch.cuda.get_rng_state_all() gives"
    return None

