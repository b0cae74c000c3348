"""Index arithmetic on runs (ospo_gym.runs), against the obvious loop."""

from __future__ import annotations

import numpy as np

from ospo_gym.runs import offsets_in_runs, run_positions


def test_run_positions_and_offsets_equal_the_concatenated_ranges():
    rng = np.random.default_rng(0)
    for _ in range(50):
        lengths = rng.integers(0, 5, size=int(rng.integers(0, 8)))
        starts = rng.integers(-3, 20, size=len(lengths))
        want = [p for s, n in zip(starts.tolist(), lengths.tolist(), strict=True) for p in range(s, s + n)]
        assert run_positions(starts, lengths).tolist() == want
        assert offsets_in_runs(lengths).tolist() == [p for n in lengths.tolist() for p in range(n)]
    assert run_positions([5, 0, 2], [2, 0, 3]).tolist() == [5, 6, 2, 3, 4]
    assert run_positions([], []).dtype == np.int64 and offsets_in_runs([]).shape == (0,)
