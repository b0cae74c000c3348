"""Where the command line writes: checks on output files and folders, and an atomic file writer.

The rule, for every file the CLI writes (``credit --html/--png``, bench's ``results.json``, ``results.md`` and
PNG curves, the ESCI downloads) and every folder it creates (``--run-dir``, ``bench --out`` / ``--runs-dir``,
``data esci --dest``):

* an output *file* may be new or an existing regular file (replaced atomically: a reader never sees half a file).
  Anything else already at that name is refused with :class:`OutputPathError`: a directory, a named pipe, a
  device, a socket, and a **symbolic link, even one to a regular file** — a link planted where a tool writes
  would redirect the write to wherever it points, and replacing the link would silently drop it. Pass the link's
  target itself to write there.
* an output *folder* may be new or an existing folder (a link to a folder is fine); a regular file or a special
  file at that name, or at one of its would-be parents, is refused.

The checks use ``os.lstat`` (a link is seen as a link, not as what it points to), and :func:`write_atomic` checks
again just before it renames its temporary file into place, so a non-regular file that appears while the output
is being written is not replaced either.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

__all__ = ["OutputPathError", "check_output_file", "check_output_folder", "write_atomic"]


class OutputPathError(ValueError):
    """An output path names something that must not be written over (a link, a pipe, a device, a folder ...)."""


def _kind(path: Path, mode: int) -> str:
    """What a non-regular file is, in words (for the error message)."""
    if stat.S_ISLNK(mode):
        try:
            return f"a symbolic link (to {os.readlink(path)})"
        except OSError:
            return "a symbolic link"
    kinds = [
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISREG, "a regular file"),
    ]
    return next((name for test, name in kinds if test(mode)), "a special file")


def _blocking_parent(path: Path) -> tuple[Path, str] | None:
    """The nearest existing ancestor of ``path`` when it is not a folder (so nothing can be created under it)."""
    for parent in path.parents:
        try:
            mode = os.stat(parent).st_mode  # follows links: a link to a folder is a folder
        except (FileNotFoundError, NotADirectoryError):
            continue  # not there (yet), or below a non-folder found further up
        except OSError:
            return None  # unreadable: let the write itself report it
        return None if stat.S_ISDIR(mode) else (parent, _kind(parent, mode))
    return None


def check_output_file(path: str | os.PathLike, *, what: str = "output file") -> Path:
    """``path`` as a ``Path`` when a file may be written there: nothing is there yet, or a regular file is.

    Raises:
        OutputPathError: ``path`` is a symbolic link (even to a regular file), a directory, a named pipe, a device
            or a socket, or one of its parents is not a folder. ``what`` names the path in the message (e.g.
            ``"--html"``).
    """
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # not there, or a parent is not a folder (found below)
        mode = None
    except OSError:
        return path  # unreadable (permissions): the write itself reports it
    if mode is None:
        blocking = _blocking_parent(path)
        if blocking is not None:
            raise OutputPathError(
                f"{what} {path} cannot be written: {blocking[0]} is {blocking[1]}, not a folder; choose another path"
            )
        return path
    if stat.S_ISREG(mode):
        return path
    hint = "pass the file it points to instead, or remove the link" if stat.S_ISLNK(mode) else "choose another path"
    raise OutputPathError(
        f"{what} {path} is {_kind(path, mode)}, not a regular file; ospo-gym only creates files or replaces "
        f"regular ones: {hint}"
    )


def check_output_folder(path: str | os.PathLike, *, what: str = "output folder") -> Path:
    """``path`` as a ``Path`` when it is a folder or can be created as one (with its parents).

    Raises:
        OutputPathError: ``path``, or the nearest of its parents that exists, is not a folder (a regular file, a
            dangling link, a pipe, a device ...). ``what`` names the path in the message (e.g. ``"--run-dir"``).
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode  # follows links: a link to a folder is a folder
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    except OSError:
        return path  # unreadable: let creating it report the problem
    if mode is None:
        try:
            dangling = os.lstat(path).st_mode
        except OSError:
            dangling = None
        if dangling is not None:
            raise OutputPathError(
                f"{what} {path} is {_kind(path, dangling)} whose target is missing; remove the link or choose "
                "another folder"
            )
        blocking = _blocking_parent(path)
        if blocking is not None:
            raise OutputPathError(
                f"{what} {path} cannot be created: {blocking[0]} is {blocking[1]}, not a folder; choose another path"
            )
        return path
    if not stat.S_ISDIR(mode):
        raise OutputPathError(
            f"{what} {path} is {_kind(path, mode)}, not a folder; give a new or existing folder"
        )
    return path


def write_atomic(
    path: str | os.PathLike, write: str | bytes | Callable[[Path], object], *, what: str = "output file"
) -> Path:
    """Write ``path`` through a temporary file beside it, renamed onto ``path`` at the end; return ``path``.

    ``write`` is the content (``str`` is written as UTF-8, or ``bytes``) or a callable that writes the temporary
    path it is given (e.g. ``lambda tmp: fig.savefig(tmp, format="png")``). ``path`` is checked with
    :func:`check_output_file` before and again just before the rename. The temporary file is created exclusively
    (``O_EXCL``: a link planted at its name is not followed) with the usual ``0o666 & ~umask`` permissions. A
    reader never sees a half-written file; on failure the temporary file is removed and the error propagates.

    Raises:
        OutputPathError: ``path`` is not a new or regular file (see the module docstring).
        OSError: the file cannot be written.
    """
    path = check_output_file(path, what=what)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(write, str):
                handle.write(write.encode("utf-8"))
            elif isinstance(write, bytes):
                handle.write(write)
        if callable(write):
            write(tmp)
        check_output_file(path, what=what)  # whatever appeared there while writing is not replaced either
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
