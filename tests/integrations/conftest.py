"""Fixtures shared by the integration tests."""

from __future__ import annotations

import signal

import pytest


@pytest.fixture(scope="module")
def keep_signal_handlers():
    """verifiers' environments install SIGINT / SIGTERM handlers when built; the test process gets its own back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)
