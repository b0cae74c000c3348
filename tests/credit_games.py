"""Games the credit tests share."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def table_game(n: int, seed: int) -> Callable[[Sequence[tuple[int, ...]]], np.ndarray]:
    """A random game: v(S) an arbitrary table over the 2**n subsets (no structure an estimator could exploit)."""
    table = np.random.default_rng(seed).normal(size=1 << n)

    def v(coalitions):
        return np.array([table[sum(1 << i for i in c)] for c in coalitions])

    return v
