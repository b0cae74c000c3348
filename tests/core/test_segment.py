"""Segmentation into players: hand cases, invariants over arbitrary unicode, retrieval regions, speed, errors.

Each test's docstring or comment names the wrong implementation it is there to catch.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import time
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spacy_stand_in import StandInDoc

from ospo_gym import segment as seg
from ospo_gym.segment import (
    FUNCTION_WORDS,
    PREFERENCE_VERBS,
    SEGMENTATION_MODES,
    phrase_spans,
    retrieval_regions,
    retrieval_text,
    segment,
    segment_action,
    sentence_spans,
    word_spans,
)

WORD_RE = re.compile(r"\w+(?:['’\-]\w+)*")


def texts(text, spans):
    return [text[a:b] for a, b in spans]


def phrases(text, **kwargs):
    return texts(text, segment(text, **kwargs))


def is_word_char(ch):
    return ch.isalnum() or ch == "_"


def assert_valid_spans(text, spans):
    """Ordered, disjoint, inside, non-empty, no surrounding whitespace, never split a word."""
    assert isinstance(spans, list)
    previous_end = 0
    for start, end in spans:
        assert isinstance(start, int) and isinstance(end, int)
        assert previous_end <= start < end <= len(text), (spans, len(text))
        assert not text[start].isspace() and not text[end - 1].isspace()
        assert not (start > 0 and is_word_char(text[start - 1]) and is_word_char(text[start]))
        assert not (end < len(text) and is_word_char(text[end - 1]) and is_word_char(text[end]))
        previous_end = end


def assert_covers_non_space(text, spans):
    covered = bytearray(len(text))
    for start, end in spans:
        covered[start:end] = b"\x01" * (end - start)
    missing = [i for i, ch in enumerate(text) if not ch.isspace() and not covered[i]]
    assert not missing, (text, spans, missing)


# ---------------------------------------------------------------------------------------------- phrases


def test_preference_span_swallows_the_noun_group():
    """A preference window (6 words) beats the shorter noun group inside it; 'men' alone is no player.
    Catches: no preference spans, windows not counting function words, single words kept as phrases."""
    assert phrases("looking for a warm winter jacket for men") == ["looking for a warm winter jacket"]


def test_punctuation_ends_a_noun_group():
    """Catches: commas not treated as boundaries ('red running shoes leather' as one group)."""
    assert phrases("red running shoes, leather") == ["red running shoes"]


@pytest.mark.parametrize("text", ["shoes", "  shoes  ", "", "   \n\t", "the", "🎧", "looking"])
def test_no_phrase_without_two_content_words(text):
    """Catches: single words or lone preference verbs emitted as players, crashes on empty input."""
    assert segment(text) == []


def test_function_words_separate_groups():
    """Catches: function words counted as content (one long group), or groups not split at them."""
    text = "trail running shoes for rainy autumn days and a light rain jacket"
    assert phrases(text) == ["trail running shoes", "rainy autumn days", "light rain jacket"]


def test_seven_word_run_splits_four_three():
    """Catches: long runs dropped, truncated to 5, or split 5+2."""
    text = "alpha bravo charlie delta echo foxtrot golf"
    assert phrases(text) == ["alpha bravo charlie delta", "echo foxtrot golf"]


@pytest.mark.parametrize("n", range(1, 17))
def test_runs_split_as_evenly_as_possible(n):
    """Run of n content words -> ceil(n/5) pieces, sizes differing by at most one, longer first, none of 1.
    Catches: off-by-one in the piece arithmetic, pieces of 6 words, uneven splits like 11 -> 5+5+1."""
    text = " ".join(f"w{i}x" for i in range(n))
    sizes = [len(p.split()) for p in phrases(text)]
    if n == 1:
        assert sizes == []
        return
    k = -(-n // 5)
    assert len(sizes) == k and sum(sizes) == n
    assert max(sizes) <= 5 and min(sizes) >= 2 and max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)
    if n == 11:
        assert sizes == [4, 4, 3]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("need new shoes", ["need new shoes"]),
        ("I need it", []),  # 2 words: too short for a preference span
        ("I want red shoes, blue", ["want red shoes"]),  # stops before the comma
        ("Wanted: red shoes", ["red shoes"]),  # punctuation right after the verb
        ("Sold out, need new laces", ["need new laces"]),  # punctuation right before the verb
        ("She PREFERRED the cheaper leather boots today", ["PREFERRED the cheaper leather boots today"]),
        ("replacing my old cracked phone screen soon please", ["replacing my old cracked phone screen"]),
    ],
)
def test_preference_spans(text, expected):
    """Catches: windows longer than 6 words, windows crossing punctuation, case-sensitive verb matching,
    missing inflections, and 2-word windows kept."""
    assert phrases(text) == expected


def test_line_break_ends_a_phrase():
    """Catches: newline treated as ordinary space, joining list items into one group."""
    assert phrases("wireless earbuds\nrunning shoes") == ["wireless earbuds", "running shoes"]


def test_emoji_and_symbols_are_boundaries():
    """Catches: only ASCII punctuation treated as boundaries."""
    assert phrases("wireless earbuds 🎧 noise cancelling / long battery") == [
        "wireless earbuds",
        "noise cancelling",
        "long battery",
    ]


def test_intra_word_apostrophes_and_hyphens():
    """Hyphenated words are one word; a curly apostrophe is normalised before the function-word lookup.
    Catches: splitting 't-shirt' into two words, or treating 'don’t' as a content word."""
    assert phrases("cotton t-shirt") == ["cotton t-shirt"]
    assert phrases("these shoes don’t fit well") == ["fit well"]
    assert phrases("these shoes don't fit well") == ["fit well"]


def test_dedupe():
    """Default keeps repeated phrases as separate players; dedupe drops later case/space variants.
    Catches: deduping by default, case-sensitive dedupe, dedupe that drops the first occurrence."""
    text = "red shoes and red shoes and Red Shoes and blue hats"
    assert phrases(text) == ["red shoes", "red shoes", "Red Shoes", "blue hats"]
    assert segment(text, dedupe=True) == [(0, 9), (42, 51)]


def test_overlap_resolution_prefers_longer_then_earlier():
    """Catches: keeping the first candidate in text order, or ties going to the later start."""
    assert seg._resolve_overlaps(10, [2, 0], [4, 6]) == [(0, 6)]
    assert seg._resolve_overlaps(10, [3, 0], [8, 5]) == [(0, 5)]
    assert seg._resolve_overlaps(10, [5, 0, 7], [7, 5, 9]) == [(0, 5), (5, 7), (7, 9)]


def test_spanish_and_japanese():
    """Spanish function words split groups; spaced Japanese words form a group, unspaced CJK is one word.
    Catches: an English-only function-word list, CJK characters treated as boundaries."""
    assert phrases("zapatillas de running para hombre") == []
    assert phrases("zapatillas deportivas de running para hombre") == ["zapatillas deportivas"]
    jp = "ワイヤレス イヤホン ノイズキャンセリング"
    assert phrases(jp) == [jp]
    assert phrases("ワイヤレスイヤホン") == []
    assert phrases("ワイヤレス・イヤホン") == []  # the katakana middle dot is a boundary


def test_word_lists_are_lowercase_and_disjoint():
    """Catches: capitalised entries that can never match, a verb that is also a function word."""
    assert all(w == w.lower() for w in FUNCTION_WORDS | PREFERENCE_VERBS)
    assert not FUNCTION_WORDS & PREFERENCE_VERBS
    assert {
        "looking",
        "needs",
        "wanted",
        "preferred",
        "replacing",
        "updated",
        "wore",
        "paired",
    } <= PREFERENCE_VERBS
    assert {"the", "for", "and", "el", "de", "para", "que"} <= FUNCTION_WORDS


# ---------------------------------------------------------------------------------------------- words, sentences


def test_word_mode():
    """Catches: splitting at punctuation or apostrophes, dropping symbols."""
    text = "  can't\tstop-me now🎧 !\n"
    assert texts(text, word_spans(text)) == ["can't", "stop-me", "now🎧", "!"]
    assert segment(text, "word") == word_spans(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello world. How are you?\nFine!  Thanks", ["Hello world.", "How are you?", "Fine!", "Thanks"]),
        ("Version 2.5 is out. Buy it", ["Version 2.5 is out.", "Buy it"]),
        ('He said "stop!" Then left.', ['He said "stop!"', "Then left."]),
        ("wait...what?! no", ["wait...what?!", "no"]),
        ("今日は晴れ。明日は雨。", ["今日は晴れ。", "明日は雨。"]),
        ("「はい。」そうです", ["「はい。」", "そうです"]),
        ("line one\r\nline two\u2028three", ["line one", "line two", "three"]),
    ],
)
def test_sentence_mode(text, expected):
    """Catches: splitting at every '.', losing closing quotes, ignoring newlines or full-width terminators."""
    assert texts(text, sentence_spans(text)) == expected
    assert segment(text, "sentence") == sentence_spans(text)


# ---------------------------------------------------------------------------------------------- properties

WORDS = [
    "red", "running", "shoes", "warm", "winter", "jacket", "for", "a", "the", "and", "looking", "need",
    "wants", "preferred", "de", "para", "zapatillas", "ワイヤレス", "イヤホン", "don't", "don’t", "t-shirt",
    "x_y", "42", "é", "e\u0301", "שלום", "🎧", "<think>", "</think>", "<answer>", "</answer>", "Ünïcode",
]  # fmt: skip
SEPARATORS = [
    " ", "  ", ", ", ".", ". ", "! ", "?", "\n", "\t", "/", "(", ")", "", "。", "—", "\u00a0", "\u2028",
    "'", "-", "\x00", "\u200b",
]  # fmt: skip

word_texts = st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(SEPARATORS)), max_size=40).map(
    lambda pairs: "".join(w + s for w, s in pairs)
)
any_texts = st.one_of(st.text(), word_texts, st.text(alphabet=st.sampled_from("ab _-'’.!? \n。🎧")))


@settings(max_examples=300, deadline=None)
@given(any_texts, st.sampled_from(SEGMENTATION_MODES))
def test_spans_are_valid_in_every_mode(text, mode):
    """Catches: off-by-one offsets, overlapping candidates surviving, spans ending mid-word or on a space."""
    assert_valid_spans(text, segment(text, mode))
    assert_valid_spans(text, segment(text, mode, dedupe=True))


@settings(max_examples=300, deadline=None)
@given(any_texts, st.sampled_from(["word", "sentence"]))
def test_word_and_sentence_modes_cover_all_non_space(text, mode):
    """Catches: text dropped between sentences or at odd whitespace (NBSP, U+2028, control chars)."""
    assert_covers_non_space(text, segment(text, mode))


@settings(max_examples=300, deadline=None)
@given(word_texts)
def test_phrases_are_well_formed(text):
    """Every phrase holds 2–6 words with only non-breaking whitespace between them; function words appear
    only in preference spans, and only those exceed 5 words.
    Catches: phrases crossing punctuation/line breaks, windows of 7 words, groups absorbing function words."""
    for phrase in phrases(text):
        words = WORD_RE.findall(phrase)
        assert 2 <= len(words) <= 6
        gaps = WORD_RE.sub("", phrase)
        assert all(ch.isspace() for ch in gaps) and not any(ch in gaps for ch in "\n\r\u2028")
        keys = [w.lower().replace("’", "'") for w in words]
        if len(words) > 5 or any(k in FUNCTION_WORDS for k in keys):
            assert keys[0] in PREFERENCE_VERBS


@settings(max_examples=300, deadline=None)
@given(any_texts, st.sampled_from(SEGMENTATION_MODES))
def test_segment_action_stays_inside_retrieval_regions(action, mode):
    """Catches: spans returned in region coordinates, spans inside <think> or outside <answer>."""
    regions = retrieval_regions(action)
    assert_valid_spans(action, regions)
    spans = segment_action(action, mode)
    assert_valid_spans(action, spans)
    for start, end in spans:
        assert any(a <= start and end <= b for a, b in regions)
    if mode == "word":
        assert texts(action, spans) == retrieval_text(action).split()


# ---------------------------------------------------------------------------------------------- retrieval


def test_answer_region_is_stripped_content_in_action_coordinates():
    """Catches: offsets relative to the answer, tags or surrounding whitespace inside the region."""
    action = "<think>cheap shoes</think> noise <ANSWER>\n  red running shoes \n</Answer> tail"
    regions = retrieval_regions(action)
    assert texts(action, regions) == ["red running shoes"]
    assert retrieval_text(action) == "red running shoes"
    assert texts(action, segment_action(action)) == ["red running shoes"]
    assert segment_action(action) == regions


def test_first_answer_wins_and_blank_answer_is_empty():
    """Catches: last or greedy match (spanning both answers), a blank answer falling back to the rest."""
    action = "<answer>blue hats</answer> and <answer>red shoes</answer>"
    assert texts(action, retrieval_regions(action)) == ["blue hats"]
    assert retrieval_regions("<think>x</think> red shoes <answer>  \n </answer>") == []
    assert retrieval_text("<answer></answer>") == ""


def test_think_blocks_removed():
    """Catches: non-DOTALL regex (multi-line think kept), greedy removal eating text between blocks."""
    action = "<think>cheap\nred shoes</think> best running shoes <THINK>more\n</think> for trails"
    assert texts(action, retrieval_regions(action)) == ["best running shoes", "for trails"]
    assert retrieval_text(action) == "best running shoes for trails"


def test_unclosed_think_removes_to_the_end():
    """Catches: an unclosed <think> left in place (its content reaching the retriever)."""
    action = "warm winter jacket <think> maybe cheap plastic toys"
    assert texts(action, retrieval_regions(action)) == ["warm winter jacket"]
    assert texts(action, segment_action(action)) == ["warm winter jacket"]


def test_a_closing_think_with_no_opening_ends_reasoning_the_prompt_opened():
    """Catches: a stray </think> kept as text, and the reasoning before it reaching the retriever (R1/Qwen3 chat
    templates end the prompt with <think>, so the completion holds only the closing tag)."""
    action = "the shopper wants cheap plastic\n</think>\nwarm winter jacket <think>more</think> for hiking"
    assert texts(action, retrieval_regions(action)) == ["warm winter jacket", "for hiking"]
    assert retrieval_text("noise </THINK> red shoes </think> tail") == "red shoes tail"  # later strays: cut out


def test_unclosed_answer_is_no_answer():
    assert texts("<answer> red shoes", retrieval_regions("<answer> red shoes")) == ["<answer> red shoes"]


def test_retrieval_text_keeps_regions_apart():
    """Catches: joining regions with '' (merging 'red' and 'shoes' into 'redshoes')."""
    assert retrieval_text("red<think>x</think>shoes") == "red shoes"


def test_segment_action_segments_each_region_alone():
    """Phrases never join words across a removed think block; dedupe works across regions.
    Catches: segmenting retrieval_text and mapping back (a phrase 'red running shoes' over the block)."""
    action = "red <think>x</think> running shoes"
    assert texts(action, segment_action(action)) == ["running shoes"]
    action = "red shoes <think>x</think> Red Shoes"
    assert texts(action, segment_action(action)) == ["red shoes", "Red Shoes"]
    assert texts(action, segment_action(action, dedupe=True)) == ["red shoes"]
    action = "<think>ignored words</think> Hello there. Bye"
    assert texts(action, segment_action(action, "sentence")) == ["Hello there.", "Bye"]


# ---------------------------------------------------------------------------------------------- speed


def _big_text(n=100_000):
    unit = (
        "I am looking for a warm winter jacket for men, with hood. Red running shoes 🎧 size 42!\n"
        "zapatillas de running para hombre ワイヤレス イヤホン don't need cheap plastic; "
    )
    return (unit * (n // len(unit) + 1))[:n]


ADVERSARIAL = {
    "prose": _big_text(),
    "dots": "." * 100_000 + "x",
    "one_word": "a" * 100_000,
    "hyphens": "a-" * 50_000,
    "emoji": "🎧" * 100_000,
    "content_run": "ab " * 33_333,
    "verbs": "need " * 20_000,
}


@pytest.mark.parametrize("mode", SEGMENTATION_MODES)
@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_100k_characters_segment_fast(name, mode):
    """Catches: quadratic overlap checks, regex backtracking on long punctuation runs."""
    text = ADVERSARIAL[name]
    started = time.perf_counter()
    spans = segment(text, mode)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"{name}/{mode} took {elapsed:.2f}s"
    if name == "prose":
        assert spans


def test_retrieval_is_linear_with_many_unclosed_tags():
    """Catches: a lazy '<answer>(.*?)</answer>' search that rescans to the end from every opening tag."""
    for action in ("<answer>" * 12_500, "<think>" * 14_000 + "</think>" * 10, "</think>" * 12_000):
        started = time.perf_counter()
        segment_action(action)
        assert time.perf_counter() - started < 1.0


# ---------------------------------------------------------------------------------------------- errors


def test_unknown_mode_or_backend():
    with pytest.raises(ValueError, match="phrase, sentence, word"):
        segment("red shoes", "token")
    with pytest.raises(ValueError, match="rules"):
        segment("red shoes", backend="nltk")
    with pytest.raises(ValueError, match="rules"):
        segment("red shoes", "word", backend="spacy:")
    with pytest.raises(ValueError, match="phrase, sentence, word"):
        segment_action("red shoes", "chars")


@pytest.mark.parametrize(
    "call",
    [segment, phrase_spans, sentence_spans, word_spans, retrieval_regions, retrieval_text, segment_action],
)
@pytest.mark.parametrize("bad", [None, b"red shoes", 42, ["red", "shoes"]])
def test_non_str_is_type_error(call, bad):
    with pytest.raises(TypeError, match="str"):
        call(bad)


# ---------------------------------------------------------------------------------------------- spaCy backend


@pytest.fixture
def clear_spacy_cache():
    seg._load_spacy.cache_clear()
    yield
    seg._load_spacy.cache_clear()


@pytest.mark.skipif(importlib.util.find_spec("spacy") is not None, reason="spaCy is installed")
def test_spacy_backend_missing_gives_install_hint(clear_spacy_cache):
    """Catches: a bare ModuleNotFoundError without the install command, or spaCy imported at module load."""
    assert "spacy" not in sys.modules
    with pytest.raises(ImportError, match=re.escape("pip install 'ospo-gym[spacy]'")) as info:
        segment("red running shoes", backend="spacy")
    assert "python -m spacy download en_core_web_sm" in str(info.value)
    assert "backend='rules'" in str(info.value)


# Tokens of "Looking for a warm winter jacket. Supersoft socks": (text, trailing space, POS, lemma, head).
# "Supersoft" is split in two tokens, as tokenisers do with "can't", to check spans are widened to words.
FAKE_TOKENS = [
    ("Looking", True, "VERB", "look", 0),
    ("for", True, "ADP", "for", 0),
    ("a", True, "DET", "a", 5),
    ("warm", True, "ADJ", "warm", 5),
    ("winter", True, "NOUN", "winter", 5),
    ("jacket", False, "NOUN", "jacket", 1),
    (".", True, "PUNCT", ".", 0),
    ("Super", False, "NOUN", "super", 9),
    ("soft", True, "ADJ", "soft", 9),
    ("socks", False, "NOUN", "sock", 9),
]
FAKE_TEXT = "Looking for a warm winter jacket. Supersoft socks"
FAKE_CHUNKS = [(2, 6), (8, 10)]  # "a warm winter jacket", "soft socks" (starts mid-word)


def _FakeDoc():
    """The stand-in parse of FAKE_TEXT (sentences start at "Looking" and "Super")."""
    rows, idx = [], 0
    for i, (text, space, pos, lemma, head) in enumerate(FAKE_TOKENS):
        rows.append((text, idx, pos, lemma, head, i in (0, 7)))
        idx += len(text) + space
    return StandInDoc(FAKE_TEXT, rows, FAKE_CHUNKS)


def _real_doc():
    spacy = pytest.importorskip("spacy")
    from spacy.tokens import Doc

    deps = ["ROOT", "prep", "det", "amod", "compound", "pobj", "punct", "compound", "amod", "ROOT"]
    return Doc(
        spacy.blank("en").vocab,
        words=[t[0] for t in FAKE_TOKENS],
        spaces=[t[1] for t in FAKE_TOKENS],
        pos=[t[2] for t in FAKE_TOKENS],
        lemmas=[t[3] for t in FAKE_TOKENS],
        heads=[t[4] for t in FAKE_TOKENS],
        deps=deps,
    )


EXPECTED_SPACY = ["Looking for a warm winter jacket", "Supersoft socks"]


def test_spacy_backend_with_a_fake_spacy(monkeypatch, clear_spacy_cache):
    """Drives the whole spaCy path through a stand-in module: model name parsing, caching, candidate kinds,
    snapping to words and overlap resolution. Catches: spans starting mid-word ('soft socks'), the noun chunk
    beating the longer preference window, reloading the model on every call, OSError leaking out."""
    assert FAKE_TEXT == "".join(t[0] + " " * t[1] for t in FAKE_TOKENS)
    loads = []

    def load(name):
        loads.append(name)
        if name != "fake_model":
            raise OSError(f"[E050] Can't find model '{name}'")
        return lambda text: _FakeDoc()

    monkeypatch.setitem(sys.modules, "spacy", types.SimpleNamespace(load=load))
    assert phrases(FAKE_TEXT, backend="spacy:fake_model") == EXPECTED_SPACY
    assert phrases(FAKE_TEXT, backend="spacy:fake_model") == EXPECTED_SPACY
    assert loads == ["fake_model"]
    with pytest.raises(ImportError, match="python -m spacy download other_model"):
        segment(FAKE_TEXT, backend="spacy:other_model")


def test_spacy_candidates_on_a_real_doc():
    """Same annotations in a real spaCy Doc (runs only where spaCy is installed; needs no model)."""
    doc = _real_doc()
    spans = [seg._snap_to_words(FAKE_TEXT, a, b) for a, b in seg._spacy_candidates(doc)]
    starts, ends = zip(*spans, strict=True)
    assert texts(FAKE_TEXT, seg._resolve_overlaps(len(FAKE_TEXT), starts, ends)) == EXPECTED_SPACY
