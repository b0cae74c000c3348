"""Which coalitions of segments the oracle is asked about.

A coalition is a sorted tuple of segment indices. OSPO evaluates the empty set, every *contiguous* window of
at most ``w_max`` segments and the full set; a text of ``n`` segments has at most ``n * w_max`` windows, so the
budget ``max_coalitions`` (the paper's ``M``) only bites for long texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from math import comb

import numpy as np

Coalition = tuple[int, ...]


def _check_sizes(n: int, w_max: int, max_coalitions: int | None = None) -> None:
    if n < 0:
        raise ValueError(f"number of segments must be >= 0, got {n}")
    if w_max < 1:
        raise ValueError(f"w_max must be >= 1 (the widest coalition window), got {w_max}")
    if max_coalitions is not None and max_coalitions < 2:
        raise ValueError(
            f"max_coalitions must be >= 2 (the empty and the full coalition are always kept), got {max_coalitions}"
        )


def contiguous_coalitions(n: int, w_max: int, *, include_empty: bool = True, include_full: bool = True) -> list[Coalition]:
    """All contiguous windows of width 1..w_max, plus ∅ and the full set; ordered by width, then start.

    >>> contiguous_coalitions(3, 2)
    [(), (0,), (1,), (2,), (0, 1), (1, 2), (0, 1, 2)]
    """
    _check_sizes(n, w_max)
    out: list[Coalition] = [()] if include_empty else []
    for width in range(1, min(w_max, n) + 1):
        out.extend(tuple(range(start, start + width)) for start in range(n - width + 1))
    if include_full and n > 0 and w_max < n:
        out.append(tuple(range(n)))
    return out


def _subsets_up_to(n: int, w_max: int) -> int:
    return sum(comb(n, s) for s in range(1, min(w_max, n) + 1))


def noncontiguous_coalitions(
    n: int, w_max: int, count: int, rng: np.random.Generator, *, include_empty: bool = True, include_full: bool = True
) -> list[Coalition]:
    """The ablation's pool: ``count`` distinct arbitrary subsets of size 1..w_max, uniformly over subsets.

    ``count`` is capped at the number of such subsets. Singletons are not forced in, so as in the paper's
    ablation the coalitions carry no contiguity structure at all.
    """
    _check_sizes(n, w_max)
    total = _subsets_up_to(n, w_max)
    count = min(count, total)
    chosen: list[Coalition] = []
    if total <= 4096:  # enumerate and sample exactly
        pool = [c for size in range(1, min(w_max, n) + 1) for c in combinations(range(n), size)]
        chosen = [pool[i] for i in sorted(rng.choice(len(pool), size=count, replace=False))]
    else:  # rejection sampling; sizes drawn in proportion to how many subsets have that size
        sizes = np.arange(1, min(w_max, n) + 1)
        probs = np.array([comb(n, int(s)) for s in sizes], dtype=float)
        probs /= probs.sum()
        seen: set[Coalition] = set()
        while len(chosen) < count:
            size = int(rng.choice(sizes, p=probs))
            c = tuple(sorted(int(i) for i in rng.choice(n, size=size, replace=False)))
            if c not in seen:
                seen.add(c)
                chosen.append(c)
        chosen.sort(key=lambda c: (len(c), c))
    out: list[Coalition] = [()] if include_empty else []
    out.extend(chosen)
    full = tuple(range(n))
    if include_full and n > 0 and full not in chosen:
        out.append(full)
    return out


def sample_coalitions(
    n: int,
    w_max: int = 8,
    max_coalitions: int | None = 96,
    *,
    rng: np.random.Generator | int | None = None,
    contiguous: bool = True,
    cover_singletons: bool = True,
    complements: bool = False,
    coalition_structure: str | None = None,
    unions: Sequence[int] | None = None,
) -> list[Coalition]:
    """The coalitions to evaluate for a text of ``n`` segments (deduplicated, ∅ first, full set last).

    Args:
        n: number of segments (players).
        w_max: widest window.
        max_coalitions: the budget ``M``; ``None`` keeps every window. When the pool is larger than ``M``,
            ∅ and the full set are kept and the rest is sampled without replacement.
        rng: seed or generator for the sampling.
        contiguous: ``False`` gives the paper's non-contiguous ablation (random subsets of size <= w_max,
            as many as the contiguous pool would have had, then the same budget).
        cover_singletons: when sampling, keep the singletons first (as many as fit) and sample the rest.
            The released OSPO code samples uniformly (``False``), which can leave a segment with no sampled
            pair ``(S, S ∪ {i})`` and hence with credit 0 whatever its value; covering avoids that.
        complements: also pool the complement ``N \\ W`` of every window, so that marginals are observed in large
            coalitions too (``N \\ {i} → N``), not only in small ones. Not in the paper; it lifts the estimate's
            agreement with exact Shapley where segments interact (``benchmarks/estimator_accuracy.py``).
        coalition_structure: one option for the structure instead of the two flags (see
            :mod:`ospo_gym.credit.structures`): ``"windows"`` (= the defaults), ``"random"`` (= ``contiguous=False``),
            ``"windows+complements"`` (= ``complements=True``) give the same coalitions as those flags for the same
            seed; ``"owen"`` gives :func:`~ospo_gym.credit.structures.owen_coalitions` of ``unions``. ``None``
            (default): the flags decide.
        unions: (n,) int labels of the a priori unions, for ``coalition_structure="owen"`` only.

    Returns:
        A list of sorted index tuples, no duplicates.
    """
    _check_sizes(n, w_max, max_coalitions)
    if coalition_structure is not None:
        from ospo_gym.credit.structures import check_structure, check_unions, owen_coalitions

        check_structure(coalition_structure)
        if not contiguous or complements:
            raise ValueError(
                f"pass coalition_structure={coalition_structure!r} or the flags contiguous=False / complements=True, "
                "not both (coalition_structure='random' is contiguous=False, 'windows+complements' is complements=True)"
            )
        if coalition_structure == "owen":
            return owen_coalitions(check_unions(unions, n), w_max, max_coalitions, rng=rng)
        contiguous, complements = coalition_structure != "random", coalition_structure == "windows+complements"
    if unions is not None:
        raise ValueError("unions= is read only with coalition_structure='owen'")
    rng = np.random.default_rng(rng)
    if contiguous:
        pool = contiguous_coalitions(n, w_max)
    else:
        budget = len(contiguous_coalitions(n, w_max, include_empty=False, include_full=False))
        pool = noncontiguous_coalitions(n, w_max, budget, rng)
    if complements:
        everyone = frozenset(range(n))
        pool = list(dict.fromkeys([*pool, *(tuple(sorted(everyone - set(c))) for c in pool)]))
        pool.sort(key=lambda c: (len(c), c))
    if max_coalitions is None or len(pool) <= max_coalitions or n == 0:
        return pool
    full = tuple(range(n))
    middle = [c for c in pool if c and c != full]
    room = max_coalitions - 2
    if cover_singletons:
        # tiers: every {i} (its marginal from ∅) first, then with complements every N \ {i} (towards N), then
        # the rest; the tier that overflows the budget is sampled uniformly
        tiers = [[c for c in middle if len(c) == 1]]
        if complements:
            tiers.append([c for c in middle if len(c) == n - 1 and n > 2])
        placed = {c for tier in tiers for c in tier}
        tiers.append([c for c in middle if c not in placed])
        picked = []
        for tier in tiers:
            take = min(room - len(picked), len(tier))
            picked.extend(tier[i] for i in rng.choice(len(tier), size=take, replace=False))
    else:
        picked = [middle[i] for i in rng.choice(len(middle), size=min(room, len(middle)), replace=False)]
    picked.sort(key=lambda c: (len(c), c))
    return [(), *picked, full]


def _contiguous_plan(n: int, w_max: int) -> tuple[list[Coalition], int]:
    """The contiguous pool of ``n`` segments and how many of its middle coalitions are singletons (cached)."""
    plan = _PLANS.get((n, w_max))
    if plan is None:
        if len(_PLANS) >= 4096:
            _PLANS.clear()
        plan = _PLANS[(n, w_max)] = (contiguous_coalitions(n, w_max), n)
    return plan


_PLANS: dict[tuple[int, int], tuple[list[Coalition], int]] = {}


def sample_coalitions_batch(
    sizes: Sequence[int],
    w_max: int = 8,
    max_coalitions: int | None = 96,
    *,
    seeds: Sequence[np.random.SeedSequence | int | None],
    contiguous: bool = True,
    cover_singletons: bool = True,
) -> list[list[Coalition]]:
    """:func:`sample_coalitions` of many texts at once: entry ``b`` equals
    ``sample_coalitions(sizes[b], w_max, max_coalitions, rng=np.random.default_rng(seeds[b]), ...)`` exactly.

    The contiguous pool of each distinct size is built once and shared (the returned lists share their tuples); a
    generator is made only for a text whose pool exceeds the budget, and it draws what :func:`sample_coalitions`
    draws, in the same order (one ``choice`` per tier). Pools are already ordered by (width, start), so the sampled
    coalitions are put back in order by sorting their pool positions. Non-contiguous coalitions go through
    :func:`sample_coalitions` itself.

    Args:
        sizes: (B,) segments per text; seeds: B seeds or ``SeedSequence`` children, one per text.

    Returns:
        B lists of sorted index tuples (∅ first, full set last).
    """
    if len(seeds) != len(sizes):
        raise ValueError(f"got {len(sizes)} sizes but {len(seeds)} seeds; pass one seed per text")
    out: list[list[Coalition]] = []
    for n, seed in zip(sizes, seeds, strict=True):
        n = int(n)
        _check_sizes(n, w_max, max_coalitions)
        if not contiguous:
            out.append(
                sample_coalitions(
                    n, w_max, max_coalitions, rng=np.random.default_rng(seed), contiguous=False,
                    cover_singletons=cover_singletons,
                )
            )
            continue
        pool, singles = _contiguous_plan(n, w_max)
        if max_coalitions is None or len(pool) <= max_coalitions or n == 0:
            out.append(list(pool))
            continue
        rng = np.random.default_rng(seed)
        middle = len(pool) - 2  # pool[1:-1]: every coalition but ∅ (first) and the full set (last)
        room = max_coalitions - 2
        if cover_singletons:
            take = min(room, singles)
            first = rng.choice(singles, size=take, replace=False)
            second = rng.choice(middle - singles, size=min(room - take, middle - singles), replace=False)
            chosen = np.concatenate([first, second + singles])
        else:
            chosen = rng.choice(middle, size=min(room, middle), replace=False)
        out.append([pool[0], *(pool[1 + int(j)] for j in np.sort(chosen)), pool[-1]])
    return out
