"""JoinedTexts: the oracle's coalition texts handed over as segment pieces; BM25 scores them from the pieces' term
counts. Every path must give what the joined strings give, bit for bit."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from test_bm25_tokenize import random_text

import ospo_gym  # noqa: F401
from ospo_gym import oracle as oracle_module
from ospo_gym.credit import sample_coalitions
from ospo_gym.joined_texts import JoinedTexts
from ospo_gym.oracle import CoalitionOracle
from ospo_gym.retrieval import BM25Retriever


def random_joined(rng: np.random.Generator, pieces: list[str], rows: int) -> JoinedTexts:
    """Rows of 0-6 pieces, in any order, a piece possibly twice in one row."""
    lengths = rng.integers(0, 7, size=rows)
    indices = rng.integers(0, len(pieces), size=int(lengths.sum()))
    return JoinedTexts(pieces, np.concatenate([[0], np.cumsum(lengths)]), indices)


def test_joined_texts_is_the_sequence_of_its_joined_strings() -> None:
    joined = JoinedTexts(["red", "shoes", "for men"], [0, 2, 2, 5], [0, 1, 2, 0, 0])
    assert list(joined) == ["red shoes", "", "for men red red"]
    assert len(joined) == 3 and joined[-1] == "for men red red" and joined[1:] == ["", "for men red red"]
    assert joined.rows() == [[0, 1], [], [2, 0, 0]]
    with pytest.raises(IndexError):
        joined[3]


@pytest.mark.parametrize(
    ("indptr", "indices"),
    [([1, 2], [0]), ([0, 2], [0]), ([0, 1, 0], [0]), ([0, 1], [3]), ([0, 1], [-1]), ([], [])],
)
def test_joined_texts_refuses_arrays_that_are_not_rows_over_its_pieces(indptr, indices) -> None:
    with pytest.raises(ValueError, match="CSR rows over 2 pieces"):
        JoinedTexts(["a", "b"], indptr, indices)


@pytest.fixture(scope="module")
def retriever() -> BM25Retriever:
    rng = np.random.default_rng(1)
    return BM25Retriever([random_text(rng, 12) for _ in range(300)], stopwords="en")


def test_bm25_query_matrix_of_pieces_equals_that_of_the_joined_strings(retriever: BM25Retriever) -> None:
    """Adversarial Unicode pieces (spaces inside, at the ends, doubled; unknown words), recurring pieces, empty rows:
    the same CSR matrix (data, indices, indptr and their dtypes) and the same token ids."""
    rng = np.random.default_rng(4)
    pieces = [random_text(rng, int(rng.integers(1, 4))) for _ in range(60)] + [" red", "red ", "red  red", "zzqx"]
    joined = random_joined(rng, pieces, 400)
    strings = list(joined)
    assert retriever.scores_joined_texts
    assert retriever.tokenize(joined) == retriever.tokenize(strings)
    got, want = retriever._query_matrix(joined), retriever._query_matrix(strings)
    assert want.nnz > 400  # the vocabulary matches a good share of the pieces
    assert (want.data > 1).any()  # some term counts twice in a row
    for name in ("data", "indices", "indptr"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
        assert getattr(got, name).dtype == getattr(want, name).dtype, name
    assert got.shape == want.shape


def test_bm25_pool_frontier_of_pieces_equals_that_of_the_joined_strings(retriever: BM25Retriever) -> None:
    rng = np.random.default_rng(5)
    pieces = [random_text(rng, 2) for _ in range(40)]
    joined = random_joined(rng, pieces, 200)
    pools = rng.integers(-1, retriever.num_docs, size=(200, 12))
    for cutoff in (None, 3, 40):
        got = retriever.pool_frontier(joined, pools, cutoff)
        want = retriever.pool_frontier(list(joined), pools, cutoff)
        assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True)), cutoff


def batch(env, rng: np.random.Generator, size: int) -> tuple[list, list[str]]:
    """Completions of 4-16 words of the env's catalog vocabulary; one completion repeated under its own prompt
    and once under another prompt (the same coalition texts for two prompts must not share a value)."""
    words = sorted({w for p in env.prompt_ids for w in env.prompt(p).split()[1:]})
    prompt_ids = [env.prompt_ids[int(i)] for i in rng.integers(0, len(env.prompt_ids), size=size)]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(4, 17)))) for _ in range(size)]
    texts[1], prompt_ids[1] = texts[0], prompt_ids[0]
    texts[2] = texts[0]
    return prompt_ids, texts


@pytest.mark.parametrize("cutoff", [1000, 5, None])
def test_oracle_values_from_pieces_equal_those_from_joined_texts(cutoff) -> None:
    """The retrieval env's oracle (pieces) against an oracle on the same score_texts given joined strings: the same
    values bit for bit, coalitions in and out of order, the empty coalition, repeated completions and prompts."""
    env = gym.make("ospo/SyntheticRetrieval-v0", num_products=400, num_queries=40, cutoff=cutoff).unwrapped
    assert env.oracle.joined_texts
    strings = CoalitionOracle(env.score_texts, segmentation=env.segmentation)
    rng = np.random.default_rng(6)
    positive = 0
    for repeat in range(6):
        prompt_ids, texts = batch(env, rng, 10)
        spans = [env.oracle.segment(t) for t in texts]
        coalitions = [sample_coalitions(len(s), 4, 40, rng=100 * repeat + i) for i, s in enumerate(spans)]
        coalitions[3] = [tuple(reversed(c)) for c in coalitions[3]] + [()]
        got = env.oracle.values_batch(prompt_ids, texts, spans, coalitions)
        want = strings.values_batch(prompt_ids, texts, spans, coalitions)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype == np.float64 and np.array_equal(g, w)
        positive += sum(int((w > 0).sum()) for w in want)
    assert positive > 100  # the comparison covers rewarded coalitions, not only zeros
    assert env.oracle.num_scored == strings.num_scored  # the repeated completion is scored once


def test_additive_oracle_values_from_pieces_equal_those_from_joined_texts() -> None:
    env = gym.make("ospo/AdditiveKeywords-v0").unwrapped
    assert env.oracle.joined_texts
    strings = CoalitionOracle(env.score_texts, segmentation=env.segmentation)
    rng = np.random.default_rng(9)
    words = [*env.vocabulary, "and", "the", "ZZZ", env.vocabulary[0].upper()]
    prompt_ids = [int(p) for p in rng.integers(0, len(env.prompt_ids), size=12)]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(3, 15)))) for _ in prompt_ids]
    texts[1] = texts[0]
    spans = [env.oracle.segment(t) for t in texts]
    coalitions = [sample_coalitions(len(s), 4, 40, rng=i) + [()] for i, s in enumerate(spans)]
    got = env.oracle.values_batch(prompt_ids, texts, spans, coalitions)
    want = strings.values_batch(prompt_ids, texts, spans, coalitions)
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))
    assert len({float(v) for w in want for v in w}) > 20  # many different rewards compared
    noisy = gym.make("ospo/AdditiveKeywords-v0", reward_noise={"kind": "gaussian", "level": 0.1, "seed": 0})
    assert not noisy.unwrapped.oracle.joined_texts


def test_joined_texts_oracle_hands_any_scorer_the_texts_of_the_text_path() -> None:
    """A scorer that reads the strings (here a value that changes with any character or its position) sees, in a
    JoinedTexts, the very texts of the text path: segments in their original order, whatever the coalition's."""

    def by_string(prompt_ids, texts):
        return np.array([(hash((p, t)) % 1000) / 1000 for p, t in zip(prompt_ids, list(texts), strict=True)])

    rng = np.random.default_rng(8)
    words = ["red", "blue", "cotton", "shirt", "for", "men", "size", "xl"]
    texts = [" ".join(rng.choice(words, size=9)) for _ in range(6)]
    prompt_ids = ["a", "b", "a", "c", "b", "a"]
    pieces, strings = CoalitionOracle(by_string, joined_texts=True), CoalitionOracle(by_string)
    spans = [pieces.segment(t) for t in texts]
    coalitions = [[tuple(rng.permutation(len(s))[: int(rng.integers(0, len(s) + 1))]) for _ in range(30)] for s in spans]
    got = pieces.values_batch(prompt_ids, texts, spans, coalitions)
    want = strings.values_batch(prompt_ids, texts, spans, coalitions)
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


def test_oracle_from_pieces_checks_coalitions_and_spans_as_the_text_path() -> None:
    env = gym.make("ospo/SyntheticRetrieval-v0", num_products=200, num_queries=20).unwrapped
    prompt, text = env.prompt_ids[0], "red cotton shirt"
    spans = env.oracle.segment(text)
    with pytest.raises(ValueError, match="player indices"):
        env.oracle.values(prompt, text, spans, [(len(spans),)])
    with pytest.raises(ValueError, match="not inside the text"):
        env.oracle.values(prompt, text, [(0, 99)], [(0,)])
    assert env.oracle.values_batch([], [], [], []) == []


def test_distinct_rows_falls_back_to_an_exact_unique_on_hash_collisions(monkeypatch) -> None:
    """With a zero multiplier every row's hash is its last column: many collisions, which the check must catch."""
    rng = np.random.default_rng(7)
    lengths = rng.integers(0, 4, size=300)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    flat = rng.integers(0, 3, size=int(indptr[-1]))
    prompts = rng.integers(0, 2, size=300)
    rows = [(int(p), *flat[a:b].tolist()) for p, a, b in zip(prompts, indptr[:-1], indptr[1:], strict=True)]
    firsts = list(dict.fromkeys(rows))
    for multiplier in (oracle_module._ROW_HASH, np.uint64(0)):
        monkeypatch.setattr(oracle_module, "_ROW_HASH", multiplier)
        first, index = oracle_module._distinct_rows(prompts, flat, indptr)
        assert [rows[f] for f in first] == firsts  # distinct rows in order of first use
        assert [firsts[i] for i in index] == rows


def test_only_the_plain_bm25_pooled_reward_gets_pieces() -> None:
    """Noise, another pool rule, or a subclass's own score_texts keep joined strings (their texts must reach them)."""

    class Shouting(type(gym.make("ospo/SyntheticRetrieval-v0", num_products=50, num_queries=5).unwrapped)):
        def score_texts(self, prompt_ids, texts):
            return super().score_texts(prompt_ids, [t.upper() for t in texts])

    kwargs = dict(num_products=200, num_queries=20)
    assert gym.make("ospo/SyntheticRetrieval-v0", **kwargs).unwrapped.oracle.joined_texts
    assert gym.make("ospo/SyntheticRetrieval-v0", retriever="bm25-exhaustive", **kwargs).unwrapped.oracle.joined_texts
    noisy = dict(reward_noise={"kind": "gaussian", "level": 0.1, "seed": 0})
    assert not gym.make("ospo/SyntheticRetrieval-v0", **noisy, **kwargs).unwrapped.oracle.joined_texts
    assert not gym.make("ospo/SyntheticRetrieval-v0", pool=None, **kwargs).unwrapped.oracle.joined_texts
    assert not Shouting(**kwargs).oracle.joined_texts


def test_a_re_segmenting_integration_oracle_keeps_the_pieces_hand_over() -> None:
    from ospo_gym.integrations.common import env_oracle

    env = gym.make("ospo/SyntheticRetrieval-v0", num_products=200, num_queries=20).unwrapped
    words = env_oracle(env, "word", user="test", without_oracle="")
    assert words.segmentation == "word" and words.joined_texts
    text = "red cotton shirt for men"
    spans = words.segment(text)
    coalitions = [(), (0,), (1, 2), tuple(range(len(spans)))]
    want = CoalitionOracle(env.score_texts, segmentation="word").values(env.prompt_ids[0], text, spans, coalitions)
    assert np.array_equal(words.values(env.prompt_ids[0], text, spans, coalitions), want)

