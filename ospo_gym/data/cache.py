"""On-disk cache of processed tasks: numpy arrays in one ``.npz`` plus a JSON file, never pickle.

A cache entry is keyed by the source files' fingerprints (size, mtime and the SHA-256 of their first and last
MiB: cheap on multi-GB files, and it catches a re-download or an edit even when the size is unchanged) and by
the loader options. Entries are written to a temporary folder and renamed into place, so a crash never leaves a
half-written entry; an unreadable entry is ignored and rebuilt from the source files. Strings are stored as
one UTF-8 byte array with NUL separators (:func:`pack_strings`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FORMAT_VERSION",
    "TaskCache",
    "cache_key",
    "fingerprint",
    "mark_used",
    "pack_strings",
    "unpack_strings",
]

FORMAT_VERSION = 1
_MIB = 1 << 20
_SEPARATOR = "\x00"


def fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Size, mtime (ns) and SHA-256 of the first and last MiB of a file."""
    path = Path(path)
    stat = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        digest.update(handle.read(_MIB))
        if stat.st_size > 2 * _MIB:
            handle.seek(-_MIB, os.SEEK_END)
        digest.update(handle.read(_MIB))
    return {"name": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "head_tail_sha256": digest.hexdigest()}


def cache_key(kind: str, paths: Sequence[str | os.PathLike], options: Mapping[str, Any]) -> str:
    """Hex key of a processed task: the kind, the format version, the files' fingerprints and the options."""
    payload = {
        "kind": kind,
        "format": FORMAT_VERSION,
        "files": [fingerprint(p) for p in paths],
        "options": dict(options),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def pack_strings(strings: Sequence[str]) -> np.ndarray:
    """UTF-8 bytes of ``strings`` joined by NUL, as a ``uint8`` array (strings must not contain NUL)."""
    joined = _SEPARATOR.join(strings)
    if joined.count(_SEPARATOR) != max(len(strings) - 1, 0):
        raise ValueError("strings to pack must not contain NUL characters")
    return np.frombuffer(joined.encode("utf-8"), dtype=np.uint8)


def unpack_strings(packed: np.ndarray, count: int) -> list[str]:
    """Inverse of :func:`pack_strings`; ``count`` tells zero strings from one empty string."""
    if count == 0:
        return []
    out = np.asarray(packed, dtype=np.uint8).tobytes().decode("utf-8").split(_SEPARATOR)
    if len(out) != count:
        raise ValueError(f"packed strings hold {len(out)} entries, expected {count}")
    return out


def mark_used(folder: str | os.PathLike) -> None:
    """Record that the cache entry ``folder`` was just loaded: set its ``meta.json``'s mtime to now.

    ``ospo-gym cache list`` shows that time as "last used" and ``ospo-gym cache remove --unused-days N`` goes by it.
    Best effort: on a read-only cache the entry still loads, its time just stays as it was.
    """
    try:
        os.utime(Path(folder) / "meta.json")
    except OSError:
        pass


class TaskCache:
    """A folder of cache entries of one ``kind`` (``"esci"``, ``"hm"``): ``<directory>/<kind>-<key>/``."""

    description = "processed-data cache"  # names the cache in warnings

    def __init__(self, directory: str | os.PathLike, kind: str) -> None:
        self.directory = Path(directory)
        self.kind = kind

    def entry(self, key: str) -> Path:
        return self.directory / f"{self.kind}-{key[:32]}"

    def load(self, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """The cached arrays and metadata, or None when absent or unreadable."""
        folder = self.entry(key)
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            if meta.get("key") != key or meta.get("format") != FORMAT_VERSION:
                return None
            with np.load(folder / "arrays.npz", allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None
        mark_used(folder)
        return arrays, meta

    def save(self, key: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path | None:
        """Write an entry atomically; on a read-only or full disk, warn and return None (loading still works)."""
        folder = self.entry(key)
        tmp: str | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=f".{folder.name}-", dir=self.directory)
            np.savez(Path(tmp) / "arrays.npz", **arrays)
            record = {**meta, "key": key, "format": FORMAT_VERSION, "kind": self.kind}
            (Path(tmp) / "meta.json").write_text(json.dumps(record, indent=1, sort_keys=True), encoding="utf-8")
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
            return folder
        except OSError as err:
            warnings.warn(f"could not write the {self.description} at {folder}: {err}", stacklevel=3)
            return None
        finally:
            if tmp is not None and os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
