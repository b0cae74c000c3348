"""On-disk cache of processed tasks: numpy arrays in one ``.npz`` plus a JSON file, never pickle.

A cache entry is keyed by the source files' fingerprints (size, mtime and the SHA-256 of their first and last
MiB: cheap on multi-GB files, and it catches a re-download or an edit even when the size is unchanged) and by
the loader options. Entries are written to a temporary folder and renamed into place (an old entry is first
renamed aside), so a crash never leaves a half-written entry, and nothing is written outside the cache folder: an
entry that is a symlink is replaced, never followed. Strings are stored as one UTF-8 byte array with NUL
separators (:func:`pack_strings`).

An entry is data to verify, never trusted: :meth:`TaskCache.load` checks that ``meta.json`` is a small JSON object
of this key, format and kind and that ``arrays.npz`` is a plain (uncompressed, pickle-free) archive, and the
loader's ``restore`` checks every array against the metadata (names, dtypes, shapes, counts, value ranges; helpers
:func:`entry_int`, :func:`entry_array`, :func:`entry_codes`, :func:`entry_offsets`). An entry that fails any
check is reported with a warning and rebuilt from the source files.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "FORMAT_VERSION",
    "MAX_META_BYTES",
    "TaskCache",
    "cache_key",
    "check_meta_keys",
    "entry_array",
    "entry_codes",
    "entry_int",
    "entry_offsets",
    "entry_strings",
    "fingerprint",
    "mark_used",
    "pack_strings",
    "read_entry",
    "unpack_strings",
]

FORMAT_VERSION = 1
MAX_META_BYTES = 1 << 20
"""Largest ``meta.json`` that is read (ours hold options and counts: a few kB)."""
_MIB = 1 << 20
_SEPARATOR = "\x00"
_NAME_PART = re.compile(r"[0-9A-Za-z_]+")  # kinds and keys: never a path separator, "." or ".."
_STAMP = ("key", "format", "kind")  # what save() adds to every meta.json
_T = TypeVar("_T")


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
        if np.asarray(packed).size:
            raise ValueError(f"packed strings hold {np.asarray(packed).size} bytes, expected none")
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
        os.utime(Path(folder) / "meta.json", follow_symlinks=False)
    except (OSError, NotImplementedError):
        pass


def _regular_file(path: Path) -> os.stat_result:
    """``lstat`` of ``path``; ValueError unless it is a regular file (a symlink, FIFO or device is never opened)."""
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path.name} is not a regular file")
    return info


def read_entry(folder: str | os.PathLike, key: str, kind: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and ``meta.json`` of the cache entry ``folder``, as :meth:`TaskCache.save` wrote them for ``key``.

    Checks the parts every entry shares: a real folder (no symlink), ``meta.json`` a regular file of at most
    :data:`MAX_META_BYTES` holding a JSON object stamped with ``key``, :data:`FORMAT_VERSION` and ``kind``, and
    ``arrays.npz`` a regular file whose members are uncompressed ``.npy`` arrays without pickles (so reading it
    needs no more memory than its size). The kind-specific checks are the caller's.

    Raises:
        ValueError, OSError: what is wrong with the entry.
    """
    folder = Path(folder)
    if not stat.S_ISDIR(os.lstat(folder).st_mode):
        raise ValueError("it is not a folder")
    meta_path, arrays_path = folder / "meta.json", folder / "arrays.npz"
    _regular_file(meta_path)
    with meta_path.open("rb") as handle:
        raw = handle.read(MAX_META_BYTES + 1)
    if len(raw) > MAX_META_BYTES:
        raise ValueError(f"meta.json is larger than {MAX_META_BYTES} bytes")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise ValueError("meta.json is nested too deeply") from None
    if not isinstance(meta, dict):
        raise ValueError(f"meta.json holds a {type(meta).__name__}, not a JSON object")
    for name, want in zip(_STAMP, (key, FORMAT_VERSION, kind), strict=True):
        if meta.get(name) != want or isinstance(meta.get(name), bool):
            raise ValueError(f"its meta.json has {name} {meta.get(name)!r}, not {want!r}")
    _regular_file(arrays_path)
    with zipfile.ZipFile(arrays_path) as archive:
        members = archive.infolist()
    packed = [m.filename for m in members if m.compress_type != zipfile.ZIP_STORED or not m.filename.endswith(".npy")]
    if packed:
        raise ValueError(f"arrays.npz holds members that are compressed or not arrays: {packed[:3]}")
    with np.load(arrays_path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    return arrays, meta


def check_meta_keys(meta: Mapping[str, Any], sections: Collection[str]) -> None:
    """ValueError unless ``meta`` holds exactly ``sections`` besides the key, format and kind stamps."""
    want = {*_STAMP, *sections}
    if set(meta) != want:
        raise ValueError(f"its meta.json has the keys {sorted(meta)}, expected {sorted(want)}")


def entry_int(value: Any, what: str) -> int:
    """``value`` when it is an int >= 0 (not a bool, a float or a string); ValueError naming ``what`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} is {value!r}, not an int >= 0")
    return value


def entry_array(arrays: Mapping[str, np.ndarray], name: str, dtypes: str | Sequence[str], length: int) -> np.ndarray:
    """``arrays[name]``, checked to be 1-D, of ``length`` and of one of ``dtypes``; ValueError otherwise."""
    dtypes = (dtypes,) if isinstance(dtypes, str) else tuple(dtypes)
    if name not in arrays:
        raise ValueError(f"arrays.npz lacks {name!r}")
    array = arrays[name]
    if array.dtype.name not in dtypes or array.shape != (length,):
        raise ValueError(f"{name} is {array.dtype} of shape {array.shape}, expected {'/'.join(dtypes)} of shape ({length},)")
    return array


def entry_codes(arrays: Mapping[str, np.ndarray], name: str, dtype: str, length: int, bound: int) -> np.ndarray:
    """:func:`entry_array` whose values also lie in ``[0, bound)`` (row numbers, label codes)."""
    codes = entry_array(arrays, name, dtype, length)
    if length and (int(codes.min()) < 0 or int(codes.max()) >= bound):
        raise ValueError(f"{name} holds values outside [0, {bound})")
    return codes


def entry_offsets(arrays: Mapping[str, np.ndarray], name: str, groups: int, items: int) -> np.ndarray:
    """CSR offsets of ``groups`` groups over ``items`` items: int64 ``(groups + 1,)``, from 0 up to ``items``."""
    offsets = entry_array(arrays, name, "int64", groups + 1)
    if offsets[0] != 0 or offsets[-1] != items or np.any(np.diff(offsets) < 0):
        raise ValueError(f"{name} are not offsets from 0 to {items}")
    return offsets


def entry_strings(arrays: Mapping[str, np.ndarray], name: str, count: int) -> list[str]:
    """The ``count`` strings packed in ``arrays[name]`` (a 1-D ``uint8`` array, valid UTF-8); ValueError otherwise."""
    packed = arrays.get(name)
    if packed is None or packed.dtype != np.uint8 or packed.ndim != 1:
        raise ValueError(f"{name} is not a 1-D uint8 array of packed strings")
    return unpack_strings(packed, count)


class TaskCache:
    """A folder of cache entries of one ``kind`` (``"esci"``, ``"hm"``): ``<directory>/<kind>-<key>/``."""

    description = "processed-data cache"  # names the cache in warnings

    def __init__(self, directory: str | os.PathLike, kind: str) -> None:
        self.directory = Path(directory)
        self.kind = kind

    def entry(self, key: str) -> Path:
        """The folder of the entry of ``key``, directly inside :attr:`directory`."""
        if not (_NAME_PART.fullmatch(self.kind) and _NAME_PART.fullmatch(key[:32])):
            raise ValueError(f"cache kinds and keys are letters, digits and '_', got {self.kind!r} and {key[:32]!r}")
        return self.directory / f"{self.kind}-{key[:32]}"

    def load(
        self, key: str, restore: Callable[[dict[str, np.ndarray], dict[str, Any]], _T] | None = None
    ) -> _T | tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """The entry of ``key`` as ``restore(arrays, meta)`` (default: the pair itself), or None when there is none.

        ``restore`` checks the kind-specific parts and raises on anything inconsistent. An entry that fails a
        check (:func:`read_entry`'s or ``restore``'s) warns and gives None, so that the caller rebuilds it and
        :meth:`save` replaces it.
        """
        folder = self.entry(key)
        if not os.path.lexists(folder):
            return None
        try:
            arrays, meta = read_entry(folder, key, self.kind)
            result = (arrays, meta) if restore is None else restore(arrays, meta)
        except Exception as err:  # untrusted bytes: any failure to read or check them means "rebuild"
            detail = str(err).splitlines()[0] if str(err) else type(err).__name__
            warnings.warn(f"ignoring the unreadable {self.description} entry {folder} ({detail}); rebuilding it", stacklevel=3)
            return None
        mark_used(folder)
        return result

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
            self._put(tmp, folder)
            return folder
        except OSError as err:
            warnings.warn(f"could not write the {self.description} at {folder}: {err}", stacklevel=3)
            return None
        finally:
            if tmp is not None and os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)

    def _put(self, tmp: str, folder: Path) -> None:
        """Rename the written folder ``tmp`` to ``folder``; an old entry there is first renamed aside (a folder) or
        unlinked (a symlink or file: never followed), so that readers see the old entry, none, or the new one."""
        for _ in range(3):  # a racing writer may put its (identical) entry back in between
            if os.path.lexists(folder):
                if stat.S_ISDIR(os.lstat(folder).st_mode):
                    aside = f"{tmp}-old"  # a leftover temporary name, should a crash leave it
                    try:
                        os.replace(folder, aside)
                    except FileNotFoundError:  # another writer moved it first
                        pass
                    shutil.rmtree(aside, ignore_errors=True)
                else:
                    os.unlink(folder)
            try:
                os.replace(tmp, folder)
                return
            except OSError as err:
                if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        os.replace(tmp, folder)
