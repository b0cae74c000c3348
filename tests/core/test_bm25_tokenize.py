"""BM25Retriever.tokenize memoises token ids per space-separated chunk: it must give bm25s's own ids exactly."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from ospo_gym.retrieval import BM25Retriever

# Characters whose lower-casing, NFKC form or word class depends on context or changes length: Greek capital sigma
# (final form), dotted capital I, combining marks, Hangul jamo (NFKC composes L+V+T), compatibility forms that
# NFKC turns into spaces or letters (NBSP, diaeresis, ligature, full-width), CJK, emoji, apostrophes and hyphens.
NASTY = list("ΣσςΟΔΟΣİIıi") + [
    "\u0301", "\u0308", "\u1100", "\u1161", "\u11a8", "\u00a0", "\u00a8", "\ufb01", "ＲＥＤ", "ｒｅｄ", "赤", "。",
    "\U0001f600", "\u2764", "'", "’", "-", "_", "3", "x", "ß", "ǅ", "\t", "\n", "\u3000", "a", "b", "red", "the",
]  # fmt: skip


def random_text(rng: np.random.Generator, words: int) -> str:
    parts = []
    for _ in range(words):
        parts.append("".join(rng.choice(NASTY, size=int(rng.integers(1, 4)))))
        parts.append(" " if rng.random() < 0.8 else str(rng.choice(["  ", "\t", "", "\u00a0"])))
    return "".join(parts)


@pytest.fixture(scope="module")
def retriever() -> BM25Retriever:
    rng = np.random.default_rng(1)
    return BM25Retriever([random_text(rng, 12) for _ in range(300)], stopwords="en")


def reference_ids(retriever: BM25Retriever, texts: list[str]) -> list[list[int]]:
    return retriever._tokenizer.tokenize(texts, update_vocab=False, return_as="ids", show_progress=False, allow_empty=False)


def test_memoised_tokenize_equals_bm25s_on_adversarial_unicode(retriever: BM25Retriever) -> None:
    rng = np.random.default_rng(2)
    texts = [random_text(rng, int(rng.integers(0, 10))) for _ in range(2000)] + ["", " ", "  red  ", "ΟΔΟΣ ΟΔΟΣ"]
    assert sum(map(len, reference_ids(retriever, texts))) > 2000  # the vocabulary matches a good share of it
    assert retriever.tokenize(texts) == reference_ids(retriever, texts)
    assert retriever.tokenize(texts) == reference_ids(retriever, texts)  # from the memo this time


def test_query_matrix_equals_the_coo_build(retriever: BM25Retriever) -> None:
    rng = np.random.default_rng(3)
    texts = [random_text(rng, int(rng.integers(0, 10))) for _ in range(300)]
    ids = reference_ids(retriever, texts)
    rows = np.repeat(np.arange(len(ids)), [len(x) for x in ids])
    cols = np.array([t for x in ids for t in x], dtype=np.int64)
    want = sp.csr_matrix((np.ones(len(cols), dtype=np.float32), (rows, cols)), shape=(len(ids), retriever.vocab_size))
    want.sum_duplicates()
    got = retriever._query_matrix(texts)
    for name in ("data", "indices", "indptr"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
        assert getattr(got, name).dtype == getattr(want, name).dtype, name
