"""ospo/HM-v0 on fixture CSVs: history prompts, next-purchase targets, pooled reward against brute force."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest
from fixtures_real import hm_dir, scratch_dir
from gymnasium.utils.env_checker import check_env

import ospo_gym  # noqa: F401
from ospo_gym.data import DataError
from ospo_gym.envs.hm import HM_PROMPT, QUERY_LINE
from ospo_gym.retrieval import BM25Retriever

ENV_ID = "ospo/HM-v0"
FAST = {"retriever_kwargs": {"full_scoring_below": 0}}


def make(**kwargs):
    return gym.make(ENV_ID, data_dir=str(hm_dir()), cache_dir=str(scratch_dir() / "cache"), **kwargs).unwrapped


@functools.cache
def full_scorer() -> BM25Retriever:
    return BM25Retriever(make().data.texts, stopwords="en")


def brute_force_ndcg(env, prompt_id, text, *, k=10, cutoff=1000):
    scores = full_scorer().scores([text])[0]
    order = [d for d in sorted(range(len(scores)), key=lambda d: (-scores[d], d)) if scores[d] > 0][:cutoff]
    gain_of = dict(zip(env.judged.pools[prompt_id].tolist(), env.judged.gains[prompt_id].tolist(), strict=True))
    ranked = [gain_of[d] for d in order if d in gain_of]
    dcg = sum(g / np.log2(i + 2) for i, g in enumerate(ranked[:k]))
    idcg = sum(g / np.log2(i + 2) for i, g in enumerate(sorted(gain_of.values(), reverse=True)[:k]))
    return dcg / idcg if idcg > 0 else 0.0


def test_check_env_with_the_default_prompt():
    check_env(make(), skip_render_check=True)


def test_the_default_prompt_is_pinned():
    assert HM_PROMPT == (
        "You are a fashion shopping assistant. Below is a customer's purchase history at H&M: one item per entry "
        "(product name, type, colour), separated by '|', most recent last.\n"
        "First reason briefly, inside <think></think>, about their taste and what they are likely to buy next. "
        "Then describe that next item inside <answer></answer> as a catalog search query (product name, type, "
        "colour, material, style). Only the answer is searched.\n\n"
        "Purchase history: {history}"
    )
    assert QUERY_LINE == "\nWhat the customer asks for: {query}"
    env = make()
    obs, info = env.reset(options={"prompt_id": "0045fd9022d23bba01ded7192c277739ffc64a4c31a9ab8a41cb938e6e685c4e"})
    assert obs == HM_PROMPT.format(
        history="Tilda socks, Socks, Beige | Nova t-shirt, T-shirt, Beige | Cosy hat, Hat/beanie, Light Blue | "
        "Luna bag, Bag, Dark Blue | Max sneakers, Sneakers, Grey | Wide hat, Hat/beanie, Light Pink | "
        "Cosy hat, Hat/beanie, Light Blue | Cosy hat, Hat/beanie, White | Slim pyjama set, Pyjama set, Light Pink | "
        "Wide hat, Hat/beanie, Light Pink"
    )
    assert env.targets(info["prompt_id"]) == ["0175765025", "0906749021"]


def test_optional_query_and_custom_template():
    env = make(query="a warm jacket")
    customer = env.prompt_ids[0]
    assert env.prompt(customer).endswith("Purchase history: " + env.data.histories[0] + "\nWhat the customer asks for: a warm jacket")
    per_customer = make(query={customer: "socks"})
    assert per_customer.prompt(customer).endswith("What the customer asks for: socks")
    assert per_customer.prompt(per_customer.prompt_ids[1]) == HM_PROMPT.format(history=per_customer.data.histories[1])
    custom = make(prompt_template="History: {history}. Wants: {query}", query="socks")
    assert custom.prompt(customer) == f"History: {custom.data.histories[0]}. Wants: socks"
    with pytest.raises(ValueError, match="history"):
        make(prompt_template="{query}")
    with pytest.raises(TypeError, match="query"):
        make(query=3)


def test_targets_are_the_window_purchases():
    env = make()
    customer = env.prompt_ids[0]
    targets = env.targets(customer)
    pool, gains = env.judged.pools[customer], env.judged.gains[customer]
    assert targets == [env.article_ids[d] for d in pool[: len(targets)]] and gains.sum() == len(targets)
    assert len(pool) == len(targets) + 99 or len(pool) == len(env.article_ids)
    with pytest.raises(ValueError, match="unknown prompt_id"):
        env.targets("nobody")


@pytest.mark.parametrize("cutoff", [5, 30, 1000])
def test_reward_equals_a_brute_force_reference(cutoff):
    env = make(cutoff=cutoff, **FAST)
    for customer in env.prompt_ids[:6]:
        target = env.judged.pools[customer][0]
        texts = [env.data.texts[int(target)], env.data.histories[env.prompt_ids.index(customer)].split(" | ")[-1], "black", ""]
        for text in texts:
            got = env.rewards([customer], [f"<answer>{text}</answer>"])[0]
            assert got == pytest.approx(brute_force_ndcg(env, customer, text, cutoff=cutoff), abs=1e-12)
    perfect = env.judged.pools[env.prompt_ids[0]][0]
    assert env.rewards([env.prompt_ids[0]], [env.data.texts[int(perfect)]])[0] > 0.3


def test_vector_env_matches_single_env():
    venv = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="vector_entry_point", data_dir=str(hm_dir()), use_cache=False)
    obs, info = venv.reset(seed=5)
    singles = [make().reset(seed=5 + i) for i in range(2)]
    assert list(obs) == [o for o, _ in singles]
    texts = ["black dress", "cotton socks"]
    _, rewards, *_ = venv.step(texts)
    env = make()
    np.testing.assert_allclose(rewards, env.rewards(list(info["prompt_id"]), texts))


def test_split_windows_and_sampling():
    train, test = make(), make(split="test")
    assert train.data.info["target_to"] < test.data.info["target_from"]
    assert len(make(max_customers=4).prompt_ids) == 4
    assert make(max_history=2).data.histories[0].count(" | ") <= 1


def test_missing_data_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="kaggle"):
        gym.make(ENV_ID, data_dir=str(tmp_path))
