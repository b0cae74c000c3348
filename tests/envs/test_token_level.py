"""The token-level wrapper: the Gymnasium contract, its reward and encodings, and PPO learning through it."""

from __future__ import annotations

import doctest

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import ospo_gym  # noqa: F401 — registers the ospo/... ids
from ospo_gym.envs import token_level
from ospo_gym.envs.token_level import VOCABULARY_ENVS, TokenLevelEnv, make_token_env

# Small instances keep the suite fast.
SMALL = {
    "ospo/AdditiveKeywords-v0": {"vocab_size": 8, "num_prompts": 4, "num_positive": 2, "num_negative": 2},
    "ospo/Interaction-v0": {"num_phrases": 10, "num_prompts": 4},
    "ospo/SyntheticRetrieval-v0": {"num_products": 300, "num_queries": 12},
}
ADDITIVE = "ospo/AdditiveKeywords-v0"


def make(env_id: str = ADDITIVE, **kwargs) -> TokenLevelEnv:
    return TokenLevelEnv(env_id, env_kwargs=SMALL[env_id], **kwargs)


def run_episode(env: TokenLevelEnv, actions, **reset_kwargs):
    """Reset, then step through ``actions`` until the episode ends; returns the list of step results."""
    env.reset(**reset_kwargs)
    results = []
    for action in actions:
        results.append(env.step(action))
        if results[-1][2] or results[-1][3]:
            break
    return results


@pytest.mark.parametrize("env_id", VOCABULARY_ENVS)
def test_check_env(env_id):
    env = make(env_id)
    check_env(env, skip_render_check=True)  # rendering: the wrapper has no render modes


@pytest.mark.parametrize("env_id", VOCABULARY_ENVS)
def test_spaces(env_id):
    env = make(env_id, max_tokens=5)
    size = len(env.env.unwrapped.vocabulary)
    assert env.vocabulary == tuple(env.env.unwrapped.vocabulary)
    assert env.action_space == gym.spaces.Discrete(size + 1)
    assert env.eos == size
    assert env.observation_space == gym.spaces.Box(0.0, 1.0, shape=(2 * size + 1,), dtype=np.float32)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32
    assert not obs[size:].any()  # nothing written, no budget used


def test_prompt_part_marks_sections():
    env = make()
    inner = env.env.unwrapped
    for prompt_id in inner.prompt_ids:
        obs, info = env.reset(seed=0, options={"prompt_id": prompt_id})
        assert info["inner_info"]["prompt_id"] == prompt_id
        assert info["prompt"] == inner.prompt(prompt_id)
        weights = inner.weights[prompt_id]
        size = len(inner.vocabulary)
        # "want: ... avoid: ...": two labels, so want-words are 2/3 and avoid-words 1.
        np.testing.assert_allclose(obs[:size][weights > 0], 2 / 3)
        np.testing.assert_allclose(obs[:size][weights < 0], 1.0)
        np.testing.assert_array_equal(obs[:size][weights == 0], 0.0)


def test_encode_prompt_rules():
    env = make()
    a, b, c = env.vocabulary[:3]
    size = len(env.vocabulary)
    no_labels = env.encode_prompt(f"{a.upper()}, {b}!")
    np.testing.assert_array_equal(np.flatnonzero(no_labels), [0, 1])
    np.testing.assert_allclose(no_labels[:2], 1.0)
    # Words before the first label get the lowest level; a word keeps the section of its first mention.
    coded = env.encode_prompt(f"{a} one: {b} two: {c} {a} three: ")
    np.testing.assert_allclose(coded[:3], [1 / 4, 2 / 4, 3 / 4])
    assert coded.shape == (size,) and coded.dtype == np.float32
    # A label is not a mention of the word it spells.
    assert not env.encode_prompt(f"{a}: x").any()


def test_eos_ends_with_the_inner_reward():
    env = make(max_tokens=6)
    inner = env.env.unwrapped
    tokens = [3, 1, 3, 0]
    results = run_episode(env, [*tokens, env.eos], seed=1, options={"prompt_id": 2})
    assert len(results) == len(tokens) + 1
    for _, reward, terminated, truncated, info in results[:-1]:
        assert (reward, terminated, truncated) == (0.0, False, False)
        assert "text" not in info
    obs, reward, terminated, truncated, info = results[-1]
    text = " ".join(inner.vocabulary[t] for t in tokens)
    assert (terminated, truncated) == (True, False)
    assert info["text"] == text
    assert info["budget_exhausted"] is False
    assert info["num_tokens"] == len(tokens)
    assert info["inner_info"]["prompt_id"] == 2
    assert info["reward"] == reward == inner.rewards([2], [text])[0]
    size = len(inner.vocabulary)
    # Answer part: the step of each word's latest write over the budget (word 3: steps 1 and 3 -> 3).
    expected = np.zeros(size)
    expected[[3, 1, 0]] = np.array([3, 2, 4]) / 6
    np.testing.assert_allclose(obs[size:-1], expected)
    assert obs[-1] == pytest.approx(4 / 6)


def test_immediate_eos_scores_the_empty_answer():
    env = make()
    ((obs, reward, terminated, _, info),) = run_episode(env, [env.eos], seed=0, options={"prompt_id": 0})
    assert terminated and info["text"] == ""
    assert reward == env.env.unwrapped.rewards([0], [""])[0]


@pytest.mark.parametrize("env_id", [ADDITIVE, "ospo/Interaction-v0"])
def test_token_budget_ends_with_the_reward(env_id):
    env = make(env_id, max_tokens=3)
    inner = env.env.unwrapped
    tokens = [1, 0, 1]
    results = run_episode(env, [*tokens, 2, 2], seed=0, options={"prompt_id": 1})
    assert len(results) == 3
    obs, reward, terminated, truncated, info = results[-1]
    text = " ".join(inner.vocabulary[t] for t in tokens)
    # The budget is part of the task (and of the observation): the episode terminates with its reward.
    assert (terminated, truncated) == (True, False)
    assert info["budget_exhausted"] is True
    assert info["text"] == text
    assert reward == inner.rewards([1], [text])[0]
    assert obs[-1] == 1.0
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)


def test_interaction_phrase_scores_through_the_wrapper():
    env = make("ospo/Interaction-v0", max_tokens=4)
    inner = env.env.unwrapped
    target = int(np.argmax(inner.weights[0]))
    first, second = (env.vocabulary.index(w) for w in inner.phrases[target])
    *_, (_, reward, _, _, info) = run_episode(env, [first, second, env.eos], seed=0, options={"prompt_id": 0})
    assert info["text"] == " ".join(inner.phrases[target])
    assert reward == inner.rewards([0], [info["text"]])[0] > inner.rewards([0], [""])[0]


def test_separator():
    env = make(separator=", ")
    *_, (_, reward, _, _, info) = run_episode(env, [0, 1, env.eos], seed=0, options={"prompt_id": 0})
    assert info["text"] == f"{env.vocabulary[0]}, {env.vocabulary[1]}"
    assert reward == env.env.unwrapped.rewards([0], [info["text"]])[0]


def test_deterministic_under_seeding():
    def rollout(seed):
        env = make("ospo/Interaction-v0")
        rng = np.random.default_rng(seed)
        trace = []
        for episode in range(6):
            obs, _ = env.reset(seed=seed if episode == 0 else None)
            trace.append(obs)
            done = False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
                trace.extend([obs, np.array([reward])])
                done = terminated or truncated
        return trace

    first, again, other = rollout(3), rollout(3), rollout(4)
    assert len(first) == len(again)
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, y)
    assert len(first) != len(other) or any(
        not np.array_equal(x, y) for x, y in zip(first, other, strict=True)
    )


def test_reset_draws_the_inner_envs_prompt():
    env = make()
    inner = gym.make(ADDITIVE, **SMALL[ADDITIVE])
    for seed in range(5):
        _, info = env.reset(seed=seed)
        _, inner_info = inner.reset(seed=seed)
        assert info["inner_info"]["prompt_id"] == inner_info["prompt_id"]


@pytest.mark.parametrize("action", [-1, 9, 100, 1.5, "0", None, True, np.array([1]), np.float32(2)])
def test_invalid_action_raises(action):
    env = make()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="invalid action"):
        env.step(action)


def test_numpy_actions_are_accepted():
    env = make()
    env.reset(seed=0)
    env.step(np.int64(0))
    env.step(np.array(1))
    assert env.step(np.int32(env.eos))[2]


def test_step_before_reset_raises():
    with pytest.raises(gym.error.ResetNeeded):
        make().step(0)


def test_constructor_arguments():
    instance = gym.make(ADDITIVE, **SMALL[ADDITIVE])
    assert TokenLevelEnv(instance).env is instance
    assert TokenLevelEnv(instance.unwrapped, max_tokens=2).max_tokens == 2
    with pytest.raises(ValueError, match="AdditiveKeywords"):
        TokenLevelEnv("CartPole-v1")
    with pytest.raises(ValueError, match="env_kwargs"):
        TokenLevelEnv(instance, env_kwargs={"vocab_size": 8})
    for bad in (0, -3, 2.0, True):
        with pytest.raises(ValueError, match="max_tokens"):
            TokenLevelEnv(instance, max_tokens=bad)
    with pytest.raises(TypeError, match="separator"):
        TokenLevelEnv(instance, separator=None)


def test_doctest():
    assert doctest.testmod(token_level).failed == 0


def test_make_token_env_splits_the_arguments():
    env = make_token_env(ADDITIVE, max_tokens=3, separator="-", vocab_size=10, num_prompts=2)
    assert (env.max_tokens, env.separator) == (3, "-")
    assert len(env.vocabulary) == 10 and env.env.unwrapped.prompt_ids == [0, 1]


# -- learning with stable-baselines3 ------------------------------------------------------------------------
def additive_task(num_prompts: int) -> TokenLevelEnv:
    # 8 keywords (2 helpful, 2 harmful, 4 neutral), answers of at most 4 words: random answers score ~0.48.
    return make_token_env(
        ADDITIVE, max_tokens=4, vocab_size=8, num_prompts=num_prompts, num_positive=2, num_negative=2
    )


def random_policy_reward(env: TokenLevelEnv, episodes: int = 200) -> float:
    rng = np.random.default_rng(0)
    rewards = []
    for episode in range(episodes):
        env.reset(seed=episode)
        while True:
            _, reward, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
            if terminated or truncated:
                rewards.append(reward)
                break
    return float(np.mean(rewards))


def greedy_policy_reward(model, env: TokenLevelEnv) -> float:
    """Mean reward of the deterministic policy over every prompt (the episodes are then deterministic)."""
    rewards = []
    for prompt_id in env.env.unwrapped.prompt_ids:
        obs, _ = env.reset(seed=0, options={"prompt_id": prompt_id})
        while True:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                rewards.append(reward)
                break
    return float(np.mean(rewards))


def ppo(env: TokenLevelEnv, seed: int):
    torch = pytest.importorskip("torch")
    sb3 = pytest.importorskip("stable_baselines3")
    torch.set_num_threads(1)  # small networks: more threads only add overhead on a small CPU
    # gamma=1: the only reward is at the end, and a discount would favour short answers for no reason.
    return sb3.PPO(
        "MlpPolicy",
        env,
        seed=seed,
        n_steps=256,
        batch_size=64,
        n_epochs=10,
        learning_rate=3e-3,
        gamma=1.0,
        ent_coef=0.01,
        policy_kwargs={"net_arch": [64, 64]},
        device="cpu",
    )


@pytest.mark.parametrize("env_id", [ADDITIVE, "ospo/Interaction-v0"])
def test_ppo_smoke(env_id):
    model = ppo(make(env_id), seed=0)
    model.learn(512)
    assert model.num_timesteps >= 512
    env = make(env_id)
    obs, _ = env.reset(seed=0)
    for _ in range(env.max_tokens):
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, _ = env.step(action)
        if terminated:
            break
    assert terminated and 0.0 <= reward <= 1.0


@pytest.mark.parametrize(("num_prompts", "timesteps"), [(1, 3_000), (4, 12_000)])
def test_ppo_learns_the_additive_task(num_prompts, timesteps):
    # With 4 prompts the helpful words differ per prompt, so the policy must read the prompt part.
    env = additive_task(num_prompts)
    random_reward = random_policy_reward(env)
    model = ppo(additive_task(num_prompts), seed=0)
    model.learn(timesteps)
    learned = greedy_policy_reward(model, env)
    assert learned >= 0.9
    assert learned >= random_reward + 0.3
