"""A learned phrase chunker tried against spaCy's phrases (``benchmarks/phrase_tagger_experiment.py``): a greedy
averaged perceptron over O/B/I token labels. It is an experiment, not a backend: on the hand-written texts it
stayed below rules-v2 (benchmarks/RESULTS.md, "Phrase players", fifth round).

A text is cut into tokens (words as rules-v2 reads them, decimals kept whole, and each punctuation character on its
own). Left to right, each token is labelled O (in no phrase), B (starts a phrase) or I (continues the phrase of
the token before), by the largest sum of feature weights. Features: the token's lowercased form, prefix, suffixes
and shape, its rules-v2 coarse part of speech and rules-v2's own label for it, the same for neighbours, pairs of
neighbours, the two labels already given, the words in the phrase so far and where the token sits in the text.
A phrase is a maximal B I* run; it is kept when it holds at least two words, as every spaCy-backend phrase does.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence

from ospo_gym.segment import FUNCTION_WORDS, Span, _v2_tag, phrase_spans

__all__ = ["LABELS", "PhraseTagger", "labels_of_spans", "rules_hints", "tokens", "train_weights"]

LABELS = ("O", "B", "I")
OUTSIDE, BEGIN, INSIDE = range(3)
_TOKEN = re.compile(r"\d+(?:[.,]\d+)+(?:['’\-]?\w+)*|\w+(?:['’\-]\w+)*|[^\w\s]")
_SHAPE_RUNS = re.compile(r"(.)\1+")
_START = "<s>"
_END = "</s>"


def tokens(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, token)`` of each word or punctuation character of ``text``, in order."""
    return [(m.start(), m.end(), m.group()) for m in _TOKEN.finditer(text)]


def labels_of_spans(token_spans: Sequence[tuple[int, int, str]], phrases: Iterable[Span]) -> list[int]:
    """(T,) labels O/B/I of the tokens from phrase character spans (a phrase's first token is B, the rest I)."""
    labels = [OUTSIDE] * len(token_spans)
    for start, end in phrases:
        inside = [k for k, (a, b, _) in enumerate(token_spans) if a >= start and b <= end]
        for n, k in enumerate(inside):
            labels[k] = BEGIN if n == 0 else INSIDE
    return labels


def _is_word(token: str) -> bool:
    return token[0].isalnum() or token[0] == "_"


def _shape(token: str) -> str:
    mapped = "".join("X" if c.isupper() else "x" if c.isalpha() else "d" if c.isdigit() else c for c in token)
    return _SHAPE_RUNS.sub(r"\1", mapped)


class _Context:
    """Per-text token facts the features read: lowercased forms, rules-v2 tags, shapes, suffixes."""

    def __init__(self, words: Sequence[str], hints: Sequence[int]) -> None:
        lower = [w.lower() for w in words]
        self.hints = [_START, _START, *(LABELS[h] for h in hints), _END, _END]
        tags, previous = [], None
        for word in lower:
            if _is_word(word):
                tags.append(str(_v2_tag(word, previous)))
                previous = word
            else:  # punctuation is its own tag and a break for rules-v2's verb-after-subject rule
                tags.append(word)
                previous = None
        self.lower = [_START, _START, *lower, _END, _END]
        self.tags = [_START, _START, *tags, _END, _END]
        self.shapes = [_START, _START, *map(_shape, words), _END, _END]
        self.suffixes = [w[-3:] for w in self.lower]
        self.n = len(words)
        self.is_word = [_is_word(w) for w in words]
        self.request = str(any(w in FUNCTION_WORDS for w in lower))

    def features(self, i: int, previous: int, before: int, run: int) -> list[str]:
        """Feature names of token ``i`` given the labels of tokens ``i - 1`` and ``i - 2`` and the words ``run`` in
        the phrase that token ``i - 1`` is in (0 outside one)."""
        k = i + 2
        w, t, low, tags, suf = self.lower[k], self.tags[k], self.lower, self.tags, self.suffixes
        p = LABELS[previous] if i > 0 else _START
        pp = LABELS[before] if i > 1 else _START
        return [
            "bias",
            "w=" + w,
            "s3=" + suf[k],
            "s2=" + w[-2:],
            "p2=" + w[:2],
            "sh=" + self.shapes[k],
            "t=" + t,
            "w-1=" + low[k - 1],
            "w+1=" + low[k + 1],
            "w-2=" + low[k - 2],
            "w+2=" + low[k + 2],
            "s3-1=" + suf[k - 1],
            "s3+1=" + suf[k + 1],
            "t-1=" + tags[k - 1],
            "t+1=" + tags[k + 1],
            "t-2=" + tags[k - 2],
            "t+2=" + tags[k + 2],
            "t-1t=" + tags[k - 1] + "|" + t,
            "tt+1=" + t + "|" + tags[k + 1],
            "t-1tt+1=" + tags[k - 1] + "|" + t + "|" + tags[k + 1],
            "w-1w=" + low[k - 1] + "|" + w,
            "ww+1=" + w + "|" + low[k + 1],
            "y-1=" + p,
            "y-2y-1=" + pp + "|" + p,
            "y-1w=" + p + "|" + w,
            "y-1t=" + p + "|" + t,
            "y-1tt+1=" + p + "|" + t + "|" + tags[k + 1],
            "pos=" + str(min(i, 3)),
            "rpos=" + str(min(self.n - 1 - i, 3)),
            "req=" + self.request + "|" + t,
            "r=" + self.hints[k],
            "r-1r=" + self.hints[k - 1] + "|" + self.hints[k],
            "rr+1=" + self.hints[k] + "|" + self.hints[k + 1],
            "rw=" + self.hints[k] + "|" + w,
            "rt=" + self.hints[k] + "|" + t,
            "ry-1=" + self.hints[k] + "|" + p,
            "run=" + str(min(run, 7)),
            "runt=" + str(min(run, 7)) + "|" + t,
            "runr=" + str(min(run, 7)) + "|" + self.hints[k],
        ]


def _run_after(run: int, label: int, is_word: bool) -> int:
    """Words in the current phrase after a token labelled ``label``."""
    if label == OUTSIDE:
        return 0
    return (run if label == INSIDE else 0) + is_word


def _best(weights: dict[str, list[float]], features: list[str], previous: int) -> int:
    """The label with the largest score; I only after B or I (a phrase never starts with I)."""
    score = [0.0, 0.0, 0.0]
    for name in features:
        row = weights.get(name)
        if row is not None:
            score[0] += row[0]
            score[1] += row[1]
            score[2] += row[2]
    if previous == OUTSIDE:
        return BEGIN if score[BEGIN] > score[OUTSIDE] else OUTSIDE
    return max(range(3), key=score.__getitem__)


class PhraseTagger:
    """Greedy left-to-right O/B/I labelling with fixed weights ``{feature: [w_O, w_B, w_I]}``."""

    def __init__(self, weights: dict[str, list[float]]) -> None:
        self.weights = weights

    def labels(self, words: Sequence[str], hints: Sequence[int]) -> list[int]:
        """(T,) labels of the tokens ``words`` given rules-v2's labels of them, ``hints`` (T,)."""
        context = _Context(words, hints)
        out: list[int] = []
        previous = before = OUTSIDE
        run = 0
        for i in range(len(words)):
            label = _best(self.weights, context.features(i, previous, before, run), previous)
            out.append(label)
            before, previous = previous, label
            run = _run_after(run, label, context.is_word[i])
        return out

    def spans(self, text: str) -> list[Span]:
        """Phrase character spans of ``text``: each maximal B I* run of two or more words, in order."""
        found = tokens(text)
        labels = self.labels([t for _, _, t in found], rules_hints(text, found))
        spans: list[Span] = []
        run: list[int] = []
        for k, label in enumerate([*labels, OUTSIDE]):
            if label != INSIDE and run:
                if sum(_is_word(found[j][2]) for j in run) >= 2:
                    spans.append((found[run[0]][0], found[run[-1]][1]))
                run = []
            if label == BEGIN:
                run = [k]
            elif label == INSIDE:
                run.append(k)
        return spans


def rules_hints(text: str, found: Sequence[tuple[int, int, str]]) -> list[int]:
    """(T,) O/B/I labels of ``found`` (the :func:`tokens` of ``text``) under the rules-v2 backend's phrases."""
    return labels_of_spans(found, phrase_spans(text, backend="rules-v2"))


def train_weights(
    examples: Sequence[tuple[Sequence[str], Sequence[int], Sequence[int]]],
    *,
    epochs: int = 8,
    seed: int = 0,
    digits: int = 3,
) -> dict[str, list[float]]:
    """Averaged-perceptron weights from ``(tokens, hints, labels)`` examples (rules-v2's labels and the gold
    labels, O/B/I as ints, one per token); an example listed twice counts twice.

    Each epoch visits the examples in a seeded order and labels each one greedily with the current weights (the
    labels already given feed the next features, as at run time); a wrong label moves the gold label's weights of
    the token's features up by 1 and the guess's down by 1. The result is the average of the weights over every
    token visited, rounded to ``digits``, features whose averaged weights are all 0 dropped.
    """
    weights: dict[str, list[float]] = {}
    totals: dict[str, list[float]] = {}
    stamps: dict[str, list[int]] = {}
    clock = 0
    order = list(range(len(examples)))
    rng = random.Random(seed)
    contexts = [_Context(words, hints) for words, hints, _ in examples]

    def move(name: str, label: int, by: float) -> None:
        row = weights.setdefault(name, [0.0, 0.0, 0.0])
        total = totals.setdefault(name, [0.0, 0.0, 0.0])
        stamp = stamps.setdefault(name, [0, 0, 0])
        total[label] += (clock - stamp[label]) * row[label]  # the weight held since its last change
        stamp[label] = clock
        row[label] += by

    for _ in range(epochs):
        rng.shuffle(order)
        for n in order:
            context, gold = contexts[n], examples[n][2]
            previous = before = OUTSIDE
            run = 0
            for i in range(context.n):
                features = context.features(i, previous, before, run)
                guess = _best(weights, features, previous)
                if guess != gold[i]:
                    for name in features:
                        move(name, gold[i], 1.0)
                        move(name, guess, -1.0)
                clock += 1
                before, previous = previous, guess
                run = _run_after(run, guess, context.is_word[i])
    averaged: dict[str, list[float]] = {}
    for name, row in weights.items():
        total, stamp = totals[name], stamps[name]
        mean = [round((total[c] + (clock - stamp[c]) * row[c]) / max(clock, 1), digits) for c in range(3)]
        if any(mean):
            averaged[name] = mean
    return averaged
