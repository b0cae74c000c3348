"""Coalition structures (ospo_gym.credit.structures): the samplers' contract, the structured Owen value's
properties (Shapley with singleton unions, exact when everything is enumerated, efficient), the unions."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from credit_games import table_game

from ospo_gym.credit import (
    COALITION_STRUCTURES,
    lexical_unions,
    sample_coalitions,
    sentence_unions,
    shapley_exact,
    structured_credit,
)
from ospo_gym.credit.owen import owen_exact
from ospo_gym.credit.structures import union_order


def every_coalition(n: int) -> list[tuple[int, ...]]:
    return [c for s in range(n + 1) for c in combinations(range(n), s)]


def owen_reference(v, unions: np.ndarray) -> np.ndarray:
    """owen_exact on the players renumbered union by union, mapped back to segment order."""
    order, sizes = union_order(unions)
    phi = np.empty(len(unions))
    phi[order] = owen_exact(lambda cs: v([tuple(sorted(int(order[j]) for j in c)) for c in cs]), sizes)
    return phi


def sample(n, structure, m, seed, unions=None):
    return sample_coalitions(n, 4, m, rng=seed, coalition_structure=structure, unions=unions)


@pytest.mark.parametrize("n", [2, 4, 7])
@pytest.mark.parametrize("seed", [0, 1])
def test_owen_with_singleton_unions_pools_every_coalition_and_equals_exact_shapley(n, seed):
    v = table_game(n, seed)
    coalitions = sample_coalitions(n, 8, None, rng=seed, coalition_structure="owen", unions=np.arange(n))
    assert sorted(coalitions) == sorted(every_coalition(n))
    phi = structured_credit(coalitions, v(coalitions), n, "owen", unions=np.arange(n))
    np.testing.assert_allclose(phi, shapley_exact(v, n), atol=1e-12)


@pytest.mark.parametrize("unions", [[3, 1, 3, 0, 1, 3, 2], [0, 0, 0, 0, 0, 0], [5, 2, 5, 2, 5, 2], [0, 1, 0, 1]])
def test_owen_from_every_coalition_equals_the_exact_owen_value_for_scattered_unions(unions):
    unions = np.asarray(unions)
    n = len(unions)
    v = table_game(n, 7)
    everything = every_coalition(n)
    phi = structured_credit(everything, v(everything), n, "owen", unions=unions)
    np.testing.assert_allclose(phi, owen_reference(v, unions), atol=1e-12)
    if len(set(unions.tolist())) == 1:  # one union: the Owen value is the Shapley value of its players
        np.testing.assert_allclose(phi, shapley_exact(v, n), atol=1e-12)


@pytest.mark.parametrize("budget", [6, 16, 40, None])
@pytest.mark.parametrize("unions", [[0, 1, 2, 0, 3, 1, 4, 5, 0], list(range(9)), [0] * 9])
def test_structured_owen_is_efficient_at_every_budget(budget, unions):
    n = 9
    v = table_game(n, 3)
    coalitions = sample(n, "owen", budget, 5, np.asarray(unions))
    phi = structured_credit(coalitions, v(coalitions), n, "owen", unions=unions)
    assert phi.shape == (n,) and np.isfinite(phi).all()
    assert phi.sum() == pytest.approx(v([tuple(range(n))])[0] - v([()])[0], abs=1e-10)


@pytest.mark.parametrize("structure", COALITION_STRUCTURES)
@pytest.mark.parametrize("n", [1, 3, 8, 14])
@pytest.mark.parametrize("budget", [2, 5, 24, 96, None])
def test_samplers_return_valid_deduplicated_coalitions_with_empty_and_full_within_budget(structure, n, budget):
    unions = np.random.default_rng(n).integers(0, max(1, n // 2), size=n) if structure == "owen" else None
    coalitions = sample(n, structure, budget, 11, unions)
    assert len(coalitions) == len(set(coalitions))
    assert all(list(c) == sorted(set(c)) and all(0 <= i < n for i in c) for c in coalitions)
    assert coalitions[0] == () and coalitions[-1] == tuple(range(n))
    if budget is not None:
        assert len(coalitions) <= budget
    assert coalitions == sample(n, structure, budget, 11, unions)  # seeded


@pytest.mark.parametrize("budget", [None, 30, 96])
@pytest.mark.parametrize("seed", [0, 4])
def test_the_option_gives_the_flags_coalitions_bit_for_bit(budget, seed):
    for structure, flags in [
        ("windows", {}),
        ("random", {"contiguous": False}),
        ("windows+complements", {"complements": True}),
    ]:
        assert sample_coalitions(14, 8, budget, rng=seed, coalition_structure=structure) == sample_coalitions(
            14, 8, budget, rng=seed, **flags
        )


def test_owen_budget_keeps_whole_marginal_pairs_and_singleton_coverage():
    """Under a budget the Owen sampler adds whole blocks: every segment keeps its ∅ → {i} pair."""
    unions = np.array([0, 1, 2, 3, 0, 4, 5, 6, 1, 7, 8, 9])
    coalitions = sample(12, "owen", 40, 2, unions)
    assert all((i,) in coalitions for i in range(12))
    assert (0, 4) in coalitions and (1, 8) in coalitions  # the two-segment unions, whole


def test_bad_structure_and_unions_raise_one_clear_error():
    with pytest.raises(ValueError, match="unknown coalition_structure"):
        sample_coalitions(4, coalition_structure="stripes")
    with pytest.raises(ValueError, match="needs unions="):
        sample_coalitions(4, coalition_structure="owen")
    with pytest.raises(ValueError, match=r"\(n,\) = \(4,\)"):
        sample_coalitions(4, coalition_structure="owen", unions=[0, 1])
    with pytest.raises(ValueError, match="not both"):
        sample_coalitions(4, coalition_structure="windows", contiguous=False)
    with pytest.raises(ValueError, match="only with coalition_structure='owen'"):
        sample_coalitions(4, unions=[0, 0, 1, 1])
    with pytest.raises(ValueError, match="variant='owen'"):
        structured_credit([(), (0,)], np.zeros(2), 1, "owen", unions=[0], variant="weighted")


def test_lexical_unions_join_shared_stems_far_apart_and_sentence_unions_follow_sentences():
    text = "tavoki bredu mosale tavoru pikanu mosali"
    spans = [(m.start(), m.end()) for m in __import__("re").finditer(r"\S+", text)]
    labels = lexical_unions(text, spans)
    assert labels[0] == labels[3] and labels[2] == labels[5]
    assert len({labels[1], labels[4], labels[0], labels[2]}) == 4
    text = "red shoes. blue laces! green"
    spans = [(0, 3), (4, 10), (11, 15), (16, 22), (23, 28)]
    np.testing.assert_array_equal(sentence_unions(text, spans), [0, 0, 1, 1, 2])
    with pytest.raises(ValueError, match="threshold"):
        lexical_unions(text, spans, threshold=0.0)
