"""A text space for prompts and completions that accepts any Python string."""

from __future__ import annotations

import string
from typing import Any

import numpy as np
from gymnasium.spaces import Text

# What ``sample()`` draws from: ASCII letters, digits, space and a few non-ASCII letters, so that random actions
# contain several words and exercise the es/jp code paths.
SAMPLE_CHARSET = string.ascii_lowercase + string.digits + "     " + "éñüアイ中"


class UnicodeText(Text):
    """``gymnasium.spaces.Text`` whose ``contains`` accepts every ``str``: any length, any Unicode.

    ``max_length`` only bounds what :meth:`sample` draws. Generative-search envs accept arbitrary completions
    (non-ASCII locales, emoji, very long text — which the env truncates by a documented rule), so a
    membership test narrower than ``isinstance(x, str)`` would reject actions the env handles.
    """

    def __init__(
        self,
        max_length: int = 64,
        *,
        min_length: int = 0,
        charset: str = SAMPLE_CHARSET,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        super().__init__(max_length, min_length=min_length, charset=charset, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str)

    def __repr__(self) -> str:
        return f"UnicodeText(any str; samples {self.min_length}..{self.max_length} chars)"
