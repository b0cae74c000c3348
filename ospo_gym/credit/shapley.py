"""Segment credit: exact Shapley values, and estimates of them from sampled coalitions (Owen–Shapley and variants).

Notation: ``n`` players (segments), ``v(S)`` the coalition value, Shapley weight
``w(s) = s! (n - s - 1)! / n!`` for a coalition of size ``s`` not containing the player.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.special import gammaln

from ospo_gym.credit.coalitions import Coalition

ValueFn = Callable[[Sequence[Coalition]], np.ndarray]
"""Maps a batch of coalitions to their values, shape (K,)."""

CREDIT_VARIANTS = ("owen", "weighted", "released")
"""The variants of :func:`segment_credit` (``AgentConfig.credit_variant``, ``--credit-variant``)."""
MAX_EXACT_PLAYERS = 20


def shapley_weight(size: np.ndarray | int, n: int) -> np.ndarray:
    """``|S|! (n-|S|-1)! / n!`` computed in log space (finite for any n), shape of ``size``; 0 for |S| >= n."""
    size = np.asarray(size, dtype=np.float64)
    inside = (size >= 0) & (size < n)  # a coalition that already holds every player has no marginal
    safe = np.where(inside, size, 0.0)
    return np.where(inside, np.exp(gammaln(safe + 1.0) + gammaln(n - safe) - gammaln(n + 1.0)), 0.0)


def shapley_exact(value_fn: ValueFn, n: int) -> np.ndarray:
    """Exact Shapley values by enumerating all ``2**n`` coalitions (the reference for tests).

    Args:
        value_fn: called once with all ``2**n`` coalitions (sorted tuples), returns their values (2**n,).
        n: number of players, at most ``MAX_EXACT_PLAYERS``.

    Returns:
        phi: (n,) with ``phi.sum() == v(N) - v(∅)`` (efficiency).
    """
    if not 0 <= n <= MAX_EXACT_PLAYERS:
        raise ValueError(
            f"shapley_exact enumerates 2**n coalitions; n must be in [0, {MAX_EXACT_PLAYERS}], got {n}. "
            "Use segment_credit for longer texts."
        )
    if n == 0:
        return np.zeros(0)
    masks, bits, values = every_coalition_value(value_fn, n)
    weights = shapley_weight(bits.sum(axis=1), n)  # weight of S for a player outside S
    phi = np.empty(n)
    for i in range(n):  # n <= 20 players; each step is vectorised over all 2**n coalitions
        without = masks[~bits[:, i]]
        phi[i] = np.sum(weights[without] * (values[without | (1 << i)] - values[without]))
    return phi


def every_coalition_value(value_fn: ValueFn, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``v(S)`` of all ``2**n`` coalitions of ``n`` players in one ``value_fn`` call, S indexed by its bitmask.

    Returns:
        masks: (2**n,) int64, ``0 .. 2**n - 1``.
        bits: (2**n, n) bool, ``bits[s, i]``: player ``i`` is in coalition ``s``.
        values: (2**n,) float64, ``values[s] = v(S)``.
    """
    masks = np.arange(1 << n, dtype=np.int64)
    bits = ((masks[:, None] >> np.arange(n)) & 1).astype(bool)  # (2**n, n)
    coalitions = [tuple(np.flatnonzero(row).tolist()) for row in bits]
    values = np.asarray(value_fn(coalitions), dtype=np.float64)
    if values.shape != (1 << n,):
        raise ValueError(f"value_fn returned shape {values.shape}, expected ({1 << n},)")
    return masks, bits, values


def check_players(n: object) -> None:
    """Raise ``ValueError`` unless the number of players ``n`` is an int >= 0."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"the number of players n must be an int >= 0 (the number of segments), got {n!r}")


def player_indices(coalitions: Sequence[Coalition], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Each coalition's size ``(K,)`` and all their player indices, flattened ``(sum of sizes,)`` int64.

    Raises:
        ValueError: a coalition is not a sequence of ints, or names a player outside ``0..n-1`` (a negative
            index would otherwise silently wrap around to the last players).
    """
    if isinstance(coalitions, (str, bytes)) or not hasattr(coalitions, "__len__"):
        raise ValueError(f"coalitions must be a sequence of tuples of player indices, got {type(coalitions).__name__}")
    try:
        lengths = np.fromiter((len(c) for c in coalitions), dtype=np.int64, count=len(coalitions))
    except TypeError:
        bad = next(c for c in coalitions if not hasattr(c, "__len__"))
        raise ValueError(
            f"every coalition must be a tuple of player indices, got {bad!r}; write a single player i as (i,)"
        ) from None
    flat = [i for c in coalitions for i in c]
    try:
        players = np.asarray(flat) if flat else np.zeros(0, dtype=np.int64)
    except (TypeError, ValueError):  # e.g. nested sequences of different lengths
        players = np.asarray(flat, dtype=object)
    if players.ndim != 1 or players.dtype.kind not in "iu" or (len(players) and (players.min() < 0 or players.max() >= n)):
        rule = f"a coalition is a tuple of int player indices in 0..{n - 1}" if n else "with n = 0 every coalition is ()"
        raise ValueError(f"{_first_bad_player(coalitions, n)}; {rule} (n = {n} players)")
    return lengths, players.astype(np.int64, copy=False)


def _first_bad_player(coalitions: Sequence[Coalition], n: int) -> str:
    """Which coalition breaks :func:`player_indices`'s rules, for its error message."""
    for coalition in coalitions:
        for i in coalition:
            if not isinstance(i, (int, np.integer)) or isinstance(i, (bool, np.bool_)):
                return f"coalition {coalition!r} holds {i!r} ({type(i).__name__}), which is not an int"
            if not 0 <= i < n:
                return f"coalition {coalition!r} names player {i}, " + (f"outside 0..{n - 1}" if n else "but n = 0")
    return "the coalitions mix index types that do not form one int array"


def int_tuples(coalitions: Sequence[Coalition]) -> bool:
    """Is every coalition a tuple of Python ints (immutable, and not a bool or float equal to an int)?"""
    return all(type(c) is tuple and all(type(i) is int for i in c) for c in coalitions)


class CoalitionMemo:
    """Answers about coalition lists of int tuples, remembered by the identities of the tuples (the batched
    sampler hands out its cached pools' own tuples, so a batch repeats them) and, with ``by_content``, by their
    contents. An identity entry holds its very tuples, so their ids cannot name other tuples while it lives."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._entries: dict[tuple, tuple[tuple, Any]] = {}

    @staticmethod
    def _identity(coalitions: Sequence[Coalition], n: int) -> tuple | None:
        return ("is", n, *map(id, coalitions)) if type(n) is int else None

    def get(self, coalitions: Sequence[Coalition], n: int, *, by_content: bool = False) -> Any:
        """The remembered answer, or ``None``; ``by_content`` also looks up an equal list (int tuples only)."""
        found = self._entries.get(self._identity(coalitions, n))
        if found is None and by_content and type(n) is int and int_tuples(coalitions):
            found = self._entries.get((n, tuple(coalitions)))
        return None if found is None else found[1]

    def put(self, coalitions: Sequence[Coalition], n: int, answer: Any, *, by_content: bool = False) -> None:
        """Remember ``answer`` for ``coalitions`` (only a list of int tuples is remembered)."""
        if type(n) is not int or not int_tuples(coalitions):
            return
        if len(self._entries) >= self.size:
            self._entries.clear()
        held = tuple(coalitions)
        if by_content:
            self._entries.setdefault((n, held), (held, answer))
        self._entries[self._identity(coalitions, n)] = (held, answer)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


# marginal_pairs of recent coalition lists: a batch draws the same list for every completion whose segment count
# leaves the whole window pool within the budget (read-only arrays, so a caller cannot change a cached answer).
_PAIRS_CACHE = CoalitionMemo()


def marginal_pairs(coalitions: Sequence[Coalition], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All sampled pairs ``(S, S ∪ {i})`` with both coalitions present.

    Returns:
        without_idx (P,), with_idx (P,): indices into ``coalitions``; player (P,): the added player ``i`` (read-only
        arrays, remembered for the same list of tuples).
    """
    return _pairs_and_sizes(coalitions, n)[:3]


def _pairs_and_sizes(coalitions: Sequence[Coalition], n: int) -> tuple[np.ndarray, ...]:
    """:func:`marginal_pairs` and the size ``|S|`` of each pair's smaller coalition (P,), remembered."""
    cached = _PAIRS_CACHE.get(coalitions, n)
    if cached is not None:
        return cached
    cached = _PAIRS_CACHE.get(coalitions, n, by_content=True)
    if cached is None:
        without_idx, with_idx, player = _marginal_pairs(coalitions, n)
        sizes = np.fromiter((len(c) for c in coalitions), dtype=np.int64, count=len(coalitions))[without_idx]
        cached = (without_idx, with_idx, player, sizes)
        for array in cached:
            array.flags.writeable = False
    _PAIRS_CACHE.put(coalitions, n, cached, by_content=True)  # also under these tuples' identities
    return cached


def _marginal_pairs(coalitions: Sequence[Coalition], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`marginal_pairs`, computed."""
    check_players(n)
    lengths, cols = player_indices(coalitions, n)
    k = len(coalitions)
    if k == 0 or n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    members = np.zeros((k, n), dtype=np.float32)
    rows = np.repeat(np.arange(k), lengths)
    members[rows, cols] = 1.0
    sizes = members.sum(axis=1)
    if not np.array_equal(sizes, lengths):
        bad = int(np.flatnonzero(sizes != lengths)[0])
        raise ValueError(f"coalition {bad} = {coalitions[bad]!r} names a player twice; a coalition is a set of players")
    overlap = members @ members.T  # (K, K): |S_a ∩ S_b|
    is_pair = (sizes[None, :] == sizes[:, None] + 1) & (overlap == sizes[:, None])
    without_idx, with_idx = np.nonzero(is_pair)
    player = np.argmax(members[with_idx] - members[without_idx], axis=1)
    return without_idx, with_idx, player


def segment_credit(
    coalitions: Sequence[Coalition], values: np.ndarray, n: int, *, variant: str = "owen"
) -> np.ndarray:
    """Segment credit from the values of sampled coalitions; ``variant`` is one of :data:`CREDIT_VARIANTS`.

    Every variant works from the sampled pairs ``(S, S ∪ {i})`` (both coalitions evaluated), with marginal
    ``Δ = v(S ∪ {i}) − v(S)``:

    * ``"owen"`` (default), stratified: average the marginals of player ``i`` within each coalition size, then
      average over the sizes observed. Exact Shapley gives every size the same total weight ``1/n``, so this
      equals exact Shapley when all coalitions are sampled, is exact on additive games whenever ``i`` has a
      pair, and — unlike a Shapley-weighted mean — does not let the ``∅ → {i}`` pair dominate (weight
      ``1/n`` against ``1/(n(n−1))`` for each size-1 pair), which matters when segments interact.
    * ``"weighted"``: the Shapley-weighted mean ``Σ w(|S|) Δ / Σ w(|S|)``; same guarantees, but in practice
      close to the singleton marginals ``v({i}) − v(∅)``.
    * ``"released"``: the released OSPO code, ``Σ w(|S|) Δ`` without renormalising. Its scale depends on how
      many pairs a player happens to have (edge segments have fewer windows), so it does not return the
      weights of an additive game; it equals exact Shapley only when every coalition is sampled.

    A player with no sampled pair gets (``owen``/``weighted``) an equal share of what the others leave of
    ``v(N) − v(∅)`` (0 if either is missing), so the estimate stays efficient; :func:`sample_coalitions`
    covers every player when ``M >= n + 2``.

    Args:
        coalitions: K sorted tuples; values: (K,) their values; n: number of players.

    Returns:
        phi: (n,) float64.
    """
    if variant not in CREDIT_VARIANTS:
        raise ValueError(f"unknown credit variant {variant!r}; expected one of {CREDIT_VARIANTS}")
    check_players(n)
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(coalitions),):
        raise ValueError(f"values has shape {values.shape}, expected ({len(coalitions)},) — one per coalition")
    if n == 0:
        player_indices(coalitions, n)  # a game without players has only empty coalitions
        return np.zeros(0)
    return _credit_of_rows(coalitions, values[None, :], n, variant)[0]


def segment_credit_batch(
    coalitions: Sequence[Sequence[Coalition]], values: Sequence[np.ndarray], n: Sequence[int], *, variant: str = "owen"
) -> list[np.ndarray]:
    """:func:`segment_credit` of many completions: entry ``b`` equals
    ``segment_credit(coalitions[b], values[b], n[b], variant=variant)`` bit for bit.

    Completions with the same coalition list (every text of ``n`` segments whose whole window pool fits the
    budget draws the same one) share one :func:`marginal_pairs` and one vectorised pass over their stacked
    values; a list equal (``==``) to one already checked is not checked again.

    Args:
        coalitions: B lists of K_b sorted tuples; values: B arrays (K_b,); n: (B,) players of each completion.

    Returns:
        B arrays, entry b of shape (n_b,).
    """
    if variant not in CREDIT_VARIANTS:
        raise ValueError(f"unknown credit variant {variant!r}; expected one of {CREDIT_VARIANTS}")
    if not len(coalitions) == len(values) == len(n):
        raise ValueError("coalitions, values and n need one entry per completion")
    groups: dict[tuple, list[int]] = {}
    for b, (rows, players) in enumerate(zip(coalitions, n, strict=True)):
        groups.setdefault((players, tuple(rows)), []).append(b)
    out: list[np.ndarray] = [np.zeros(0)] * len(coalitions)
    for (players, _), members in groups.items():
        if len(members) == 1 or players == 0:  # nothing to stack
            for b in members:
                out[b] = segment_credit(coalitions[b], values[b], players, variant=variant)
            continue
        first = coalitions[members[0]]
        check_players(players)
        rows = [np.asarray(values[b], dtype=np.float64) for b in members]
        bad = next((b for b, row in zip(members, rows, strict=True) if row.shape != (len(first),)), None)
        if bad is not None:
            raise ValueError(f"values[{bad}] has shape {np.shape(values[bad])}, expected ({len(first)},) — one per coalition")
        credit = _credit_of_rows(first, np.stack(rows), players, variant)
        for row, b in enumerate(members):
            out[b] = credit[row]
    return out


def _credit_of_rows(coalitions: Sequence[Coalition], values: np.ndarray, n: int, variant: str) -> np.ndarray:
    """:func:`segment_credit` of G games on the same coalitions, values (G, K) -> credit (G, n); n >= 1."""
    without_idx, with_idx, player, sizes = _pairs_and_sizes(coalitions, n)
    marginal = values[:, with_idx] - values[:, without_idx]  # (G, pairs)
    games = len(values)
    if variant == "owen":
        stratum = player * n + sizes  # (player, size) cells; sizes < n
        cells = (np.arange(games)[:, None] * (n * n) + stratum[None, :]).ravel()  # each game's cells in turn
        cell_sum = np.bincount(cells, weights=marginal.ravel(), minlength=games * n * n).reshape(games, n * n)
        cell_count = np.bincount(stratum, minlength=n * n)
        seen = cell_count > 0
        cell_mean = np.divide(cell_sum, cell_count, out=np.zeros((games, n * n)), where=seen)
        weighted = cell_mean.reshape(games, n, n).sum(axis=2)
        weight_sum = seen.reshape(n, n).sum(axis=1).astype(np.float64)
    else:
        weight = shapley_weight(sizes, n)
        slots = (np.arange(games)[:, None] * n + player[None, :]).ravel()
        weighted = np.bincount(slots, weights=(weight * marginal).ravel(), minlength=games * n).reshape(games, n)
        if variant == "released":
            return weighted
        weight_sum = np.bincount(player, weights=weight, minlength=n)
    covered = weight_sum > 0
    phi = np.zeros((games, n))
    phi[:, covered] = weighted[:, covered] / weight_sum[covered]
    if not covered.all():
        index = {c: j for j, c in enumerate(coalitions)}
        full, empty = index.get(tuple(range(n))), index.get(())
        if full is not None and empty is not None:
            residual = values[:, full] - values[:, empty] - phi[:, covered].sum(axis=1)
            phi[:, ~covered] = (residual / (~covered).sum())[:, None]
    return phi


def owen_estimate(
    coalitions: Sequence[Coalition], values: np.ndarray, n: int, *, estimator: str = "owen"
) -> np.ndarray:
    """Deprecated name of :func:`segment_credit` (``estimator`` is its ``variant``); removed in the next version.

    Renamed because not every variant is an Owen estimate (``"weighted"`` is a Shapley-weighted mean).
    """
    warnings.warn(
        "owen_estimate(..., estimator=...) is deprecated and will be removed in the next version; use "
        "segment_credit(..., variant=...) (the same function: not every variant is an Owen estimate)",
        DeprecationWarning,
        stacklevel=2,
    )
    return segment_credit(coalitions, values, n, variant=estimator)
