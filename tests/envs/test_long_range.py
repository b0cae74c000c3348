"""ospo/LongRange-v0: the designed layout, the designed interactions in the exact Shapley values, knob checks."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import ospo_gym  # noqa: F401 — registers the ids
from ospo_gym.envs.long_range import LongRangeEnv


def answer(env: LongRangeEnv, prompt_id: int) -> str:
    return env.prompt(prompt_id).split("write: ")[1].split(" |")[0]


def value(env: LongRangeEnv, prompt_id: int, words: list[int]) -> float:
    return float(env.rewards([prompt_id], [" ".join(env.vocabulary[w] for w in words)])[0])


@pytest.mark.parametrize("gap", [0, 2, 5])
def test_partners_sit_gap_fillers_apart_in_the_intended_answer(gap):
    env = LongRangeEnv(num_prompts=3, length=14, gap=gap)
    for p in range(3):
        order = env.answers[p]
        assert len(order) == 14 and len(set(order)) == 14
        for a, b in env.pairs[p]:
            assert order.index(int(b)) - order.index(int(a)) == gap + 1
        assert env.rewards([p], [answer(env, p)])[0] == pytest.approx(1.0)


def test_and_pair_member_has_zero_marginal_without_its_partner_and_the_bonus_with_it():
    env = LongRangeEnv(num_prompts=4, num_and_pairs=2, num_synergy_pairs=1, gap=2)
    scale = env._high - env._low
    for p in range(4):
        others = [w for w in env.answers[p]]
        for j in np.flatnonzero(env.is_and_pair):
            a, b = (int(x) for x in env.pairs[p, j])
            rest = [w for w in others if w not in (a, b)]
            assert value(env, p, [*rest, a]) == pytest.approx(value(env, p, rest), abs=1e-12)
            assert value(env, p, [*rest, b, a]) - value(env, p, [*rest, b]) == pytest.approx(env.bonus[p, j] / scale[p])


def test_exact_shapley_shows_the_designed_interactions():
    """Enumerated Shapley values equal the closed form: weight, plus half the bonus for each pair member."""
    env = LongRangeEnv(num_prompts=3, length=10, gap=3)
    for p in range(3):
        phi = env.ground_truth_credit(p, answer(env, p))
        scale = env._high[p] - env._low[p]
        expected = env.weights[p, env.answers[p]].copy()
        for (a, b), bonus in zip(env.pairs[p], env.bonus[p], strict=True):
            expected[env.answers[p].index(int(a))] += bonus / 2
            expected[env.answers[p].index(int(b))] += bonus / 2
        np.testing.assert_allclose(phi, expected / scale, atol=1e-12)
        np.testing.assert_allclose(phi.sum(), 1.0 - env.rewards([p], [""])[0], atol=1e-12)
        and_members = [env.answers[p].index(int(w)) for w in env.pairs[p][env.is_and_pair].ravel()]
        assert all(phi[i] > 0 for i in and_members)  # credited only through the partner


def test_related_partners_share_a_stem_and_unrelated_ones_do_not():
    related, unrelated = LongRangeEnv(num_prompts=4, related=True), LongRangeEnv(num_prompts=4, related=False)
    for p in range(4):
        for a, b in related.pairs[p]:
            assert a // 2 == b // 2 and related.vocabulary[a][:3] == related.vocabulary[b][:3]
        for a, b in unrelated.pairs[p]:
            assert a // 2 != b // 2
        families = [w // 2 for w in unrelated.answers[p]]
        assert len(set(families)) == len(families)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gap": 6, "length": 12}, "at most length"),
        ({"gap": -1}, "gap must be an int"),
        ({"length": 21}, "length must be an int"),
        ({"num_words": 7}, "even"),
        ({"num_words": 8}, "families"),
        ({"synergy": -1.0}, "synergy"),
        ({"related": "yes"}, "related"),
        ({"num_prompts": 0}, "num_prompts"),
    ],
)
def test_bad_knobs_raise_one_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gym.make("ospo/LongRange-v0", **kwargs)


def test_same_seed_same_env_and_a_new_seed_a_new_one():
    a, b, c = LongRangeEnv(seed=1), LongRangeEnv(seed=1), LongRangeEnv(seed=2)
    assert a.prompt(0) == b.prompt(0) and a.prompt(0) != c.prompt(0)
    np.testing.assert_array_equal(a.weights, b.weights)
