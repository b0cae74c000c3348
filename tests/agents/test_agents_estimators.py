"""Advantage estimators: the registry, GRPO's hand-computed advantages, OSPO's mean preservation and credit."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest

import ospo_gym  # noqa: F401

pytest.importorskip("torch")

from ospo_gym.agents import AgentConfig, RolloutBatch, get_estimator, group_advantages, register_estimator  # noqa: E402
from ospo_gym.agents.estimators import list_estimators, zero_variance_groups  # noqa: E402


def word_offsets(text: str) -> np.ndarray:
    """One 'token' per word (leading space included, as byte-level BPE does), then an EOS token."""
    spans = [(m.start(), m.end()) for m in re.finditer(r"\s*\S+", text)]
    return np.asarray(spans + [(len(text), len(text))], dtype=np.int64).reshape(-1, 2)


def make_batch(texts, rewards, group_index, prompt_ids=None, step=0) -> RolloutBatch:
    offsets = [word_offsets(t) for t in texts]
    width = max(len(o) for o in offsets)
    mask = np.zeros((len(texts), width), dtype=bool)
    for b, o in enumerate(offsets):
        mask[b, : len(o)] = True
    prompt_ids = [0] * len(texts) if prompt_ids is None else prompt_ids
    return RolloutBatch(prompt_ids, group_index, rewards, texts, offsets, mask, step)


@pytest.fixture
def env():
    return gym.make("ospo/AdditiveKeywords-v0", vocab_size=16, num_prompts=2, num_positive=3, num_negative=3).unwrapped


def test_group_advantages_hand_computation():
    rewards = np.array([1.0, 0.0, 0.5, 0.5, 0.2, 0.4])
    groups = np.array([0, 0, 0, 0, 1, 1])
    a = group_advantages(rewards, groups, "group")
    # group 0: mean 0.5, unbiased std sqrt(0.5 / 3); group 1: mean 0.3, unbiased std sqrt(0.02)
    std0, std1 = np.sqrt(0.5 / 3), np.sqrt(0.02)
    expected = [0.5 / (std0 + 1e-4), -0.5 / (std0 + 1e-4), 0, 0, -0.1 / (std1 + 1e-4), 0.1 / (std1 + 1e-4)]
    np.testing.assert_allclose(a, expected)
    # the population std (ddof=0): group 0 std sqrt(0.125), group 1 std 0.1
    population = group_advantages(rewards, groups, "group", ddof=0)
    std0 = np.sqrt(0.125)
    np.testing.assert_allclose(population, [0.5 / (std0 + 1e-4), -0.5 / (std0 + 1e-4), 0, 0, -0.1 / 0.1001, 0.1 / 0.1001])
    np.testing.assert_allclose(group_advantages(rewards, groups, "none"), [0.5, -0.5, 0, 0, -0.1, 0.1], atol=1e-15)
    centred = np.array([0.5, -0.5, 0, 0, -0.1, 0.1])
    np.testing.assert_allclose(group_advantages(rewards, groups, "batch"), centred / (rewards.std(ddof=1) + 1e-4))
    np.testing.assert_allclose(group_advantages(rewards, groups, "batch", ddof=0), centred / (rewards.std() + 1e-4))


def test_group_advantages_equal_torch_std_the_released_and_trl_formula():
    """TRL, verl and the released code: (r − mean) / (torch.std(group) + 1e-4), torch.std being unbiased."""
    import torch

    rng = np.random.default_rng(3)
    for group_size in (2, 3, 8):
        rewards = rng.random(4 * group_size)
        grouped = torch.tensor(rewards).view(-1, group_size)
        centred = grouped - grouped.mean(dim=1, keepdim=True)
        expected = (centred / (grouped.std(dim=1, keepdim=True) + 1e-4)).flatten().numpy()
        got = group_advantages(rewards, np.repeat(np.arange(4), group_size))
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


def test_a_group_of_one_and_a_bad_ddof():
    assert group_advantages(np.array([0.3, 0.1, 0.5]), np.array([0, 1, 1]))[0] == 0.0
    assert group_advantages(np.array([0.3]), np.array([0]), "batch").tolist() == [0.0]
    with pytest.raises(ValueError, match="ddof must be 0"):
        group_advantages(np.array([0.3, 0.1]), np.array([0, 0]), ddof=2)


def test_grpo_broadcasts_the_sequence_advantage_to_valid_tokens(env):
    batch = make_batch(["a b c", "a", "b c", "c"], [0.9, 0.1, 0.3, 0.3], [0, 0, 1, 1])
    token_adv = get_estimator("grpo")(batch, env.oracle, AgentConfig())
    std = np.sqrt(0.32)  # unbiased std of (0.9, 0.1)
    expected = np.array([0.4 / (std + 1e-4), -0.4 / (std + 1e-4), 0.0, 0.0])
    np.testing.assert_allclose(token_adv, np.where(batch.completion_mask, expected[:, None], 0.0))


def test_group_of_equal_rewards_has_exactly_zero_advantage():
    rewards = np.full(5, 0.1)  # 0.1 * 5 / 5 is not exactly 0.1 in floating point
    assert np.all(group_advantages(rewards, np.zeros(5, dtype=int)) == 0.0)
    assert zero_variance_groups(np.array([0.1, 0.1, 0.2, 0.3]), np.array([0, 0, 1, 1])).tolist() == [
        True, True, False, False,
    ]  # fmt: skip


@pytest.mark.parametrize("algo", ["ospo_prop", "ospo_rank"])
@pytest.mark.parametrize("seed", range(3))
def test_ospo_token_advantages_average_to_the_sequence_advantage(env, algo, seed):
    rng = np.random.default_rng(seed)
    words = list(env.vocabulary) + ["filler", "other"]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 9)))) for _ in range(8)]
    batch = make_batch(texts, env.rewards([0] * 8, texts), np.repeat([0, 1], 4), step=seed)
    config = AgentConfig(algo=algo, w_max=3, max_coalitions=12)
    token_adv = get_estimator(algo)(batch, env.oracle, config)
    sequence_adv = group_advantages(batch.rewards, batch.group_index)
    counts = batch.completion_mask.sum(axis=1)
    np.testing.assert_allclose(token_adv.sum(axis=1) / counts, sequence_adv, atol=1e-9)
    assert np.all(token_adv[~batch.completion_mask] == 0.0)


def test_ospo_prop_credits_helpful_keywords_over_harmful_ones(env):
    weights = env.weights[0]
    order = np.argsort(weights)
    worst, bad = env.vocabulary[order[0]], env.vocabulary[order[1]]
    best, good = env.vocabulary[order[-1]], env.vocabulary[order[-2]]
    neutral = env.vocabulary[int(np.flatnonzero(weights == 0)[0])]
    mixed = f"{best} {worst} {neutral} {good} {bad}"
    texts = [mixed, worst, f"{bad} {neutral}", neutral, "", f"{worst} {bad}"]
    rewards = env.rewards([0] * len(texts), texts)
    batch = make_batch(texts, rewards, np.zeros(len(texts), dtype=int))
    assert group_advantages(rewards, batch.group_index)[0] > 0  # the mixed completion beats its group

    token_adv = get_estimator("ospo_prop")(batch, env.oracle, AgentConfig(algo="ospo_prop"))[0]
    position = {word: i for i, word in enumerate(mixed.split())}
    assert token_adv[position[best]] > token_adv[position[neutral]] > token_adv[position[worst]]
    assert token_adv[position[good]] > token_adv[position[bad]]
    assert min(token_adv[position[best]], token_adv[position[good]]) > max(
        token_adv[position[worst]], token_adv[position[bad]]
    )
    # credit follows the weights: the stronger helpful keyword gets more than the weaker one
    assert token_adv[position[best]] > token_adv[position[good]]


def test_ospo_asks_the_oracle_once_per_batch_and_skips_flat_groups(env):
    words = np.asarray(env.vocabulary)
    helpful, harmful = words[env.weights[0] > 0], words[env.weights[0] < 0]
    filler = " ".join(words[env.weights[0] == 0][:3])
    texts = [f"{w} {filler}" for pair in zip(helpful, harmful, strict=True) for w in pair] + ["x y", "x y"]
    batch = make_batch(texts, env.rewards([0] * 8, texts), np.repeat([0, 1, 2, 3], 2))
    batch.rewards[6:] = 0.5  # group 3 is flat: never sent to the oracle
    calls, values = env.oracle.num_calls, env.oracle.num_values
    get_estimator("ospo_rank")(batch, env.oracle, AgentConfig(algo="ospo_rank", w_max=2))
    assert env.oracle.num_calls - calls == 1
    # 4 segments, w_max 2: ∅, 4 singles, 3 pairs, full set = 9 coalitions for each of the 6 informative texts
    assert env.oracle.num_values - values == 6 * 9


def test_ospo_is_deterministic_given_seed_and_step(env):
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(env.vocabulary, size=12)) for _ in range(4)]
    batch = make_batch(texts, env.rewards([0] * 4, texts), [0, 0, 0, 0], step=7)
    config = AgentConfig(algo="ospo_prop", w_max=2, max_coalitions=8)  # the budget bites: coalitions are sampled
    first = get_estimator("ospo_prop")(batch, env.oracle, config)
    np.testing.assert_array_equal(first, get_estimator("ospo_prop")(batch, env.oracle, config))


def test_clip_token_advantages_bounds_the_token_advantages(env):
    texts = [f"{env.vocabulary[0]} " + " ".join(["pad"] * 10), "pad", "", env.vocabulary[1]]
    batch = make_batch(texts, env.rewards([0] * 4, texts), [0, 0, 0, 0])
    sequence = group_advantages(batch.rewards, batch.group_index)
    clipped = get_estimator("ospo_prop")(batch, env.oracle, AgentConfig(clip_token_advantages=1.0))
    assert np.abs(clipped).max() <= sequence.std(ddof=1) + 1e-12


def test_registry_errors():
    assert {"grpo", "ospo_prop", "ospo_rank"} <= set(list_estimators())
    with pytest.raises(ValueError, match=r"unknown advantage estimator 'nope'; known: \[.*'grpo'"):
        get_estimator("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_estimator("grpo", lambda batch, oracle, config: np.zeros(batch.completion_mask.shape))
    register_estimator("grpo", get_estimator("grpo"))  # the same function again is fine
    with pytest.raises(ValueError, match="non-empty string"):
        register_estimator("", get_estimator("grpo"))


def test_register_a_user_estimator_as_decorator():
    @register_estimator("test_agents_constant")
    def constant(batch, oracle, config):
        return np.where(batch.completion_mask, 1.0, 0.0)

    assert get_estimator("test_agents_constant") is constant
    assert "test_agents_constant" in list_estimators()


def test_batch_checks_offsets_against_the_mask():
    with pytest.raises(ValueError, match="valid tokens"):
        RolloutBatch([0], [0], [1.0], ["a b"], [np.zeros((1, 2))], np.ones((1, 3), dtype=bool))


class WordGame:
    """A stub oracle: one segment per word, ``v(S)`` the sum of the words' fixed weights."""

    weights = {"red": 0.1, "shoes": 0.3}

    def segment(self, text):
        return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]

    def __init__(self):
        self.asked = []

    def values_batch(self, prompt_ids, texts, spans, coalitions):
        self.asked.extend(coalitions)
        words = [[texts[b][s:e] for s, e in spans[b]] for b in range(len(texts))]
        return [
            np.array([sum(self.weights.get(words[b][i], 0.05) for i in c) for c in cs]) for b, cs in enumerate(coalitions)
        ]


@pytest.mark.parametrize(
    ("algo", "zero_reward_row", "rewarded_row"),
    [
        # in units of a = |Â|; R = 0 (Â = −a): zero; R = 1 (Â = a): 3 · φ̃ / Σφ̃
        ("ospo_prop", [0.0, 0.0, 0.0], [0.75, 2.25, 0.0]),
        # R = 0: ranks [0, 1, 2] by position, times Â = −a; R = 1: ranks [1, 0, 2]
        ("ospo_rank", [0.0, -1.0, -2.0], [1.0, 0.0, 2.0]),
    ],
)
def test_released_preset_reproduces_the_released_credit_path(algo, zero_reward_row, rewarded_row):
    # "red shoes" twice, rewards 0 and 1: Â = ∓a, a = .5 / (√.5 + 1e-4) (unbiased std of (0, 1)); all 4 coalitions sampled, so the released
    # credit is exact Shapley [.1, .3]; tokens "red", " shoes", EOS -> credit [.1, .3, 0] -> min–max [1/3, 1, 0]
    batch = make_batch(["red shoes", "red shoes"], [0.0, 1.0], [0, 0])
    config = AgentConfig.released(algo=algo, max_coalitions=8)
    a = 0.5 / (np.sqrt(0.5) + 1e-4)
    out = get_estimator(algo)(batch, WordGame(), config)
    np.testing.assert_allclose(out, a * np.array([zero_reward_row, rewarded_row]), atol=1e-12)
    clipped = get_estimator(algo)(batch, WordGame(), AgentConfig.released(algo=algo, clip_token_advantages=0.5))
    bound = 0.5 * np.std([-a, a], ddof=1)  # the released clip: ± multiple · unbiased std of the batch's Â
    np.testing.assert_allclose(clipped, np.clip(out, -bound, bound), atol=1e-12)
    default = get_estimator(algo)(batch, WordGame(), AgentConfig(algo=algo, max_coalitions=8))
    np.testing.assert_allclose(default.sum(axis=1) / 3, [-a, a])  # ours keeps the token mean at Â


def test_released_preset_samples_coalitions_over_budget_uniformly():
    # 8 segments, M = 4: ∅, the full set and 2 of the 35 other windows; ours fills those 2 with singletons first
    batch = make_batch(["a b c d e f g h"] * 2, [0.0, 1.0], [0, 0])
    drawn = {}
    for name, config in [("default", AgentConfig(algo="ospo_prop", max_coalitions=4)),
                         ("released", AgentConfig.released(max_coalitions=4))]:  # fmt: skip
        oracle = WordGame()
        for step in range(5):
            batch.step = step
            get_estimator("ospo_prop")(batch, oracle, config)
        drawn[name] = {len(c) for cs in oracle.asked for c in cs[1:-1]}
    assert drawn["default"] == {1} and drawn["released"] != {1}
