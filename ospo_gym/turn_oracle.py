"""The coalition-value oracle of multi-turn episodes: what return would a subset of the policy's turns — or of the
segments within its turns — have earned?

A multi-turn episode is the list of the policy's turn texts ``turns`` (the other side's replies are not
players: the env recomputes them). Two kinds of coalition:

* **turn coalitions**, sorted tuples of turn indices: ``v(S)`` replays the session with only the turns in ``S``,
  verbatim and in their order; the left-out turns' text is removed and the env's replies are recomputed;
* **segment coalitions**, sorted tuples of *flat* segment indices: the segments of every turn numbered in turn
  order (turn 0's segments first). ``v(S)`` replays each turn as the text of its segments in ``S`` joined by single
  spaces — verbatim when all its segments are in ``S`` — and removes a turn none of whose segments is in ``S``.
  A turn without segments (e.g. an empty text) is no player and stays in every replay, as the text outside the
  segments of a single-turn completion does.

In both, a replayed turn keeps its *original* text beside the kept text, so the env can keep what the turn was (a
question stays a question when the word "ask:" is left out). ``v(all turns)`` is the episode's return exactly. One
call replays every coalition of a batch of episodes with one call to the env's replay, each distinct session once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np

from ospo_gym.credit.coalitions import Coalition
from ospo_gym.credit.shapley import player_indices
from ospo_gym.oracle import check_spans, coalition_text
from ospo_gym.segment import SEGMENTATION_MODES, Span, segment_action

ReplayTurn = tuple[str, str]
"""One turn of a replay: ``(original text, kept text)``."""
ReplayReturns = Callable[[Sequence[Hashable], Sequence[Sequence[ReplayTurn]]], np.ndarray]
"""The env's batched replay: (prompt_ids (N,), sessions (N lists of turns)) -> (N,) returns."""


def flat_players(spans: Sequence[Sequence[Span]]) -> tuple[np.ndarray, np.ndarray]:
    """Turn and within-turn index of every flat segment index, each (P,) int64 with P = total segments."""
    counts = np.array([len(s) for s in spans], dtype=np.int64)
    turn = np.repeat(np.arange(len(spans), dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    return turn, np.arange(int(counts.sum()), dtype=np.int64) - starts[turn]


def turn_session(turns: Sequence[str], coalition: Coalition) -> tuple[ReplayTurn, ...]:
    """The replay of turn coalition ``coalition``: the turns in it, verbatim, in their order."""
    return tuple((turns[t], turns[t]) for t in sorted(coalition))


def segment_session(turns: Sequence[str], spans: Sequence[Sequence[Span]], coalition: Coalition) -> tuple[ReplayTurn, ...]:
    """The replay of segment coalition ``coalition`` (flat indices; see the module doc)."""
    turn_of, local = flat_players(spans)
    kept: list[set[int]] = [set() for _ in turns]
    for g in coalition:
        kept[int(turn_of[g])].add(int(local[g]))
    session = []
    for t, text in enumerate(turns):
        if not spans[t]:
            session.append((text, text))  # no player: always there
        elif len(kept[t]) == len(spans[t]):
            session.append((text, text))
        elif kept[t]:
            session.append((text, coalition_text(text, spans[t], tuple(kept[t]))))
    return tuple(session)


class TurnOracle:
    """Coalition values of multi-turn episodes for one environment (see the module doc).

    Args:
        replay: the env's batched replay of sessions (:data:`ReplayReturns`).
        segmentation: ``"word"``, ``"phrase"`` or ``"sentence"``: how :meth:`segment` cuts one turn.
        segmentation_backend: ``"rules"`` or ``"spacy"`` (phrase mode).

    Counters ``num_calls``, ``num_values`` (values returned) and ``num_replayed`` (distinct sessions replayed).
    """

    def __init__(self, replay: ReplayReturns, *, segmentation: str = "word", segmentation_backend: str = "rules") -> None:
        if segmentation not in SEGMENTATION_MODES:
            raise ValueError(f"unknown segmentation {segmentation!r}; expected one of {SEGMENTATION_MODES}")
        self.replay = replay
        self.segmentation = segmentation
        self.segmentation_backend = segmentation_backend
        self.num_calls = 0
        self.num_values = 0
        self.num_replayed = 0

    def segment(self, text: str) -> list[Span]:
        """Segment spans of one turn's text, in its own character coordinates."""
        return segment_action(text, self.segmentation, backend=self.segmentation_backend)

    def segment_turns(self, turns: Sequence[str]) -> list[list[Span]]:
        """:meth:`segment` of every turn."""
        return [self.segment(t) for t in turns]

    def turn_values(self, prompt_id: Hashable, turns: Sequence[str], coalitions: Sequence[Coalition]) -> np.ndarray:
        """``v(S)`` of turn coalitions, shape (K,)."""
        return self.turn_values_batch([prompt_id], [turns], [coalitions])[0]

    def values(
        self, prompt_id: Hashable, turns: Sequence[str], spans: Sequence[Sequence[Span]], coalitions: Sequence[Coalition]
    ) -> np.ndarray:
        """``v(S)`` of segment coalitions (flat indices), shape (K,)."""
        return self.values_batch([prompt_id], [turns], [spans], [coalitions])[0]

    def turn_values_batch(
        self, prompt_ids: Sequence[Hashable], turns: Sequence[Sequence[str]], coalitions: Sequence[Sequence[Coalition]]
    ) -> list[np.ndarray]:
        """Turn-coalition values of B episodes with one replay call; entry b has shape (K_b,)."""
        self._check_lengths(prompt_ids, turns, coalitions)
        sessions = []
        for episode_turns, episode_coalitions in zip(turns, coalitions, strict=True):
            episode_turns = _check_turns(episode_turns)
            player_indices(episode_coalitions, len(episode_turns))
            sessions.append([turn_session(episode_turns, c) for c in episode_coalitions])
        return self._evaluate(prompt_ids, sessions)

    def values_batch(
        self,
        prompt_ids: Sequence[Hashable],
        turns: Sequence[Sequence[str]],
        spans: Sequence[Sequence[Sequence[Span]]],
        coalitions: Sequence[Sequence[Coalition]],
    ) -> list[np.ndarray]:
        """Segment-coalition values of B episodes with one replay call; entry b has shape (K_b,)."""
        self._check_lengths(prompt_ids, turns, coalitions)
        if len(spans) != len(turns):
            raise ValueError("spans needs one entry (a list of spans per turn) per episode")
        sessions = []
        for episode_turns, episode_spans, episode_coalitions in zip(turns, spans, coalitions, strict=True):
            episode_turns = _check_turns(episode_turns)
            if len(episode_spans) != len(episode_turns):
                raise ValueError(f"got spans for {len(episode_spans)} turns but the episode has {len(episode_turns)}")
            for text, turn_spans in zip(episode_turns, episode_spans, strict=True):
                check_spans(text, turn_spans)
            player_indices(episode_coalitions, sum(len(s) for s in episode_spans))
            sessions.append([segment_session(episode_turns, episode_spans, c) for c in episode_coalitions])
        return self._evaluate(prompt_ids, sessions)

    def _evaluate(self, prompt_ids: Sequence[Hashable], sessions: Sequence[Sequence[tuple[ReplayTurn, ...]]]) -> list[np.ndarray]:
        keys: dict[tuple[Hashable, tuple[ReplayTurn, ...]], int] = {}
        lookup = []
        for prompt_id, episode_sessions in zip(prompt_ids, sessions, strict=True):
            lookup.append(np.array([keys.setdefault((prompt_id, s), len(keys)) for s in episode_sessions], dtype=np.int64))
        unique = list(keys)
        returns = np.asarray(self.replay([k[0] for k in unique], [list(k[1]) for k in unique]), dtype=np.float64)
        if returns.shape != (len(unique),):
            raise ValueError(f"the env's replay returned shape {returns.shape}, expected ({len(unique)},)")
        self.num_calls += 1
        self.num_replayed += len(unique)
        self.num_values += sum(len(i) for i in lookup)
        return [returns[i] for i in lookup]

    @staticmethod
    def _check_lengths(prompt_ids: Sequence[Hashable], turns: Sequence, coalitions: Sequence) -> None:
        if isinstance(turns, (str, bytes)) or not len(prompt_ids) == len(turns) == len(coalitions):
            raise ValueError(
                "prompt_ids, turns and coalitions need one entry per episode (turns: a list of the policy's turn texts)"
            )


def _check_turns(turns: Sequence[str]) -> list[str]:
    if isinstance(turns, str) or not all(isinstance(t, str) for t in turns):
        raise ValueError("an episode's turns must be a list of str (the policy's turn texts), one per turn")
    return list(turns)
