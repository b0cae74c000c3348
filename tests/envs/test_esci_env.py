"""ospo/ESCI-v0 on fixture files: the paper's protocol, pinned prompts, and the reward against brute force."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from fixtures_real import esci_dir, scratch_dir
from gymnasium.utils.env_checker import check_env

import ospo_gym  # noqa: F401
from ospo_gym.data import DataError
from ospo_gym.data.fixtures import write_esci_parquet
from ospo_gym.envs.esci import ESCI_PROMPT, EsciEnv
from ospo_gym.retrieval import BM25Retriever

ENV_ID = "ospo/ESCI-v0"
# The fast path of the reward is what a million-product catalog uses; force it on the small fixture.
FAST = {"retriever_kwargs": {"full_scoring_below": 0}}


def make(**kwargs):
    return gym.make(ENV_ID, data_dir=str(esci_dir()), cache_dir=str(scratch_dir() / "cache"), **kwargs).unwrapped


@functools.cache
def full_scorer(locale: str) -> BM25Retriever:
    return BM25Retriever(make(locale=locale).data.texts, stopwords="en")


def brute_force_ndcg(env, prompt_id, text, *, k, cutoff, pool=True):
    """Full scores, ranking by (score desc, id asc), top `cutoff`, filtered to the pool, DCG / ideal DCG."""
    scores = full_scorer(env.locale).scores([text])[0]
    order = [d for d in sorted(range(len(scores)), key=lambda d: (-scores[d], d)) if scores[d] > 0]
    order = order[:cutoff] if cutoff is not None else order
    gain_of = dict(zip(env.judged.pools[prompt_id].tolist(), env.judged.gains[prompt_id].tolist(), strict=True))
    ranked = [gain_of[d] for d in order if d in gain_of] if pool else [gain_of.get(d, 0.0) for d in order]
    dcg = sum(g / np.log2(i + 2) for i, g in enumerate(ranked[:k]))
    ideal = sorted(gain_of.values(), reverse=True)[:k]
    idcg = sum(g / np.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def rewrites(env, prompt_id):
    query = env.judged.queries[prompt_id]
    exact = env.judged.pools[prompt_id][env.judged.gains[prompt_id] == 1.0]
    title = " ".join(env.data.texts[int(exact[0])].split()[:6])
    return [query, f"{query} {title}", title, "deluxe original", query.split()[0], "zzz unknown"]


def test_check_env_with_the_default_prompt():
    env = make()
    check_env(env, skip_render_check=True)
    assert env.observation_space.contains("ワイヤレス イヤホン") and env.action_space.contains("")


def test_the_default_prompt_is_pinned(tmp_path):
    products = pd.DataFrame(
        {
            "product_id": ["B01", "B02", "B03", "B04"],
            "product_title": ["Wireless earbuds, black", "Wireless earbuds, white", "Earbud case", "Desk lamp"],
            "product_description": ["<p>Bluetooth 5.3</p>", None, "Silicone", "LED"],
            "product_bullet_point": [None] * 4,
            "product_brand": ["Acme"] * 4,
            "product_color": ["black", "white", None, "grey"],
            "product_locale": ["us"] * 4,
        }
    )
    examples = pd.DataFrame(
        {
            "example_id": [0, 1, 2, 3],
            "query": ["wireless earbuds"] * 4,
            "query_id": [7, 7, 7, 7],
            "product_id": ["B01", "B02", "B03", "B04"],
            "product_locale": ["us"] * 4,
            "esci_label": ["E", "E", "C", "I"],
            "small_version": [1] * 4,
            "large_version": [1] * 4,
            "split": ["train"] * 4,
        }
    )
    write_esci_parquet(products, examples, tmp_path)
    env = gym.make(ENV_ID, data_dir=str(tmp_path), use_cache=False, min_exact=2).unwrapped
    obs, info = env.reset(seed=0)
    assert info["prompt_id"] == 7
    assert obs == (
        "You are a product search assistant. A shopper typed the query below into an online store's search box.\n"
        "First analyse briefly, inside <think></think>, what the shopper wants: the product category, and the "
        "attributes that tell the right products from similar ones (brand, type, material, size, colour, "
        "intended use).\n"
        "Then write an enriched search query inside <answer></answer>: keep every term of the original query and "
        "add the category and those attributes. Only the answer is searched.\n\n"
        "Query: wireless earbuds"
    )
    assert obs == ESCI_PROMPT.format(query="wireless earbuds")
    assert env.data.texts == ["Wireless earbuds, black Bluetooth 5.3", "Wireless earbuds, white", "Earbud case Silicone", "Desk lamp LED"]
    custom = make(prompt_template="Rewrite: {query}")
    first = custom.prompt_ids[0]
    assert custom.prompt(first) == "Rewrite: " + custom.judged.queries[first]
    with pytest.raises(ValueError, match="query"):
        make(prompt_template="no placeholder")


@pytest.mark.parametrize("cutoff", [7, 40, 1000])
@pytest.mark.parametrize("relevance", ["graded", "binary"])
def test_reward_equals_a_brute_force_reference(cutoff, relevance):
    env = make(cutoff=cutoff, relevance=relevance, **FAST)
    for prompt_id in env.prompt_ids[:4]:
        for text in rewrites(env, prompt_id):
            got = env.rewards([prompt_id], [f"<think>x</think><answer>{text}</answer>"])[0]
            assert got == pytest.approx(brute_force_ndcg(env, prompt_id, text, k=10, cutoff=cutoff), abs=1e-12)


def test_plain_ndcg_without_the_pool_and_other_k():
    env = make(pool=None, k=5)
    for prompt_id in env.prompt_ids[:4]:
        for text in rewrites(env, prompt_id):
            want = brute_force_ndcg(env, prompt_id, text, k=5, cutoff=None, pool=False)
            assert env.rewards([prompt_id], [text])[0] == pytest.approx(want, abs=1e-12)


def test_reward_agrees_with_ir_measures():
    ir_measures = pytest.importorskip("ir_measures")
    env = make(cutoff=40, **FAST)
    qrels, run, ours = [], [], {}
    for prompt_id in env.prompt_ids[:6]:
        text = rewrites(env, prompt_id)[1]
        ours[str(prompt_id)] = env.rewards([prompt_id], [text])[0]
        pool = env.judged.pools[prompt_id]
        for doc, gain in zip(pool.tolist(), env.judged.gains[prompt_id].tolist(), strict=True):
            qrels.append(ir_measures.Qrel(str(prompt_id), str(doc), int(round(gain * 100))))
        # The run is the pooled ranking: retrieved pool documents in rank order (explicit scores, no ties).
        scores = full_scorer("us").scores([text])[0]
        order = [d for d in sorted(range(len(scores)), key=lambda d: (-scores[d], d)) if scores[d] > 0][:40]
        ranked = [d for d in order if d in set(pool.tolist())]
        run += [ir_measures.ScoredDoc(str(prompt_id), str(d), float(len(ranked) - r)) for r, d in enumerate(ranked)]
    measured = {m.query_id: m.value for m in ir_measures.iter_calc([ir_measures.nDCG @ 10], qrels, run)}
    for query_id, value in ours.items():
        assert value == pytest.approx(measured.get(query_id, 0.0), abs=1e-9)


@pytest.mark.parametrize("locale", ["es", "jp"])
def test_other_locales(locale):
    env = make(locale=locale)
    obs, info = env.reset(seed=0)
    query = env.judged.queries[info["prompt_id"]]
    assert obs.endswith(query) and not query.isascii() or locale == "es"
    assert env.step(f"<answer>{query}</answer>")[1] > 0.0
    check_env(env, skip_render_check=True)


def test_japanese_tokenizer_splits_scripts():
    env = make(locale="jp")
    # "ランニングシューズ赤" (no spaces) still matches products whose titles say "ランニング シューズ ... 赤".
    tokens = env.retriever.tokenize(["ランニングシューズ赤"])[0]
    assert len(tokens) >= 2


def test_vector_env_matches_single_env_and_pins_groups():
    venv = gym.make_vec(
        ENV_ID, num_envs=3, vectorization_mode="vector_entry_point", data_dir=str(esci_dir()), use_cache=False, **FAST
    )
    env = make(**FAST)
    pid = env.prompt_ids[2]
    obs, info = venv.reset(options={"prompt_ids": [pid] * 3})
    assert list(obs) == [env.prompt(pid)] * 3
    texts = rewrites(env, pid)[:3]
    _, rewards, terminated, _, _ = venv.step(texts)
    np.testing.assert_allclose(rewards, env.rewards([pid] * 3, texts))
    assert terminated.all()


def test_retriever_choices_give_the_same_reward():
    fast, full = make(cutoff=40, **FAST), make(cutoff=40, retriever="bm25-exhaustive")
    built = []

    def factory(docs):
        built.append(len(docs))
        return BM25Retriever(docs)

    custom = make(cutoff=40, retriever=factory)
    assert built == [len(fast.data.texts)]
    for pid in fast.prompt_ids[:3]:
        texts = rewrites(fast, pid)
        np.testing.assert_allclose(fast.rewards([pid] * len(texts), texts), full.rewards([pid] * len(texts), texts))
        np.testing.assert_allclose(custom.rewards([pid] * len(texts), texts), full.rewards([pid] * len(texts), texts))
    with pytest.raises(ValueError, match="unknown retriever"):
        make(retriever="tfidf")


def test_arguments_and_splits():
    train, test = make(split="train"), make(split="test")
    assert set(train.prompt_ids).isdisjoint(test.prompt_ids)
    assert set(make(split="all").prompt_ids) == set(train.prompt_ids) | set(test.prompt_ids)
    sample = make(max_queries=3, seed=1)
    assert len(sample.prompt_ids) == 3 and set(sample.prompt_ids) <= set(train.prompt_ids)
    assert make(max_queries=3, seed=1).prompt_ids == sample.prompt_ids
    assert len(train.product_ids) == 1000 and train.retriever.num_docs == 1000
    with pytest.raises(ValueError, match="Exact products"):
        make(min_exact=30, max_exact=40)
    with pytest.raises(ValueError, match="relevance"):
        make(relevance="ndcg")


def test_missing_data_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="ospo-gym data esci"):
        gym.make(ENV_ID, data_dir=str(tmp_path))
    with pytest.raises(DataError):
        EsciEnv(data_dir=tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_queries": 10**7 + 1}, r"max_queries must be an int in \[1, 10000000\] or None \("),
        ({"max_queries": 0}, "max_queries must be an int"),
        ({"seed": -1}, r"seed must be an int in \[0, 9223372036854775807\] \("),
        ({"min_exact": 10_001}, r"min_exact must be an int in \[0, 10000\]"),
    ],
)
def test_env_data_knobs_have_checked_upper_bounds(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)
