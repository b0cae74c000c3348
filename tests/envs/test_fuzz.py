"""Adversarial actions against every registered env: nothing raises, rewards stay in [0, 1], spans stay valid."""

from __future__ import annotations

import zlib

import gymnasium as gym
import numpy as np
import pytest
from fixtures_real import real_env_kwargs
from test_env_inputs import BAD_SCORES

import ospo_gym
from ospo_gym.credit import sample_coalitions

SMALL = {
    **real_env_kwargs(),
    "ospo/AdditiveKeywords-v0": {"vocab_size": 16, "num_prompts": 4},
    "ospo/SyntheticRetrieval-v0": {"num_products": 300, "num_queries": 12},
    "ospo/Interaction-v0": {"num_prompts": 4},
    "ospo/LongRange-v0": {"num_prompts": 4},
}
PIECES = [
    "", " ", "\t", "\n", "\r\n", "\x00", "\x07", "\x1b[31m", "\ud800", "\udfff", "\ufeff", "\u200b", "\u200d",
    "مرحبا بالعالم", "שלום", "\u202e", "ワイヤレス", "イヤホン", "无线耳机", "한국어", "🎧", "👩‍👩‍👧", "🇯🇵",
    "zapatillas de running", "ñandú", "e\u0301", ",", ",,,,", "....", "!!!", "???", "|", "/", "-", "_", "'", '"',
    "<answer>", "</answer>", "<think>", "</think>", "<answer></answer>", "<", ">", "&amp;", "\\", "%s", "{}",
    "red", "leather", "running shoes", "want:", "avoid:", "describe:", "query:", "0", "999999", "NaN", "inf",
]


def adversarial_actions(env, rng: np.random.Generator, count: int) -> list[str]:
    """A seeded mix of the pieces above, the env's own words and prompts, and a few very long texts."""
    words = list(getattr(env, "vocabulary", ()))[:200] + [env.prompt(p) for p in env.prompt_ids[:4]]
    pool = PIECES + words
    out = []
    for i in range(count):
        if i % 1000 == 0:  # long inputs: truncated by the documented rule, never rejected
            out.append(str(rng.choice(pool)) * int(rng.integers(20_000, 60_000)))
            continue
        n = int(rng.integers(0, 12))
        parts = [str(pool[int(j)]) for j in rng.integers(0, len(pool), size=n)]
        seps = [str(rng.choice(["", " ", "  ", "\n", ", ", "\x00"])) for _ in range(n)]
        out.append("".join(p + s for p, s in zip(parts, seps, strict=True)))
    return out


@pytest.mark.parametrize("env_id", ospo_gym.ENV_IDS)
def test_ten_thousand_adversarial_actions(env_id):
    env = gym.make(env_id, **SMALL[env_id]).unwrapped
    rng = np.random.default_rng(zlib.crc32(env_id.encode()))
    actions = adversarial_actions(env, rng, 10_000)
    prompt_ids = [env.prompt_ids[int(i)] for i in rng.integers(0, len(env.prompt_ids), size=len(actions))]
    rewards = env.rewards(prompt_ids, actions)  # the batched path, all at once
    assert rewards.shape == (len(actions),)
    assert np.isfinite(rewards).all() and (rewards >= 0).all() and (rewards <= 1).all()
    for index in range(0, len(actions), 10):  # the single-step path and the oracle on every tenth action
        action = actions[index]
        env.reset(options={"prompt_id": prompt_ids[index]})
        _, reward, terminated, _, info = env.step(action)
        assert reward == pytest.approx(rewards[index]) and terminated
        truncated = action[: env.max_action_chars]
        previous = 0
        for start, end in info["segments"]:
            assert previous <= start < end <= len(truncated)
            assert truncated[start:end].strip() == truncated[start:end]
            previous = end
        if index % 100 == 0:
            spans = info["segments"]
            coalitions = sample_coalitions(len(spans), 4, 24, rng=index)
            values = env.oracle.values(prompt_ids[index], truncated, spans, coalitions)
            assert np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()


def test_long_actions_are_truncated_by_the_documented_rule():
    env = gym.make("ospo/AdditiveKeywords-v0", max_action_chars=50).unwrapped
    word = env.vocabulary[int(np.argmax(env.weights[0]))]
    env.reset(options={"prompt_id": 0})
    late = "x " * 40 + word  # the keyword sits after the cut
    assert env.step(late)[1] == env.rewards([0], [""])[0]
    env.reset(options={"prompt_id": 0})
    _, _, _, _, info = env.step("x" * 200)
    assert all(end <= 50 for _, end in info["segments"])


# ---- bad arguments and bad user retrievers: one clear error each, never a wrong reward ------------------------


def bad_rewards_arguments(env) -> list[tuple[tuple, type[Exception], str]]:
    """(arguments of env.rewards, the error, a phrase of its message) for ``env``'s own prompt ids."""
    ids = env.prompt_ids
    return [
        ((ids[:2], ["x"]), ValueError, "got 2 prompt_ids but 1 actions"),
        ((ids[:1], ["x", "y"]), ValueError, "got 1 prompt_ids but 2 actions"),
        ((ids[:1], "x"), ValueError, "wrap a single one in a list"),
        ((ids[:1] * 3, "abc"), ValueError, "wrap a single one in a list"),
        ((ids[:1], b"x"), ValueError, "actions must be a sequence"),
        ((ids[:1], None), ValueError, "actions must be a sequence"),
        ((ids[0], ["x"]), ValueError, "prompt_ids must be a sequence"),
        ((None, ["x"]), ValueError, "prompt_ids must be a sequence"),
        (([object()], ["x"]), ValueError, "unknown prompt_id"),
        ((ids[:1], [None]), TypeError, "must be a str"),
        ((ids[:1], [["x"]]), TypeError, "must be a str"),
    ]


@pytest.mark.parametrize("env_id", ospo_gym.ENV_IDS)
def test_bad_rewards_arguments_get_one_clear_error(env_id):
    env = gym.make(env_id, **SMALL[env_id]).unwrapped
    for args, error, message in bad_rewards_arguments(env):
        with pytest.raises(error, match=message):
            env.rewards(*args)
    vector = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point", **SMALL[env_id])
    vector.reset(seed=0)
    for actions in ("ab", ["x"], ["x", "y", "z"], None):
        with pytest.raises(ValueError, match="actions"):
            vector.step(actions)


class ScriptedRetriever:
    """A user retriever (no pool fast path) whose scores() output is ``self.output(q, n)``."""

    def __init__(self, docs):
        self.num_docs = len(docs)
        self.output = lambda q, n: np.ones((q, n))

    def scores(self, texts):
        return self.output(len(texts), self.num_docs)

    def rank(self, texts, k):
        return np.full((len(texts), k), -1), np.full((len(texts), k), -np.inf)


BAD_RETRIEVER_OUTPUTS = BAD_SCORES  # the same broken outputs as the env-input tests, over every retrieval id
RETRIEVAL_IDS = ("ospo/SyntheticRetrieval-v0", "ospo/ESCI-v0", "ospo/HM-v0")


@pytest.mark.parametrize("env_id", RETRIEVAL_IDS)
def test_bad_user_retriever_outputs_get_one_clear_error(env_id):
    env = gym.make(env_id, **SMALL[env_id], retriever=ScriptedRetriever).unwrapped
    retriever = env.retriever
    prompt_id = env.prompt_ids[0]
    text = "red running shoes, blue wool socks, and a yoga mat"
    spans = env.oracle.segment(text)
    coalitions = sample_coalitions(len(spans), 4, 24, rng=0)
    assert len(coalitions) >= 3  # several texts in one scores() call
    for name, output in BAD_RETRIEVER_OUTPUTS.items():
        retriever.output = output
        with pytest.raises(ValueError, match=r"ScriptedRetriever\.scores\(\) returned .*expected a \(\d+, \d+\)"):
            env.oracle.values(prompt_id, text, spans, coalitions)
        if name != "one row for every text":  # right for the single text of a step
            env.reset(options={"prompt_id": prompt_id})
            with pytest.raises(ValueError, match=rf"expected a \(1, {retriever.num_docs}\) array"):
                env.step(text)
    retriever.output = lambda q, n: np.ones((q, n))  # a valid (if useless) retriever still works
    values = env.oracle.values(prompt_id, text, spans, coalitions)
    assert np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()
