"""Two-level Owen credit: players (segments) grouped in unions (turns), exact by enumeration and estimated from
sampled coalitions.

Notation: ``P`` players numbered union by union (union 0's players first), ``union_sizes`` (m,) the number of
players of each union (a union of size 0 is no player and is skipped), ``b_k`` the size of union ``k`` and ``m'``
the number of non-empty unions. For player ``i`` of union ``k`` the Owen value (Owen 1977) is

    φ_i = Σ_{R ⊆ M∖{k}} Σ_{T ⊆ B_k∖{i}} w(|R|, m') · w(|T|, b_k) · [v(Q_R ∪ T ∪ {i}) − v(Q_R ∪ T)],

``Q_R`` the players of the unions in ``R`` and ``w(s, n) = s! (n − s − 1)! / n!``. Its sums over a union equal the
Shapley values of the quotient game of unions, ``v_M(R) = v(Q_R)`` (the property the tests check), and the
values of all players sum to ``v(N) − v(∅)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np

from ospo_gym.credit.coalitions import Coalition, sample_coalitions
from ospo_gym.credit.shapley import (
    ValueFn,
    every_coalition_value,
    marginal_pairs,
    player_indices,
    segment_credit,
    shapley_weight,
)

MAX_EXACT_OWEN_PLAYERS = 16
"""Largest ``P`` :func:`owen_exact` enumerates (``2**P`` coalitions)."""
MAX_ENUMERATED_OUTER = 6
"""Up to this many *other* unions, :func:`two_level_coalitions` pools every subset of them (``2**6 = 64``)."""


def check_union_sizes(union_sizes: Sequence[int]) -> np.ndarray:
    """``union_sizes`` as an (m,) int64 array, or ``ValueError`` unless they are ints >= 0."""
    sizes = np.asarray(list(union_sizes))
    if sizes.ndim != 1 or (sizes.size and (sizes.dtype.kind not in "iu" or sizes.min() < 0)):
        raise ValueError(f"union_sizes must be a sequence of ints >= 0 (players per union), got {list(union_sizes)!r}")
    return sizes.astype(np.int64)


def union_of_players(union_sizes: Sequence[int]) -> np.ndarray:
    """(P,) int64: the union of every player."""
    sizes = check_union_sizes(union_sizes)
    return np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)


def owen_exact(value_fn: ValueFn, union_sizes: Sequence[int]) -> np.ndarray:
    """Exact Owen values by enumerating all ``2**P`` coalitions (the reference for tests).

    Args:
        value_fn: called once with all ``2**P`` coalitions (sorted tuples of flat player indices), returns (2**P,).
        union_sizes: players per union, ``P = sum(union_sizes) <= MAX_EXACT_OWEN_PLAYERS``.

    Returns:
        phi: (P,) with ``phi.sum() == v(N) − v(∅)``.
    """
    sizes = check_union_sizes(union_sizes)
    n = int(sizes.sum())
    if n > MAX_EXACT_OWEN_PLAYERS:
        raise ValueError(
            f"owen_exact enumerates 2**P coalitions and allows P <= {MAX_EXACT_OWEN_PLAYERS}, got P = {n}; "
            "use two_level_credit on sampled coalitions instead"
        )
    if n == 0:
        return np.zeros(0)
    _, _, values = every_coalition_value(value_fn, n)
    union = union_of_players(sizes)
    live = [u for u in range(len(sizes)) if sizes[u] > 0]
    block = {u: int(np.bitwise_or.reduce(1 << np.flatnonzero(union == u))) for u in live}
    phi = np.zeros(n)
    for i in range(n):
        k = int(union[i])
        others = [u for u in live if u != k]
        inside = [j for j in np.flatnonzero(union == k) if j != i]
        for r in range(len(others) + 1):
            w_outer = float(shapley_weight(r, len(live)))
            for chosen in combinations(others, r):
                q = sum(block[u] for u in chosen)
                for t in range(len(inside) + 1):
                    w_inner = float(shapley_weight(t, int(sizes[k])))
                    for picked in combinations(inside, t):
                        s = q | sum(1 << int(j) for j in picked)
                        phi[i] += w_outer * w_inner * (values[s | (1 << i)] - values[s])
    return phi


def two_level_coalitions(
    union_sizes: Sequence[int],
    w_max: int = 8,
    max_inner: int | None = 96,
    *,
    rng: np.random.Generator | int | None = None,
    max_enumerated_outer: int = MAX_ENUMERATED_OUTER,
    outer_per_size: int = 4,
    all_inner: bool = False,
) -> list[Coalition]:
    """The coalitions a two-level Owen estimate evaluates: ``Q_R ∪ W`` for every union ``k``, outer sets ``R`` of
    other unions and inner windows ``W`` of union ``k``'s players (deduplicated, sorted by size then players).

    Outer: every subset of the other unions when there are at most ``max_enumerated_outer``, else ``∅``, all of
    them and ``outer_per_size`` random subsets of each size in between. Inner: :func:`sample_coalitions` of the
    union's players (contiguous windows up to ``w_max`` wide, ∅ and the full union, at most ``max_inner``), or
    with ``all_inner=True`` every subset of them. With every outer set and ``all_inner=True`` the pool holds every
    coalition the exact Owen value reads, and :func:`two_level_credit` returns it exactly.
    """
    sizes = check_union_sizes(union_sizes)
    rng = np.random.default_rng(rng)
    offsets = np.cumsum(sizes) - sizes
    live = [u for u in range(len(sizes)) if sizes[u] > 0]
    pool: set[Coalition] = set()
    for k in live:
        others = [u for u in live if u != k]
        if len(others) <= max_enumerated_outer:
            outer = [c for r in range(len(others) + 1) for c in combinations(others, r)]
        else:
            outer = [(), tuple(others)]
            for r in range(1, len(others)):
                for _ in range(outer_per_size):
                    outer.append(tuple(sorted(int(u) for u in rng.choice(others, size=r, replace=False))))
        b = int(sizes[k])
        if all_inner:
            inner = [c for t in range(b + 1) for c in combinations(range(b), t)]
        else:
            inner = sample_coalitions(b, w_max, max_inner, rng=rng)
        base_k = int(offsets[k])
        for chosen in dict.fromkeys(outer):
            q = [int(offsets[u]) + j for u in chosen for j in range(int(sizes[u]))]
            for window in inner:
                pool.add(tuple(sorted([*q, *(base_k + j for j in window)])))
    return sorted(pool, key=lambda c: (len(c), c))


def two_level_credit(
    coalitions: Sequence[Coalition], values: np.ndarray, union_sizes: Sequence[int], *, union_efficient: bool = True
) -> np.ndarray:
    """Two-level Owen estimate from sampled coalitions (turns as unions, segments as players), shape (P,).

    Uses every sampled pair ``(S, S ∪ {i})`` whose ``S`` holds, of the unions other than ``i``'s, only whole
    unions (``S = Q_R ∪ T``): the marginals of player ``i`` are averaged within each stratum ``(|R|, |T|)``,
    then over the observed ``|T|`` of each ``|R|``, then over the observed ``|R|``. The exact Owen value gives
    every ``|R|`` weight ``1/m'`` and, within it, every ``|T|`` weight ``1/b_k``, so this is exact when all
    coalitions are sampled. A player without such a pair gets an equal share of what the others leave of
    ``v(N) − v(∅)`` (when both are in the pool), as :func:`~ospo_gym.credit.segment_credit` does.

    With ``union_efficient`` (default) the union level is made exact where the pool allows: the unions' credit
    ``Φ`` is :func:`~ospo_gym.credit.segment_credit` (``"owen"``) of the quotient game on the pooled coalitions
    made of whole unions — exact Shapley values when every subset of unions is pooled, as
    :func:`two_level_coalitions` does up to 7 unions — and each union's players are shifted by one common amount
    so that they sum to ``Φ_k``. Then the credit of the players of a union sums to its (quotient) Shapley value
    and all of it to ``v(N) − v(∅)``; when every coalition is pooled the shift is 0.
    """
    sizes = check_union_sizes(union_sizes)
    n = int(sizes.sum())
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(coalitions),):
        raise ValueError(f"values has shape {values.shape}, expected ({len(coalitions)},) — one per coalition")
    if n == 0:
        player_indices(coalitions, 0)
        return np.zeros(0)
    union = union_of_players(sizes)
    without_idx, with_idx, player = marginal_pairs(coalitions, n)
    members = np.zeros((len(coalitions), n), dtype=np.int64)
    lengths, cols = player_indices(coalitions, n)
    members[np.repeat(np.arange(len(coalitions)), lengths), cols] = 1
    # (K, m) players of each union in each coalition; a union is whole when that equals its size
    per_union = np.zeros((len(coalitions), len(sizes)), dtype=np.int64)
    np.add.at(per_union.T, union, members.T)
    counts = per_union[without_idx]  # (pairs, m)
    own = union[player]
    is_own = np.arange(len(sizes))[None, :] == own[:, None]
    whole = counts == sizes[None, :]
    empty = counts == 0
    live = sizes > 0
    valid = np.all(is_own | whole | empty | ~live[None, :], axis=1)
    r = np.sum(whole & ~is_own & live[None, :], axis=1)
    t = counts[np.arange(len(own)), own]
    marginal = values[with_idx] - values[without_idx]
    m_live = int(live.sum())
    b_max = int(sizes.max())
    cell = (player * m_live + r) * b_max + t  # (player, |R|, |T|) cells
    total = n * m_live * b_max
    # float64 even with no valid pair (bincount of an empty input returns int64 then)
    cell_sum = np.bincount(cell[valid], weights=marginal[valid], minlength=total).astype(np.float64).reshape(n, m_live, b_max)
    cell_count = np.bincount(cell[valid], minlength=total).reshape(n, m_live, b_max)
    seen = cell_count > 0
    cell_mean = np.divide(cell_sum, cell_count, out=np.zeros_like(cell_sum), where=seen)
    t_seen = seen.sum(axis=2)
    per_r = np.divide(cell_mean.sum(axis=2), t_seen, out=np.zeros(t_seen.shape), where=t_seen > 0)
    r_seen = (t_seen > 0).sum(axis=1)
    covered = r_seen > 0
    phi = np.zeros(n)
    phi[covered] = per_r[covered].sum(axis=1) / r_seen[covered]
    if not covered.all():
        index = {c: j for j, c in enumerate(coalitions)}
        full, none = index.get(tuple(range(n))), index.get(())
        if full is not None and none is not None:
            phi[~covered] = (values[full] - values[none] - phi[covered].sum()) / (~covered).sum()
    if union_efficient:
        phi = _shift_to_union_credit(phi, per_union, values, sizes)
    return phi


def _shift_to_union_credit(phi: np.ndarray, per_union: np.ndarray, values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Shift each union's players so that they sum to the union's quotient-game credit (see two_level_credit)."""
    live = np.flatnonzero(sizes > 0)
    whole = np.all((per_union[:, live] == 0) | (per_union[:, live] == sizes[live][None, :]), axis=1)
    quotient = [tuple(np.flatnonzero(per_union[j, live] > 0).tolist()) for j in np.flatnonzero(whole)]
    union_credit = segment_credit(quotient, values[whole], len(live))
    union = union_of_players(sizes)
    current = np.bincount(union, weights=phi, minlength=len(sizes))[live]
    shift = np.zeros(len(sizes))
    shift[live] = (union_credit - current) / sizes[live]
    return phi + shift[union]


def union_sums(credit: np.ndarray, union_sizes: Sequence[int]) -> np.ndarray:
    """(m,) sums of player credit per union (0 for an empty union)."""
    sizes = check_union_sizes(union_sizes)
    return np.bincount(union_of_players(sizes), weights=np.asarray(credit, dtype=np.float64), minlength=len(sizes))
