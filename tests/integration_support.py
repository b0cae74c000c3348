"""What the trainer-adapter tests share: importing an adapter module afresh with its trainer missing or at a
version it does not accept, and a scripted verifiers model client."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

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


def scripted_client(vf: Any, answer: Callable[[list[Any]], str]) -> Any:
    """verifiers' model client whose reply to the prompt messages (verifiers' message models) is
    ``answer(messages)``: a rollout without a model or an API."""

    class Scripted(vf.Client):
        def setup_client(self, config):
            return None

        async def to_native_tool(self, tool):
            return tool

        async def to_native_prompt(self, messages):
            return messages, {}

        async def get_native_response(self, prompt, model, sampling_args, tools=None, **kwargs):
            return answer(prompt)

        async def raise_from_native_response(self, response):
            return None

        async def from_native_response(self, response):
            message = vf.ResponseMessage(content=response, finish_reason="stop", is_truncated=False)
            return vf.Response(id="scripted", created=0, model="scripted", message=message)

        async def close(self):
            return None

    return Scripted(None)


def conv_episode(env: Any, prompt_id: int, turns: list[str]) -> tuple[list[str], float]:
    """The Gymnasium episode of ``turns`` on a ConvSearch env (``env.unwrapped``), stopped at its end: the
    shopper's replies (one per turn played) and the return — what every trainer adapter must reproduce."""
    env.reset(options={"prompt_id": prompt_id})
    replies, total = [], 0.0
    for turn in turns:
        transcript, reward, terminated, _, _ = env.step(turn)
        replies.append(transcript.rsplit("\nshopper: ", 1)[1])
        total += reward
        if terminated:
            break
    return replies, total
