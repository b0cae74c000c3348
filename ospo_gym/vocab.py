"""Seeded pseudo-words for synthetic tasks: pronounceable, lowercase ASCII, distinct."""

from __future__ import annotations

import numpy as np

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "kr", "st", "tr")
_VOWELS = ("a", "e", "i", "o", "u")


def pseudo_words(count: int, rng: np.random.Generator, *, syllables: tuple[int, int] = (2, 3)) -> list[str]:
    """``count`` distinct pseudo-words of ``syllables`` consonant-vowel pairs, e.g. ``"tavoki"``."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < count:
        n = int(rng.integers(syllables[0], syllables[1] + 1))
        word = "".join(_ONSETS[int(rng.integers(len(_ONSETS)))] + _VOWELS[int(rng.integers(len(_VOWELS)))] for _ in range(n))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words
