"""Seeded pseudo-words for synthetic tasks: pronounceable, lowercase ASCII, distinct."""

from __future__ import annotations

import numpy as np

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "kr", "st", "tr")
_VOWELS = ("a", "e", "i", "o", "u")


def pseudo_words(count: int, rng: np.random.Generator, *, syllables: tuple[int, int] = (2, 3)) -> list[str]:
    """``count`` distinct pseudo-words of ``syllables`` consonant-vowel pairs, e.g. ``"tavoki"``."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    low, high = syllables
    capacity = sum((len(_ONSETS) * len(_VOWELS)) ** n for n in range(max(low, 0), high + 1))
    if count > capacity:
        raise ValueError(f"count must be at most {capacity}, the number of distinct pseudo-words of {syllables} syllables")
    words: list[str] = []
    seen: set[str] = set()
    # Rejection sampling stops with probability 1 once count <= capacity; the draw budget makes it certain.
    for _ in range(50 * count + 1000):
        if len(words) >= count:
            break
        n = int(rng.integers(syllables[0], syllables[1] + 1))
        word = "".join(_ONSETS[int(rng.integers(len(_ONSETS)))] + _VOWELS[int(rng.integers(len(_VOWELS)))] for _ in range(n))
        if word not in seen:
            seen.add(word)
            words.append(word)
    if len(words) < count:
        raise ValueError(f"drew only {len(words)} distinct pseudo-words of the {count} asked for; ask for fewer")
    return words
