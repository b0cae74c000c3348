"""Where datasets are looked for, and where processed tasks are cached.

The data root is the first of these that is *given* (a later one is never used as a fall-back, so a typo in
``data_dir`` can not silently load other data):

1. the ``data_dir=`` argument;
2. the ``$OSPO_GYM_DATA`` environment variable;
3. the user cache dir: ``platformdirs.user_cache_dir("ospo-gym")`` when platformdirs is installed, else
   ``$XDG_CACHE_HOME/ospo-gym`` or ``~/.cache/ospo-gym`` (``%LOCALAPPDATA%\\ospo-gym`` on Windows).

Inside the root a dataset's files may sit at the top or in the dataset's usual sub-folders (e.g.
``shopping_queries_dataset/`` as in the ESCI repository, ``esci/`` as ``ospo-gym data esci`` writes them).
Processed tasks are cached under ``$OSPO_GYM_CACHE`` if set, else ``<user cache dir>/processed``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ospo_gym.data import DataError

DATA_ENV_VAR = "OSPO_GYM_DATA"
CACHE_ENV_VAR = "OSPO_GYM_CACHE"
APP_NAME = "ospo-gym"

__all__ = [
    "CACHE_ENV_VAR",
    "DATA_ENV_VAR",
    "data_root",
    "find_dataset_dir",
    "processed_cache_dir",
    "user_cache_dir",
]


def user_cache_dir() -> Path:
    """The per-user cache directory of ospo-gym (not created here)."""
    try:
        import platformdirs
    except ImportError:
        platformdirs = None
    if platformdirs is not None:
        return Path(platformdirs.user_cache_dir(APP_NAME))
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / APP_NAME
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / APP_NAME


def data_root(data_dir: str | os.PathLike | None = None) -> tuple[Path, str]:
    """The data root and how it was chosen (``"data_dir="``, ``"$OSPO_GYM_DATA"`` or ``"the user cache dir"``)."""
    if data_dir is not None:
        return Path(data_dir).expanduser(), "data_dir="
    if os.environ.get(DATA_ENV_VAR):
        return Path(os.environ[DATA_ENV_VAR]).expanduser(), f"${DATA_ENV_VAR}"
    return user_cache_dir(), "the user cache dir"


def processed_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where processed tasks are cached: ``cache_dir``, else ``$OSPO_GYM_CACHE``, else ``<user cache>/processed``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    return user_cache_dir() / "processed"


def find_dataset_dir(
    dataset: str,
    filenames: Sequence[str],
    subdirs: Sequence[str],
    data_dir: str | os.PathLike | None,
    how_to_get: str,
) -> Path:
    """The first of ``root``, ``root/<subdir>`` ... that holds every file in ``filenames``.

    Raises:
        DataError: naming the files, every folder looked in (and what each lacked), and ``how_to_get``, in one
            line.
    """
    root, chosen_by = data_root(data_dir)
    candidates = [root, *(root / s for s in subdirs)]
    report = []
    for folder in candidates:
        missing = [f for f in filenames if not (folder / f).is_file()]
        if not missing:
            return folder
        if folder.is_dir():
            report.append(f"{folder} (lacks {', '.join(missing)})")
        else:
            report.append(f"{folder} (no such folder)")
    raise DataError(  # one line: the CLI prints it as its one-line error
        f"{dataset} data not found: expected {', '.join(filenames)} together in one folder. Looked in "
        f"(data root from {chosen_by}): " + "; ".join(report) + f". How to get it: {how_to_get}"
    )
