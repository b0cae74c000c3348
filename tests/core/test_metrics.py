"""Tests of ospo_gym.metrics: DCG / NDCG with linear gains."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ospo_gym.metrics import BINARY_GAINS, ESCI_GAINS, dcg, discounts, ndcg_at_k


def test_gain_tables():
    assert ESCI_GAINS == {"E": 1.0, "S": 0.1, "C": 0.01, "I": 0.0}
    assert BINARY_GAINS == {"E": 1.0, "S": 0.0, "C": 0.0, "I": 0.0}


def test_discounts():
    np.testing.assert_allclose(discounts(3), [1.0, 1 / math.log2(3), 0.5])


def test_dcg_hand_computed():
    gains = np.array([0.1, 1.0, 0.0, 0.01])
    expected = 0.1 / 1 + 1.0 / math.log2(3) + 0.0 / 2 + 0.01 / math.log2(5)
    assert dcg(gains, 10) == pytest.approx(expected)
    assert dcg(gains, 2) == pytest.approx(0.1 + 1.0 / math.log2(3))
    np.testing.assert_allclose(dcg(np.stack([gains, gains[::-1]]), 1), [0.1, 0.01])


def test_ndcg_hand_computed():
    # Ranking S, E, I, C; the pool also holds an unretrieved E.
    ranked = np.array([[0.1, 1.0, 0.0, 0.01]])
    ideal = np.array([[1.0, 0.1, 0.0, 0.01, 1.0]])
    actual = 0.1 + 1.0 / math.log2(3) + 0.01 / math.log2(5)
    best = 1.0 + 1.0 / math.log2(3) + 0.1 / 2 + 0.01 / math.log2(5)
    np.testing.assert_allclose(ndcg_at_k(ranked, ideal, 10), [actual / best])
    # At k=2 only the first two positions of each count.
    np.testing.assert_allclose(ndcg_at_k(ranked, ideal, 2), [(0.1 + 1.0 / math.log2(3)) / (1 + 1 / math.log2(3))])


def test_perfect_ranking_is_one():
    ideal = np.array([[0.0, 1.0, 0.1, 0.01, 1.0], [0.1, 0.0, 0.0, 0.0, 0.0]])
    ranked = -np.sort(-ideal, axis=1)
    np.testing.assert_allclose(ndcg_at_k(ranked, ideal, 3), [1.0, 1.0])
    np.testing.assert_allclose(ndcg_at_k(ranked, ideal, 10), [1.0, 1.0])


def test_empty_and_zero_gain_are_zero():
    # Nothing retrieved (all padding), a pool without gain, and an empty pool.
    ranked = np.zeros((3, 4))
    ideal = np.array([[1.0, 0.1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(ndcg_at_k(ranked, ideal, 10), [0.0, 0.0, 0.0])
    assert ndcg_at_k(np.zeros((2, 0)), np.zeros((2, 0)), 5).tolist() == [0.0, 0.0]
    assert ndcg_at_k(np.zeros((0, 3)), np.zeros((0, 3)), 5).shape == (0,)


def test_bad_inputs():
    with pytest.raises(ValueError, match="k must be"):
        ndcg_at_k(np.zeros((1, 2)), np.zeros((1, 2)), 0)
    with pytest.raises(ValueError, match="rows"):
        ndcg_at_k(np.zeros((1, 2)), np.zeros((2, 2)), 3)
    with pytest.raises(ValueError, match=">= 0"):
        ndcg_at_k(-np.ones((1, 2)), np.ones((1, 2)), 3)
    with pytest.raises(ValueError, match="finite"):
        ndcg_at_k(np.full((1, 2), np.nan), np.ones((1, 2)), 3)


gain_values = st.sampled_from([0.0, 0.01, 0.1, 1.0, 0.5, 3.0])


@settings(max_examples=200, deadline=None)
@given(
    pool=arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(0, 12)), elements=gain_values),
    data=st.data(),
    k=st.integers(1, 15),
)
def test_ndcg_in_unit_interval(pool, data, k):
    # Any ranking drawn from the pool (a subset, any order), padded with zeros.
    rows, width = pool.shape
    ranked = np.zeros((rows, width + 2))
    for r in range(rows):
        perm = data.draw(st.permutations(range(width)))
        take = data.draw(st.integers(0, width))
        ranked[r, :take] = pool[r, list(perm)[:take]]
    out = ndcg_at_k(ranked, pool, k)
    assert out.shape == (rows,)
    assert np.all(np.isfinite(out)) and np.all(out >= 0) and np.all(out <= 1)
    # The ideal ordering itself scores 1 wherever there is any gain in the top k.
    best = ndcg_at_k(-np.sort(-pool, axis=1), pool, k)
    np.testing.assert_allclose(best, np.where(pool.max(axis=1, initial=0) > 0, 1.0, 0.0))


@settings(max_examples=100, deadline=None)
@given(
    ranked=arrays(np.float64, st.tuples(st.just(2), st.integers(0, 8)), elements=st.floats(0, 10)),
    ideal=arrays(np.float64, st.tuples(st.just(2), st.integers(0, 8)), elements=st.floats(0, 10)),
    k=st.integers(1, 10),
)
def test_ndcg_bounded_for_arbitrary_gains(ranked, ideal, k):
    out = ndcg_at_k(ranked, ideal, k)
    assert np.all(np.isfinite(out)) and np.all((out >= 0) & (out <= 1))
