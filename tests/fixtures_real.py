"""Fixture data in the published ESCI and H&M formats, generated once per test process.

Imported by test modules (``from fixtures_real import ...``; pytest puts ``tests/`` on ``sys.path``). The
folders live in one temporary directory removed at exit; the processed-data cache of the contract tests goes
there too, never to the user's cache.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path

from ospo_gym.data.fixtures import write_esci_fixture, write_hm_fixture

__all__ = ["esci_dir", "hm_dir", "real_env_kwargs", "scratch_dir"]


@cache
def scratch_dir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="ospo-gym-real-fixtures-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@cache
def esci_dir() -> Path:
    """ESCI fixture with the three locales (1000 products and 30 queries each)."""
    folder = scratch_dir() / "esci"
    write_esci_fixture(folder, locales=("us", "es", "jp"))
    return folder


@cache
def hm_dir() -> Path:
    """H&M fixture: 300 articles, 60 customers, purchases from 2020-08-01 to 2020-09-22."""
    folder = scratch_dir() / "hm"
    write_hm_fixture(folder)
    return folder


def real_env_kwargs() -> dict[str, dict]:
    """Small settings of the real-data ids for the contract tests in ``test_envs.py``.

    Short prompt templates keep the prompt's own text segmentable (the default instructions contain an empty
    ``<answer></answer>``, so a prompt used as an action has no segments) and under the exact-Shapley limit.
    """
    cache_dir = str(scratch_dir() / "cache")
    return {
        "ospo/ESCI-v0": {"data_dir": str(esci_dir()), "cache_dir": cache_dir, "prompt_template": "query: {query}"},
        "ospo/HM-v0": {
            "data_dir": str(hm_dir()),
            "cache_dir": cache_dir,
            "prompt_template": "{history}",
            "max_history": 3,
        },
    }
