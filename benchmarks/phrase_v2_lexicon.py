"""Where spaCy en_core_web_sm breaks bare noun compounds: the two noun lexicons of the rules-v2 phrase backend.

Builds 6000 synthetic keyword queries per seed from the hand-written vocabulary below (product heads, noun
modifiers, adjectives; written for this script, not taken from ``benchmarks/data``), parses them with spaCy and
counts, for each word, how often it lies in the same noun chunk as the word before it and as the word after it.
A word that rules-v2 tags as a noun, seen at least ``MIN_COUNT`` times on a side and joined on that side at most
half the time, breaks on that side in that draw; one that breaks in a majority of the draws (seeds 0, 1, 2) goes
in ``_V2_VERB_AFTER_NOUN`` (not joined to the word before: spaCy reads it as the query's verb, "laptop | stand")
or ``_V2_CHUNK_FINAL_NOUNS`` (not joined to the word after: "winter gloves | ..."). One draw alone is not
stable: the chunk-final list of seed 0 shares only "gloves" and "led" with those of seeds 1 and 2
(benchmarks/RESULTS.md), so the majority keeps the words that do not depend on the draw. Prints both lists;
``ospo_gym/segment.py`` holds what it printed for spaCy 3.8.18 and en_core_web_sm 3.8.0.

    python benchmarks/phrase_v2_lexicon.py /path/to/en_core_web_sm   # needs spaCy (see .ci/stage_spacy.sh)
    python benchmarks/phrase_v2_lexicon.py /path/to/en_core_web_sm --seeds 1 --n-texts 20000   # one other draw
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter, defaultdict

from ospo_gym.segment import _NOUN, _v2_tag

HEADS = """
bottle case cover stand mount charger cable holder organizer rack shelf lamp light bag backpack wallet watch band
strap belt shoes boots sandals socks jacket coat shirt dress pants leggings shorts hat gloves scarf blanket pillow
sheet towel mat rug curtain chair table desk bed mattress sofa stool bench speaker headphones earbuds keyboard
mouse monitor camera tripod phone tablet laptop printer router drive adapter hub battery filter pump brush comb
razor trimmer dryer iron kettle blender mixer toaster grill pan pot knife set kit tool drill saw hammer wrench
ladder hose sprayer planter feeder toy puzzle game doll bike helmet lock tent sleeve wrap pad box basket bin jar
lid cup mug glass plate bowl tray cooker fryer heater fan vacuum cleaner mop bucket scale timer clock frame mirror
vase candle diffuser protector remover opener sharpener liner cap clip hook hanger tote pouch carrier crate leash
collar harness
""".split()
MODIFIERS = """
phone laptop car kitchen bathroom garden office travel baby kids dog cat pet coffee water wine beer tea glass
steel wood bamboo leather cotton silk wool metal plastic silicone ceramic rubber foam memory gel led usb bluetooth
wifi solar power screen wall door window shower sink toilet bed floor desk table storage cable shoe hair face body
skin nail tooth eye hand foot yoga gym running hiking camping fishing winter summer rain snow beach pool party
birthday christmas gift paper plant flower fruit ice air
""".split()
ADJECTIVES = """
portable wireless waterproof adjustable foldable magnetic electric digital rechargeable cordless stainless black
white red blue pink grey large small mini heavy light soft hard clear cute organic natural outdoor indoor
non-slip durable compact lightweight premium vintage modern extra thick thin round square
""".split()
PATTERNS = ("M H", "M M H", "A M H", "A H", "M H A", "M M H A", "A M M H", "M H M", "A A M H", "M H H")
N_TEXTS, SEEDS, MIN_COUNT = 6000, (0, 1, 2), 20


def synthetic_queries(n: int = N_TEXTS, seed: int = SEEDS[0]) -> list[str]:
    """``n`` distinct keyword queries from PATTERNS (M modifier, H head, A adjective), no word repeated in one."""
    rng = random.Random(seed)
    pools = {"M": MODIFIERS, "H": HEADS, "A": ADJECTIVES}
    texts: set[str] = set()
    while len(texts) < n:
        words = [rng.choice(pools[slot]) for slot in rng.choice(PATTERNS).split()]
        if len(set(words)) == len(words):
            texts.add(" ".join(words))
    return sorted(texts)


def join_counts(nlp, texts: list[str]) -> tuple[dict[str, Counter], dict[str, Counter]]:
    """Per word: Counter of joined (True/False) to the token before it, and to the token after it."""
    before: dict[str, Counter] = defaultdict(Counter)
    after: dict[str, Counter] = defaultdict(Counter)
    for doc in nlp.pipe(texts, batch_size=256):
        chunk_of = [-1] * len(doc)
        for k, chunk in enumerate(doc.noun_chunks):
            chunk_of[chunk.start : chunk.end] = [k] * (chunk.end - chunk.start)
        for i in range(1, len(doc)):
            joined = chunk_of[i] >= 0 and chunk_of[i] == chunk_of[i - 1]
            before[doc[i].text][joined] += 1
            after[doc[i - 1].text][joined] += 1
    return before, after


def breaking_nouns(counts: dict[str, Counter]) -> list[str]:
    """Words rules-v2 tags as nouns, seen MIN_COUNT+ times, joined at most half the time; most breaking first."""
    rows = []
    for word, c in counts.items():
        n = c[True] + c[False]
        if n >= MIN_COUNT and c[False] / n >= 0.5 and _v2_tag(word, None) == _NOUN:
            rows.append((-c[False] / n, word))
    return [word for _, word in sorted(rows)]


def lexicons(nlp, n: int = N_TEXTS, seeds: tuple[int, ...] = SEEDS) -> tuple[frozenset[str], frozenset[str]]:
    """(verb-after-noun words, chunk-final nouns): the words that break in more than half of the draws."""
    votes_before: Counter = Counter()
    votes_after: Counter = Counter()
    for seed in seeds:
        before, after = join_counts(nlp, synthetic_queries(n, seed))
        votes_before.update(breaking_nouns(before))
        votes_after.update(breaking_nouns(after))
    majority = len(seeds) / 2
    return (
        frozenset(w for w, v in votes_before.items() if v > majority),
        frozenset(w for w, v in votes_after.items() if v > majority),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="spaCy model name or folder")
    # Other draws than the committed ones: how stable the measured lists are (benchmarks/RESULTS.md).
    parser.add_argument("--n-texts", type=int, default=N_TEXTS, help=f"queries per draw (default {N_TEXTS})")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="seeds of the draws (default 0 1 2)")
    args = parser.parse_args(argv)
    if args.n_texts < 1 or min(args.seeds) < 0:
        parser.error(f"--n-texts must be >= 1 and every seed >= 0, got {args.n_texts} and {args.seeds}")
    import spacy  # only this script needs it

    verb_after, chunk_final = lexicons(spacy.load(args.model), args.n_texts, tuple(args.seeds))
    print("_V2_VERB_AFTER_NOUN  ", " ".join(sorted(verb_after)))
    print("_V2_CHUNK_FINAL_NOUNS", " ".join(sorted(chunk_final)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
