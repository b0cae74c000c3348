"""Bad input to the envs gets one clear ValueError: user retriever output, difficulty knobs, batched arguments."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest

import ospo_gym
from ospo_gym.data.synthetic_catalog import CatalogConfig
from ospo_gym.envs.retrieval import SyntheticRetrievalEnv
from ospo_gym.retrieval import BM25Retriever, pooled_ndcg, rank_from_scores
from ospo_gym.vocab import pseudo_words

NUM_PRODUCTS = 60
SMALL_CATALOG = {"num_products": NUM_PRODUCTS, "num_queries": 5}

# What a broken user retriever's scores() may return for q texts over n documents; each must be refused.
BAD_SCORES = {
    "one row for every text": lambda q, n: np.ones((1, n)),
    "one column short": lambda q, n: np.ones((q, n - 1)),
    "twice the catalog": lambda q, n: np.ones((q, 2 * n)),
    "transposed": lambda q, n: np.ones((n, q)),
    "1-D": lambda q, n: np.ones(n),
    "None": lambda q, n: None,
    "a number": lambda q, n: 1.0,
    "NaN": lambda q, n: np.where(np.eye(q, n, dtype=bool), np.nan, 1.0),
    "+inf": lambda q, n: np.where(np.eye(q, n, dtype=bool), np.inf, 1.0),
    "-inf": lambda q, n: np.where(np.eye(q, n, dtype=bool), -np.inf, 1.0),
    "strings": lambda q, n: np.full((q, n), "1"),
    "complex": lambda q, n: np.ones((q, n), dtype=complex),
    "ragged list": lambda q, n: [[1.0] * n] * (q - 1) + [[1.0]],
}


class ScriptedScores:
    """A user retriever without the pool fast path whose scores() come from ``make(q, n)``."""

    def __init__(self, docs, make):
        self.num_docs = len(docs)
        self.make = make

    def scores(self, texts):
        return self.make(len(texts), self.num_docs)

    def rank(self, texts, k):
        return rank_from_scores(np.ones((len(texts), self.num_docs)), k)


def scripted_env(make, **kwargs) -> SyntheticRetrievalEnv:
    return SyntheticRetrievalEnv(**SMALL_CATALOG, retriever=lambda docs: ScriptedScores(docs, make), **kwargs)


def oracle_call(env: SyntheticRetrievalEnv) -> None:
    """Coalition values of a three-word text: one scores() call for several texts."""
    prompt_id = env.prompt_ids[0]
    text = "alpha beta gamma"
    spans = env.oracle.segment(text)
    env.oracle.values(prompt_id, text, spans, [(0,), (1,), (0, 1, 2)])


@pytest.mark.parametrize("name", [n for n in BAD_SCORES if n != "one row for every text"])
def test_bad_user_scores_raise_one_clear_error_through_step(name):
    env = scripted_env(BAD_SCORES[name])
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"ScriptedScores\.scores\(\) returned .*expected a \(1, 60\) array") as err:
        env.step("red running shoes")
    assert "finite real numbers" in str(err.value)


@pytest.mark.parametrize("name", list(BAD_SCORES))
def test_bad_user_scores_raise_one_clear_error_through_the_oracle_and_rewards(name):
    env = scripted_env(BAD_SCORES[name])
    with pytest.raises(ValueError, match=r"ScriptedScores\.scores\(\) returned .*expected a \(3, 60\) array"):
        oracle_call(env)
    with pytest.raises(ValueError, match=r"expected a \(2, 60\) array"):
        env.rewards(env.prompt_ids[:2], ["red", "blue"])


def test_bad_scores_message_says_what_was_returned():
    from ospo_gym.retrieval import check_scores

    with pytest.raises(ValueError, match=r"returned ndarray with shape \(1, 60\) and dtype float64 \(wrong shape\); "
                       r"expected a \(2, 60\) array"):
        check_scores(np.ones((1, 60)), 2, 60)
    with pytest.raises(ValueError, match=r"returned None \(not an array of real numbers\)"):
        check_scores(None, 2, 60)
    with pytest.raises(ValueError, match=r"NaN or infinite scores"):
        check_scores(np.array([[np.nan]], dtype=np.float32), 1, 1)
    # A finite float64 matrix whose sum overflows is still finite.
    big = np.full((2, 3), np.finfo(np.float64).max)
    assert check_scores(big, 2, 3) is big


def test_valid_user_scores_are_used_as_returned():
    """Int and float scores of the right shape pass unchanged; the reward equals the BM25 env's."""
    from ospo_gym.retrieval import check_scores

    bm25_env = SyntheticRetrievalEnv(**SMALL_CATALOG, retriever="bm25-exhaustive")
    bm25 = bm25_env.retriever
    user = SyntheticRetrievalEnv(**SMALL_CATALOG, retriever=lambda docs: ScriptedScores(docs, None))
    user.retriever.scores = bm25.scores  # type: ignore[method-assign]
    ids = bm25_env.prompt_ids
    texts = [bm25_env.judged.queries[p] for p in ids]
    np.testing.assert_array_equal(user.rewards(ids, texts), bm25_env.rewards(ids, texts))
    ints = np.arange(6).reshape(2, 3)
    assert check_scores(ints, 2, 3) is ints


class ScriptedPool(ScriptedScores):
    """A user retriever with the pool fast path whose pool_frontier() comes from ``make(pool_ids)``."""

    def pool_frontier(self, texts, pool_ids, cutoff):
        return self.make(pool_ids)


def _good_frontier(pool_ids):
    return np.ones(pool_ids.shape, dtype=np.float32), pool_ids >= 0


BAD_FRONTIERS = {
    "None": lambda ids: None,
    "one array": lambda ids: np.ones(ids.shape),
    "three arrays": lambda ids: (*_good_frontier(ids), ids),
    "scores one row": lambda ids: (np.ones((1, ids.shape[1])), ids >= 0),
    "scores transposed": lambda ids: (np.ones(ids.shape).T, ids >= 0),
    "scores NaN": lambda ids: (np.full(ids.shape, np.nan), ids >= 0),
    "scores None": lambda ids: (None, ids >= 0),
    "mask not bool": lambda ids: (np.ones(ids.shape), (ids >= 0).astype(np.int64)),
    "mask wrong shape": lambda ids: (np.ones(ids.shape), np.ones(ids.shape[1], dtype=bool)),
    "mask None": lambda ids: (np.ones(ids.shape), None),
    "mask set at padding": lambda ids: (np.ones(ids.shape), np.ones(ids.shape, dtype=bool)),
}


@pytest.mark.parametrize("name", [n for n in BAD_FRONTIERS if n != "mask set at padding"])
def test_bad_user_pool_frontier_raises_one_clear_error_through_the_env(name):
    env = SyntheticRetrievalEnv(**SMALL_CATALOG, retriever=lambda docs: ScriptedPool(docs, BAD_FRONTIERS[name]))
    with pytest.raises(ValueError, match=r"ScriptedPool\.pool_frontier\(\) returned .*expected a pair"):
        env.rewards(env.prompt_ids[:2], ["red", "blue"])
    if name != "scores one row":  # one row is right for the single text of a step
        env.reset(seed=0)
        with pytest.raises(ValueError, match=r"ScriptedPool\.pool_frontier\(\) returned"):
            env.step("red")


@pytest.mark.parametrize("name", list(BAD_FRONTIERS))
def test_bad_user_pool_frontier_raises_one_clear_error_in_pooled_ndcg(name):
    retriever = ScriptedPool(["red"] * 5, BAD_FRONTIERS[name])
    pools = [np.array([0, 1, 2]), np.array([3])]  # of different sizes: the padded matrix has padding slots
    gains = [np.ones(3), np.ones(1)]
    with pytest.raises(ValueError, match=r"ScriptedPool\.pool_frontier\(\) returned .*expected a pair .* \(2, 3\)"):
        pooled_ndcg(retriever, ["red", "blue"], pools, gains)


def test_valid_user_pool_frontier_passes():
    from ospo_gym.retrieval import check_frontier

    env = SyntheticRetrievalEnv(**SMALL_CATALOG, retriever=lambda docs: ScriptedPool(docs, _good_frontier))
    rewards = env.rewards(env.prompt_ids[:2], ["red", "blue"])
    assert np.isfinite(rewards).all()
    ids = np.array([[0, -1]])
    scores, retrieved = check_frontier(_good_frontier(ids), ids)
    assert retrieved.tolist() == [[True, False]]


class ScriptedRank(ScriptedScores):
    """A user retriever whose rank() comes from ``make(q, k, n)`` (used by the env with ``pool=None``)."""

    def rank(self, texts, k):
        return self.make(len(texts), k, self.num_docs)


def _good_rank(q, k, n):
    return np.tile(np.arange(k), (q, 1)), np.ones((q, k), dtype=np.float32)


BAD_RANKS = {
    "None": lambda q, k, n: None,
    "ids only": lambda q, k, n: _good_rank(q, k, n)[0],
    "one row": lambda q, k, n: (np.arange(k)[None], np.ones((1, k))),
    "k too short": lambda q, k, n: (np.tile(np.arange(k - 1), (q, 1)), np.ones((q, k - 1))),
    "float ids": lambda q, k, n: (np.tile(np.arange(k), (q, 1)).astype(float), np.ones((q, k))),
    "ids past the catalog": lambda q, k, n: (np.full((q, k), n), np.ones((q, k))),
    "ids below -1": lambda q, k, n: (np.full((q, k), -2), np.ones((q, k))),
    "a document twice": lambda q, k, n: (np.zeros((q, k), dtype=np.int64), np.ones((q, k))),
    "NaN scores": lambda q, k, n: (_good_rank(q, k, n)[0], np.full((q, k), np.nan)),
    "scores transposed": lambda q, k, n: (_good_rank(q, k, n)[0], np.ones((k, q))),
}


@pytest.mark.parametrize("name", list(BAD_RANKS))
def test_bad_user_rank_raises_one_clear_error(name):
    env = SyntheticRetrievalEnv(**SMALL_CATALOG, pool=None, retriever=lambda docs: ScriptedRank(docs, BAD_RANKS[name]))
    with pytest.raises(ValueError, match=r"ScriptedRank\.rank\(\) returned .*expected a pair \(ids, scores\) of \(2, 10\)"):
        env.rewards(env.prompt_ids[:2], ["red", "blue"])
    with pytest.raises(ValueError, match=r"ScriptedRank\.rank\(\) returned"):
        oracle_call(env)


def test_valid_user_rank_passes_and_padding_may_repeat():
    from ospo_gym.retrieval import check_ranking

    env = SyntheticRetrievalEnv(**SMALL_CATALOG, pool=None, retriever=lambda docs: ScriptedRank(docs, _good_rank))
    assert np.isfinite(env.rewards(env.prompt_ids[:2], ["red", "blue"])).all()
    ids = np.array([[3, -1, -1]])
    check_ranking((ids, np.array([[1.0, -np.inf, -np.inf]])), 1, 3, 5)


def test_retriever_factory_must_cover_the_catalog():
    class Short(ScriptedScores):
        def __init__(self, docs, make):
            super().__init__(docs, make)
            self.num_docs = len(docs) - 1

    with pytest.raises(ValueError, match=r"num_docs=59; expected the catalog size 60"):
        SyntheticRetrievalEnv(**SMALL_CATALOG, retriever=lambda docs: Short(docs, None))


def test_builtin_retrievers_pass_the_checks_unchanged():
    """The checks return the built-in retrievers' arrays themselves (no copy, no conversion)."""
    from ospo_gym.retrieval import check_frontier, check_ranking

    retriever = BM25Retriever(["red shoes", "blue socks", "green mat"])
    ids = np.array([[0, 1, -1]])
    frontier = retriever.pool_frontier(["red"], ids, 2)
    got = check_frontier(frontier, ids, retriever)
    assert got[0] is frontier[0] and got[1] is frontier[1]
    ranking = retriever.rank(["red", "mat"], 4)
    got = check_ranking(ranking, 2, 4, 3, retriever)
    assert got[0] is ranking[0] and got[1] is ranking[1]


# ---- difficulty knobs: every one has a checked range ---------------------------------------------------------

AT_BOUND_PLUS_ONE = [
    # (env id, kwargs, the knob the message names)
    ("ospo/AdditiveKeywords-v0", {"vocab_size": 100_001}, "vocab_size"),
    ("ospo/AdditiveKeywords-v0", {"vocab_size": 740_000}, "vocab_size"),
    ("ospo/AdditiveKeywords-v0", {"vocab_size": 0}, "vocab_size"),
    ("ospo/AdditiveKeywords-v0", {"vocab_size": 32.5}, "vocab_size"),
    ("ospo/AdditiveKeywords-v0", {"num_prompts": 100_001}, "num_prompts"),
    ("ospo/AdditiveKeywords-v0", {"num_prompts": 0}, "num_prompts"),
    ("ospo/AdditiveKeywords-v0", {"num_positive": 33}, "num_positive"),
    ("ospo/AdditiveKeywords-v0", {"num_positive": 0}, "num_positive"),
    ("ospo/AdditiveKeywords-v0", {"num_negative": 33}, "num_negative"),
    ("ospo/AdditiveKeywords-v0", {"num_negative": -1}, "num_negative"),
    ("ospo/AdditiveKeywords-v0", {"num_positive": 20, "num_negative": 13}, "vocab_size"),
    ("ospo/AdditiveKeywords-v0", {"vocab_size": 20_000, "num_prompts": 1678}, r"num_prompts \* vocab_size"),
    ("ospo/AdditiveKeywords-v0", {"hint_noise": 1.01}, "hint_noise"),
    ("ospo/AdditiveKeywords-v0", {"max_action_chars": 10**9 + 1}, "max_action_chars"),
    ("ospo/AdditiveKeywords-v0", {"max_action_chars": 0}, "max_action_chars"),
    ("ospo/Interaction-v0", {"num_phrases": 4097, "num_prompts": 1}, "num_phrases"),
    ("ospo/Interaction-v0", {"num_phrases": 0}, "num_phrases"),
    ("ospo/Interaction-v0", {"num_prompts": 100_001, "num_phrases": 8}, "num_prompts"),
    ("ospo/Interaction-v0", {"num_prompts": 0}, "num_prompts"),
    ("ospo/Interaction-v0", {"num_phrases": 3000, "num_prompts": 4}, r"num_prompts \* num_phrases\*\*2"),
    ("ospo/Interaction-v0", {"num_targets": 41}, "num_targets"),
    ("ospo/Interaction-v0", {"num_targets": 0}, "num_targets"),
    ("ospo/Interaction-v0", {"num_distractors": 41}, "num_distractors"),
    ("ospo/Interaction-v0", {"num_distractors": -1}, "num_distractors"),
    ("ospo/Interaction-v0", {"num_targets": 38, "num_distractors": 3}, "num_phrases"),
    ("ospo/Interaction-v0", {"num_synergies": 3}, "num_synergies"),
    ("ospo/Interaction-v0", {"num_synergies": -1}, "num_synergies"),
    ("ospo/Interaction-v0", {"synergy": 1000.5}, "synergy"),
    ("ospo/Interaction-v0", {"synergy": -0.1}, "synergy"),
    ("ospo/Interaction-v0", {"synergy": math.nan}, "synergy"),
    ("ospo/Interaction-v0", {"max_action_chars": 10**9 + 1}, "max_action_chars"),
    ("ospo/SyntheticRetrieval-v0", {"num_products": 0}, "num_products"),
    ("ospo/SyntheticRetrieval-v0", {"num_queries": 0}, "num_queries"),
    ("ospo/SyntheticRetrieval-v0", {"pool_size": 0}, "pool_size"),
    ("ospo/SyntheticRetrieval-v0", {"attributes_per_query": 4}, "attributes_per_query"),
    ("ospo/SyntheticRetrieval-v0", {"attributes_per_query": -1}, "attributes_per_query"),
    ("ospo/SyntheticRetrieval-v0", {"title_noise": 1.01}, "title_noise"),
    ("ospo/SyntheticRetrieval-v0", {**SMALL_CATALOG, "k": 10_001}, "k must"),
    ("ospo/SyntheticRetrieval-v0", {**SMALL_CATALOG, "k": 0}, "k must"),
    ("ospo/SyntheticRetrieval-v0", {**SMALL_CATALOG, "cutoff": 10**9 + 1}, "cutoff"),
    ("ospo/SyntheticRetrieval-v0", {**SMALL_CATALOG, "cutoff": 0}, "cutoff"),
    ("ospo/SyntheticRetrieval-v0", {**SMALL_CATALOG, "max_action_chars": 10**9 + 1}, "max_action_chars"),
]
# Knobs whose bound+1 would generate a catalog for minutes under the old, looser limits (checked directly on
# CatalogConfig below, which builds nothing).
CATALOG_BOUND_PLUS_ONE = [
    ({"num_products": 10**7 + 1}, "num_products"),
    ({"num_queries": 10**6 + 1}, "num_queries"),
    ({"pool_size": 10**5 + 1}, "pool_size"),
    ({"num_brands": 5001}, "num_brands"),
    ({"num_types": 41}, "num_types"),
    ({"num_colors": 17}, "num_colors"),
    ({"num_materials": 17}, "num_materials"),
    ({"num_products": 10**5, "num_queries": 10**5 + 1}, r"num_queries \* num_products"),
    ({"num_products": 10**4, "num_queries": 10**6, "pool_size": 11}, r"num_queries \* pool_size"),
]


def _case_id(env_id: str, kwargs: dict) -> str:
    shown = {k: v for k, v in kwargs.items() if k not in SMALL_CATALOG or len(kwargs) == 1}
    return env_id.removeprefix("ospo/") + ":" + ",".join(f"{k}={v}" for k, v in shown.items())


@pytest.mark.parametrize(
    ("env_id", "kwargs", "knob"), AT_BOUND_PLUS_ONE, ids=[_case_id(e, kw) for e, kw, _ in AT_BOUND_PLUS_ONE]
)
def test_every_env_knob_has_a_checked_range(env_id, kwargs, knob):
    started = time.perf_counter()
    with pytest.raises(ValueError, match=knob) as err:
        gym.make(env_id, **kwargs)
    assert time.perf_counter() - started < 5, "the bound must be checked before the expensive work"
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("kwargs", "knob"), CATALOG_BOUND_PLUS_ONE)
def test_every_catalog_knob_has_a_checked_upper_bound(kwargs, knob):
    with pytest.raises(ValueError, match=knob) as err:
        CatalogConfig(**kwargs)
    assert "(" in str(err.value), "the message says why the bound is there"


def test_synthetic_retrieval_checks_the_catalog_knobs_before_generating():
    started = time.perf_counter()
    with pytest.raises(ValueError, match="num_products must be in"):
        gym.make("ospo/SyntheticRetrieval-v0", num_products=10**7 + 1)
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize(("num_envs", "ok"), [(0, False), (1, True), (2**16 + 1, False), (2.0, False)])
def test_vector_env_num_envs_has_a_checked_range(num_envs, ok):
    make = lambda: gym.make_vec(  # noqa: E731
        "ospo/AdditiveKeywords-v0", num_envs=num_envs, vectorization_mode="vector_entry_point", num_prompts=2
    )
    if ok:
        make()
    else:
        with pytest.raises(ValueError, match=r"num_envs must be an int in \[1, 65536\]"):
            make()


@pytest.mark.parametrize("max_tokens", [0, 2**24 + 1])
def test_token_env_max_tokens_has_a_checked_range(max_tokens):
    from ospo_gym.envs.token_level import make_token_env

    with pytest.raises(ValueError, match=r"max_tokens must be an int in \[1, 16777216\]"):
        make_token_env("ospo/AdditiveKeywords-v0", max_tokens=max_tokens, vocab_size=8, num_prompts=2)


def _returns_within(code: str, seconds: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=seconds)
    except subprocess.TimeoutExpired:
        pytest.fail(f"did not return within {seconds} s (a hang): {code}")


def test_credit_with_an_impossible_vocabulary_exits_2_at_once():
    """`ospo-gym credit --text x --env-arg vocab_size=740000` used to draw pseudo-words forever."""
    result = _returns_within(
        "import sys; from ospo_gym.cli import main; "
        "sys.exit(main(['credit', '--text', 'x', '--env-arg', 'vocab_size=740000']))",
        60,
    )
    assert result.returncode == 2
    assert "vocab_size" in result.stderr and "100000" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_pseudo_words_refuses_more_words_than_exist_at_once():
    result = _returns_within(
        "import numpy as np; from ospo_gym.vocab import pseudo_words\n"
        "for count, syllables in [(737_101, (2, 3)), (91, (1, 1))]:\n"
        "    try:\n        pseudo_words(count, np.random.default_rng(0), syllables=syllables)\n"
        "    except ValueError as err:\n        print(err)",
        60,
    )
    assert "at most 737100" in result.stdout and "at most 90" in result.stdout
    # Every word that exists is still reachable (the draw budget never gives up early).
    assert len(set(pseudo_words(90, np.random.default_rng(0), syllables=(1, 1)))) == 90


def test_knob_defaults_and_bounds_still_build():
    """The defaults of every synthetic id build, and values at the bounds that are cheap to build are accepted."""
    for env_id in ("ospo/AdditiveKeywords-v0", "ospo/Interaction-v0"):
        gym.make(env_id)
    gym.make("ospo/AdditiveKeywords-v0", vocab_size=8, num_positive=4, num_negative=4, num_prompts=1)
    gym.make("ospo/Interaction-v0", num_phrases=7, num_targets=4, num_distractors=3, num_synergies=2, num_prompts=1)
    gym.make("ospo/Interaction-v0", synergy=1000.0, num_prompts=1)
    CatalogConfig(num_products=10**7, num_queries=1000, pool_size=10**4)


# ---- batched arguments ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def additive():
    return gym.make("ospo/AdditiveKeywords-v0", vocab_size=12, num_prompts=3).unwrapped


def test_rewards_needs_one_prompt_id_per_action(additive):
    with pytest.raises(ValueError, match="got 2 prompt_ids but 1 actions"):
        additive.rewards([0, 1], ["x"])
    with pytest.raises(ValueError, match="got 1 prompt_ids but 2 actions"):
        additive.rewards([0], ["x", "y"])


@pytest.mark.parametrize(
    ("prompt_ids", "actions", "message"),
    [
        ([0], "x", "actions must be a sequence"),
        ([0, 0, 0], "abc", "wrap a single one in a list"),
        ("0", ["x"], "prompt_ids must be a sequence"),
        (0, ["x"], "prompt_ids must be a sequence"),
        ([0], None, "actions must be a sequence"),
        ([0], b"x", "actions must be a sequence"),
    ],
)
def test_rewards_refuses_a_bare_str_or_a_non_sequence(additive, prompt_ids, actions, message):
    with pytest.raises(ValueError, match=message):
        additive.rewards(prompt_ids, actions)


def test_rewards_on_valid_batches_is_unchanged(additive):
    ids = [0, 1, 2, 0]
    texts = ["x", additive.vocabulary[0], " ".join(additive.vocabulary), ""]
    expected = additive.score_texts(ids, texts)
    np.testing.assert_array_equal(additive.rewards(ids, texts), expected)
    np.testing.assert_array_equal(additive.rewards(np.array(ids), tuple(texts)), expected)
    assert additive.rewards([], []).shape == (0,)


def test_vector_env_refuses_a_bare_str_and_wrong_lengths():
    env = gym.make_vec("ospo/AdditiveKeywords-v0", num_envs=3, vectorization_mode="vector_entry_point", num_prompts=3)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="wrap a single one in a list"):
        env.step("abc")
    with pytest.raises(ValueError, match="got 2 actions; expected a sequence of 3"):
        env.step(["a", "b"])
    with pytest.raises(ValueError, match="actions must be a sequence"):
        env.step(None)
    with pytest.raises(ValueError, match="prompt_ids"):
        env.reset(options={"prompt_ids": "012"})
    env.step(["a", "b", "c"])


@pytest.mark.parametrize("env_id", ospo_gym.ENV_IDS[:3])
def test_oracle_refuses_bad_coalitions(env_id):
    env = gym.make(env_id, **({"num_prompts": 2} if env_id != "ospo/SyntheticRetrieval-v0" else SMALL_CATALOG))
    env = env.unwrapped
    text = " ".join(env.vocabulary[:4])
    spans = env.oracle.segment(text)
    n = len(spans)
    prompt_id = env.prompt_ids[0]
    for coalitions, message in [
        ([(-1,)], "names player -1"),
        ([(n,)], f"names player {n}"),
        ([(0.0,)], "not an int"),
        ([0], r"write a single player i as \(i,\)"),
        ((0, 1), r"write a single player i as \(i,\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            env.oracle.values(prompt_id, text, spans, coalitions)
    assert env.oracle.values(prompt_id, text, spans, [(), (0,), tuple(range(n))]).shape == (3,)
