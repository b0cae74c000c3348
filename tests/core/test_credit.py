"""Credit core: known answers, invariances and properties (all fast)."""

from __future__ import annotations

from itertools import combinations
from math import comb, factorial

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ospo_gym.credit as credit_package
from ospo_gym.credit import (
    CREDIT_VARIANTS,
    average_ranks,
    clip_token_advantages,
    contiguous_coalitions,
    marginal_pairs,
    minmax_normalise,
    noncontiguous_coalitions,
    ospo_token_advantages,
    owen_estimate,
    redistribute_prop,
    redistribute_rank,
    sample_coalitions,
    segment_credit,
    shapley_exact,
    shapley_weight,
    token_weights,
)


def additive(weights, offset=0.0):
    weights = np.asarray(weights, dtype=float)
    return lambda cs: np.array([offset + weights[list(c)].sum() for c in cs])


def brute_force_shapley(value, n):
    """Textbook formula over all subsets, one coalition at a time (independent of the vectorised code)."""
    phi = np.zeros(n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            for subset in combinations(others, size):
                weight = factorial(size) * factorial(n - size - 1) / factorial(n)
                phi[i] += weight * (value([tuple(sorted((*subset, i)))])[0] - value([subset])[0])
    return phi


# -- coalitions --------------------------------------------------------------------------------------------


def test_contiguous_coalitions_hand_case():
    assert contiguous_coalitions(4, 2) == [(), (0,), (1,), (2,), (3,), (0, 1), (1, 2), (2, 3), (0, 1, 2, 3)]
    assert contiguous_coalitions(2, 8) == [(), (0,), (1,), (0, 1)]  # full set appears once
    assert contiguous_coalitions(0, 3) == [()]


@pytest.mark.parametrize(("n", "w_max"), [(1, 1), (5, 1), (6, 2), (10, 8), (12, 12), (30, 4)])
def test_contiguous_count_is_at_most_n_times_w(n, w_max):
    coalitions = contiguous_coalitions(n, w_max)
    windows = [c for c in coalitions if c and len(c) <= w_max]
    assert len(windows) == sum(n - w + 1 for w in range(1, min(w_max, n) + 1)) <= n * w_max
    assert len(set(coalitions)) == len(coalitions)
    assert all(c == tuple(range(c[0], c[0] + len(c))) for c in coalitions if c)


@given(n=st.integers(1, 30), w_max=st.integers(1, 10), budget=st.integers(2, 120), seed=st.integers(0, 99))
@settings(max_examples=60, deadline=None)
def test_sampled_coalitions_keep_empty_and_full_within_budget(n, w_max, budget, seed):
    coalitions = sample_coalitions(n, w_max, budget, rng=seed)
    assert coalitions[0] == () and coalitions[-1] == tuple(range(n))
    assert len(coalitions) <= max(budget, 2) and len(set(coalitions)) == len(coalitions)
    pool = set(contiguous_coalitions(n, w_max))
    assert set(coalitions) <= pool
    assert coalitions == sample_coalitions(n, w_max, budget, rng=seed)  # seeded
    singles = [c for c in coalitions if len(c) == 1]
    assert len(singles) == min(n, budget - 2) or n == 1  # singletons are covered first


def test_uniform_sampling_matches_released_behaviour():
    picks = {tuple(sample_coalitions(10, 8, 8, rng=s, cover_singletons=False)) for s in range(20)}
    assert len(picks) > 10  # genuinely random
    assert any(sum(len(c) == 1 for c in p) < 6 for p in picks)  # singletons are not forced


def test_noncontiguous_coalitions_are_subsets_of_bounded_size():
    rng = np.random.default_rng(0)
    coalitions = noncontiguous_coalitions(12, 3, 40, rng)
    inner = coalitions[1:-1]
    assert len(inner) == 40 and all(1 <= len(c) <= 3 for c in inner)
    assert any(c != tuple(range(c[0], c[0] + len(c))) for c in inner)  # some are not contiguous
    big = noncontiguous_coalitions(40, 8, 50, rng)  # rejection path
    assert len(set(big)) == len(big) == 52
    assert len(sample_coalitions(12, 3, None, rng=1, contiguous=False)) == len(contiguous_coalitions(12, 3))


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="w_max"):
        sample_coalitions(4, 0, 10)
    with pytest.raises(ValueError, match="max_coalitions"):
        sample_coalitions(4, 2, 1)


# -- exact Shapley -------------------------------------------------------------------------------------------


def test_shapley_exact_matches_textbook_formula_on_a_nonlinear_game():
    rng = np.random.default_rng(3)
    table = {c: rng.normal() for size in range(6) for c in combinations(range(5), size)}
    value = lambda cs: np.array([table[tuple(c)] for c in cs])  # noqa: E731
    np.testing.assert_allclose(shapley_exact(value, 5), brute_force_shapley(value, 5), atol=1e-12)


def test_shapley_weight_sums_to_one_per_player():
    n = 9
    sizes = np.arange(n)
    assert np.isclose(np.sum(shapley_weight(sizes, n) * [comb(n - 1, s) for s in sizes]), 1.0)
    assert shapley_weight(n, n) == 0.0
    assert np.isfinite(shapley_weight(np.arange(9), 10_000)).all()


games = st.lists(st.floats(-3, 3, allow_nan=False), min_size=1, max_size=7).flatmap(
    lambda ws: st.tuples(st.just(len(ws)), st.lists(st.floats(-2, 2, allow_nan=False), min_size=2 ** len(ws), max_size=2 ** len(ws)))
)


@given(games)
@settings(max_examples=60, deadline=None)
def test_shapley_efficiency_symmetry_dummy(game):
    n, raw = game
    values = np.asarray(raw)
    masks = {tuple(i for i in range(n) if m >> i & 1): m for m in range(2 ** n)}
    # make player n-1 a dummy (v(S ∪ {d}) = v(S)) and players 0, 1 symmetric when n >= 3
    dummy = n - 1
    table = {}
    for c, _m in masks.items():
        base = tuple(i for i in c if i != dummy)
        if n >= 3:
            swapped = tuple(sorted({0: 1, 1: 0}.get(i, i) for i in base))
            key = min(base, swapped)
        else:
            key = base
        table[c] = values[masks[key]]
    value = lambda cs: np.array([table[tuple(c)] for c in cs])  # noqa: E731
    phi = shapley_exact(value, n)
    assert np.isclose(phi.sum(), table[tuple(range(n))] - table[()])
    assert abs(phi[dummy]) < 1e-9
    if n >= 3:
        assert np.isclose(phi[0], phi[1])


def test_shapley_exact_rejects_large_n():
    with pytest.raises(ValueError, match="segment_credit"):
        shapley_exact(additive(np.zeros(30)), 30)


# -- Owen estimate -------------------------------------------------------------------------------------------


@given(
    weights=st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=24),
    w_max=st.integers(1, 12),
    extra=st.integers(0, 100),
    offset=st.floats(-1, 1),
    seed=st.integers(0, 1000),
    contiguous=st.booleans(),
)
@settings(max_examples=150, deadline=None)
@pytest.mark.parametrize("variant", ["owen", "weighted"])
def test_segment_credit_is_exact_on_additive_games(variant, weights, w_max, extra, offset, seed, contiguous):
    n = len(weights)
    budget = n + 2 + extra  # enough room for ∅, the full set and every singleton
    coalitions = sample_coalitions(n, w_max, budget, rng=seed, contiguous=contiguous, complements=extra % 2 == 1)
    values = additive(weights, offset)(coalitions)
    if contiguous:
        np.testing.assert_allclose(segment_credit(coalitions, values, n, variant=variant), weights, atol=1e-9)
    else:  # random subsets may leave a player without a pair: covered players are exact, efficiency holds
        phi = segment_credit(coalitions, values, n, variant=variant)
        _, _, player = marginal_pairs(coalitions, n)
        covered = np.isin(np.arange(n), player)
        np.testing.assert_allclose(phi[covered], np.asarray(weights)[covered], atol=1e-9)
        assert np.isclose(phi.sum(), sum(weights))


@given(
    weights=st.lists(st.floats(-5, 5, allow_nan=False), min_size=3, max_size=20),
    budget=st.integers(2, 30),
    seed=st.integers(0, 1000),
)
@settings(max_examples=80, deadline=None)
def test_segment_credit_below_coverage_budget_stays_efficient_and_exact_where_covered(weights, budget, seed):
    n = len(weights)
    coalitions = sample_coalitions(n, 4, budget, rng=seed)
    phi = segment_credit(coalitions, additive(weights)(coalitions), n)
    _, _, player = marginal_pairs(coalitions, n)
    covered = np.isin(np.arange(n), player)
    np.testing.assert_allclose(phi[covered], np.asarray(weights)[covered], atol=1e-9)
    assert np.isclose(phi.sum(), sum(weights))
    assert np.isfinite(phi).all()


@pytest.mark.parametrize("variant", ["owen", "weighted", "released"])
def test_every_credit_variant_equals_exact_shapley_when_every_coalition_is_sampled(variant):
    rng = np.random.default_rng(7)
    n = 6
    table = {c: rng.normal() for size in range(n + 1) for c in combinations(range(n), size)}
    value = lambda cs: np.array([table[tuple(c)] for c in cs])  # noqa: E731
    everything = list(table)
    estimate = segment_credit(everything, value(everything), n, variant=variant)
    np.testing.assert_allclose(estimate, shapley_exact(value, n), atol=1e-12)


def test_complements_pool_windows_and_their_complements():
    plain = sample_coalitions(6, 2, None)
    both = sample_coalitions(6, 2, None, complements=True)
    assert set(plain) < set(both)
    assert (0, 1, 2, 3, 4) in both and (2, 3, 4, 5) in both  # complements of {5} and {0, 1}
    assert both[0] == () and both[-1] == tuple(range(6)) and len(set(both)) == len(both)
    sampled = sample_coalitions(12, 8, 40, rng=0, complements=True)
    assert len(sampled) == 40 and sum(len(c) == 1 for c in sampled) == 12


def test_released_credit_variant_hand_case():
    # n = 3, coalitions ∅, {0}, {1}, {0,1}: player 0 has pairs (∅,{0}) w=1/3 and ({1},{0,1}) w=1/6
    coalitions = [(), (0,), (1,), (0, 1)]
    values = np.array([0.0, 1.0, 2.0, 4.0])
    phi = segment_credit(coalitions, values, 3, variant="released")
    np.testing.assert_allclose(phi, [1 / 3 * 1 + 1 / 6 * 2, 1 / 3 * 2 + 1 / 6 * 3, 0.0])
    weighted = segment_credit(coalitions, values, 3, variant="weighted")
    np.testing.assert_allclose(weighted, [(1 / 3 + 2 / 6) / 0.5, (2 / 3 + 3 / 6) / 0.5, 0.0])
    stratified = segment_credit(coalitions, values, 3)  # mean per size, then mean over sizes
    np.testing.assert_allclose(stratified, [(1 + 2) / 2, (2 + 3) / 2, 0.0])


def test_owen_estimate_and_estimators_are_deprecated_aliases_of_the_credit_variant_names():
    coalitions, values = [(), (0,), (1,), (0, 1)], np.array([0.0, 1.0, 2.0, 4.0])
    with pytest.warns(DeprecationWarning, match=r"use segment_credit\(\.\.\., variant=\.\.\.\)"):
        old = owen_estimate(coalitions, values, 3, estimator="weighted")
    np.testing.assert_array_equal(old, segment_credit(coalitions, values, 3, variant="weighted"))
    with pytest.warns(DeprecationWarning, match="use CREDIT_VARIANTS"):
        assert credit_package.ESTIMATORS == CREDIT_VARIANTS == ("owen", "weighted", "released")
    with pytest.raises(AttributeError, match="no attribute 'NOPE'"):
        credit_package.NOPE  # noqa: B018


def test_segment_credit_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown credit variant 'magic'"):
        segment_credit([()], np.zeros(1), 1, variant="magic")
    with pytest.raises(ValueError, match="one per coalition"):
        segment_credit([(), (0,)], np.zeros(3), 1)


@pytest.mark.parametrize(
    ("coalitions", "message"),
    [
        ([(), (-1,)], "names player -1"),  # used to wrap around to the last player silently
        ([(), (0, -2)], "names player -2"),
        ([(), (3,)], "names player 3"),
        ([(), (1.5,)], "not an int"),  # used to be truncated to player 1
        ([(), (np.float64(1.0),)], "not an int"),
        ([(), (True,)], "not an int"),
        ([(), ("0",)], "not an int"),
        ([(), (2**70,)], "names player"),
        ([(), 0], r"write a single player i as \(i,\)"),
        ([(), (0, 0)], "names a player twice"),
    ],
)
@pytest.mark.parametrize("variant", ["owen", "weighted", "released"])
def test_segment_credit_rejects_bad_player_indices(coalitions, message, variant):
    with pytest.raises(ValueError, match=message):
        segment_credit(coalitions, np.zeros(len(coalitions)), 3, variant=variant)


def test_segment_credit_checks_the_number_of_players():
    for n in (-1, 1.5, True):
        with pytest.raises(ValueError, match="number of players"):
            segment_credit([()], np.zeros(1), n)
    with pytest.raises(ValueError, match="names player 0"):
        segment_credit([(), (0,)], np.zeros(2), 0)
    with pytest.raises(ValueError, match="names player -1"):
        marginal_pairs([(), (-1,)], 2)


def test_segment_credit_of_valid_indices_is_unchanged_by_their_int_type():
    coalitions = sample_coalitions(7, 3, 20, rng=1)
    values = np.random.default_rng(0).random(len(coalitions))
    expected = segment_credit(coalitions, values, 7)
    as_numpy = [tuple(np.int64(i) for i in c) for c in coalitions]
    np.testing.assert_array_equal(segment_credit(as_numpy, values, 7), expected)
    np.testing.assert_array_equal(segment_credit([list(c) for c in coalitions], values, np.int64(7)), expected)


# -- tokens --------------------------------------------------------------------------------------------------


def test_token_weights_by_character_overlap():
    spans = [(0, 4), (5, 9)]
    offsets = np.array([[0, 2], [2, 6], [6, 9], [9, 10], [3, 3]])
    weights = token_weights(spans, offsets)
    # token [2,6) overlaps span 0 by 2 chars and span 1 by 1 char -> shares 2/3, 1/3
    np.testing.assert_allclose(weights[:, 1], [2 / 3, 1 / 3])
    np.testing.assert_allclose(weights[:, 0], [1, 0])
    np.testing.assert_allclose(weights[:, 3], [0, 0])  # outside every span
    np.testing.assert_allclose(weights[:, 4], [0, 0])  # empty token


def test_minmax_constant_row_is_half_and_masked_is_zero():
    credit = np.array([[2.0, 2.0, 9.0], [1.0, 3.0, 2.0]])
    mask = np.array([[True, True, False], [True, True, True]])
    np.testing.assert_allclose(minmax_normalise(credit, mask), [[0.5, 0.5, 0], [0, 1, 0.5]])


def test_prop_hand_case():
    credit = np.array([[0.0, 1.0, 3.0, 0.0]])
    mask = np.array([[True, True, True, False]])
    out = redistribute_prop(credit, mask, np.array([2.0]))
    np.testing.assert_allclose(out, [[0.0, 3 * 2 * 0.25, 3 * 2 * 0.75, 0.0]])


def test_rank_hand_case_highest_credit_gets_largest_share():
    credit = np.array([[0.2, 0.9, 0.5, 0.5]])
    mask = np.ones((1, 4), dtype=bool)
    np.testing.assert_allclose(average_ranks(credit, mask), [[1, 4, 2.5, 2.5]])
    out = redistribute_rank(credit, mask, np.array([1.0]))
    np.testing.assert_allclose(out, [[4 * 1 / 10, 4 * 4 / 10, 4 * 2.5 / 10, 4 * 2.5 / 10]])
    released = redistribute_rank(credit, mask, np.array([1.0]), order="released")
    assert released[0, 1] == 0.0  # the released ordering gives the best token nothing
    assert np.isclose(released.sum(), 4.0)


advantage_batches = st.integers(1, 5).flatmap(
    lambda b: st.tuples(
        st.lists(st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=40), min_size=b, max_size=b),
        st.lists(st.floats(-5, 5, allow_nan=False), min_size=b, max_size=b),
    )
)


@given(advantage_batches, st.sampled_from(["prop", "rank"]))
@settings(max_examples=150, deadline=None)
def test_token_advantages_average_to_sequence_advantage(batch, mode):
    rows, advantages = batch
    advantages = np.asarray(advantages)
    width = max(len(r) for r in rows) + 3
    credit = np.zeros((len(rows), width))
    mask = np.zeros((len(rows), width), dtype=bool)
    for i, r in enumerate(rows):
        credit[i, : len(r)] = r
        mask[i, : len(r)] = True
    normalised = minmax_normalise(credit, mask)
    out = (redistribute_prop if mode == "prop" else redistribute_rank)(normalised, mask, advantages)
    assert np.isfinite(out).all()
    np.testing.assert_allclose((out * mask).sum(1) / mask.sum(1), advantages, atol=1e-9)
    assert (out[~mask] == 0).all()


def test_masked_tokens_change_nothing():
    credit = np.array([[0.1, 0.7, 0.4, 0.0]])
    mask = np.array([[True, True, True, False]])
    garbage = credit.copy()
    garbage[0, 3] = 1e9
    for fn in (redistribute_prop, redistribute_rank):
        np.testing.assert_allclose(
            fn(minmax_normalise(credit, mask), mask, np.array([1.5])),
            fn(minmax_normalise(garbage, mask), mask, np.array([1.5])),
        )


def test_pipeline_fallbacks_never_nan():
    offsets = [np.array([[0, 3], [4, 7], [8, 11]])]
    for spans, credit in [([], np.zeros(0)), ([(0, 3)], np.array([5.0])), ([(0, 3), (4, 7)], np.array([1.0, 1.0]))]:
        for mode in ("prop", "rank"):
            out = ospo_token_advantages([spans], [credit], offsets, np.array([-0.7]), redistribution=mode)
            np.testing.assert_allclose(out, [[-0.7, -0.7, -0.7]])  # uniform: GRPO's advantage
    out = ospo_token_advantages([[(0, 3), (4, 7)]], [np.array([1.0, -1.0])], offsets, np.array([0.0]))
    np.testing.assert_allclose(out, 0.0)  # Â = 0
    empty = ospo_token_advantages([[]], [np.zeros(0)], [np.zeros((0, 2))], np.array([1.0]))
    assert empty.shape == (1, 0)


def test_prop_zero_reward_released_vs_fixed():
    credit = np.array([[0.0, 1.0, 0.5]])
    mask = np.ones((1, 3), dtype=bool)
    fixed = redistribute_prop(credit, mask, np.array([-1.0]), rewards=np.array([0.0]))
    released = redistribute_prop(credit, mask, np.array([-1.0]), rewards=np.array([0.0]), released=True)
    np.testing.assert_allclose(fixed.mean(), -1.0)
    np.testing.assert_allclose(released, 0.0)  # the released code drops the signal of a zero-reward completion
    with pytest.raises(ValueError, match="rewards"):
        redistribute_prop(credit, mask, np.array([1.0]), released=True)


def test_high_credit_segment_tokens_get_more_advantage():
    # "red shoes cheap" with tokens per word; the first two words form the valuable segment
    spans = [(0, 9), (10, 15)]
    offsets = np.array([[0, 3], [4, 9], [10, 15]])
    out = ospo_token_advantages([spans], [np.array([0.8, 0.1])], [offsets], np.array([1.0]))
    assert out[0, 0] == out[0, 1] > out[0, 2]
    neg = ospo_token_advantages([spans], [np.array([0.8, 0.1])], [offsets], np.array([-1.0]))
    assert neg[0, 0] < neg[0, 2]  # negative Â: the credited tokens carry the blame


def test_clip_token_advantages():
    token = np.array([[5.0, -5.0, 0.1]])
    seq = np.array([1.0, -1.0])
    bound = 2 * np.std(seq, ddof=1)
    np.testing.assert_allclose(clip_token_advantages(token, seq), np.clip(token, -bound, bound))
    np.testing.assert_allclose(clip_token_advantages(token, np.array([1.0])), token)
    np.testing.assert_allclose(clip_token_advantages(token, np.array([0.0, 0.0])), token)


# -- credit_path="released": hand values read off the released code (ospo_utils.py, train_ospo.py) ---------------
# RANK there: pbrs = φ̃ · R / max(Σφ̃, 1e-4) over the padded row; rank = place in a descending sort (0 = highest;
# ties in position order); A = Â · T · rank / Σ rank. PROP: A = Â · T · pbrs / max(Σ pbrs, 1e-4).


def test_released_rank_at_zero_reward_follows_token_position():
    credit, mask = np.array([[1.0, 0.0, 0.5, 0.25]]), np.ones((1, 4), dtype=bool)
    # R = 0: every pbrs is 0, ranks [0, 1, 2, 3], Σ = 6, A = −1 · 4 · rank / 6
    out = redistribute_rank(credit, mask, np.array([-1.0]), order="released", rewards=np.array([0.0]))
    np.testing.assert_allclose(out, [[0.0, -2 / 3, -4 / 3, -2.0]])
    # without rewards φ̃ itself is ranked (descending 1, .5, .25, 0 -> ranks [0, 3, 1, 2])
    unscaled = redistribute_rank(credit, mask, np.array([-1.0]), order="released")
    np.testing.assert_allclose(unscaled, [[0.0, -2.0, -2 / 3, -4 / 3]])


def test_released_rank_negative_reward_reverses_the_order_and_padding_takes_ranks():
    credit = np.array([[1.0, 0.0, 0.5, 0.25, 0.0, 0.0]])
    mask = np.array([[True, True, True, True, False, False]])
    # R = −0.5: pbrs ∝ [−1, 0, −.5, −.25, 0, 0]; descending: token 1 and the two padding zeros (position order),
    # then tokens 3, 2, 0 -> ranks [5, 0, 4, 3, 1, 2], masked Σ = 12, A = 1 · 4 · rank / 12
    out = redistribute_rank(credit, mask, np.array([1.0]), order="released", rewards=np.array([-0.5]))
    np.testing.assert_allclose(out, [[5 / 3, 0.0, 4 / 3, 1.0, 0.0, 0.0]])


RED_SHOES = ([(0, 9), (14, 17)], np.array([[0, 3], [4, 7], [7, 9], [10, 13], [14, 17]]))  # "red shoes for men"


@pytest.mark.parametrize(
    ("tied", "mode", "expected"),
    [
        # tied credit 0.3: token credit [.3, .3, .3, 0, .3] -> min–max [1, 1, 1, 0, 1]
        (0.3, "prop", [1.25, 1.25, 1.25, 0.0, 1.25]),  # 5 · φ̃ / 4
        (0.3, "rank", [0.0, 0.5, 1.0, 2.0, 1.5]),  # ranks [0, 1, 2, 4, 3] / 10 · 5
        # tied credit −0.2: [−.2, −.2, −.2, 0, −.2] -> min–max [0, 0, 0, 1, 0]: only "for" has credit
        (-0.2, "prop", [0.0, 0.0, 0.0, 5.0, 0.0]),
        (-0.2, "rank", [0.5, 1.0, 1.5, 0.0, 2.0]),  # ranks [1, 2, 3, 0, 4] / 10 · 5
    ],
)
def test_released_path_all_tie_row_gives_tokens_outside_the_segments_the_other_extreme(tied, mode, expected):
    spans, offsets = RED_SHOES
    args = ([spans], [np.array([tied, tied])], [offsets], np.array([1.0]))
    out = ospo_token_advantages(*args, redistribution=mode, rewards=np.array([0.6]), credit_path="released")
    np.testing.assert_allclose(out, [expected])
    default = ospo_token_advantages(*args, redistribution=mode, rewards=np.array([0.6]))
    np.testing.assert_allclose(default, np.ones((1, 5)))  # our default: a tie says nothing, GRPO's uniform Â


def test_released_path_prop_zero_reward_gives_zero_advantage_and_one_segment_is_uniform():
    spans, offsets = RED_SHOES
    zero = ospo_token_advantages(
        [spans], [np.array([0.4, 0.1])], [offsets], np.array([-1.0]), rewards=np.array([0.0]), credit_path="released"
    )
    np.testing.assert_allclose(zero, 0.0)
    # one segment: uniform credit 1/T; R = −0.4 puts the padding zero above it: ranks [1, 2, 3 | 0], A = .5 · 3 · r / 6
    mask = np.array([[True, True, True, False]])
    words = np.array([[0, 3], [4, 7], [8, 11]])
    rank = ospo_token_advantages(
        [[(0, 11)]], [np.array([2.0])], [words], np.array([0.5]), redistribution="rank", mask=mask,
        rewards=np.array([-0.4]), credit_path="released",
    )  # fmt: skip
    np.testing.assert_allclose(rank, [[0.25, 0.5, 0.75, 0.0]])
    prop = ospo_token_advantages(
        [[(0, 11)]], [np.array([2.0])], [words], np.array([0.5]), mask=mask, rewards=np.array([0.7]),
        credit_path="released",
    )  # fmt: skip
    np.testing.assert_allclose(prop, [[0.5, 0.5, 0.5, 0.0]])


def test_released_path_errors():
    spans, offsets = RED_SHOES
    args = ([spans], [np.array([0.4, 0.1])], [offsets], np.array([1.0]))
    with pytest.raises(ValueError, match="credit_path='released' needs rewards"):
        ospo_token_advantages(*args, credit_path="released")
    with pytest.raises(ValueError, match="rewards has shape"):
        ospo_token_advantages(*args, rewards=np.array([1.0, 2.0]), credit_path="released")
    with pytest.raises(ValueError, match="unknown credit path 'paper'"):
        ospo_token_advantages(*args, credit_path="paper")


def test_marginal_pairs_remembers_a_list_of_int_tuples_and_still_checks_other_input():
    import ospo_gym.credit.shapley as shapley

    shapley._PAIRS_CACHE.clear()
    coalitions = [(), (0,), (1,), (2,), (0, 1), (1, 2), (0, 1, 2)]
    first = marginal_pairs(coalitions, 3)
    again = marginal_pairs(list(coalitions), 3)  # an equal list: the remembered arrays
    assert all(a is b for a, b in zip(first, again, strict=True))
    computed = shapley._marginal_pairs(coalitions, 3)
    assert all(np.array_equal(a, b) for a, b in zip(first, computed, strict=True))
    with pytest.raises(ValueError):
        first[0][0] = 5  # read-only: a caller cannot change the remembered answer
    # equal as Python values, but not valid coalitions: never answered from the cache
    with pytest.raises(ValueError, match="not an int"):
        marginal_pairs([tuple(float(i) for i in c) for c in coalitions], 3)
    with pytest.raises(ValueError):
        marginal_pairs(coalitions, True)


def test_marginal_pairs_identity_entries_keep_their_own_tuples_alive():
    """A list of the same tuple objects is answered by their identities; the entry holds those very tuples (an
    entry holding another, equal list's tuples would let these die and their ids name other coalitions)."""
    import ospo_gym.credit.shapley as shapley

    shapley._PAIRS_CACHE.clear()
    first = [(), (0,), (1,), (0, 1)]
    marginal_pairs(first, 2)
    second = [tuple(list(c)) for c in first]  # equal tuples, other objects
    assert [id(c) for c in second] != [id(c) for c in first]
    answer = marginal_pairs(second, 2)
    held, arrays = shapley._PAIRS_CACHE._entries[("is", 2, *map(id, second))]
    assert all(h is c for h, c in zip(held, second, strict=True))
    assert all(a is b for a, b in zip(arrays[:3], answer, strict=True))
    assert marginal_pairs(second, 2) is not None and len(shapley._PAIRS_CACHE) == 3  # content + two identities


def test_segment_credit_batch_equals_segment_credit_row_by_row():
    from ospo_gym.credit import sample_coalitions_batch, segment_credit_batch

    rng = np.random.default_rng(3)
    for variant in ("owen", "weighted", "released"):
        for budget in (None, 96, 12):
            sizes = rng.integers(0, 16, size=20).tolist() + [5, 5, 5]  # repeats: stacked groups
            coalitions = sample_coalitions_batch(sizes, 4, budget, seeds=list(range(len(sizes))), cover_singletons=budget != 12)
            values = [np.round(rng.normal(size=len(c)), 2) for c in coalitions]
            got = segment_credit_batch(coalitions, values, sizes, variant=variant)
            for c, v, n, g in zip(coalitions, values, sizes, got, strict=True):
                assert np.array_equal(g.view(np.int64), segment_credit(c, v, n, variant=variant).view(np.int64))
    with pytest.raises(ValueError, match="one entry per completion"):
        segment_credit_batch([[()]], [np.zeros(1)], [0, 1])
    with pytest.raises(ValueError, match=r"values\[1\] has shape"):
        segment_credit_batch([[(), (0,)]] * 2, [np.zeros(2), np.zeros(3)], [1, 1])
