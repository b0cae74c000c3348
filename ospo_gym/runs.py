"""Index arithmetic on runs: consecutive positions in a flat array (the entries of CSR rows, the members of a
group, the tokens of a piece), vectorised over all runs at once."""

from __future__ import annotations

import numpy as np


def offsets_in_runs(lengths: np.ndarray) -> np.ndarray:
    """``0, 1, ..., lengths[i] - 1`` for every run, run after run: ``(lengths.sum(),)`` int64.

    Args:
        lengths: ``(R,)`` non-negative ints.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def run_positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``starts[i], starts[i] + 1, ..., starts[i] + lengths[i] - 1`` for every run, run after run:
    ``(lengths.sum(),)`` int64 (e.g. the entries of CSR rows ``r``: ``starts = indptr[r]``,
    ``lengths = indptr[r + 1] - indptr[r]``).

    Args:
        starts: ``(R,)`` ints; lengths: ``(R,)`` non-negative ints.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.repeat(np.asarray(starts, dtype=np.int64), lengths) + offsets_in_runs(lengths)
