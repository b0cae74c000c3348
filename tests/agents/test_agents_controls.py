"""The control estimators (agents/controls.py): shuffled OSPO-PROP, leave-one-out credit, GRPO-λ."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import ospo_gym  # noqa: F401

pytest.importorskip("torch")

from ospo_gym.agents import AgentConfig, get_estimator, group_advantages, list_estimators  # noqa: E402
from ospo_gym.agents.controls import LeaveOneOut, make_grpo_lambda, shuffle_rows, trace_weights  # noqa: E402
from ospo_gym.agents.estimators import ospo_credit  # noqa: E402
from ospo_gym.credit import ospo_token_advantages, sample_coalitions, segment_credit  # noqa: E402
from tests.agents.test_agents_estimators import make_batch  # noqa: E402


@pytest.fixture
def env():
    return gym.make(
        "ospo/AdditiveKeywords-v0", vocab_size=16, num_prompts=2, num_positive=3, num_negative=3
    ).unwrapped


def distinct_word_texts(env, count: int, seed: int) -> list[str]:
    """Texts of distinct keywords (each keyword in one segment at most: the additive game without shared words)."""
    rng = np.random.default_rng(seed)
    return [
        " ".join(rng.choice(env.vocabulary, size=int(rng.integers(2, 9)), replace=False))
        for _ in range(count)
    ]


def test_controls_are_registered_on_import():
    assert {"ospo_shuffled", "ospo_loo", "grpo_lambda"} <= set(list_estimators())


@pytest.mark.parametrize("seed", range(3))
def test_shuffled_keeps_each_completions_multiset_of_token_advantages_and_its_mean(env, seed):
    texts = distinct_word_texts(env, 8, seed)
    batch = make_batch(texts, env.rewards([0] * 8, texts), np.repeat([0, 1], 4), step=seed)
    config = AgentConfig(algo="ospo_shuffled", w_max=3, max_coalitions=12, seed=seed)
    prop = get_estimator("ospo_prop")(batch, env.oracle, config)
    shuffled = get_estimator("ospo_shuffled")(batch, env.oracle, config)
    mask = batch.completion_mask
    for b in range(len(texts)):
        assert np.array_equal(np.sort(shuffled[b][mask[b]]), np.sort(prop[b][mask[b]]))
    assert np.all(shuffled[~mask] == 0.0)
    counts = mask.sum(axis=1)
    np.testing.assert_allclose(
        shuffled.sum(axis=1) / counts, group_advantages(batch.rewards, batch.group_index), atol=1e-9
    )
    assert not np.array_equal(shuffled, prop)  # the places do change
    np.testing.assert_array_equal(shuffled, get_estimator("ospo_shuffled")(batch, env.oracle, config))


def test_shuffle_rows_keeps_masked_entries_and_draws_per_row():
    values = np.array([[1.0, 2.0, 3.0, 0.0], [4.0, 5.0, 0.0, 0.0]])
    mask = values != 0
    out = shuffle_rows(values, mask, [np.random.default_rng(0), np.random.default_rng(1)])
    assert np.array_equal(out[~mask], values[~mask])
    assert sorted(out[0, :3]) == [1.0, 2.0, 3.0] and sorted(out[1, :2]) == [4.0, 5.0]


def test_leave_one_out_on_an_additive_oracle_equals_exact_shapley(env):
    for text in distinct_word_texts(env, 10, seed=4):
        spans = env.oracle.segment(text)
        plan = LeaveOneOut()
        coalitions = plan.coalitions(len(spans), np.random.default_rng(0))
        assert len(coalitions) == len(spans) + 1  # one extra coalition per segment, plus N
        credit = plan.credit(coalitions, env.oracle.values(0, text, spans, coalitions), len(spans))
        np.testing.assert_allclose(credit, env.ground_truth_credit(0, text), atol=1e-12)


def test_leave_one_out_is_not_shapley_where_segments_share_a_keyword(env):
    word = env.vocabulary[int(np.flatnonzero(env.weights[0] != 0)[0])]
    text = f"{word} {word}"  # the keyword counts once: removing either copy changes nothing
    spans = env.oracle.segment(text)
    coalitions = LeaveOneOut().coalitions(2, np.random.default_rng(0))
    credit = LeaveOneOut().credit(coalitions, env.oracle.values(0, text, spans, coalitions), 2)
    np.testing.assert_array_equal(credit, [0.0, 0.0])
    assert np.all(env.ground_truth_credit(0, text) != 0.0)  # Shapley splits the weight between the copies


def test_ospo_loo_redistributes_exact_shapley_like_prop(env):
    texts = distinct_word_texts(env, 6, seed=5)
    batch = make_batch(texts, env.rewards([0] * 6, texts), np.repeat([0, 1], 3))
    config = AgentConfig(algo="ospo_loo")
    calls = env.oracle.num_calls
    loo = get_estimator("ospo_loo")(batch, env.oracle, config)
    assert env.oracle.num_calls - calls == 1  # one batched oracle call
    spans = [env.oracle.segment(t) for t in texts]
    exact = [env.ground_truth_credit(0, t) for t in texts]
    advantages = group_advantages(batch.rewards, batch.group_index)
    expected = ospo_token_advantages(
        spans, exact, batch.token_offsets, advantages, mask=batch.completion_mask
    )
    np.testing.assert_allclose(loo, expected, atol=1e-9)


def test_the_plan_hook_reproduces_ospo_when_it_does_what_ospo_does(env):
    class Same:
        def coalitions(self, n, rng):
            return sample_coalitions(n, config.w_max, config.max_coalitions, rng=rng)

        def credit(self, coalitions, values, n):
            return segment_credit(coalitions, values, n, variant=config.credit_variant)

    texts = distinct_word_texts(env, 8, seed=6)
    batch = make_batch(texts, env.rewards([0] * 8, texts), np.repeat([0, 1], 4), step=3)
    config = AgentConfig(algo="ospo_prop", w_max=2, max_coalitions=6)  # the budget bites: sampling is seeded
    np.testing.assert_array_equal(
        ospo_credit(batch, env.oracle, config, "prop", plan=Same()),
        get_estimator("ospo_prop")(batch, env.oracle, config),
    )


def test_trace_weights_hand_computed():
    mask = np.array([[True, True, True, False], [True, False, False, False]])
    np.testing.assert_allclose(trace_weights(mask, 0.5), [[1.75, 1.5, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(trace_weights(mask, 1.0), [[3.0, 2.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(trace_weights(mask, 0.0), mask.astype(float))


def test_grpo_lambda_is_grpo_times_the_trace_and_grpo_at_lambda_zero(env):
    texts = distinct_word_texts(env, 4, seed=7)
    batch = make_batch(texts, env.rewards([0] * 4, texts), [0, 0, 1, 1])
    config = AgentConfig(algo="grpo_lambda")
    grpo = get_estimator("grpo")(batch, env.oracle, config)
    np.testing.assert_array_equal(make_grpo_lambda(0.0)(batch, env.oracle, config), grpo)
    traced = get_estimator("grpo_lambda")(batch, env.oracle, config)
    np.testing.assert_allclose(traced, grpo * trace_weights(batch.completion_mask, 0.99))
    assert np.all(traced[~batch.completion_mask] == 0.0)
    with pytest.raises(ValueError, match="lam in"):
        make_grpo_lambda(1.5)
