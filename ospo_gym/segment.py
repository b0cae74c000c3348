"""Split a text into *players* (character spans) for Owen–Shapley credit assignment.

A player is a span ``(start, end)`` with ``text[start:end]`` its text. Every function here returns spans
that are ordered by start, pairwise disjoint, non-empty, inside the text, free of surrounding whitespace,
and never split a word: a span never starts or ends between two word characters (``\\w``, i.e.
``str.isalnum()`` or ``"_"``).

Modes:

* ``"word"``: maximal runs of non-whitespace (``\\S+``); they cover all non-space text.
* ``"sentence"``: sentences end at a run of ``. ! ? 。 ！ ？`` (plus closing quotes/brackets) that is
  followed by whitespace or the end of the text, and at every line break. The full-width terminators
  ``。！？`` also end a sentence when no space follows, since CJK text puts none there. Sentences cover
  all non-space text.
* ``"phrase"`` (default): the players of the reference OSPO implementation, which used spaCy: noun
  groups of 2–5 words, adjective–noun spans, and preference spans that start at a preference verb
  ("looking", "need", "prefer", ...) and hold 3–6 words. Overlapping candidates are resolved in favour of
  the longer one; text in no phrase is no player, and a single word is never a phrase.

Phrase backends:

* ``"rules"`` (default, needs no model): words are ``\\w+(?:['’-]\\w+)*``; a word is a *function word*
  (a built-in English + Spanish list), a *preference verb*, or a *content word*. Noun groups are runs of
  content words with no function word, preference verb, punctuation/symbol or line break between them;
  since adjectives are content words, adjective–noun spans are already inside those runs. A run of
  CJK characters (no spaces) is matched as one word, so unsegmented CJK text yields phrases only where
  spaces separate its words (e.g. ``"ワイヤレス イヤホン"``). Combining marks are not ``\\w`` in Python's
  ``re``, so decomposed accents end a word: NFC-normalise text first if that matters.
* ``"rules-v2"`` (needs no model): a closer imitation of spaCy en_core_web_sm's noun chunks on shopping text.
  Words (decimals such as "15.6" kept whole) get a coarse part of speech from small word lists and suffixes
  (determiner/possessive, adjective, number, participle, adverb, verb, function word, preference verb, noun;
  a content word right after a subject pronoun, modal, "to" or a relative pronoun is a verb). A chunk is an
  optional determiner and the modifiers before its last noun, 2–5 spaCy-like tokens ("men's" and "don't" are
  two, "t-shirt" two); a longer run is cut at an adjective after a noun, as little as needed, and what is still
  too long is dropped, as spaCy drops it, not split evenly. Preference windows count tokens the same way and
  stop before punctuation or a hyphenated word. Nouns where spaCy breaks a bare compound ("laptop | stand",
  "winter gloves | touchscreen women") come from a lexicon measured on synthetic queries
  (``benchmarks/phrase_v2_lexicon.py``). Tuned on English; Spanish keeps its adjectives after the noun,
  which rules-v2 trims, so ``"rules"`` suits Spanish better. ``"rules"`` is unchanged by it (the synthetic
  envs and their committed results use ``"rules"``); see ``benchmarks/phrase_agreement.py`` for how close each
  comes to spaCy.
* ``"spacy"`` or ``"spacy:<model_name>"`` (optional extra): spaCy's noun chunks, ADJ→NOUN spans and
  preference-lemma windows, snapped outwards to whole words.
* ``"spacy-released"`` or ``"spacy-released:<model_name>"`` (optional extra): the authors' released
  ``break_query_into_phrases`` (``AbhijnanNath/nips26_project_code_rl`` at 2d944f0f) reproduced exactly,
  quirks included; with ``dedupe=True`` the phrase texts equal its output. Where it differs from ``"spacy"``:
  its lemma list holds ``"looking"`` instead of ``"look"`` (spaCy lemmatises "looking" to "look", so a
  "looking for ..." window fires only where the tagger keeps the lemma "looking", e.g. a NOUN) and compares
  lemmas case-sensitively; words are counted by whitespace (``str.split``), not as spaCy tokens, so
  "men's running shoes" is 3 words and "4-pack" one; a preference window is always the verb and the next 5
  spaCy tokens, across punctuation and sentence ends, kept if it has 3–6 whitespace words; candidates are
  visited by start (noun chunks, then ADJ→NOUN spans, then windows at equal starts) and one that overlaps the
  last kept phrase replaces it only if strictly longer in characters (so a chain of longer overlapping
  candidates can drop an earlier phrase that longest-first keeps); spans are not snapped to whole words, so
  they may end inside a word that spaCy splits ("ca|n't", "t|-|shirt"). Spans are stripped of whitespace
  and stay ordered and disjoint.

Everything is linear in the length of the text (regex scans, numpy on token arrays, one greedy pass).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import numpy as np

from ospo_gym.runs import offsets_in_runs

Span = tuple[int, int]
SEGMENTATION_MODES = ("phrase", "sentence", "word")
BACKENDS = (
    "rules",
    "rules-v2",
    "spacy",
    "spacy:<model_name>",
    "spacy-released",
    "spacy-released:<model_name>",
)
DEFAULT_SPACY_MODEL = "en_core_web_sm"

MIN_GROUP_WORDS, MAX_GROUP_WORDS = 2, 5
MIN_PREFERENCE_WORDS, MAX_PREFERENCE_WORDS = 3, 6

PREFERENCE_LEMMAS = frozenset({"look", "need", "want", "prefer", "replace", "update", "wear", "pair"})
# The released list, verbatim: "looking" is not a lemma spaCy gives the verb (it gives "look").
RELEASED_PREFERENCE_LEMMAS = frozenset(
    {"looking", "need", "want", "prefer", "replace", "update", "wear", "pair"}
)
RELEASED_PREFERENCE_TOKENS = 6  # a released window: the verb and the 5 spaCy tokens after it
# The rules backend has no lemmatiser, so it matches these surface forms instead.
PREFERENCE_VERBS = frozenset(
    {
        "look", "looks", "looked", "looking",
        "need", "needs", "needed", "needing",
        "want", "wants", "wanted", "wanting",
        "prefer", "prefers", "preferred", "preferring",
        "replace", "replaces", "replaced", "replacing",
        "update", "updates", "updated", "updating",
        "wear", "wears", "wore", "worn", "wearing",
        "pair", "pairs", "paired", "pairing",
    }
)  # fmt: skip

_ENGLISH_FUNCTION_WORDS = """
a an the this that these those my your his her its our their some any no every each all both either
neither another such what which whose whatever whichever much many few several more most less least
about above across after against along amid among around as at before behind below beneath beside
besides between beyond by despite down during except for from in inside into like near of off on onto
out outside over past per since than through throughout till to toward towards under underneath unlike
until up upon via vs with within without
and or nor but so yet because although though while whereas if unless whether then also either
i me myself we us ourselves you yourself yourselves he him himself she herself it itself they them
themselves someone something anything everything nothing anyone everyone who whom mine yours hers ours
theirs
am is are was were be been being do does did doing done have has had having will would shall should
can could may might must ought
not very just too only really please here there how when where why
i'm i've i'd i'll you're you've you'd you'll he's she's it's we're we've we'd they're they've they'd
that's there's what's let's don't doesn't didn't can't cannot won't wouldn't shouldn't couldn't isn't
aren't wasn't weren't haven't hasn't hadn't
"""
# Spanish list kept short and free of words that are common English nouns ("son", "sin" stay content).
_SPANISH_FUNCTION_WORDS = """
el la los las lo un una unos unas de del al y e o u ni para con en por que se su sus mi mis tu tus es
muy más mas como pero entre sobre desde hasta hacia según segun este esta estos estas ese esa esos esas
me le les nos yo
"""
FUNCTION_WORDS = frozenset((_ENGLISH_FUNCTION_WORDS + _SPANISH_FUNCTION_WORDS).split())

_WORD = re.compile(r"\w+(?:['’\-]\w+)*")
# rules-v2 also keeps a decimal number in one word ("15.6 inch"), as spaCy's tokenizer does.
_WORD_V2 = re.compile(r"\d+(?:[.,]\d+)+(?:['’\-]?\w+)*|\w+(?:['’\-]\w+)*")
_NON_SPACE = re.compile(r"\S+")
# Everything str.splitlines() breaks on; all of it is whitespace (str.isspace), so cutting there is safe.
_LINE_BREAK_CLASS = r"[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]"
_LINE_BREAK = re.compile(_LINE_BREAK_CLASS)
# A chunk boundary between two words: any symbol/punctuation, or a line break.
_BREAK_RUN = re.compile(rf"(?:[^\w\s]|{_LINE_BREAK_CLASS})+")
_FULL_WIDTH_TERMINATORS = frozenset("。！？")
# The whole run of terminators and closers in one greedy match with nothing after it: no backtracking, so
# a 100k run of "." costs one pass; whether it ends a sentence is decided afterwards.
_SENTENCE_END = re.compile(r"[.!?。！？]+[\"'”’»)\]}」』）》〉›]*")
_ANSWER_OPEN = re.compile(r"<answer>", re.IGNORECASE)
_ANSWER_CLOSE = re.compile(r"</answer>", re.IGNORECASE)
_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)

_SPACY_HINT = (
    "the spaCy phrase backends ('spacy', 'spacy-released') need spaCy and the model {model!r}: "
    "pip install 'ospo-gym[spacy]' && python -m spacy download {model}. "
    "backend='rules' (the default) needs nothing."
)


# ---------------------------------------------------------------------------------------------- checks


def _check_text(text: object, name: str = "text") -> str:
    if not isinstance(text, str):
        raise TypeError(f"{name} must be str, got {type(text).__name__}")
    return text


def _check_mode(mode: object) -> str:
    if mode not in SEGMENTATION_MODES:
        raise ValueError(f"unknown mode {mode!r}; allowed: {', '.join(SEGMENTATION_MODES)}")
    return mode  # type: ignore[return-value]


def _parse_backend(backend: object) -> tuple[str, str] | None:
    """None for the rules backend, else ``(kind, model)``: kind ``"rules-v2"`` (model ``""``), ``"spacy"`` or
    ``"spacy-released"`` with the spaCy model name or folder to load."""
    if backend == "rules":
        return None
    if backend == "rules-v2":
        return "rules-v2", ""
    for kind in ("spacy", "spacy-released"):
        if backend == kind:
            return kind, DEFAULT_SPACY_MODEL
        prefix = kind + ":"
        if isinstance(backend, str) and backend.startswith(prefix) and backend[len(prefix) :].strip():
            return kind, backend[len(prefix) :].strip()
    raise ValueError(
        f"unknown backend {backend!r}; allowed: {', '.join(BACKENDS)} "
        "(<model_name> is an installed spaCy package or a model folder)"
    )


# ---------------------------------------------------------------------------------------------- helpers


def _strip(text: str, start: int, end: int) -> Span | None:
    """``(start, end)`` shrunk past whitespace at both ends; None if nothing but whitespace is left."""
    piece = text[start:end]
    stripped = piece.lstrip()
    if not stripped:
        return None
    return start + len(piece) - len(stripped), start + len(piece.rstrip())


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _snap_to_words(text: str, start: int, end: int) -> Span | None:
    """Widen a span to whole words and strip it; for tokenisers (spaCy) that split "can't" into "ca|n't"."""
    while 0 < start < len(text) and _is_word_char(text[start - 1]) and _is_word_char(text[start]):
        start -= 1
    while 0 < end < len(text) and _is_word_char(text[end - 1]) and _is_word_char(text[end]):
        end += 1
    return _strip(text, start, end)


def _dedupe(text: str, spans: Iterable[Span]) -> list[Span]:
    """Drop every span whose lowercased, stripped text equals that of an earlier kept span."""
    seen: set[str] = set()
    kept = []
    for start, end in spans:
        key = text[start:end].strip().lower()
        if key not in seen:
            seen.add(key)
            kept.append((start, end))
    return kept


def _resolve_overlaps(length: int, starts: np.ndarray, ends: np.ndarray) -> list[Span]:
    """Greedy overlap resolution: longest candidate first (ties: earlier start), skip any that overlaps.

    Args: length of the text; starts, ends (C,) candidate character spans.
    Returns: the kept spans, sorted by start.
    """
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    order = np.lexsort((starts, -(ends - starts)))
    # One byte per character marks what is taken; find() is a C scan over at most one span, so the whole
    # pass is linear in the total candidate length (each character lies in a bounded number of them).
    taken = bytearray(length)
    kept = []
    for start, end in zip(starts[order].tolist(), ends[order].tolist(), strict=True):
        if taken.find(1, start, end) == -1:
            taken[start:end] = b"\x01" * (end - start)
            kept.append((start, end))
    kept.sort()
    return kept


# ---------------------------------------------------------------------------------------------- words


def word_spans(text: str) -> list[Span]:
    """Maximal runs of non-whitespace: one span per whitespace-separated word, covering all non-space text."""
    _check_text(text)
    return [m.span() for m in _NON_SPACE.finditer(text)]


# ---------------------------------------------------------------------------------------------- sentences


def _sentence_cuts(text: str) -> list[int]:
    """Character offsets after which a sentence ends, in increasing order (without 0 and len(text))."""
    cuts = []
    for m in _SENTENCE_END.finditer(text):
        end = m.end()
        # The cut sits after a terminator or closer (never a word character) and before whitespace, the
        # end, or (full-width terminators) anything: so it can never split a word.
        if end == len(text) or text[end].isspace() or not _FULL_WIDTH_TERMINATORS.isdisjoint(m.group()):
            cuts.append(end)
    lines = [m.start() for m in _LINE_BREAK.finditer(text)]
    return sorted(set(cuts).union(lines))


def sentence_spans(text: str) -> list[Span]:
    """Sentences, stripped of surrounding whitespace; together they cover all non-space text."""
    _check_text(text)
    bounds = [0, *_sentence_cuts(text), len(text)]
    spans = (_strip(text, a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True))
    return [span for span in spans if span is not None]


# ---------------------------------------------------------------------------------------------- phrases: rules


def _tokenise(text: str, pattern: re.Pattern[str] = _WORD) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Words of the text. Returns starts (N,), ends (N,) character offsets and the N lowercased words.

    Each word starts and ends next to a non-word character (or the text's edge), so any span from a word's
    start to a later word's end never splits a word and has no surrounding whitespace.
    """
    matches = list(pattern.finditer(text))
    starts = np.fromiter((m.start() for m in matches), dtype=np.int64, count=len(matches))
    ends = np.fromiter((m.end() for m in matches), dtype=np.int64, count=len(matches))
    words = [m.group().lower().replace("’", "'") for m in matches]
    return starts, ends, words


def _breaks_before(text: str, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """(N,) bool: True at word i if punctuation, a symbol or a line break lies between word i-1 and i.

    Word 0 is always True (nothing joins it to a previous word). Break runs never contain word characters,
    so each lies inside one gap between words; counting run starts in a gap answers for the whole gap.
    """
    run_starts = np.fromiter((m.start() for m in _BREAK_RUN.finditer(text)), dtype=np.int64)
    gap_lo = np.concatenate(([0], ends[:-1]))
    breaks = np.searchsorted(run_starts, starts) > np.searchsorted(run_starts, gap_lo)
    breaks[:1] = True
    return breaks


def _split_evenly(run_len: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut runs into the fewest pieces of at most MAX_GROUP_WORDS words, as even as possible, longer first.

    Args: run_len (R,) words per run.
    Returns: run (P,) which run each piece is from, offset (P,) its first word within the run, size (P,).
    E.g. 7 -> 4+3, 11 -> 4+4+3; every piece of a run longer than MAX_GROUP_WORDS has at least 3 words.
    """
    n_pieces = -(-run_len // MAX_GROUP_WORDS)
    run = np.repeat(np.arange(len(run_len)), n_pieces)
    j = offsets_in_runs(n_pieces)
    base = (run_len // n_pieces)[run]
    extra = (run_len % n_pieces)[run]
    offset = j * base + np.minimum(j, extra)
    size = base + (j < extra)
    return run, offset, size


def _noun_groups(content: np.ndarray, breaks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Noun-group candidates as word ranges ``[first, stop)``: runs of adjacent content words, split by
    :func:`_split_evenly`, keeping pieces of 2–5 words. Args: content, breaks (N,) bool."""
    idx = np.flatnonzero(content)
    if idx.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    new_run = np.ones(idx.size, dtype=bool)
    new_run[1:] = (np.diff(idx) != 1) | breaks[idx[1:]]
    run_first = np.flatnonzero(new_run)
    run_len = np.diff(np.append(run_first, idx.size))
    run, offset, size = _split_evenly(run_len)
    first = idx[run_first][run] + offset
    keep = size >= MIN_GROUP_WORDS
    return first[keep], (first + size)[keep]


def _preference_windows(is_pref: np.ndarray, breaks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Preference candidates as word ranges ``[verb, stop)``: the verb plus up to MAX_PREFERENCE_WORDS - 1
    following words, ending before the next break; kept if they hold at least MIN_PREFERENCE_WORDS words."""
    n = len(is_pref)
    verbs = np.flatnonzero(is_pref)
    break_at = np.append(np.flatnonzero(breaks[1:]) + 1, n)  # sentinel: the end of the text
    next_break = break_at[np.searchsorted(break_at, verbs, side="right")]
    stop = np.minimum(verbs + MAX_PREFERENCE_WORDS, next_break)
    keep = stop - verbs >= MIN_PREFERENCE_WORDS
    return verbs[keep], stop[keep]


def _rules_candidates(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Candidate phrases of the rules backend as character spans: starts (C,), ends (C,)."""
    starts, ends, words = _tokenise(text)
    if not words:
        return starts, ends
    is_pref = np.fromiter((w in PREFERENCE_VERBS for w in words), dtype=bool, count=len(words))
    is_func = np.fromiter((w in FUNCTION_WORDS for w in words), dtype=bool, count=len(words))
    breaks = _breaks_before(text, starts, ends)
    group_first, group_stop = _noun_groups(~(is_pref | is_func), breaks)
    pref_first, pref_stop = _preference_windows(is_pref, breaks)
    first = np.concatenate((group_first, pref_first))
    stop = np.concatenate((group_stop, pref_stop))
    return starts[first], ends[stop - 1]


# ---------------------------------------------------------------------------------------------- phrases: rules-v2


# rules-v2 tags each word with a coarse part of speech from these lists and a few suffixes, then builds noun
# chunks the way spaCy's English noun_chunks come out of en_core_web_sm on shopping text: a chunk is an optional
# determiner and the modifiers before a head noun, and it ends at that noun.
_V2_DETERMINERS = frozenset(
    "a an the my your his her its our their this these those some any every each another".split()
)
_V2_SUBJECTS_AND_MODALS = frozenset(
    "i you we they he she it who that which to can could would should will may might must "
    "i'd i'll you'd we'd they'd don't doesn't didn't can't won't".split()
)  # a content word right after one of these is a verb ("who likes fishing", "can you recommend a blender")
_V2_VERBS = frozenset(
    """
    likes loves hides keeps reduces fits folds works makes tracks protects removes stays lasts holds comes uses
    helps includes features supports absorbs cleans charges plays connects lets allows gives provides stops
    prevents goes gets brings takes grows feels smells tastes sounds recommend buy find get keep use
    """.split()
)
_V2_ADVERBS = frozenset("extra super ultra really pretty quite fairly".split())
# Closed-class words outside FUNCTION_WORDS (which `rules` shares and must keep) that en_core_web_sm tags as a
# conjunction between noun phrases: "plus" was CCONJ, outside every chunk, in 597 of 600 synthetic queries
# "... earbuds plus" (benchmarks/phrase_v2_lexicon.py vocabulary, not the evaluation texts).
_V2_CONJUNCTIONS = frozenset({"plus"})
_V2_ADJECTIVES = frozenset(
    """
    red blue green yellow black white grey gray pink purple orange brown beige navy cream gold silver rose
    new old small large big little tiny huge cheap best good great nice soft hard light heavy thick thin long short
    high low hot cold warm cool dry wet deep wide narrow slim tall full empty clean fresh quiet loud bright dark
    cute clear safe free gentle simple modern minimal minimalist classic vintage compact strong sturdy smooth
    rough flat round square sharp smart natural digital electric electronic magnetic organic ergonomic educational
    thermal floral manual automatic ceramic acrylic plastic metallic wooden woolen golden leather-free
    protective expensive inexpensive active attractive creative massive supportive exclusive
    whole solid pure raw real fake faux premium professional universal standard mini single double triple
    outdoor indoor upright giant
    lightweight waterproof wireless cordless stainless rechargeable portable adjustable durable comfortable
    reliable washable foldable reusable stackable expandable programmable packable convertible breathable
    extra-large oversized polarized non-toxic toxic sensitive aggressive hypoallergenic gluten-free
    resistant absorbent efficient
    """.split()
)
_V2_ADJECTIVE_SUFFIXES = ("able", "ible", "proof", "less", "ful", "ous")
_V2_SUFFIX_NOUNS = frozenset(
    "cable cables table tables turntable turntables vegetable vegetables bible bibles".split()
)  # nouns that end like adjectives
_V2_ING_NOUNS = frozenset(
    """
    clothing bedding lighting flooring ring rings king string spring ceiling building thing something nothing
    anything everything wedding stuffing frosting icing pudding packaging awning topping railing morning evening
    swimming-pool earring earrings bearing bearings filling fitting fittings padding lining siding
    """.split()
)
# Gerunds that English uses as the first part of a compound noun ("cleaning cloths", "drying rack"): after a
# noun and before more content they stay in the chunk, where other "-ing" words start a clause ("noise
# cancelling headphones", "switch carrying case").
_V2_GERUND_COMPOUNDS = frozenset(
    """
    shopping cleaning learning drying sewing fishing hiking camping cooking running swimming gaming writing
    drawing parking training cutting washing mixing walking
    """.split()
)
# Heads of compound adjectives ("sulfate free", "dishwasher safe", "leak proof"): after a noun they stay
# adjectives where another adjective ending a text or list item is read as a noun ("phone mount magnetic").
_V2_COMPOUND_ADJECTIVE_HEADS = frozenset(
    "free safe proof resistant washable friendly ready compatible approved certified".split()
)
# Nouns where en_core_web_sm breaks a bare noun compound, measured by benchmarks/phrase_v2_lexicon.py on three
# draws of 6000 synthetic keyword queries from its own hand-written vocabulary (never the evaluation texts):
# words rules-v2 tags as nouns that spaCy parsed as not joined to the word before (read as a verb: "laptop |
# stand") or to the word after ("winter gloves | touchscreen women") in at least half of their 20+ occurrences,
# in at least two of the three draws (one draw's chunk-final list depends on the draw).
_V2_VERB_AFTER_NOUN = frozenset("led mop non saw set shorts stand".split())
_V2_CHUNK_FINAL_NOUNS = frozenset("face gloves led leggings rack set".split())
_V2_SPACY_UNITS = frozenset("km m cm mm dm yd in ft kg g mg t lb oz mph mb kb gb tb".split())
_V2_CLITICS = ("n't", "'s", "'m", "'re", "'ve", "'d", "'ll")
_V2_DIGIT_UNIT = re.compile(r"(\d+)([a-z]+)")
_V2_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
(_NOUN, _ADJ, _NUM, _PART, _ADV, _VERB, _DET, _FUNC, _PREF) = range(9)


def _v2_tag(word: str, previous: str | None) -> int:
    """Coarse part of speech of a lowercased word given the lowercased word before it (None at a break)."""
    if word in PREFERENCE_VERBS:
        return _PREF
    if word in _V2_DETERMINERS:
        return _DET
    if word in FUNCTION_WORDS or word in _V2_CONJUNCTIONS:
        return _FUNC
    if word[0].isdigit():
        # A number, or a number and a unit that spaCy splits off ("44mm" = 44 + mm); "4k", "20000mah" are nouns.
        unit = _V2_DIGIT_UNIT.fullmatch(word)
        numeric = _V2_NUMBER.fullmatch(word) is not None or (
            unit is not None and unit.group(2) in _V2_SPACY_UNITS
        )
        return _NUM if numeric else _NOUN
    if previous in _V2_SUBJECTS_AND_MODALS or word in _V2_VERBS:
        return _VERB
    if word in _V2_ADVERBS:
        return _ADV
    if word.endswith("'s") or word.endswith("s'"):
        return _DET  # a possessive opens a chunk as a determiner does ("women's high waisted leggings")
    if word in _V2_ADJECTIVES or (word.endswith(_V2_ADJECTIVE_SUFFIXES) and word not in _V2_SUFFIX_NOUNS):
        return _ADJ
    if (word.endswith("ing") and len(word) > 5 and word not in _V2_ING_NOUNS) or (
        word.endswith("ed") and len(word) > 4 and not word.endswith("eed")  # "breed", "speed" are nouns
    ):
        return _PART
    return _NOUN


def _v2_token_count(word: str) -> int:
    """How many non-punctuation tokens spaCy's English tokenizer makes of a word: hyphens split it, clitics
    ("n't", "'s") and a unit after digits ("44mm") are tokens of their own."""
    count = 0
    for part in word.split("-"):
        if not part:
            continue
        count += 1 + any(part.endswith(clitic) and len(part) > len(clitic) for clitic in _V2_CLITICS)
        unit = _V2_DIGIT_UNIT.fullmatch(part)
        count += unit is not None and unit.group(2) in _V2_SPACY_UNITS
    return count


def _v2_chunks(tags: list[int], words: list[str], breaks: np.ndarray) -> list[tuple[int, int]]:
    """Noun-chunk word ranges ``[first, stop)`` of one text from the word tags.

    A chunk opens at a determiner or possessive or at its first modifier and grows over adjectives, numbers,
    participles and nouns; a function word, preference verb, verb or break closes it; a number after its noun
    opens a new chunk (unless the chunk so far is one word: "iphone 13"), an adverb after its noun closes it;
    for participles see the comment below. A chunk ends
    at its last noun (trailing modifiers, and a trailing "set", which the parser reads as a verb in "mug set of
    4", are cut off) and needs a noun. Adjectives after a noun do not split a chunk: on the tuning texts spaCy
    kept them in ("bathroom scale digital") more often than not; one that ends the text or list item is its
    last noun. A number with an abbreviated unit after a noun ("32 oz") closes the chunk; so does a noun of
    ``_V2_VERB_AFTER_NOUN`` ("laptop | stand"), and a noun of ``_V2_CHUNK_FINAL_NOUNS`` ends it ("gloves").
    """
    chunks: list[tuple[int, int]] = []
    first = -1  # first word of the open chunk, -1 if none
    last_noun = -1  # its last noun

    def close() -> None:
        if first >= 0 and last_noun >= first:
            stop = last_noun + 1
            if stop - first >= 2 and words[last_noun] in ("set", "sets"):
                stop -= 1
            chunks.append((first, stop))

    for i, tag in enumerate(tags):
        if breaks[i]:
            close()
            first = last_noun = -1
        in_chunk_noun = first >= 0 and last_noun >= first
        if tag in (_FUNC, _PREF, _VERB):
            close()
            first = last_noun = -1
        elif tag == _DET:
            close()
            first, last_noun = i, -1
        elif tag == _PART:
            ing = words[i].endswith("ing")
            # "-ing" right after a preposition or at the start of a list item is a verb ("for sleeping baby",
            # ", hydrating face moisturizer"); "-ed" there is an adjective (", cushioned sneakers"). After a noun,
            # "-ed" is a verb ("wall mounted shelves"), and so is "-ing" before more content ("noise cancelling
            # headphones"); "-ing" that ends the chunk is a noun ("cat litter box self cleaning").
            verb_position = (i > 0 and not breaks[i] and tags[i - 1] == _FUNC) or (breaks[i] and i > 0)
            followed_by_content = (
                i + 1 < len(tags) and not breaks[i + 1] and tags[i + 1] in (_NOUN, _ADJ, _PART)
            )
            if in_chunk_noun and followed_by_content and words[i] in _V2_GERUND_COMPOUNDS:
                pass  # a compound's modifier: the chunk goes on to its noun
            elif in_chunk_noun and followed_by_content and not ing and tags[i - 1] == _ADJ:
                pass  # "water resistant padded case": after an adjective, "-ed" modifies the next noun
            elif in_chunk_noun and ing and not followed_by_content:
                last_noun = i  # "self cleaning", "sleep tracking": a noun at the end of the chunk
            elif in_chunk_noun or (verb_position and ing):
                close()
                first = last_noun = -1
            elif first < 0:
                first = i
        elif tag == _ADV:
            if in_chunk_noun:
                close()
                first = last_noun = -1
            elif first < 0:
                first = i
        elif tag in (_ADJ, _NUM):
            # "air fryer | 6 quart": a number after a noun opens a chunk, unless it names a model ("iphone 13").
            ends_item = i + 1 == len(tags) or breaks[i + 1]
            if (
                tag == _ADJ
                and in_chunk_noun
                and last_noun == i - 1
                and ends_item
                and words[i] not in _V2_COMPOUND_ADJECTIVE_HEADS
                and not words[i].endswith("ed")
            ):
                # One adjective after a noun, ending the text or list item, is tagged a noun and joins the chunk
                # ("car phone mount magnetic"); not a compound adjective's head or a participle ("cardigan
                # women | oversized", which spaCy reads as a verb).
                last_noun = i
            elif (
                tag == _NUM
                and in_chunk_noun
                and (
                    _V2_DIGIT_UNIT.fullmatch(words[i])
                    or (i + 1 < len(tags) and not breaks[i + 1] and words[i + 1] in _V2_SPACY_UNITS)
                )
            ):
                # A number with an abbreviated unit after a noun ("bottle 32 oz", "band 44mm") attaches to that
                # noun outside any chunk; the unit may open the next one ("hose 100 | ft expandable").
                close()
                first = last_noun = -1
            elif in_chunk_noun and tag == _NUM and i - first >= 2:
                close()
                first, last_noun = i, -1
            elif first < 0:
                first = i
        else:  # a noun
            if in_chunk_noun and words[i] in _V2_VERB_AFTER_NOUN:
                close()  # spaCy's verb of a verbless query: it ends the chunk and is in none
                first = last_noun = -1
                continue
            if in_chunk_noun and last_noun == i - 1 and words[i - 1] in _V2_CHUNK_FINAL_NOUNS:
                close()  # a head spaCy ends the chunk at; this noun opens the next one
                first = last_noun = -1
            if first < 0:
                first = i
            last_noun = i
    close()
    return chunks


def _v2_trim_to_noun(tags: list[int], first: int, stop: int) -> tuple[int, int]:
    """``[first, stop)`` shortened to end at its last noun (or "-ing" noun); empty if it has none."""
    while stop > first and tags[stop - 1] not in (_NOUN, _PART):
        stop -= 1
    return first, stop


def _rules_v2_candidates(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Candidate phrases of the rules-v2 backend as character spans: starts (C,), ends (C,).

    Noun chunks of 2–5 spaCy-like tokens: a longer one is cut at an adjective after a noun (never one that would
    leave a piece of one token before it), only as often as it takes to leave a last piece of at most 5 tokens,
    and any piece still too long is dropped, not split evenly;
    the span from an adjective inside a chunk to the chunk's end (spaCy's ADJ→NOUN spans) is a candidate too.
    Preference windows: the verb and the words after it up to 6 tokens (a word is never cut), ending before
    punctuation or a hyphenated word (spaCy splits it at the hyphen, a punctuation token), kept with at least 3.
    """
    starts, ends, words = _tokenise(text, _WORD_V2)
    if not words:
        return starts, ends
    breaks = _breaks_before(text, starts, ends)
    tags = [_v2_tag(w, None if breaks[i] else words[i - 1]) for i, w in enumerate(words)]
    n_tokens = np.fromiter((_v2_token_count(w) for w in words), dtype=np.int64, count=len(words))
    cumulative = np.concatenate(([0], np.cumsum(n_tokens)))
    chunks = []
    for a, b in _v2_chunks(tags, words, breaks):
        if cumulative[b] - cumulative[a] <= MAX_GROUP_WORDS:
            chunks.append((a, b))
            continue
        # Too long for one chunk: spaCy parses an adjective after a noun as the start of an apposition
        # ("coffee beans | whole bean dark roast"); each piece ends at its last noun.
        # Cut only as often as needed: at the first such adjective while the rest is still too long, and only
        # after a piece of 2+ tokens: one noun before an adjective is no apposition, and spaCy drops the whole
        # 6-token chunk ("brandname | purple plastic dog collar lite" is no chunk there).
        cuts = [j for j in range(a + 1, b) if tags[j] == _ADJ and tags[j - 1] in (_NOUN, _PART)]
        lo = a
        for cut in cuts:
            if cumulative[b] - cumulative[lo] <= MAX_GROUP_WORDS:
                break
            if cumulative[cut] - cumulative[lo] < MIN_GROUP_WORDS:
                continue
            chunks.append(_v2_trim_to_noun(tags, lo, cut))
            lo = cut
        chunks.append(_v2_trim_to_noun(tags, lo, b))
    # spaCy's adjective-to-head spans: inside a chunk too long to keep, "solid wood kitchen table" survives.
    adjective_spans = [(j, b) for a, b in chunks for j in range(a + 1, b - 1) if tags[j] == _ADJ]
    ranges = [
        (a, b) for a, b in chunks + adjective_spans
        if MIN_GROUP_WORDS <= cumulative[b] - cumulative[a] <= MAX_GROUP_WORDS
    ]  # fmt: skip
    hyphenated = np.fromiter(("-" in w for w in words), dtype=bool, count=len(words))
    for verb in (i for i, tag in enumerate(tags) if tag == _PREF):
        stop, used = verb + 1, int(n_tokens[verb])
        while stop < len(words) and used < MAX_PREFERENCE_WORDS and not breaks[stop] and not hyphenated[stop]:
            used += int(n_tokens[stop])
            stop += 1
        if used >= MIN_PREFERENCE_WORDS:
            ranges.append((verb, stop))
    if not ranges:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    first, stop = np.array(ranges, dtype=np.int64).T
    return starts[first], ends[stop - 1]


# ---------------------------------------------------------------------------------------------- phrases: spaCy


@lru_cache(maxsize=4)
def _load_spacy(model: str) -> Any:
    """The loaded spaCy pipeline (cached per model name or folder); ImportError with an install hint if missing."""
    hint = _SPACY_HINT.format(model=model)
    try:
        import spacy  # heavy and optional: only when the spaCy backend is asked for
    except ImportError as err:
        raise ImportError(hint) from err
    try:
        return spacy.load(model)
    except OSError as err:  # spaCy raises OSError (E050) for a model that is not installed
        raise ImportError(hint) from err


def _n_words(tokens: Iterable[Any]) -> int:
    return sum(1 for tok in tokens if not (tok.is_punct or tok.is_space))


def _spacy_candidates(doc: Any) -> list[Span]:
    """Candidate phrases from a parsed spaCy ``Doc``, as character spans in ``doc.text`` (unsnapped).

    Noun chunks of 2–5 words; an ADJ to its NOUN head on its right (2–5 words); a token whose lemma is a
    preference verb plus up to 5 following tokens, stopping at punctuation, whitespace tokens or a sentence
    start (3–6 words).
    """
    candidates = []
    for chunk in doc.noun_chunks:
        if MIN_GROUP_WORDS <= _n_words(chunk) <= MAX_GROUP_WORDS:
            candidates.append((chunk.start_char, chunk.end_char))
    for tok in doc:
        head = tok.head
        if tok.pos_ == "ADJ" and head.pos_ == "NOUN" and head.i > tok.i:
            if MIN_GROUP_WORDS <= _n_words(doc[tok.i : head.i + 1]) <= MAX_GROUP_WORDS:
                candidates.append((tok.idx, head.idx + len(head.text)))
        if tok.lemma_.lower() in PREFERENCE_LEMMAS:
            stop = tok.i + 1
            limit = min(len(doc), tok.i + MAX_PREFERENCE_WORDS)
            while stop < limit and not (doc[stop].is_punct or doc[stop].is_space or doc[stop].is_sent_start):
                stop += 1
            if stop - tok.i >= MIN_PREFERENCE_WORDS:
                last = doc[stop - 1]
                candidates.append((tok.idx, last.idx + len(last.text)))
    return candidates


def _released_candidates(doc: Any) -> list[Span]:
    """The released candidates of a parsed ``Doc``, unstripped character spans in the released visiting order.

    Noun chunks with 2–5 whitespace words, then each ADJ whose NOUN head is to its right (the tokens from the
    ADJ to the head, 2–5 whitespace words), then each token whose lemma is in RELEASED_PREFERENCE_LEMMAS (case
    as spaCy gives it) with the next 5 tokens, whatever they are (3–6 whitespace words); each list in token
    order, as the released code builds them.
    """
    text = doc.text
    n_tokens = len(doc)

    def token_span(first: int, stop: int) -> Span:  # what doc[first:stop] covers, as (start_char, end_char)
        last = doc[stop - 1]
        return doc[first].idx, last.idx + len(last.text)

    def n_words(span: Span) -> int:  # the released count: whitespace-separated pieces of the span's text
        return len(text[span[0] : span[1]].split())

    chunks = [(chunk.start_char, chunk.end_char) for chunk in doc.noun_chunks]
    adjective_nouns = [
        token_span(tok.i, tok.head.i + 1)
        for tok in doc
        if tok.pos_ == "ADJ" and tok.head.pos_ == "NOUN" and tok.head.i > tok.i
    ]
    windows = [
        token_span(tok.i, min(tok.i + RELEASED_PREFERENCE_TOKENS, n_tokens))
        for tok in doc
        if tok.lemma_ in RELEASED_PREFERENCE_LEMMAS
    ]
    return [
        span for span in chunks + adjective_nouns if MIN_GROUP_WORDS <= n_words(span) <= MAX_GROUP_WORDS
    ] + [span for span in windows if MIN_PREFERENCE_WORDS <= n_words(span) <= MAX_PREFERENCE_WORDS]


def _released_suppression(candidates: Iterable[Span]) -> list[Span]:
    """The released overlap resolution: visit candidates by start (a stable sort, so equal starts keep their
    order); one that overlaps a kept span replaces it if strictly longer, else is dropped.

    The released loop compares with every kept span, but visiting by start keeps the kept spans ordered and
    disjoint, and then only the last one can overlap a newcomer (all others end before it starts, hence
    before the newcomer starts): so one comparison per candidate gives the same result in linear time.
    """
    kept: list[Span] = []
    for start, end in sorted(candidates, key=lambda span: span[0]):
        if kept and start < kept[-1][1]:  # overlaps the last kept span (start >= its start by the sort)
            if end - start > kept[-1][1] - kept[-1][0]:
                kept[-1] = (start, end)
        else:
            kept.append((start, end))
    return kept


def _released_phrase_spans(text: str, model: str) -> list[Span]:
    """Stripped spans of the released phrases, ordered and disjoint (before the released dedupe)."""
    doc = _load_spacy(model)(text)
    stripped = (_strip(text, start, end) for start, end in _released_suppression(_released_candidates(doc)))
    return [span for span in stripped if span is not None]


def _spacy_phrase_candidates(text: str, model: str) -> tuple[np.ndarray, np.ndarray]:
    """Snapped candidate character spans from spaCy: starts (C,), ends (C,)."""
    doc = _load_spacy(model)(text)
    snapped = [_snap_to_words(text, start, end) for start, end in _spacy_candidates(doc)]
    spans = np.array([span for span in snapped if span is not None], dtype=np.int64).reshape(-1, 2)
    return spans[:, 0], spans[:, 1]


# ---------------------------------------------------------------------------------------------- public API


def phrase_spans(text: str, *, backend: str = "rules", dedupe: bool = False) -> list[Span]:
    """Phrase players of ``text`` (see the module docstring); a list of ``(start, end)`` sorted by start.

    ``dedupe=True`` drops a phrase whose lowercased, stripped text equals an earlier kept phrase (as the
    reference did); by default repeated phrases are separate players.
    """
    _check_text(text)
    parsed = _parse_backend(backend)
    if not text or text.isspace():
        return []
    if parsed is None:
        spans = _resolve_overlaps(len(text), *_rules_candidates(text))
    elif parsed[0] == "rules-v2":
        spans = _resolve_overlaps(len(text), *_rules_v2_candidates(text))
    elif parsed[0] == "spacy-released":
        spans = _released_phrase_spans(text, parsed[1])
    else:
        spans = _resolve_overlaps(len(text), *_spacy_phrase_candidates(text, parsed[1]))
    return _dedupe(text, spans) if dedupe else spans


def released_phrases(text: str, *, model: str = DEFAULT_SPACY_MODEL) -> list[str]:
    """The phrase texts the released ``break_query_into_phrases([text])[0]`` returns: the stripped texts of
    ``phrase_spans(text, backend="spacy-released:<model>", dedupe=True)``, in order."""
    spans = phrase_spans(text, backend=f"spacy-released:{model}", dedupe=True)
    return [text[start:end] for start, end in spans]


def segment(text: str, mode: str = "phrase", *, backend: str = "rules", dedupe: bool = False) -> list[Span]:
    """Players of ``text`` in the given mode: a list of ``(start, end)`` character spans sorted by start.

    ``backend`` and ``dedupe`` only affect ``"phrase"`` mode but are validated in every mode.
    Raises TypeError for a non-str text and ValueError for an unknown mode or backend.
    """
    _check_text(text)
    _check_mode(mode)
    _parse_backend(backend)
    if mode == "word":
        return word_spans(text)
    if mode == "sentence":
        return sentence_spans(text)
    return phrase_spans(text, backend=backend, dedupe=dedupe)


def _answer_content(action: str) -> Span | None:
    """Unstripped bounds of the content of the first ``<answer>...</answer>``; None if there is none."""
    opening = _ANSWER_OPEN.search(action)
    if opening is None:
        return None
    # The first closing tag after the first opening one is exactly the first non-greedy regex match, but a
    # text with many unclosed "<answer>" tags stays linear instead of rescanning to the end from each.
    closing = _ANSWER_CLOSE.search(action, opening.end())
    return None if closing is None else (opening.end(), closing.start())


def _outside_think(action: str) -> list[Span]:
    """The unstripped pieces of ``action`` outside every ``<think>...</think>`` block (unclosed: to the end).

    A ``</think>`` before any ``<think>`` closes a block that the prompt opened (chat templates of reasoning models
    end the prompt with ``<think>``): everything up to it is reasoning too.
    """
    pieces = []
    pos = 0
    first_close, first_open = _THINK_CLOSE.search(action), _THINK_OPEN.search(action)
    if first_close is not None and (first_open is None or first_close.start() < first_open.start()):
        pos = first_close.end()
    while (opening := _THINK_OPEN.search(action, pos)) is not None:
        pieces.append((pos, opening.start()))
        closing = _THINK_CLOSE.search(action, opening.end())
        pos = len(action) if closing is None else closing.end()
    pieces.append((pos, len(action)))
    return [part for start, end in pieces for part in _split_on(_THINK_CLOSE, action, start, end)]


def _split_on(pattern: re.Pattern[str], text: str, start: int, end: int) -> list[Span]:
    """``text[start:end]`` cut at every match of ``pattern`` (stray closing tags), the matches left out."""
    parts, pos = [], start
    for match in pattern.finditer(text, start, end):
        parts.append((pos, match.start()))
        pos = match.end()
    parts.append((pos, end))
    return parts


def retrieval_regions(action: str) -> list[Span]:
    """The parts of an LLM completion that a retriever sees, as stripped, non-empty spans of ``action``.

    If the action contains ``<answer>...</answer>`` (case-insensitive, first one), that answer's stripped
    content is the only region. Otherwise the regions are what is left once every ``<think>...</think>``
    block is removed (an unclosed ``<think>`` removes everything after it; a ``</think>`` with no ``<think>``
    before it removes everything before it, as the prompt opened that block). Tags never fall inside a
    region, and each region is bounded by a tag's ``<``/``>``, whitespace or the text's edge.
    """
    _check_text(action, "action")
    answer = _answer_content(action)
    pieces = [answer] if answer is not None else _outside_think(action)
    spans = (_strip(action, a, b) for a, b in pieces)
    return [span for span in spans if span is not None]


def retrieval_text(action: str) -> str:
    """The text a retriever sees: the texts of :func:`retrieval_regions` joined by single spaces
    (so words on either side of a removed ``<think>`` block stay apart)."""
    return " ".join(action[a:b] for a, b in retrieval_regions(action))


def segment_action(
    action: str, mode: str = "phrase", *, backend: str = "rules", dedupe: bool = False
) -> list[Span]:
    """Players of the retrieval regions of ``action``, as spans in the action's own coordinates.

    Each region is segmented on its own (so no player crosses a ``<think>`` block or leaves the answer);
    the spans are ordered and disjoint. With ``dedupe`` a phrase repeated in a later region is dropped too.
    """
    _check_text(action, "action")
    _check_mode(mode)
    _parse_backend(backend)
    spans: list[Span] = []
    for region_start, region_end in retrieval_regions(action):
        region = action[region_start:region_end]
        local = segment(region, mode, backend=backend)
        spans.extend((region_start + a, region_start + b) for a, b in local)
    return _dedupe(action, spans) if dedupe and mode == "phrase" else spans


__all__ = [
    "BACKENDS",
    "FUNCTION_WORDS",
    "PREFERENCE_LEMMAS",
    "PREFERENCE_VERBS",
    "RELEASED_PREFERENCE_LEMMAS",
    "SEGMENTATION_MODES",
    "Span",
    "phrase_spans",
    "released_phrases",
    "retrieval_regions",
    "retrieval_text",
    "segment",
    "segment_action",
    "sentence_spans",
    "word_spans",
]
