"""The coalition-value oracle: what reward would a subset of a completion's segments have earned?

``v(S)`` is the env's reward for the text made of the segments in ``S`` joined by single spaces, in their
original order; ``v(∅)`` is the reward of the empty text. One call scores every coalition of a whole batch of
completions with a single batched reward call, evaluating each distinct (prompt, text) pair once.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Sequence

import numpy as np

from ospo_gym.credit.coalitions import Coalition
from ospo_gym.credit.shapley import CoalitionMemo, player_indices
from ospo_gym.joined_texts import JoinedTexts
from ospo_gym.runs import offsets_in_runs, run_positions
from ospo_gym.segment import SEGMENTATION_MODES, Span, segment_action

ScoreTexts = Callable[[Sequence[Hashable], Sequence[str]], np.ndarray]
"""Rewards of retrieval texts for their prompts: (prompt_ids, texts) -> (N,) floats in [0, 1]."""


def check_spans(text: str, spans: Sequence[Span]) -> None:
    """Raise ``ValueError`` unless ``spans`` are ordered, disjoint, non-empty and inside ``text``."""
    previous_end = 0
    for position, span in enumerate(spans):
        if len(span) != 2:
            raise ValueError(f"span {position} is {span!r}; expected a (start, end) pair")
        start, end = int(span[0]), int(span[1])
        if not previous_end <= start < end <= len(text):
            raise ValueError(
                f"span {position} = {span!r} is not inside the text (length {len(text)}), non-empty and after "
                f"the previous span (which ended at {previous_end}); use oracle.segment(text) to get valid spans"
            )
        previous_end = end


def coalition_text(text: str, spans: Sequence[Span], coalition: Coalition) -> str:
    """The text of the segments in ``coalition``, in their original order, joined by single spaces."""
    return " ".join(text[spans[i][0] : spans[i][1]] for i in sorted(coalition))


# coalition lists already checked, by the identities of their tuples: whether every coalition lists its players in
# increasing order, each one's size and all their players in that order (read-only arrays)
_CHECKED = CoalitionMemo()


def _checked(coalitions: Sequence[Coalition], n: int) -> tuple[bool, np.ndarray, np.ndarray]:
    """Check ``coalitions`` (:func:`player_indices`'s rules, ValueError); return whether every one lists its
    players in increasing order, the sizes ``(K,)`` and the players of each in increasing order, flattened;
    remembered for lists of the same int tuples."""
    known = _CHECKED.get(coalitions, n)
    if known is None:
        lengths, players = player_indices(coalitions, n)
        in_order = _in_order(lengths, players)
        if not in_order:  # each coalition's players sorted, coalitions kept in place
            owner = np.repeat(np.arange(len(lengths)), lengths)
            players = players[np.lexsort((players, owner))]
        lengths.flags.writeable = players.flags.writeable = False
        known = (in_order, lengths, players)
        _CHECKED.put(coalitions, n, known)
    return known


def _in_order(lengths: np.ndarray, players: np.ndarray) -> bool:
    """Is every coalition's player list non-decreasing? ``lengths`` (K,) sizes, ``players`` their flat indices."""
    if len(players) < 2:
        return True
    rises = np.diff(players) >= 0
    starts = (np.cumsum(lengths) - lengths)[1:]
    rises[starts[(starts > 0) & (starts < len(players))] - 1] = True  # pairs across two coalitions do not count
    return bool(rises.all())


class CoalitionOracle:
    """Coalition values for one environment.

    Args:
        score_texts: the env's batched reward of retrieval texts.
        segmentation: ``"phrase"``, ``"sentence"`` or ``"word"`` — how :meth:`segment` cuts a completion.
        segmentation_backend: for phrase mode, ``"rules"`` or ``"rules-v2"`` (no model needed), ``"spacy"`` or
            ``"spacy-released"`` (the released players); see :mod:`ospo_gym.segment`.

        joined_texts: ``score_texts`` takes a :class:`~ospo_gym.joined_texts.JoinedTexts` as its texts (a
            ``Sequence[str]`` whose texts are the segments' pieces joined; e.g. BM25 then sums the pieces' term
            counts instead of tokenising every coalition text). The same values; off by default, since a scorer
            that type-checks its texts (``list``) would refuse it.

    Counters ``num_calls``, ``num_values`` (coalition values returned) and ``num_scored`` (distinct texts sent to
    the reward) let agents log oracle cost.
    """

    def __init__(
        self,
        score_texts: ScoreTexts,
        *,
        segmentation: str = "phrase",
        segmentation_backend: str = "rules",
        joined_texts: bool = False,
    ) -> None:
        if segmentation not in SEGMENTATION_MODES:
            raise ValueError(f"unknown segmentation {segmentation!r}; expected one of {SEGMENTATION_MODES}")
        self.score_texts = score_texts
        self.joined_texts = joined_texts
        self.segmentation = segmentation
        self.segmentation_backend = segmentation_backend
        self.num_calls = 0
        self.num_values = 0
        self.num_scored = 0

    def segment(self, text: str) -> list[Span]:
        """Segment spans of a completion, in its own character coordinates (only its retrieval text is cut)."""
        return segment_action(text, self.segmentation, backend=self.segmentation_backend)

    def values(self, prompt_id: Hashable, text: str, spans: Sequence[Span], coalitions: Sequence[Coalition]) -> np.ndarray:
        """``v(S)`` for each coalition, shape (K,)."""
        return self.values_batch([prompt_id], [text], [spans], [coalitions])[0]

    def values_batch(
        self,
        prompt_ids: Sequence[Hashable],
        texts: Sequence[str],
        spans: Sequence[Sequence[Span]],
        coalitions: Sequence[Sequence[Coalition]],
    ) -> list[np.ndarray]:
        """Coalition values for a batch of completions with one call to the reward.

        Args:
            prompt_ids, texts, spans, coalitions: one entry per completion (B).

        Returns:
            B arrays; entry b has shape (K_b,) with K_b = len(coalitions[b]).
        """
        if not len(prompt_ids) == len(texts) == len(spans) == len(coalitions):
            raise ValueError("prompt_ids, texts, spans and coalitions need one entry per completion")
        if self.joined_texts:
            return self._values_of_pieces(prompt_ids, texts, spans, coalitions)
        every: list[tuple[Hashable, str]] = []  # (prompt, coalition text) of every coalition, completion by completion
        for prompt_id, text, text_spans, text_coalitions in zip(prompt_ids, texts, spans, coalitions, strict=True):
            check_spans(text, text_spans)
            # ints naming segments of this text, or ValueError
            if _checked(text_coalitions, len(text_spans))[0]:  # every coalition sorted: join pieces as they come
                piece = [text[span[0] : span[1]] for span in text_spans].__getitem__
                joined = [" ".join(map(piece, coalition)) for coalition in text_coalitions]
            else:
                joined = [coalition_text(text, text_spans, coalition) for coalition in text_coalitions]
            every.extend(zip(itertools.repeat(prompt_id), joined))
        keys: dict[tuple[Hashable, str], int] = dict.fromkeys(every)  # each distinct pair once, in order of first use
        for number, key in enumerate(keys):
            keys[key] = number
        index = np.fromiter(map(keys.__getitem__, every), dtype=np.int64, count=len(every))
        unique = list(keys)
        scores = np.asarray(self.score_texts([k[0] for k in unique], [k[1] for k in unique]), dtype=np.float64)
        return self._per_completion(scores, index, coalitions)

    def _values_of_pieces(
        self,
        prompt_ids: Sequence[Hashable],
        texts: Sequence[str],
        spans: Sequence[Sequence[Span]],
        coalitions: Sequence[Sequence[Coalition]],
    ) -> list[np.ndarray]:
        """:meth:`values_batch` with the coalition texts handed over as :class:`JoinedTexts`: the batch's distinct
        segment pieces, and each coalition as the pieces it joins; a repeated (prompt, pieces) row is scored once."""
        pieces: list[str] = []
        piece_number: dict[str, int] = {}
        prompt_number: dict[Hashable, int] = {}
        sizes, members, prompts = [], [], []
        for prompt_id, text, text_spans, text_coalitions in zip(prompt_ids, texts, spans, coalitions, strict=True):
            check_spans(text, text_spans)
            _, lengths, players = _checked(text_coalitions, len(text_spans))  # ValueError for a bad coalition
            local = []
            for start, end in text_spans:
                piece = text[start:end]
                number = piece_number.get(piece)
                if number is None:
                    number = piece_number[piece] = len(pieces)
                    pieces.append(piece)
                local.append(number)
            sizes.append(lengths)
            members.append(np.asarray(local, dtype=np.int64)[players])
            prompts.append(np.full(len(lengths), prompt_number.setdefault(prompt_id, len(prompt_number))))
        none = np.zeros(0, dtype=np.int64)
        lengths, flat = (np.concatenate(sizes), np.concatenate(members)) if sizes else (none, none)
        row_prompts = np.concatenate(prompts) if prompts else none
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        first, index = _distinct_rows(row_prompts, flat, indptr)
        # the distinct rows' pieces, row after row
        kept = lengths[first]
        kept_indptr = np.concatenate([[0], np.cumsum(kept)])
        joined = JoinedTexts(pieces, kept_indptr, flat[run_positions(indptr[first], kept)])
        prompt_of = list(prompt_number)
        scores = np.asarray(self.score_texts([prompt_of[p] for p in row_prompts[first].tolist()], joined), dtype=np.float64)
        return self._per_completion(scores, index, coalitions)

    def _per_completion(
        self, scores: np.ndarray, index: np.ndarray, coalitions: Sequence[Sequence[Coalition]]
    ) -> list[np.ndarray]:
        """Each completion's values from the scores of the distinct texts ``(U,)`` and each coalition's text
        ``index`` ``(sum K_b,)``; counts the call."""
        self.num_calls += 1
        self.num_scored += len(scores)
        self.num_values += len(index)
        ends = np.cumsum([len(c) for c in coalitions])
        return [scores[i] for i in np.split(index, ends[:-1])] if len(coalitions) else []


_ROW_HASH = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of _distinct_rows' polynomial row hash


def _distinct_rows(prompts: np.ndarray, flat: np.ndarray, indptr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of (prompt, pieces): each one's first row, in order of first use ``(U,)``, and each row's
    distinct row ``(R,)``. Rows are told apart by a polynomial hash of their entries, checked entry by entry (a
    collision falls back to an exact row-wise unique)."""
    rows = len(prompts)
    if rows == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    lengths = np.diff(indptr)
    keys = np.full((rows, int(lengths.max()) + 2), -1, dtype=np.int64)  # prompt, size, pieces (-1 pads)
    keys[:, 0], keys[:, 1] = prompts, lengths
    keys[np.repeat(np.arange(rows), lengths), 2 + offsets_in_runs(lengths)] = flat
    digest = np.zeros(rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in keys.T.view(np.uint64):
            digest = digest * _ROW_HASH + column
    _, first, inverse = np.unique(digest, return_index=True, return_inverse=True)
    if not np.array_equal(keys, keys[first[inverse]]):
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # distinct rows by first use
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[inverse.ravel()]
