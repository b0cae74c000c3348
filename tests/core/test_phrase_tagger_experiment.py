"""The learned-chunker experiment's perceptron (benchmarks/phrase_tagger.py) learns what it is shown."""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from phrase_tagger import (  # noqa: E402
    BEGIN,
    INSIDE,
    OUTSIDE,
    PhraseTagger,
    labels_of_spans,
    rules_hints,
    tokens,
    train_weights,
)

COLOURS = "red blue green black white grey pink navy".split()
NOUNS = "shoes bag lamp chair mug sofa hat desk rug kettle".split()
OTHERS = "for with and my a the cheap best some under".split()


def _texts(count: int, seed: int) -> list[tuple[str, list[tuple[int, int]]]]:
    """Texts whose phrases are exactly the 'colour noun' pairs (a rule no single word decides)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        parts, spans, at = [], [], 0
        for _ in range(rng.randint(2, 6)):
            if rng.random() < 0.4:
                piece = f"{rng.choice(COLOURS)} {rng.choice(NOUNS)}"
                spans.append((at, at + len(piece)))
            else:
                piece = rng.choice(OTHERS)  # never a colour or noun: no unlabelled pair forms
            parts.append(piece)
            at += len(piece) + 1
        out.append((" ".join(parts), spans))
    return out


def test_labels_of_spans_mark_each_phrase_begin_then_inside():
    text = "red shoes, for my blue bag"
    found = tokens(text)
    assert [t for _, _, t in found] == ["red", "shoes", ",", "for", "my", "blue", "bag"]
    assert labels_of_spans(found, [(0, 9), (18, 26)]) == [BEGIN, INSIDE, OUTSIDE, OUTSIDE, OUTSIDE, BEGIN, INSIDE]


def test_the_perceptron_learns_a_two_word_rule_it_was_not_given_word_by_word():
    """Trained on 300 texts, it finds the 'colour noun' phrases of 100 unseen texts (a perceptron that never
    updated, updated the wrong label, or decoded with other features than it trained on would miss them)."""

    def examples(pairs):
        out = []
        for text, spans in pairs:
            found = tokens(text)
            out.append(([t for _, _, t in found], rules_hints(text, found), labels_of_spans(found, spans)))
        return out

    tagger = PhraseTagger(train_weights(examples(_texts(300, seed=0)), epochs=4, seed=0))
    unseen = _texts(100, seed=1)
    hits = sum(tagger.labels(words, hints) == gold for words, hints, gold in examples(unseen))
    assert hits >= 95
    found_spans = sum(tagger.spans(text) == spans for text, spans in unseen)  # B I* runs back to character spans
    assert found_spans >= 95


def test_decoding_keeps_runs_of_two_or_more_words_and_never_starts_with_inside():
    """Hand-set weights: every token B gives one-word runs, all dropped; B then I for ever gives one phrase over
    the text (punctuation inside it is kept); I is never chosen after O, however large its weight."""
    text = "red shoes, blue bag"
    assert PhraseTagger({"bias": [0.0, 1.0, 0.0]}).spans(text) == []
    assert PhraseTagger({"bias": [0.0, 1.0, 0.0], "y-1=B": [0.0, 0.0, 5.0], "y-1=I": [0.0, 0.0, 5.0]}).spans(text) == [(0, len(text))]
    inside_everywhere = PhraseTagger({"bias": [0.0, 0.0, 9.0]})
    assert inside_everywhere.labels(["red", "shoes"], [OUTSIDE, OUTSIDE]) == [OUTSIDE, OUTSIDE]
