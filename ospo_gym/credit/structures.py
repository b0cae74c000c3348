"""Coalition structures beyond contiguous windows, behind one option (``coalition_structure``).

* ``"windows"``: contiguous windows of at most ``w_max`` segments, ∅ and the full set (the paper's OSPO);
* ``"random"``: random subsets of size <= ``w_max`` (the paper's non-contiguous ablation, ``contiguous=False``);
* ``"windows+complements"``: every window and its complement ``N ∖ W`` (``complements=True``);
* ``"owen"``: the two-level Owen value with a priori unions (:mod:`ospo_gym.credit.owen`): segments are grouped in
  unions — from sentence boundaries (:func:`sentence_unions`) or from lexical similarity (:func:`lexical_unions`),
  so that related segments far apart share a union — and the coalitions are whole unions plus windows of one
  union's segments.

The first three are :func:`~ospo_gym.credit.sample_coalitions` with the matching flags and are credited by
:func:`~ospo_gym.credit.segment_credit`; ``"owen"`` is credited by
:func:`~ospo_gym.credit.owen.two_level_credit`. :func:`structured_credit` picks the right one.

Unions are given as labels, ``unions`` (n,) ints: segments with the same label share a union, in any positions.
Internally the players are renumbered union by union (a stable sort of the labels, which keeps each union's
segments in text order) as :mod:`ospo_gym.credit.owen` expects, and the coalitions and credit are mapped back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np

from ospo_gym.credit.coalitions import Coalition, contiguous_coalitions

if TYPE_CHECKING:
    from ospo_gym.credit.embedding import SegmentEncoder

COALITION_STRUCTURES = ("windows", "random", "windows+complements", "owen")
"""The values of ``coalition_structure`` (``AgentConfig.coalition_structure``)."""
UNION_SOURCES = ("lexical", "sentences", "embedding")
"""Where the ``"owen"`` structure's a priori unions come from (``AgentConfig.owen_unions``)."""
LEXICAL_THRESHOLD = 0.25
"""Default character-trigram Jaccard similarity at or above which two segments are joined in one union."""

_WORD = re.compile(r"\w+")


def check_structure(structure: object) -> str:
    """``structure`` if it is one of :data:`COALITION_STRUCTURES`, else one ``ValueError`` naming them."""
    if structure not in COALITION_STRUCTURES:
        raise ValueError(f"unknown coalition_structure {structure!r}; expected one of {COALITION_STRUCTURES}")
    return structure  # type: ignore[return-value]


def check_unions(unions: object, n: int) -> np.ndarray:
    """``unions`` as (n,) int64 labels, or ``ValueError`` (what was wrong, what is expected)."""
    if unions is None:
        raise ValueError(
            "coalition_structure='owen' needs unions=: one int label per segment, (n,), segments with the same "
            "label in one union (see ospo_gym.credit.structures.lexical_unions / sentence_unions)"
        )
    labels = np.asarray(unions)
    if labels.shape != (n,) or (n and labels.dtype.kind not in "iu"):
        raise ValueError(
            f"unions must be (n,) = ({n},) int labels, one per segment; got shape {labels.shape}, dtype {labels.dtype}"
        )
    return labels.astype(np.int64)


def union_order(unions: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The renumbering of players union by union.

    Returns:
        order (n,): ``order[j]`` is the segment that plays as player ``j`` of :mod:`ospo_gym.credit.owen` (unions
            in order of their first segment, each union's segments in text order); sizes (m,): players per union.
    """
    labels = np.asarray(unions, dtype=np.int64)
    _, first, canonical = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first, kind="stable"), kind="stable")  # union ids by first appearance
    canonical = rank[canonical.reshape(-1)]
    order = np.argsort(canonical, kind="stable")
    return order, np.bincount(canonical, minlength=len(first)).astype(np.int64)


def _to_segments(coalitions: Sequence[Coalition], order: np.ndarray) -> list[Coalition]:
    return [tuple(sorted(int(order[j]) for j in c)) for c in coalitions]


def owen_coalitions(
    unions: Sequence[int],
    w_max: int = 8,
    max_coalitions: int | None = 96,
    *,
    rng: np.random.Generator | int | None = None,
) -> list[Coalition]:
    """Coalitions for the structured Owen estimate with a priori ``unions`` (n,) labels, in segment indices.

    The pool is :func:`~ospo_gym.credit.owen.two_level_coalitions` (every inner window of each union, ``w_max``
    wide, with whole other unions). When it holds more than ``max_coalitions`` (the budget ``M``), it is built
    instead block by block, a block being ``{Q_R ∪ W}`` for one union ``k``, one set ``R`` of other unions and every
    inner window ``W`` of ``k`` (so the pairs ``(S, S ∪ {i})`` the estimate reads stay whole): first ``R = ∅`` for
    every union (when one does not fit, its narrowest windows, as many as fit), then ``R`` = all other unions, then
    random ``R`` whose sizes cycle through ``1 .. m−2``; later blocks that no longer fit are skipped. ∅ and the full
    set are always kept.

    Returns:
        Sorted index tuples, deduplicated, ∅ first and the full set last, at most ``max_coalitions`` of them.
    """
    from ospo_gym.credit.owen import two_level_coalitions  # owen imports this package's sampler

    if max_coalitions is not None and max_coalitions < 2:
        raise ValueError(
            f"max_coalitions must be >= 2 (the empty and the full coalition are always kept), got {max_coalitions}"
        )
    labels = np.asarray(unions)
    labels = check_unions(labels, len(labels))
    n = len(labels)
    rng = np.random.default_rng(rng)
    if n == 0:
        return [()]
    order, sizes = union_order(labels)
    pool = two_level_coalitions(sizes, w_max, None, rng=rng)
    if max_coalitions is None or len(pool) <= max_coalitions:
        return sorted(_to_segments(pool, order), key=lambda c: (len(c), c))
    offsets = np.cumsum(sizes) - sizes
    members = [list(range(int(o), int(o) + int(b))) for o, b in zip(offsets, sizes, strict=True)]
    m = len(sizes)
    inner = [[tuple(members[k][j] for j in w) for w in contiguous_coalitions(int(sizes[k]), w_max)] for k in range(m)]

    def block(k: int, outer: tuple[int, ...]) -> list[Coalition]:
        q = [p for u in outer for p in members[u]]
        return [tuple(sorted([*q, *w])) for w in inner[k]]

    def candidates(k: int) -> list[tuple[int, ...]]:
        others = [u for u in range(m) if u != k]
        middle = list(range(1, len(others)))
        if len(others) <= 10:  # few enough to list every middle-sized R, in a random order per size
            by_size = [list(combinations(others, s)) for s in middle]
            for group in by_size:
                rng.shuffle(group)
        else:
            by_size = [[tuple(sorted(int(u) for u in rng.choice(others, size=s, replace=False))) for _ in range(64)]
                       for s in middle]
        rng.shuffle(middle)
        out: list[tuple[int, ...]] = [(), tuple(others)]
        depth = max((len(g) for g in by_size), default=0)
        for r in range(depth):  # one R of each size in turn, so that every |R| stratum is observed early
            out.extend(by_size[s - 1][r] for s in middle if r < len(by_size[s - 1]))
        return list(dict.fromkeys(out))

    queues = [candidates(k) for k in range(m)]
    chosen: set[Coalition] = {(), tuple(range(n))}
    budget = int(max_coalitions)
    for step in range(max(len(q) for q in queues)):
        for k in rng.permutation(m) if step >= 2 else range(m):
            if step >= len(queues[k]):
                continue
            new = [c for c in block(int(k), queues[k][step]) if c not in chosen]
            if len(chosen) + len(new) <= budget:
                chosen.update(new)
            elif step == 0:  # a union too big for the room left: its narrowest windows (the singletons first)
                chosen.update(new[: budget - len(chosen)])
        if len(chosen) >= budget:
            break
    return sorted(_to_segments(sorted(chosen), order), key=lambda c: (len(c), c))


def structured_credit(
    coalitions: Sequence[Coalition],
    values: np.ndarray,
    n: int,
    coalition_structure: str = "windows",
    *,
    unions: Sequence[int] | None = None,
    variant: str = "owen",
) -> np.ndarray:
    """Segment credit (n,) from the values (K,) of ``coalitions`` (K sorted tuples) sampled with a structure.

    ``"owen"``: :func:`~ospo_gym.credit.owen.two_level_credit` with the a priori ``unions`` (n,) labels (``variant``
    must be ``"owen"``), made efficient — the credit sums to ``v(N) − v(∅)`` when ∅ and the full set are among the
    coalitions — by sharing what the estimate leaves equally; any other structure:
    :func:`~ospo_gym.credit.segment_credit` with ``variant``, as it is (not efficient in general).
    """
    from ospo_gym.credit.owen import two_level_credit
    from ospo_gym.credit.shapley import segment_credit

    check_structure(coalition_structure)
    if coalition_structure != "owen":
        return segment_credit(coalitions, values, n, variant=variant)
    if variant != "owen":
        raise ValueError(
            f"coalition_structure='owen' computes the two-level Owen estimate and takes variant='owen', got {variant!r}"
        )
    labels = check_unions(unions, n)
    order, sizes = union_order(labels)
    player = np.empty(n, dtype=np.int64)
    player[order] = np.arange(n)  # segment -> player number
    renumbered = [tuple(sorted(int(player[i]) for i in c)) for c in coalitions]
    phi = np.empty(n)
    phi[order] = two_level_credit(renumbered, values, sizes)
    index = {c: j for j, c in enumerate(coalitions)}
    full, empty = index.get(tuple(range(n))), index.get(())
    if n and full is not None and empty is not None:
        # two_level_credit is efficient when every subset of unions is pooled; under a budget (or with more than
        # 7 unions) the quotient credit is an estimate too, so the rest of v(N) − v(∅) is shared equally (0 when
        # every coalition is pooled, which keeps the exact case exact)
        phi += (float(np.asarray(values, dtype=np.float64)[full] - values[empty]) - phi.sum()) / n
    return phi


def sentence_unions(text: str, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """(n,) labels: the index of the sentence (:func:`ospo_gym.segment.sentence_spans`) each segment starts in."""
    from ospo_gym.segment import sentence_spans

    ends = np.asarray([end for _, end in sentence_spans(text)], dtype=np.int64)
    starts = np.asarray([start for start, _ in spans], dtype=np.int64)
    return np.searchsorted(ends, starts, side="right").astype(np.int64)


def _trigrams(segment: str) -> frozenset[str]:
    words = _WORD.findall(segment.lower())
    grams = {w[i : i + 3] for w in words for i in range(len(w) - 2)}
    return frozenset(grams | {w for w in words if len(w) < 3})


def lexical_unions(text: str, spans: Sequence[tuple[int, int]], threshold: float = LEXICAL_THRESHOLD) -> np.ndarray:
    """(n,) labels: segments joined when the Jaccard similarity of their character-trigram sets is at least
    ``threshold`` (in (0, 1]), unions the connected components of that graph (label = the smallest segment index).

    Trigrams catch shared stems (``"tavoki"``, ``"tavoru"``) that whole-word overlap misses; a segment without
    word characters is its own union.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1] (a Jaccard similarity), got {threshold}")
    grams = [_trigrams(text[a:b]) for a, b in spans]
    n = len(grams)
    labels = np.arange(n, dtype=np.int64)
    for i in range(n):  # n segments, O(n²) set comparisons; texts are short
        for j in range(i + 1, n):
            union = len(grams[i] | grams[j])
            if union and len(grams[i] & grams[j]) / union >= threshold:
                a, b = labels[i], labels[j]
                labels[labels == max(a, b)] = min(a, b)
    return labels


def segment_unions(
    text: str,
    spans: Sequence[tuple[int, int]],
    source: str = "lexical",
    *,
    encoder: SegmentEncoder | str | None = None,
) -> np.ndarray:
    """(n,) union labels of the segments ``spans`` of ``text`` from ``source`` (one of :data:`UNION_SOURCES`);
    ``encoder`` (a texts -> (k, d) callable or a registered name; None: all-MiniLM-L6-v2) only for ``"embedding"``."""
    return segment_unions_batch([text], [spans], source, encoder=encoder)[0]


def segment_unions_batch(
    texts: Sequence[str],
    spans: Sequence[Sequence[tuple[int, int]]],
    source: str = "lexical",
    *,
    encoder: SegmentEncoder | str | None = None,
) -> list[np.ndarray]:
    """:func:`segment_unions` of every ``(texts[b], spans[b])``; ``"embedding"`` encodes the batch's distinct
    segments in one encoder call (:func:`~ospo_gym.credit.embedding.embedding_unions_batch`)."""
    if source not in UNION_SOURCES:
        raise ValueError(f"unknown union source {source!r}; expected one of {UNION_SOURCES}")
    if encoder is not None and source != "embedding":
        raise ValueError(f"encoder= is for the 'embedding' union source only, got source {source!r}")
    if source == "embedding":
        from ospo_gym.credit.embedding import embedding_unions_batch

        return embedding_unions_batch(texts, spans, encoder)
    unions = lexical_unions if source == "lexical" else sentence_unions
    return [unions(text, s) for text, s in zip(texts, spans, strict=True)]
