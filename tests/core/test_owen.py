"""Two-level Owen credit (ospo_gym.credit.owen): exact values by enumeration, the estimate from pooled coalitions."""

from __future__ import annotations

import numpy as np
import pytest

from ospo_gym.credit import shapley_exact
from ospo_gym.credit.owen import owen_exact, two_level_coalitions, two_level_credit, union_sums


def table_game(n: int, seed: int):
    """A random game on n players: v(S) = table[mask(S)]."""
    table = np.random.default_rng(seed).random(1 << n)
    return lambda cs: np.array([table[sum(1 << i for i in c)] for c in cs]), table


def quotient(value, sizes):
    """The game of whole unions: v_M(R) = v(union of the players of R); unions of size 0 are skipped."""
    live = [u for u, b in enumerate(sizes) if b]
    offsets = np.cumsum(sizes) - np.array(sizes)
    return lambda cs: value([tuple(j for u in c for j in range(offsets[live[u]], offsets[live[u]] + sizes[live[u]])) for c in cs])


def test_owen_by_hand_on_two_unions():
    # players 0, 1 in union 0 and 2 in union 1; v = 1 only when players 0 and 2 are both in
    value = lambda cs: np.array([float({0, 2} <= set(c)) for c in cs])  # noqa: E731
    phi = owen_exact(value, [2, 1])
    # union level: Shapley of the quotient game {A, B}, v(A ∪ B) = 1 -> 1/2 each; inside A, player 0 takes it all
    np.testing.assert_allclose(phi, [0.5, 0.0, 0.5])


@pytest.mark.parametrize("sizes", [[2, 3, 1], [1, 1, 1, 1], [3, 0, 2], [4]])
def test_owen_sums_per_union_to_the_quotient_shapley_values(sizes):
    value, table = table_game(sum(sizes), seed=len(sizes))
    phi = owen_exact(value, sizes)
    assert phi.sum() == pytest.approx(table[-1] - table[0])
    live = [u for u, b in enumerate(sizes) if b]
    np.testing.assert_allclose(union_sums(phi, sizes)[live], shapley_exact(quotient(value, sizes), len(live)), atol=1e-12)
    if all(b == 1 for b in sizes):  # singleton unions: Owen is Shapley
        np.testing.assert_allclose(phi, shapley_exact(value, len(sizes)), atol=1e-12)


@pytest.mark.parametrize("union_efficient", [True, False])
def test_the_estimate_from_every_coalition_is_exact(union_efficient):
    sizes = [2, 0, 3, 1]
    value, _ = table_game(sum(sizes), seed=3)
    pool = two_level_coalitions(sizes, all_inner=True)
    estimate = two_level_credit(pool, value(pool), sizes, union_efficient=union_efficient)
    np.testing.assert_allclose(estimate, owen_exact(value, sizes), atol=1e-12)


def test_sampled_inner_windows_keep_exact_union_credit_and_additive_games():
    sizes = [5, 4, 3]
    value, _ = table_game(sum(sizes), seed=5)
    pool = two_level_coalitions(sizes, w_max=2, max_inner=6, rng=0)
    estimate = two_level_credit(pool, value(pool), sizes)
    np.testing.assert_allclose(union_sums(estimate, sizes), shapley_exact(quotient(value, sizes), 3), atol=1e-12)
    raw = two_level_credit(pool, value(pool), sizes, union_efficient=False)
    assert not np.allclose(union_sums(raw, sizes), union_sums(estimate, sizes))  # the shift did something here
    weights = np.random.default_rng(1).normal(size=sum(sizes))
    additive = lambda cs: np.array([weights[list(c)].sum() for c in cs])  # noqa: E731
    np.testing.assert_allclose(two_level_credit(pool, additive(pool), sizes), weights, atol=1e-12)


def test_many_unions_sample_outer_sets_deterministically():
    sizes = [1] * 9
    a = two_level_coalitions(sizes, rng=4)
    assert a == two_level_coalitions(sizes, rng=4) and len(a) < 2**9
    assert () in a and tuple(range(9)) in a


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="union_sizes"):
        two_level_coalitions([2, -1])
    with pytest.raises(ValueError, match="P <= 16"):
        owen_exact(lambda cs: np.zeros(len(cs)), [9, 8])
    with pytest.raises(ValueError, match="one per coalition"):
        two_level_credit([(), (0,)], np.zeros(3), [1])
