"""What the trainer-adapter tests share: importing an adapter module afresh with its trainer missing or at a
version it does not accept."""

from __future__ import annotations

import importlib
import sys

import pytest


def assert_import_refused(monkeypatch: pytest.MonkeyPatch, module: str, package: str, match: str,
                          version: str | None = None) -> None:  # fmt: skip
    """Import ``module`` afresh with ``package`` absent (``version=None``: what an environment without it gives,
    an ImportError on import) or reporting ``__version__ = version``, and check that its ImportError says
    ``match`` (a regex)."""
    if version is None:
        monkeypatch.setitem(sys.modules, package, None)
    else:
        monkeypatch.setattr(importlib.import_module(package), "__version__", version)
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ImportError, match=match):
        importlib.import_module(module)
