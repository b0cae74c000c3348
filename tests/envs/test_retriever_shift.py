"""`retriever=` on ospo/SyntheticRetrieval-v0 (the resolver shared with ESCI and H&M) and the retriever-shift preset."""

from __future__ import annotations

import json
import pickle

import gymnasium as gym
import numpy as np
import pytest

import ospo_gym  # noqa: F401
from ospo_gym.envs import esci, hm, retrieval
from ospo_gym.retrieval import RETRIEVERS, BM25Retriever, TopListBM25Retriever, make_retriever

ENV_ID = "ospo/SyntheticRetrieval-v0"
SMALL = {"num_products": 200, "num_queries": 10}


@pytest.fixture
def bench():
    """The benchmark harness (:mod:`ospo_gym.agents.bench`), which needs the agents extra."""
    pytest.importorskip("torch")
    from ospo_gym.agents import bench

    return bench


def make(**kwargs):
    return gym.make(ENV_ID, **{**SMALL, **kwargs}).unwrapped


def texts_for(env, prompt_id, n=12, seed=0):
    """The query itself, nothing, and random mixes of its words with other catalog words."""
    rng = np.random.default_rng(seed)
    words = env.judged.queries[prompt_id].split()
    mixed = [" ".join(rng.choice([*words, *rng.choice(env.vocabulary, 3)], int(rng.integers(1, 6)))) for _ in range(n)]
    return [" ".join(words), "", *mixed]


BUILT: list = []


def bm25_factory(docs, **options):
    """A retriever factory; module-level, so that an env built with it pickles (its spec keeps the kwargs)."""
    BUILT.append((len(docs), options))
    return BM25Retriever(docs, **options)


@pytest.fixture(scope="module")
def dense_model(tmp_path_factory):
    """A saved random 1-layer BERT whose WordPiece vocabulary is trained on the small catalog (no download)."""
    pytest.importorskip("sentence_transformers")
    from ospo_gym.data.synthetic_catalog import generate_catalog
    from ospo_gym.data.text import catalog_texts
    from ospo_gym.retrieval.random_model import build_random_model

    products, _ = generate_catalog(make().catalog_config)
    return str(build_random_model(tmp_path_factory.mktemp("dense"), catalog_texts(products), dim=32, vocab_size=500))


def test_one_resolver_for_every_retrieval_env():
    assert esci.make_retriever is make_retriever and hm.make_retriever is make_retriever
    assert retrieval.make_retriever is make_retriever and esci.RETRIEVERS is RETRIEVERS
    assert tuple(RETRIEVERS) == ("bm25", "bm25-exhaustive", "dense")


def test_default_is_bm25_with_unchanged_rewards():
    env, full = make(), make(retriever="bm25-exhaustive")
    assert type(env.retriever) is TopListBM25Retriever and type(full.retriever) is BM25Retriever
    from ospo_gym.data.synthetic_catalog import generate_catalog
    from ospo_gym.data.text import catalog_texts

    products, _ = generate_catalog(env.catalog_config)
    before = retrieval.RetrievalEnv(env.judged, BM25Retriever(catalog_texts(products)))  # the env before retriever=
    for pid in env.prompt_ids[:4]:
        texts = texts_for(env, pid)
        expected = before.rewards([pid] * len(texts), texts)
        np.testing.assert_array_equal(env.rewards([pid] * len(texts), texts), expected)
        np.testing.assert_array_equal(full.rewards([pid] * len(texts), texts), expected)


@pytest.mark.parametrize("name", ["bm25", "bm25-exhaustive", "dense", "callable"])
def test_every_retriever_choice_works(name, request):
    kwargs: dict = {"retriever": name}
    if name == "dense":
        kwargs["retriever_kwargs"] = {"model": request.getfixturevalue("dense_model"), "device": "cpu"}
    if name == "callable":
        BUILT.clear()
        kwargs = {"retriever": bm25_factory, "retriever_kwargs": {"k1": 0.9, "b": 0.4}}
    env = make(**kwargs)
    if name == "callable":
        assert BUILT == [(SMALL["num_products"], {"k1": 0.9, "b": 0.4})]
    assert env.retriever.num_docs == SMALL["num_products"]
    obs, info = env.reset(seed=0)
    query = env.judged.queries[info["prompt_id"]]
    _, reward, terminated, _, _ = env.step(query)
    assert terminated and 0.0 < reward <= 1.0
    assert env.rewards([info["prompt_id"]], [""])[0] == 0.0
    # the oracle, pickling and the native vector env go through the chosen retriever
    spans = env.oracle.segment(query)
    assert env.oracle.values(info["prompt_id"], query, spans, [tuple(range(len(spans)))])[0] == pytest.approx(reward)
    clone = pickle.loads(pickle.dumps(env))
    texts = texts_for(env, info["prompt_id"])
    np.testing.assert_array_equal(
        clone.rewards([info["prompt_id"]] * len(texts), texts), env.rewards([info["prompt_id"]] * len(texts), texts)
    )
    venv = gym.make_vec(ENV_ID, num_envs=3, vectorization_mode="vector_entry_point", **SMALL, **kwargs)
    venv.reset(seed=0, options={"prompt_ids": [info["prompt_id"]] * 3})
    _, rewards, *_ = venv.step(texts[:3])
    np.testing.assert_allclose(rewards, env.rewards([info["prompt_id"]] * 3, texts[:3]))
    venv.close()


def test_other_retrievers_change_the_reward(dense_model, bench):
    """The shifts are real: other BM25 parameters and a (random) dense encoder rank differently."""
    base = make()
    shifted = make(**bench.SHIFTED_BM25)
    dense = make(retriever="dense", retriever_kwargs={"model": dense_model, "device": "cpu"})
    pids = [p for p in base.prompt_ids for _ in range(14)]
    texts = [t for p in base.prompt_ids for t in texts_for(base, p)]
    reward = base.rewards(pids, texts)
    assert not np.array_equal(shifted.rewards(pids, texts), reward)
    assert not np.array_equal(dense.rewards(pids, texts), reward)


def test_bm25_full_is_a_deprecated_alias_of_bm25_exhaustive():
    """The old name builds the same exhaustive BM25, for one more version, with a DeprecationWarning that names the
    new one and points at the caller's line (so that Python's default filters show it in a script)."""
    with pytest.warns(DeprecationWarning, match="use retriever='bm25-exhaustive'") as caught:
        old = make(retriever="bm25-full")
    warning = next(w for w in caught if issubclass(w.category, DeprecationWarning) and "bm25-full" in str(w.message))
    assert warning.filename == __file__
    new = make(retriever="bm25-exhaustive")
    assert type(old.retriever) is BM25Retriever
    pid = old.prompt_ids[0]
    texts = texts_for(old, pid)
    np.testing.assert_array_equal(old.rewards([pid] * len(texts), texts), new.rewards([pid] * len(texts), texts))
    with pytest.warns(DeprecationWarning, match="bm25-exhaustive"):
        assert type(make_retriever("bm25-full", ["a doc", "another doc"])) is BM25Retriever


@pytest.mark.parametrize("bad", ["tfidf", "BM25", None, 3])
def test_unknown_retriever_lists_the_allowed_names(bad):
    with pytest.raises(ValueError, match=r"unknown retriever .*'bm25', 'bm25-exhaustive', 'dense'"):
        make(retriever=bad)
    with pytest.raises(ValueError, match="unknown retriever"):
        retrieval.make_retriever(bad, ["a doc"])


def test_retriever_shift_preset_plan(bench):
    plan = bench.make_plan("retriever-shift")
    assert [t.name for t in plan.tasks] == ["retrieval"]  # no data files needed
    task = plan.tasks[0]
    assert task.env_kwargs.get("retriever", "bm25") == "bm25"
    assert task.eval_env_kwargs == bench.SHIFTED_BM25
    esci_plan = bench.make_plan("retriever-shift", tasks=["esci"], env_kwargs={"data_dir": "/x"})
    assert esci_plan.tasks[0].eval_env_kwargs == bench.SHIFTED_BM25


def test_retriever_shift_preset_runs_end_to_end(tmp_path, capsys, bench):
    pytest.importorskip("torch")
    from ospo_gym.cli import main

    args = ["bench", "--preset", "retriever-shift", "--algos", "grpo", "ospo_prop", "--seeds", "1",
            "--steps", "2", "--eval-every", "1", "--eval-samples", "1", "--group-size", "2",
            "--env-arg", "num_products=60", "--env-arg", "num_queries=5", "--jobs", "1", "--no-progress",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    results = json.loads((tmp_path / bench.RESULTS_JSON).read_text())
    assert results["plan"]["tasks"][0]["eval_env_kwargs"] == bench.SHIFTED_BM25
    assert {r["variant"] for r in results["runs"]} == {"grpo", "ospo_prop"}
    for run in results["runs"]:
        assert [s for s, _ in run["shift_eval_curve"]] == [s for s, _ in run["eval_curve"]] == [0, 1, 2]
        assert all(0.0 <= r <= 1.0 for _, r in run["shift_eval_curve"])
    assert "final reward, shifted env" in (tmp_path / bench.RESULTS_MD).read_text()
