"""A stand-in for the few parts of a parsed spaCy ``Doc`` that ``ospo_gym.segment`` reads, so that the spaCy code
paths run in tests without spaCy or a model: tokens with ``text``, ``idx``, ``i``, ``pos_``, ``lemma_``, ``head``,
``is_punct``, ``is_space``, ``is_sent_start``; ``Doc.text``, ``Doc.noun_chunks`` and slices as spans with character
bounds."""

from __future__ import annotations

import types
from collections.abc import Sequence


class StandInSpan(list):
    """A token list with the character bounds of ``spacy.tokens.Span``."""

    @property
    def start_char(self):
        return self[0].idx

    @property
    def end_char(self):
        return self[-1].idx + len(self[-1].text)


class StandInDoc(list):
    """``tokens``: one ``(text, idx, pos, lemma, head index, is_sent_start)`` per token; ``chunks``: the noun
    chunks as ``(start, end)`` token ranges."""

    def __init__(self, text: str, tokens: Sequence[tuple], chunks: Sequence[tuple[int, int]]) -> None:
        made = [
            types.SimpleNamespace(text=word, idx=idx, i=i, pos_=pos, lemma_=lemma, is_punct=pos == "PUNCT",
                                  is_space=False, is_sent_start=starts)
            for i, (word, idx, pos, lemma, _, starts) in enumerate(tokens)
        ]  # fmt: skip
        for token, row in zip(made, tokens, strict=True):
            token.head = made[row[4]]
        super().__init__(made)
        self.text = text
        self.noun_chunks = [StandInSpan(made[a:b]) for a, b in chunks]

    def __getitem__(self, key):
        got = super().__getitem__(key)
        return StandInSpan(got) if isinstance(key, slice) else got
