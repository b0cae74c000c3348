"""``ospo-gym cache``: see and clean the on-disk caches (processed ESCI / H&M tasks and built BM25 indexes).

The cache folder is :func:`~ospo_gym.data.paths.processed_cache_dir` (``$OSPO_GYM_CACHE``, else
``<user cache dir>/processed``; ``--cache-dir`` overrides it). Its entries are folders ``<kind>-<32 hex digits>``
of the kinds in :data:`KINDS`, each holding ``arrays.npz`` and ``meta.json``; a write that was cut short leaves a
temporary folder ``.<kind>-<32 hex digits>-<suffix>``, listed here as kind ``"incomplete"``. An entry's "last used"
time is its ``meta.json``'s mtime, which every successful load sets (:func:`~ospo_gym.data.cache.mark_used`).

``remove`` and ``purge`` delete only such folders, directly inside the cache folder: never a symlink (skipped with
a warning), never a file or folder of another name. An entry is first renamed to a ``.``-prefixed name, which
loaders do not look at, and then deleted, so an interrupted removal leaves an ``incomplete`` folder, never an
entry that looks valid.

Commands: ``dir``, ``info``, ``list [--kind K] [--json]``, ``remove [--kind K] [--unused-days N] [--all]
[--dry-run]``, ``purge [--dry-run]``. Only the standard library and light ``ospo_gym`` modules are imported
here, so ``ospo-gym`` stays light.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ospo_gym.cli.options import UsageError
from ospo_gym.data.paths import processed_cache_dir

__all__ = [
    "INCOMPLETE",
    "KINDS",
    "CacheEntry",
    "add_options",
    "cmd_cache",
    "format_size",
    "remove_entries",
    "scan_cache",
    "select_entries",
]

KINDS = ("esci", "hm", "bm25")
"""Kinds of cache entry: ``TaskCache(directory, "esci" | "hm")`` and ``BM25IndexCache`` (``"bm25"``)."""
INCOMPLETE = "incomplete"
"""The kind given to a leftover temporary folder (an interrupted write or removal)."""

_KIND_ALTERNATIVES = "|".join(KINDS)
_ENTRY_NAME = re.compile(rf"(?:{_KIND_ALTERNATIVES})-[0-9a-f]{{32}}")
_INCOMPLETE_NAME = re.compile(rf"\.(?:{_KIND_ALTERNATIVES})-[0-9a-f]{{32}}-.+")
_DAY = 86400.0


@dataclass(frozen=True)
class CacheEntry:
    """One folder of the cache, as :func:`scan_cache` found it."""

    path: Path
    """The folder."""
    kind: str
    """One of :data:`KINDS`, or :data:`INCOMPLETE`."""
    size_bytes: int
    """Total size of its files (symlinks inside are counted as links, never followed)."""
    last_used: float
    """Unix time of the last successful load or write: ``meta.json``'s mtime (the folder's when it has none)."""
    damaged: bool = False
    """A complete entry whose ``meta.json`` can not be read or whose ``arrays.npz`` is missing (loading rebuilds it)."""
    num_docs: int | None = None
    """BM25 entries: how many documents the index holds."""
    settings: dict[str, Any] | None = field(default=None, hash=False)
    """BM25 entries: the index settings (k1, b, method, tokenizer); ESCI / H&M entries: the loader options."""

    @property
    def name(self) -> str:
        return self.path.name

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record.update(name=self.name, path=str(self.path), last_used_iso=_iso(self.last_used, "seconds"))
        return record


def format_size(num_bytes: int) -> str:
    """``num_bytes`` for people, in powers of 1000 as pip prints them: ``"512 B"``, ``"1.3 kB"``, ``"2.0 GB"``."""
    if num_bytes < 1000:
        return f"{num_bytes} B"
    value = float(num_bytes)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if round(value, 1) < 1000:
            return f"{value:.1f} {unit}"
    return f"{value / 1000:.1f} PB"


def _iso(timestamp: float, timespec: str) -> str:
    moment = datetime.fromtimestamp(timestamp).astimezone()
    return moment.date().isoformat() if timespec == "date" else moment.isoformat(timespec=timespec)


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def _kind_of(name: str) -> str | None:
    """The kind of a folder name, or None when it is not a cache entry's name."""
    if _ENTRY_NAME.fullmatch(name):
        return name.split("-", 1)[0]
    if _INCOMPLETE_NAME.fullmatch(name):
        return INCOMPLETE
    return None


def _tree_size(folder: Path) -> int:
    """Bytes in the files under ``folder``, without following any symlink (unreadable parts count as 0)."""
    total = 0
    pending = [folder]
    while pending:
        try:
            with os.scandir(pending.pop()) as children:
                for child in children:
                    try:
                        if child.is_dir(follow_symlinks=False):
                            pending.append(Path(child.path))
                        else:
                            total += child.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total


def _describe(folder: Path, kind: str) -> CacheEntry:
    meta_file = folder / "meta.json"
    try:
        last_used = meta_file.lstat().st_mtime
    except OSError:
        last_used = folder.lstat().st_mtime
    size = _tree_size(folder)
    if kind == INCOMPLETE:
        return CacheEntry(folder, kind, size, last_used)
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("meta.json is not a JSON object")
    except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested too deeply
        return CacheEntry(folder, kind, size, last_used, damaged=True)
    num_docs = meta.get("num_docs")
    settings = meta.get("settings") if kind == "bm25" else meta.get("options")
    return CacheEntry(
        folder,
        kind,
        size,
        last_used,
        damaged=not (folder / "arrays.npz").is_file(),
        num_docs=num_docs if isinstance(num_docs, int) and not isinstance(num_docs, bool) else None,
        settings=settings if isinstance(settings, dict) else None,
    )


def _inside(folder: Path, root: Path) -> bool:
    """Whether ``folder`` is a real folder (no symlink) directly inside the resolved cache folder ``root``."""
    try:
        return not folder.is_symlink() and folder.resolve(strict=True) == root / folder.name
    except OSError:
        return False


def scan_cache(directory: str | os.PathLike, warn: Callable[[str], None] | None = None) -> list[CacheEntry]:
    """Every cache entry directly inside ``directory``, sorted by kind then name; ``[]`` when it does not exist.

    Files and folders of other names are left out silently; a symlink with an entry's name is left out with a
    call of ``warn`` (default: :func:`warnings.warn`). Raises ``NotADirectoryError`` when ``directory`` is a file.
    """
    warn = warn or _warn
    folder = Path(directory)
    if not folder.exists():
        return []
    if not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(folder))
    root = folder.resolve()
    found = []
    with os.scandir(folder) as children:
        for child in children:
            kind = _kind_of(child.name)
            if kind is None:
                continue
            path = folder / child.name
            if child.is_symlink():
                warn(f"skipping {path}: a symlink, not a cache entry (it is never followed or deleted)")
                continue
            if not child.is_dir(follow_symlinks=False) or not _inside(path, root):
                continue
            try:
                found.append(_describe(path, kind))
            except OSError as err:  # removed meanwhile by another process
                warn(f"skipping {path}: {err.strerror or err}")
    order = {kind: i for i, kind in enumerate((*KINDS, INCOMPLETE))}
    return sorted(found, key=lambda e: (order[e.kind], e.name))


def select_entries(
    entries: Iterable[CacheEntry],
    kind: str | None = None,
    unused_days: float | None = None,
    now: float | None = None,
) -> list[CacheEntry]:
    """The entries of ``kind`` (any when None) not used for more than ``unused_days`` days (any age when None)."""
    if kind is not None and kind not in (*KINDS, INCOMPLETE):
        raise ValueError(f"unknown cache kind {kind!r}; expected one of {', '.join((*KINDS, INCOMPLETE))}")
    if unused_days is not None and not (math.isfinite(unused_days) and unused_days >= 0):
        raise ValueError(f"unused_days must be a number of days >= 0, got {unused_days}")
    cutoff = None if unused_days is None else (time.time() if now is None else now) - unused_days * _DAY
    return [
        e
        for e in entries
        if (kind is None or e.kind == kind) and (cutoff is None or e.last_used < cutoff)
    ]


def remove_entries(
    entries: Iterable[CacheEntry], directory: str | os.PathLike, dry_run: bool = False
) -> tuple[list[CacheEntry], list[tuple[CacheEntry, str]]]:
    """Delete ``entries`` of the cache folder ``directory``: ``(removed, [(not removed, why), ...])``.

    Each entry is checked again (a real folder with a cache entry's name directly inside ``directory``), renamed
    to a ``.``-prefixed name and then deleted; a failure is reported, not raised, and the others go on. With
    ``dry_run`` nothing changes and every entry that passes the checks is reported as removed.
    """
    root = Path(directory).resolve()
    removed: list[CacheEntry] = []
    failed: list[tuple[CacheEntry, str]] = []
    for entry in entries:
        path = Path(directory) / entry.name
        if _kind_of(entry.name) != entry.kind or not path.is_dir() or not _inside(path, root):
            failed.append((entry, "not a cache entry of this folder (or a symlink); left alone"))
            continue
        if dry_run:
            removed.append(entry)
            continue
        trash = path
        try:
            if entry.kind != INCOMPLETE:  # loaders never look at "."-prefixed names
                trash = path.with_name(f".{entry.name}-removing-{os.getpid()}-{time.monotonic_ns()}")
                os.rename(path, trash)
            shutil.rmtree(trash)
        except OSError as err:
            failed.append((entry, f"{err.strerror or err} (what is left: {trash.name})"))
            continue
        removed.append(entry)
    return removed, failed


# -- the subcommands ---------------------------------------------------------------------------------------------


def _folder(args: argparse.Namespace) -> Path:
    return processed_cache_dir(args.cache_dir)


def _scan(folder: Path) -> list[CacheEntry]:
    def warn(message: str) -> None:
        print(f"ospo-gym: warning: {message}", file=sys.stderr)

    try:
        return scan_cache(folder, warn=warn)
    except OSError as err:
        raise UsageError(f"cannot read the cache folder {folder}: {err.strerror or err}") from None


def cmd_dir(args: argparse.Namespace) -> int:
    print(_folder(args))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    folder = _folder(args)
    entries = _scan(folder)
    print(f"cache folder: {folder}{'' if folder.is_dir() else ' (does not exist yet)'}")
    print(f"{'kind':<12}{'entries':>8}{'size':>12}")
    for kind in (*KINDS, INCOMPLETE):
        sizes = [e.size_bytes for e in entries if e.kind == kind]
        print(f"{kind:<12}{len(sizes):>8}{format_size(sum(sizes)):>12}")
    total = sum(e.size_bytes for e in entries)
    print(f"{'total':<12}{len(entries):>8}{format_size(total):>12}  ({total} bytes)")
    damaged = sum(e.damaged for e in entries)
    if damaged:
        print(f"{damaged} damaged entries (rebuilt when next loaded; `ospo-gym cache list` names them)")
    return 0


def _line(entry: CacheEntry) -> str:
    notes = []
    if entry.num_docs is not None:
        notes.append(f"{entry.num_docs} docs")
    if entry.damaged:
        notes.append("damaged")
    note = f"  ({', '.join(notes)})" if notes else ""
    return f"{entry.kind:<11}{format_size(entry.size_bytes):>10}  {_iso(entry.last_used, 'date')}  {entry.name}{note}"


def cmd_list(args: argparse.Namespace) -> int:
    entries = select_entries(_scan(_folder(args)), kind=args.kind)
    if args.json:
        print(json.dumps([e.to_json() for e in entries], indent=2))
        return 0
    for entry in entries:
        print(_line(entry))
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    if not (args.all or args.kind is not None or args.unused_days is not None):
        raise UsageError("cache remove needs at least one of --kind K, --unused-days N, --all (or use cache purge)")
    folder = _folder(args)
    chosen = select_entries(_scan(folder), kind=args.kind, unused_days=args.unused_days)
    if not chosen:
        print("nothing to remove")
        return 0
    removed, failed = remove_entries(chosen, folder, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for entry in removed:
        print(f"{verb} {entry.name} ({entry.kind}, {format_size(entry.size_bytes)})")
    for entry, why in failed:
        print(f"ospo-gym: could not remove {entry.path}: {why}", file=sys.stderr)
    freed = sum(e.size_bytes for e in removed)
    what = "would free" if args.dry_run else "freed"
    entries = "entry" if len(removed) == 1 else "entries"
    print(f"{what} {format_size(freed)} ({freed} bytes) in {len(removed)} {entries} from {folder}")
    return 1 if failed else 0


def cmd_purge(args: argparse.Namespace) -> int:
    args.all, args.kind, args.unused_days = True, None, None
    return cmd_remove(args)


# -- the parser --------------------------------------------------------------------------------------------------


def _kind(text: str) -> str:
    if text not in (*KINDS, INCOMPLETE):
        raise argparse.ArgumentTypeError(f"unknown kind {text!r}; choose from {', '.join((*KINDS, INCOMPLETE))}")
    return text


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = math.nan
    if not (math.isfinite(days) and days >= 0):
        raise argparse.ArgumentTypeError(f"expected a number of days >= 0, got {text!r}")
    return days


SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {
    "dir": ("print the cache folder", cmd_dir),
    "info": ("entries and total size per kind", cmd_info),
    "list": ("one line per entry: kind, size, last used, folder", cmd_list),
    "remove": ("delete the entries chosen by --kind / --unused-days / --all", cmd_remove),
    "purge": ("delete every entry (= remove --all)", cmd_purge),
}


def cmd_cache(args: argparse.Namespace) -> int:
    return SUBCOMMANDS[args.cache_command][1](args)


def add_options(parser: argparse.ArgumentParser) -> None:
    """The subcommands of ``cache`` (:data:`SUBCOMMANDS`) and their options."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="the cache folder (default: $OSPO_GYM_CACHE, else <user cache dir>/processed)",
    )
    actions = parser.add_subparsers(dest="cache_command", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
    kinds = "|".join((*KINDS, INCOMPLETE))
    for name, (help_text, _) in SUBCOMMANDS.items():
        action = actions.add_parser(name, help=help_text, description=help_text, parents=[common])
        if name in ("list", "remove"):
            action.add_argument("--kind", type=_kind, default=None, metavar=kinds, help="only entries of this kind")
        if name == "list":
            action.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "remove":
            action.add_argument(
                "--unused-days", type=_days, default=None, metavar="N", help="only entries not used for N days"
            )
            action.add_argument("--all", action="store_true", help="every entry (narrowed by --kind / --unused-days)")
        if name in ("remove", "purge"):
            action.add_argument("--dry-run", action="store_true", help="print what would be removed; remove nothing")
