"""The additive task: closed-form Shapley values equal enumeration, and the Owen estimate recovers them."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import ospo_gym  # noqa: F401
from ospo_gym.credit import sample_coalitions, segment_credit, shapley_exact


@pytest.fixture
def env():
    return gym.make("ospo/AdditiveKeywords-v0", vocab_size=20, num_prompts=3, seed=5).unwrapped


def random_text(env, rng, length=10):
    return " ".join(rng.choice(list(env.vocabulary) + ["filler", "words"], size=length))


def test_reward_hand_case(env):
    weights = env.weights[0]
    positive = [env.vocabulary[i] for i in np.flatnonzero(weights > 0)]
    negative = [env.vocabulary[i] for i in np.flatnonzero(weights < 0)]
    r = env.rewards([0, 0, 0, 0], [" ".join(positive), " ".join(negative), "", " ".join(positive + negative)])
    low, high = weights[weights < 0].sum(), weights[weights > 0].sum()
    np.testing.assert_allclose(r, [1.0, 0.0, -low / (high - low), (high + low - low) / (high - low)])


def test_repeated_keywords_count_once(env):
    word = env.vocabulary[int(np.argmax(env.weights[0]))]
    assert env.rewards([0], [word])[0] == env.rewards([0], [f"{word} {word.upper()}, {word}"])[0]


@pytest.mark.parametrize("seed", range(5))
def test_closed_form_equals_enumeration(env, seed):
    rng = np.random.default_rng(seed)
    pid = int(rng.integers(3))
    text = random_text(env, rng, length=int(rng.integers(1, 12)))
    spans = env.oracle.segment(text)
    exact = shapley_exact(lambda cs: env.oracle.values(pid, text, spans, cs), len(spans))
    np.testing.assert_allclose(env.ground_truth_credit(pid, text), exact, atol=1e-12)


def test_closed_form_with_phrase_segments():
    env = gym.make("ospo/AdditiveKeywords-v0", vocab_size=20, num_prompts=2, segmentation="sentence").unwrapped
    words = list(env.vocabulary)
    text = f"{words[0]} {words[1]}. {words[1]} {words[2]}! {words[3]}."
    spans = env.oracle.segment(text)
    assert len(spans) == 3
    exact = shapley_exact(lambda cs: env.oracle.values(1, text, spans, cs), len(spans))
    np.testing.assert_allclose(env.ground_truth_credit(1, text), exact, atol=1e-12)


@pytest.mark.parametrize(("w_max", "budget"), [(1, 12), (2, 14), (4, 30), (8, 96)])
def test_segment_credit_recovers_scaled_weights(env, w_max, budget):
    rng = np.random.default_rng(w_max)
    words = rng.choice(env.vocabulary, size=10, replace=False)  # distinct keywords: additive over segments
    text = " ".join(words)
    spans = env.oracle.segment(text)
    coalitions = sample_coalitions(len(spans), w_max, budget, rng=0)
    credit = segment_credit(coalitions, env.oracle.values(2, text, spans, coalitions), len(spans))
    np.testing.assert_allclose(credit, env.ground_truth_credit(2, text), atol=1e-12)


def test_shared_weights_and_hint_noise():
    shared = gym.make("ospo/AdditiveKeywords-v0", num_prompts=5, shared_weights=True).unwrapped
    assert (shared.weights == shared.weights[0]).all()
    noisy = gym.make("ospo/AdditiveKeywords-v0", num_prompts=20, hint_noise=1.0).unwrapped
    listed = " ".join(noisy.prompt(p) for p in noisy.prompt_ids)
    helpful = {noisy.vocabulary[i] for i in np.flatnonzero(noisy.weights[0] > 0)}
    assert not helpful & set(noisy.prompt(0).split())
    assert listed


@pytest.mark.parametrize(
    "kwargs", [{"vocab_size": 3}, {"num_prompts": 0}, {"hint_noise": 2.0}, {"num_positive": 0}]
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        gym.make("ospo/AdditiveKeywords-v0", **kwargs)


def test_chunk_memo_keywords_equal_parsing_the_whole_text(env):
    """score_texts parses a text one space-separated chunk at a time (remembered): the same keyword list as the whole
    text's parse, on words glued by punctuation, underscores, other whitespace, and letters whose lower case depends
    on their neighbours (final sigma) or changes length (İ)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    words = [*env.vocabulary[:6], "ΟΔΟΣ", "Σ", "İ", "a_b", "x.y", "\u00c5", ""]
    pieces = st.lists(st.sampled_from([*words, " ", "  ", "\t", "\n", ".", "_", "Σ", "'"]), max_size=12)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(pieces.map("".join), min_size=1, max_size=4).map(" ".join))
    def check(text):
        assert env._text_keywords(text) == env._keywords(text)

    check()
    env._chunk_keywords.clear()
    texts = [" ".join(env.vocabulary[i] for i in np.random.default_rng(s).integers(0, 20, 5)) for s in range(20)]
    want = env.score_texts([0] * len(texts), texts)
    assert env._chunk_keywords  # the memo was filled
    np.testing.assert_array_equal(env.score_texts([0] * len(texts), texts), want)
