"""Reward noise (ospo_gym.wrappers): identity at level 0, consistency of reward and oracle, the kinds' semantics."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest

import ospo_gym  # noqa: F401
from ospo_gym.retrieval import pooled_ndcg
from ospo_gym.wrappers import NOISE_KINDS, NoisyReward, RewardNoise, flip_labels

SMALL = {
    "ospo/AdditiveKeywords-v0": dict(vocab_size=16, num_prompts=3),
    "ospo/Interaction-v0": dict(num_phrases=12, num_prompts=3),
    "ospo/SyntheticRetrieval-v0": dict(num_products=200, num_queries=12),
}
CASES = [
    ("ospo/AdditiveKeywords-v0", "gaussian"),
    ("ospo/Interaction-v0", "gaussian"),
    ("ospo/SyntheticRetrieval-v0", "gaussian"),
    ("ospo/SyntheticRetrieval-v0", "label_flip"),
    ("ospo/SyntheticRetrieval-v0", "score"),
]


def make(env_id: str, noise: dict | None = None):
    kwargs = dict(SMALL[env_id])
    if noise is not None:
        kwargs["reward_noise"] = noise
    return gym.make(env_id, **kwargs).unwrapped


def sample_texts(env, count: int, seed: int) -> list[str]:
    """Texts of the env's words joined by ', ' or ' ' (punctuation lies outside every segment)."""
    words = list(getattr(env, "vocabulary", ())) or ["red", "shoe", "cotton", "blue"]
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(count):
        picked = rng.choice(words, size=int(rng.integers(1, 7)))
        texts.append((", " if rng.random() < 0.5 else " ").join(picked))
    return texts


def coalitions_of(n: int) -> list[tuple[int, ...]]:
    every = tuple(range(n))
    return [(), every, *((i,) for i in range(n)), every[1:], every[:-1]]


def oracle_values(env, prompt_ids, texts):
    spans = [env.oracle.segment(t) for t in texts]
    return env.oracle.values_batch(prompt_ids, texts, spans, [coalitions_of(len(s)) for s in spans])


@pytest.mark.parametrize(("env_id", "kind"), CASES)
def test_zero_noise_is_the_identity_bit_for_bit(env_id, kind):
    clean = make(env_id)
    noisy = make(env_id, {"kind": kind, "level": 0.0, "seed": 3})
    wrapped = NoisyReward(gym.make(env_id, **SMALL[env_id]), kind=kind, level=0.0, seed=3)
    texts = sample_texts(clean, 12, seed=0)
    prompt_ids = [clean.prompt_ids[i % len(clean.prompt_ids)] for i in range(len(texts))]
    expected = clean.rewards(prompt_ids, texts)
    assert np.array_equal(noisy.rewards(prompt_ids, texts), expected)
    assert np.array_equal(wrapped.rewards(prompt_ids, texts), expected)
    reference = oracle_values(clean, prompt_ids, texts)
    for other in (noisy, wrapped):
        for got, want in zip(oracle_values(other, prompt_ids, texts), reference, strict=True):
            assert np.array_equal(got, want)


@pytest.mark.parametrize(("env_id", "kind"), CASES)
def test_full_coalition_equals_the_noisy_reward_and_repeats_agree(env_id, kind):
    level = 0.5 if kind == "label_flip" else 0.3
    env = make(env_id, {"kind": kind, "level": level, "seed": 1})
    clean = make(env_id)
    texts = sample_texts(env, 16, seed=1)
    prompt_ids = [env.prompt_ids[i % len(env.prompt_ids)] for i in range(len(texts))]
    rewards = env.rewards(prompt_ids, texts)
    assert not np.array_equal(rewards, clean.rewards(prompt_ids, texts))  # the noise does something
    for prompt_id, text in zip(prompt_ids, texts, strict=True):
        # one text per call on both sides: the retrieval env's own NDCG moves in the last bit with the batch's
        # padding width, which is no part of the noise
        spans = env.oracle.segment(text)
        full = tuple(range(len(spans)))
        if clean.oracle.values(prompt_id, text, spans, [full])[0] != clean.rewards([prompt_id], [text])[0]:
            continue  # the env's own v(N) differs from its reward for this text: no noise can make them agree
        assert env.oracle.values(prompt_id, text, spans, [full])[0] == env.rewards([prompt_id], [text])[0]
    # the noise is keyed on what is scored, not on the order of calls: reversed, alone, or again, the same values
    again = env.rewards(prompt_ids[::-1], texts[::-1])[::-1]
    assert np.array_equal(again, rewards)
    alone = [env.rewards([p], [t])[0] for p, t in zip(prompt_ids, texts, strict=True)]
    np.testing.assert_allclose(alone, rewards, rtol=0, atol=1e-12)
    first = oracle_values(env, prompt_ids, texts)
    for got, want in zip(oracle_values(env, prompt_ids, texts), first, strict=True):
        assert np.array_equal(got, want)


@pytest.mark.parametrize(("env_id", "kind"), CASES)
def test_different_seeds_draw_different_noise_and_the_same_seed_the_same(env_id, kind):
    level = 0.5 if kind == "label_flip" else 0.3
    texts = sample_texts(make(env_id), 16, seed=2)
    prompt_ids = [make(env_id).prompt_ids[i % 3] for i in range(len(texts))]
    a = make(env_id, {"kind": kind, "level": level, "seed": 0}).rewards(prompt_ids, texts)
    b = make(env_id, {"kind": kind, "level": level, "seed": 0}).rewards(prompt_ids, texts)
    c = make(env_id, {"kind": kind, "level": level, "seed": 1}).rewards(prompt_ids, texts)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_gaussian_noise_is_clipped_into_the_unit_interval_and_centred():
    env = make("ospo/AdditiveKeywords-v0", {"kind": "gaussian", "level": 0.05, "seed": 0})
    clean = make("ospo/AdditiveKeywords-v0")
    texts = sample_texts(env, 400, seed=5)
    prompt_ids = [i % 3 for i in range(len(texts))]
    noisy, exact = env.rewards(prompt_ids, texts), clean.rewards(prompt_ids, texts)
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0
    inside = (exact > 0.2) & (
        exact < 0.8
    )  # far from the clip: the difference is the N(0, 0.05²) noise itself
    difference = (noisy - exact)[inside]
    assert abs(difference.mean()) < 0.01 and 0.04 < difference.std() < 0.06


def test_label_flips_change_ndcg_only_through_the_labels():
    env = make("ospo/SyntheticRetrieval-v0", {"kind": "label_flip", "level": 0.3, "seed": 4})
    texts = [env.prompt(p).removeprefix("query: ") for p in env.prompt_ids]
    flipped = [env._scorer.flipped_gains(p) for p in env.prompt_ids]
    pools = [env.judged.pools[p] for p in env.prompt_ids]
    expected = pooled_ndcg(env.retriever, texts, pools, flipped, k=env.k, cutoff=env.cutoff)
    assert np.array_equal(env.rewards(env.prompt_ids, texts), expected)
    clean = np.concatenate([env.judged.gains[p] for p in env.prompt_ids])
    changed = np.concatenate(flipped) != clean
    assert 0.2 < changed.mean() < 0.4  # each label flips with probability 0.3
    scale = np.unique(np.concatenate([[0.0], clean]))
    assert np.isin(np.concatenate(flipped), scale).all()  # a flip lands on another value of the scale


def test_flip_labels_hand_case():
    scale = np.array([0.0, 0.01, 0.1, 1.0])
    gains = np.array([1.0, 0.1, 0.0, 0.01, 1.0])
    assert np.array_equal(flip_labels(gains, scale, 0.0, 0, "q"), gains)
    everything = flip_labels(gains, scale, 1.0, 0, "q")
    assert np.all(everything != gains) and np.isin(everything, scale).all()
    binary = flip_labels(np.array([0.0, 1.0, 1.0]), np.array([0.0, 1.0]), 1.0, 7, 3)
    assert np.array_equal(binary, [1.0, 0.0, 0.0])


def test_score_noise_reorders_the_pool_and_needs_the_pooled_protocol():
    env = make("ospo/SyntheticRetrieval-v0", {"kind": "score", "level": 1.0, "seed": 0})
    clean = make("ospo/SyntheticRetrieval-v0")
    texts = [env.prompt(p).removeprefix("query: ") for p in env.prompt_ids]
    noisy, exact = env.rewards(env.prompt_ids, texts), clean.rewards(env.prompt_ids, texts)
    assert np.any(noisy != exact) and np.all((noisy >= 0) & (noisy <= 1))
    # a query that retrieves nothing scores 0 with or without score noise
    assert env.rewards([env.prompt_ids[0]], ["zzzz qqqq"])[0] == 0.0
    with pytest.raises(ValueError, match="pool='judged'"):
        gym.make(
            "ospo/SyntheticRetrieval-v0",
            **SMALL["ospo/SyntheticRetrieval-v0"],
            pool=None,
            reward_noise={"kind": "score", "level": 0.1},
        ).unwrapped.rewards([env.prompt_ids[0]], ["red"])


@pytest.mark.parametrize("kind", ["label_flip", "score"])
@pytest.mark.parametrize("env_id", ["ospo/AdditiveKeywords-v0", "ospo/Interaction-v0"])
def test_retrieval_kinds_on_other_envs_raise_naming_the_supported_kinds(env_id, kind):
    with pytest.raises(ValueError, match=r"supports \['gaussian'\]"):
        make(env_id, {"kind": kind, "level": 0.1})
    with pytest.raises(ValueError, match=r"supports \['gaussian'\]"):
        NoisyReward(gym.make(env_id, **SMALL[env_id]), kind=kind, level=0.1)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "uniform", "level": 0.1}, "unknown reward noise kind"),
        ({"kind": "gaussian", "level": -0.1}, "must lie in"),
        ({"kind": "label_flip", "level": 1.5}, "must lie in"),
        ({"kind": "gaussian", "level": float("nan")}, "finite"),
        ({"kind": "gaussian", "level": 0.1, "seed": -1}, "non-negative int"),
        ({"kind": "gaussian", "level": 0.1, "sigma": 2}, "unknown reward_noise keys"),
        ("gaussian", "must be None or a dict"),
    ],
)
def test_bad_noise_settings_raise_one_clear_error(spec, message):
    with pytest.raises(ValueError, match=message):
        make("ospo/AdditiveKeywords-v0", spec)
    assert set(NOISE_KINDS) == {"gaussian", "label_flip", "score"}
    assert RewardNoise.from_spec(None) is None


def test_ground_truth_credit_is_that_of_the_noise_free_game():
    for env_id in ("ospo/AdditiveKeywords-v0", "ospo/SyntheticRetrieval-v0"):
        clean, noisy = make(env_id), make(env_id, {"kind": "gaussian", "level": 0.2, "seed": 0})
        text = sample_texts(clean, 1, seed=9)[0]
        prompt_id = clean.prompt_ids[0]
        assert np.array_equal(
            noisy.ground_truth_credit(prompt_id, text), clean.ground_truth_credit(prompt_id, text)
        )


def test_vector_env_wrapper_and_pickle_agree_with_the_single_env():
    env_id, noise = "ospo/SyntheticRetrieval-v0", {"kind": "label_flip", "level": 0.4, "seed": 2}
    single = make(env_id, noise)
    texts = sample_texts(single, 4, seed=3)
    pinned = [single.prompt_ids[1]] * 4
    vector = gym.make_vec(
        env_id, num_envs=4, vectorization_mode="vector_entry_point", **SMALL[env_id], reward_noise=noise
    )
    vector.reset(seed=0, options={"prompt_ids": pinned})
    _, rewards, *_ = vector.step(texts)
    assert np.array_equal(rewards, single.rewards(pinned, texts))
    wrapped = NoisyReward(gym.make(env_id, **SMALL[env_id]), **noise)
    assert np.array_equal(wrapped.rewards(pinned, texts), rewards)
    wrapped.reset(options={"prompt_id": pinned[0]})
    _, reward, _, _, info = wrapped.step(texts[0])
    assert reward == wrapped.rewards(pinned[:1], texts[:1])[0]  # one text per call: see the consistency test
    assert info["clean_reward"] == make(env_id).rewards(pinned[:1], texts[:1])[0]
    copy = pickle.loads(pickle.dumps(single))
    assert np.array_equal(copy.rewards(pinned, texts), rewards)
    with pytest.raises(ValueError, match="already"):
        NoisyReward(gym.make(env_id, **SMALL[env_id], reward_noise=noise), kind="gaussian", level=0.1)


def test_the_agents_see_the_wrappers_noise():
    pytest.importorskip("torch")
    from ospo_gym.agents.groups import GroupedEnv

    env_id = "ospo/AdditiveKeywords-v0"
    wrapped = NoisyReward(gym.make(env_id, **SMALL[env_id]), kind="gaussian", level=0.3, seed=0)
    grouped = GroupedEnv(gym.wrappers.RecordEpisodeStatistics(wrapped), batch_size=2, seed=0)
    assert grouped.oracle is wrapped.oracle
    texts = sample_texts(wrapped.unwrapped, 2, seed=4)
    grouped.start([0, 1])
    assert np.array_equal(grouped.rewards(texts), wrapped.rewards([0, 1], texts))
    plain = GroupedEnv(gym.make(env_id, **SMALL[env_id]), batch_size=2, seed=0)
    assert plain.oracle is plain.env.unwrapped.oracle  # an env without the wrapper is read as before
