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


# coalition lists already checked (and whether they are in order), by the identities of their tuples
_CHECKED = CoalitionMemo()


def _checked_in_order(coalitions: Sequence[Coalition], n: int) -> bool:
    """Check ``coalitions`` (:func:`player_indices`'s rules, ValueError) and say whether every one lists its
    players in increasing order; remembered for lists of the same int tuples."""
    known = _CHECKED.get(coalitions, n)
    if known is None:
        known = _in_order(*player_indices(coalitions, n))
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

    Counters ``num_calls``, ``num_values`` (coalition values returned) and ``num_scored`` (distinct texts sent to
    the reward) let agents log oracle cost.
    """

    def __init__(
        self, score_texts: ScoreTexts, *, segmentation: str = "phrase", segmentation_backend: str = "rules"
    ) -> None:
        if segmentation not in SEGMENTATION_MODES:
            raise ValueError(f"unknown segmentation {segmentation!r}; expected one of {SEGMENTATION_MODES}")
        self.score_texts = score_texts
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
        every: list[tuple[Hashable, str]] = []  # (prompt, coalition text) of every coalition, completion by completion
        for prompt_id, text, text_spans, text_coalitions in zip(prompt_ids, texts, spans, coalitions, strict=True):
            check_spans(text, text_spans)
            # ints naming segments of this text, or ValueError
            if _checked_in_order(text_coalitions, len(text_spans)):  # every coalition sorted: join pieces as they come
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
        self.num_calls += 1
        self.num_scored += len(unique)
        self.num_values += len(every)
        ends = np.cumsum([len(c) for c in coalitions])
        return [scores[i] for i in np.split(index, ends[:-1])] if len(coalitions) else []
