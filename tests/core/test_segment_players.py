"""Phrase players beyond the default rules: the released spaCy reproduction and the rules-v2 backend.

Expected released outputs are worked out by hand from the released ``break_query_into_phrases`` (nips26 code at
2d944f0f) applied to the en_core_web_sm 3.8 parses written out below. The ``spacy``-marked tests run them on the
real model (``.ci/stage_spacy.sh``); the others feed the same parses through a stand-in Doc, so they run anywhere.
Each test names the wrong implementation it catches.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spacy_stand_in import StandInDoc

from ospo_gym import segment as seg
from ospo_gym.segment import phrase_spans, released_phrases, segment

ROOT = Path(__file__).resolve().parents[2]


def texts(text, spans):
    return [text[a:b] for a, b in spans]


# ---------------------------------------------------------------------------------------------- parses

# en_core_web_sm 3.8.0 parses (spaCy 3.8): tokens as (text, POS, lemma, head index), noun chunks as token ranges.
PARSES = {
    "I am looking for a warm winter jacket for men": (
        [("I", "PRON", "I", 2), ("am", "AUX", "be", 2), ("looking", "VERB", "look", 2), ("for", "ADP", "for", 2),
         ("a", "DET", "a", 7), ("warm", "ADJ", "warm", 7), ("winter", "NOUN", "winter", 7),
         ("jacket", "NOUN", "jacket", 3), ("for", "ADP", "for", 7), ("men", "NOUN", "man", 8)],
        [(0, 1), (4, 8), (9, 10)],
    ),
    "need it, red shoes now": (
        [("need", "VERB", "need", 0), ("it", "PRON", "it", 0), (",", "PUNCT", ",", 0), ("red", "ADJ", "red", 4),
         ("shoes", "NOUN", "shoe", 0), ("now", "ADV", "now", 0)],
        [(1, 2)],
    ),
    "men's running shoes 4-pack": (
        [("men", "NOUN", "man", 3), ("'s", "PART", "'s", 0), ("running", "NOUN", "running", 3),
         ("shoes", "NOUN", "shoe", 3), ("4", "NUM", "4", 6), ("-", "PUNCT", "-", 6), ("pack", "NOUN", "pack", 3)],
        [(0, 4), (4, 7)],
    ),
    "I need a waterproof hiking boot for women with ankle support": (
        [("I", "PRON", "I", 1), ("need", "VERB", "need", 1), ("a", "DET", "a", 5),
         ("waterproof", "ADJ", "waterproof", 5), ("hiking", "NOUN", "hiking", 5), ("boot", "NOUN", "boot", 1),
         ("for", "ADP", "for", 5), ("women", "NOUN", "woman", 6), ("with", "ADP", "with", 7),
         ("ankle", "NOUN", "ankle", 10), ("support", "NOUN", "support", 8)],
        [(0, 1), (2, 6), (7, 8), (9, 11)],
    ),
    "red shoes and Red Shoes": (
        [("red", "ADJ", "red", 1), ("shoes", "NOUN", "shoe", 1), ("and", "CCONJ", "and", 1),
         ("Red", "PROPN", "Red", 4), ("Shoes", "PROPN", "Shoes", 1)],
        [(0, 2), (3, 5)],
    ),
}  # fmt: skip

# Hand-derived released phrases, and what our "spacy" backend gives on the same parse where it differs.
RELEASED = {
    # lemma "look" is not in the released list ("looking" is): no window; the chunk beats the shorter ADJ span.
    "I am looking for a warm winter jacket for men": ["a warm winter jacket"],
    # the window is 6 tokens whatever they are: it runs over the comma and swallows "red shoes".
    "need it, red shoes now": ["need it, red shoes now"],
    # whitespace words: "men's running shoes" is 3 (kept), "4-pack" is 1 (dropped).
    "men's running shoes 4-pack": ["men's running shoes"],
    # the window (starts first, longest) beats the chunk and ADJ span inside it; "ankle support" is disjoint.
    "I need a waterproof hiking boot for women with ankle support": ["need a waterproof hiking boot for", "ankle support"],
    # two chunks; the released dedupe keeps the first of the case variants.
    "red shoes and Red Shoes": ["red shoes"],
}  # fmt: skip
OURS_SPACY = {
    "I am looking for a warm winter jacket for men": ["looking for a warm winter jacket"],
    "need it, red shoes now": ["red shoes"],  # our window stops at the comma (2 tokens: too short)
    "men's running shoes 4-pack": ["men's running shoes", "4-pack"],  # 2 non-punctuation tokens
}


def _Doc(text, tokens, chunks):
    """A stand-in parse of ``text``: ``tokens`` are ``(word, POS, lemma, head index)`` in text order."""
    rows, pos = [], 0
    for i, (word, tag, lemma, head) in enumerate(tokens):
        idx = text.index(word, pos)
        pos = idx + len(word)
        rows.append((word, idx, tag, lemma, head, i == 0))
    return StandInDoc(text, rows, chunks)


@pytest.fixture
def stand_in_spacy(monkeypatch):
    """Makes every spaCy backend parse with PARSES instead of a model."""
    monkeypatch.setattr(seg, "_load_spacy", lambda model: lambda text: _Doc(text, *PARSES[text]))


@pytest.mark.parametrize("text", sorted(RELEASED))
def test_released_on_hand_parses(stand_in_spacy, text):
    """Catches: the corrected lemma list ("look"), spaCy-token word counts, windows stopping at punctuation,
    a window losing to the shorter chunk inside it, or a dedupe that is case-sensitive or drops the first
    occurrence (the chain-replacement rule itself: test_released_suppression_hand_cases)."""
    assert released_phrases(text) == RELEASED[text]
    spans = phrase_spans(text, backend="spacy-released", dedupe=True)
    assert texts(text, spans) == RELEASED[text]
    assert segment(text, backend="spacy-released:any_model", dedupe=True) == spans


@pytest.mark.parametrize("text", sorted(OURS_SPACY))
def test_the_quirks_are_where_our_spacy_backend_differs(stand_in_spacy, text):
    """Same parses through backend='spacy': the three quirks are real differences, not artefacts of the stand-in.
    Catches: 'spacy-released' silently routed to the corrected backend or the reverse."""
    assert texts(text, phrase_spans(text, backend="spacy", dedupe=True)) == OURS_SPACY[text]
    assert OURS_SPACY[text] != RELEASED[text]


def test_released_keeps_repeats_without_dedupe(stand_in_spacy):
    text = "red shoes and Red Shoes"
    assert texts(text, phrase_spans(text, backend="spacy-released")) == ["red shoes", "Red Shoes"]


def test_released_suppression_hand_cases():
    """Catches: longest-first suppression ([A, C] in the chain), replacing on equal length, unsorted visiting."""
    # A (0,10) is kept; B (8,20) overlaps it and is longer: replaces it; C (18,40) overlaps B, longer: replaces it.
    assert seg._released_suppression([(0, 10), (8, 20), (18, 40)]) == [(18, 40)]
    assert seg._resolve_overlaps(40, [0, 8, 18], [10, 20, 40]) == [(0, 10), (18, 40)]
    # Equal length: the first visited stays; a shorter overlapping one is dropped; disjoint ones are kept.
    assert seg._released_suppression([(5, 9), (0, 4), (3, 7)]) == [(0, 4), (5, 9)]
    assert seg._released_suppression([(0, 6), (2, 5), (6, 9)]) == [(0, 6), (6, 9)]
    # Visiting order is by start only, stable: at equal starts the earlier candidate wins a tie.
    assert seg._released_suppression([(4, 8), (0, 2), (4, 8)]) == [(0, 2), (4, 8)]


def _released_suppression_against_all_kept(candidates):
    """The released rule as its docstring states it: compare with every kept span, first overlap decides."""
    kept = []
    for start, end in sorted(candidates, key=lambda span: span[0]):
        for j, (k_start, k_end) in enumerate(kept):
            if not (start >= k_end or end <= k_start):
                if end - start > k_end - k_start:
                    kept[j] = (start, end)
                break
        else:
            kept.append((start, end))
    return kept


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 12)), max_size=25))
def test_released_suppression_equals_comparing_with_every_kept_span(pairs):
    """The one-comparison shortcut is exact. Catches: comparing with the first kept span instead of the last."""
    candidates = [(start, start + length) for start, length in pairs]
    assert seg._released_suppression(candidates) == _released_suppression_against_all_kept(candidates)


def test_released_spans_are_not_snapped_to_words(monkeypatch):
    """spaCy splits "can't" into "ca|n't"; a released window whose 6th token is "ca" ends inside the word.
    Catches: snapping the released spans outwards as the corrected backend does."""
    text = "need a red pair i can't"
    tokens = [("need", "VERB", "need", 0), ("a", "DET", "a", 3), ("red", "ADJ", "red", 3), ("pair", "NOUN", "pair", 0),
              ("i", "PRON", "I", 5), ("ca", "AUX", "can", 0), ("n't", "PART", "not", 5)]  # fmt: skip
    monkeypatch.setattr(seg, "_load_spacy", lambda model: lambda t: _Doc(t, tokens, [(1, 4)]))
    # Window "need a red pair i ca" (0, 20) beats the chunk "a red pair", the ADJ span "red pair" and the
    # window "pair i can't", which all overlap it and are shorter.
    assert texts(text, phrase_spans(text, backend="spacy-released")) == ["need a red pair i ca"]
    # the corrected backend widens to the run of word characters (the apostrophe is none)
    assert texts(text, phrase_spans(text, backend="spacy")) == ["need a red pair i can"]


def test_unknown_spacy_released_backend():
    with pytest.raises(ValueError, match="spacy-released"):
        segment("red shoes", backend="spacy-released:")
    with pytest.raises(ValueError, match="rules-v2"):
        segment("red shoes", backend="rules-v3")


# ---------------------------------------------------------------------------------------------- real model


def _english_model():
    """The model to test with: OSPO_GYM_SPACY_MODEL (a folder or package name), else an installed en_core_web_sm."""
    if importlib.util.find_spec("spacy") is None:
        pytest.skip("spaCy is not installed (.ci/stage_spacy.sh installs it)")
    model = os.environ.get("OSPO_GYM_SPACY_MODEL")
    if model:
        return model
    if importlib.util.find_spec("en_core_web_sm") is not None:
        return "en_core_web_sm"
    pytest.skip("no English spaCy model: set OSPO_GYM_SPACY_MODEL to a model folder")


@pytest.mark.spacy
@pytest.mark.parametrize("text", sorted(PARSES))
def test_hand_parses_are_the_models(text):
    """The stand-in parses above are what en_core_web_sm gives. Catches: a stale hand parse (another model)."""
    nlp = seg._load_spacy(_english_model())
    doc = nlp(text)
    tokens, chunks = PARSES[text]
    assert [(t.text, t.pos_, t.lemma_, t.head.i) for t in doc] == tokens
    assert [(c.start, c.end) for c in doc.noun_chunks] == chunks


@pytest.mark.spacy
@pytest.mark.parametrize("text", sorted(RELEASED))
def test_released_on_the_real_model(text):
    model = _english_model()
    assert released_phrases(text, model=model) == RELEASED[text]
    if text in OURS_SPACY:
        assert texts(text, phrase_spans(text, backend=f"spacy:{model}", dedupe=True)) == OURS_SPACY[text]


@pytest.mark.spacy
def test_committed_reference_is_what_the_model_gives():
    """The committed reference phrases equal a fresh run of both spaCy backends.
    Catches: a reference edited by hand or left stale after a change to either spaCy backend."""
    model = _english_model()
    for lang in ("en", "en_esci", "es", "ja"):
        rows = json.loads((ROOT / f"benchmarks/data/phrase_reference_{lang}.json").read_text("utf-8"))["rows"]
        for row in rows:
            text = row["text"]
            assert texts(text, phrase_spans(text, backend=f"spacy:{model}", dedupe=True)) == row["spacy"], (
                text
            )
            assert released_phrases(text, model=model) == row["spacy-released"], text


# ---------------------------------------------------------------------------------------------- rules-v2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("what is the best coffee maker for a small kitchen", ["the best coffee maker", "a small kitchen"]),
        ("can you recommend a blender for smoothies", ["a blender"]),  # verb after a subject pronoun
        ("women's high waisted leggings with pockets", ["women's high waisted leggings"]),  # possessive opens
        ("air fryer 6 quart", ["air fryer", "6 quart"]),  # a number after a noun opens a chunk
        ("wall mounted floating shelves", ["floating shelves"]),  # "-ed" after a noun is a verb
        ("noise machine for sleeping baby", ["noise machine"]),  # "-ing" after a preposition is a verb
        ("cat litter box self cleaning", ["cat litter box self cleaning"]),  # "-ing" ending a chunk is a noun
        ("queen mattress topper cooling gel", ["queen mattress topper"]),  # "-ing" before a noun is a verb
        (
            "coffee beans whole bean dark roast",
            ["coffee beans", "whole bean dark roast"],
        ),  # 6 words: cut at ADJ
        ("farmhouse style solid wood kitchen table", ["farmhouse style", "solid wood kitchen table"]),
        ("iphone 13 screen protector", ["iphone 13 screen protector"]),  # a model number stays in
        ("dog harness no pull large breed", ["dog harness", "pull large breed"]),  # "breed" is no participle
        ("ceramic coffee mug set of 4", ["ceramic coffee mug"]),  # trailing "set" is the parser's verb
        ("memory foam mattress topper queen size", []),  # 6 words: dropped as spaCy drops it, not split
        ("laptop sleeve 15.6 inch", ["laptop sleeve", "15.6 inch"]),  # a decimal is one word
        ("I'd like a pair of jeans that don't stretch out", ["pair of jeans that don't"]),  # don't = 2 tokens
        ("men's dress shirts", ["men's dress shirts"]),
        ("desk lamp dimmable", ["desk lamp dimmable"]),  # an adjective ending the text joins as a noun
        ("lunch box dishwasher safe", ["lunch box dishwasher"]),  # ... not a compound adjective's head
        ("sofa cover quilted", ["sofa cover"]),  # ... nor a participle
        ("thermos flask 20 oz", ["thermos flask"]),  # number + abbreviated unit after a noun: no chunk
        ("sd card 64gb, fast transfer", ["sd card", "fast transfer"]),
        ("microfiber cleaning cloth", ["microfiber cleaning cloth"]),  # a compound's gerund stays in
        ("water resistant quilted jacket", ["water resistant quilted jacket"]),  # "-ed" after an adjective
        ("monitor stand adjustable height", ["adjustable height"]),  # "stand": the parser's verb
        ("ski gloves fleece lining", ["ski gloves", "fleece lining"]),  # "gloves" ends its chunk
        ("hiking boots plus laces", ["hiking boots"]),  # "plus" is a conjunction, no chunk member
        # 6 tokens: no cut that leaves a lone first noun; the next adjective after a noun is cut at instead
        ("zentro purple plastic dog collar compact", ["zentro purple plastic dog collar"]),
    ],
)
def test_rules_v2_cases(text, expected):
    """Catches: determiners left out, verbs read as nouns, long chunks split instead of dropped, word counts
    instead of spaCy token counts, a decimal point taken for a break, the trailing-adjective, unit, gerund,
    conjunction, long-chunk-cut and noun-lexicon rules lost or applied too widely (texts written for the test,
    not from the evaluation set)."""
    assert texts(text, phrase_spans(text, backend="rules-v2")) == expected


WORDS = ["red", "running", "shoes", "for", "a", "the", "men's", "don't", "need", "looking", "mounted", "set",
         "15.6", "44mm", "t-shirt", "can", "you", "extra", "ワイヤレス", "é", "🎧", "x_y"]  # fmt: skip
SEPARATORS = [" ", "  ", ", ", ".", "\n", "-", "'", "", "/", "\u00a0"]
word_texts = st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(SEPARATORS)), max_size=40).map(
    lambda pairs: "".join(w + s for w, s in pairs)
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), word_texts))
def test_rules_v2_spans_are_valid(text):
    """Ordered, disjoint, inside, non-empty, stripped, never splitting a word (the module's span contract).
    Catches: decimal words or token counts shifting offsets, overlapping candidates surviving."""
    spans = phrase_spans(text, backend="rules-v2")
    previous = 0
    for start, end in spans:
        assert previous <= start < end <= len(text)
        assert not text[start].isspace() and not text[end - 1].isspace()
        for cut in (start, end):
            if 0 < cut < len(text):
                assert not (text[cut - 1].isalnum() or text[cut - 1] == "_") or not (
                    text[cut].isalnum() or text[cut] == "_"
                )
        previous = end


_UNIT = "I am looking for a warm winter jacket for men, 15.6 inch. Red running shoes size 42!\n"
ADVERSARIAL_V2 = {
    "prose": (_UNIT * (100_000 // len(_UNIT) + 1))[:100_000],
    "one content run": "ab " * 33_333,  # one chunk of 33k words: cut and trimmed once, not rescanned
    "adjectives": "adjustable " * 9_000,
    "adjective after noun": "red shoes stainless " * 5_000,
    "verbs": "need " * 20_000,
    "decimals": "1.5 " * 25_000,
    "hyphens": "a-" * 50_000,
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL_V2))
def test_rules_v2_is_linear(name):
    """Catches: a per-word rescan (quadratic) in the chunker, the long-chunk cuts or the windows."""
    started = time.perf_counter()
    phrase_spans(ADVERSARIAL_V2[name], backend="rules-v2")
    assert time.perf_counter() - started < 1.5


def test_envs_take_the_new_backends():
    """The env's oracle passes the backend through. Catches: a backend accepted by segment() but not by envs."""
    import gymnasium as gym

    env = gym.make("ospo/Interaction-v0", segmentation_backend="rules-v2").unwrapped
    text = "<answer>a warm winter jacket for men</answer>"
    assert texts(text, env.oracle.segment(text)) == ["a warm winter jacket"]


# ---------------------------------------------------------------------------------------------- agreement


def _agreement():
    spec = importlib.util.spec_from_file_location("phrase_agreement", ROOT / "benchmarks/phrase_agreement.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_agreement_results_are_reproduced():
    """benchmarks/results/phrase_agreement.json is what the current code computes from the committed reference.
    Catches: results left stale after a change to a rules backend, or numbers edited by hand."""
    committed = json.loads((ROOT / "benchmarks/results/phrase_agreement.json").read_text("utf-8"))
    assert _agreement().report() == committed


def test_the_esci_synthetic_texts_are_the_generated_ones():
    """benchmarks/data/phrase_eval_en_esci.txt is what benchmarks/phrase_synthetic_texts.py draws from the
    synthetic catalog, in the source order the agreement report assumes. Catches: texts edited or picked by hand
    (the set is meant to be drawn without choice), a stale file after a generator change, source counts that no
    longer match the file."""
    spec = importlib.util.spec_from_file_location(
        "phrase_synthetic_texts", ROOT / "benchmarks/phrase_synthetic_texts.py"
    )
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    drawn = generator.synthetic_texts()
    assert _agreement().load_texts("en_esci") == drawn and len(set(drawn)) == len(drawn) == 500
    counts = (generator.N_QUERIES, generator.N_TITLES, generator.N_DESCRIPTIONS)
    assert tuple(n for _, n in _agreement().ESCI_SOURCES) == counts


def test_rules_v2_agreement_floor():
    """rules-v2 agrees with spaCy's phrases (our corrected 'spacy' backend) on the English set at least as well as
    committed, on the tuning texts and on the held-out ones, and clearly better than rules, on the hand-written set
    and on the ESCI-synthetic one. The issue asked for 0.85; rules-v2 reaches 0.753 (0.781 train, 0.681 held-out)
    and 0.631 (0.632 / 0.629) there (benchmarks/RESULTS.md). Catches: a change that loses agreement."""
    module = _agreement()
    floors = {"en": (0.745, 0.775, 0.675), "en_esci": (0.625, 0.625, 0.62)}
    for lang, (all_floor, train_floor, held_out_floor) in floors.items():
        rows = module.load_reference(lang)["rows"]
        v2 = module.agreement(rows, "rules-v2", "spacy")
        rules = module.agreement(rows, "rules", "spacy")
        assert (
            v2["all"]["jaccard"] >= all_floor
            and v2["train"]["jaccard"] >= train_floor
            and v2["held_out"]["jaccard"] >= held_out_floor
        ), lang
        assert v2["all"]["jaccard"] >= rules["all"]["jaccard"] + 0.1, lang
        assert v2["held_out"]["jaccard"] > rules["held_out"]["jaccard"], lang


def test_the_rules_backend_is_frozen():
    """backend='rules' (the synthetic envs' players, which the committed benchmark results depend on) gives the
    same spans as before rules-v2 existed, on every evaluation text and the Interaction env's prompts: a digest
    of the spans, recorded with the code before this change. Catches: rules-v2 edits leaking into 'rules'."""
    import gymnasium as gym

    module = _agreement()
    all_texts = [t for lang in ("en", "es", "ja") for t in module.load_texts(lang)]
    env = gym.make("ospo/Interaction-v0").unwrapped
    assert env.segmentation == "phrase" and env.segmentation_backend == "rules"
    all_texts += list(env._prompts.values()) + _interaction_like_texts(env.vocabulary)
    spans = [segment(t, backend="rules") for t in all_texts]
    digest = hashlib.sha256(json.dumps(spans).encode()).hexdigest()
    assert len(all_texts) == 846
    assert digest == FROZEN_RULES_DIGEST


def _interaction_like_texts(vocabulary, n=500, seed=0):
    """Seeded completions an agent could write in the Interaction env: its pseudo-words with a few function
    words, preference verbs, punctuation, line breaks and think/answer tags."""
    rng = np.random.default_rng(seed)
    extra = ["for", "and", "the", "looking", "need", ",", ".", "\n", "-", "<answer>", "</answer>", "<think>"]
    pool = list(vocabulary) + extra
    return [" ".join(rng.choice(pool, size=int(rng.integers(1, 25)))) for _ in range(n)]


# sha256 of the rules spans of those 846 texts, computed with ospo_gym/segment.py as of commit 9b9fd81 (before
# rules-v2 and the spaCy-released backend were added).
FROZEN_RULES_DIGEST = "43f9c8cad0bb150a0d10eadeceea4864cd6c1a565e4c37b607da1b85ed1bacfa"


@pytest.mark.spacy
def test_rules_v2_noun_lexicons_are_the_measured_ones():
    """rules-v2's two noun lexicons are exactly what benchmarks/phrase_v2_lexicon.py measures with the model
    (three draws of synthetic queries, not the evaluation texts; majority vote). Catches: words added or dropped
    by hand, a stale lexicon, a single draw's list in place of the majority."""
    spec = importlib.util.spec_from_file_location(
        "phrase_v2_lexicon", ROOT / "benchmarks/phrase_v2_lexicon.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    verb_after, chunk_final = module.lexicons(seg._load_spacy(_english_model()))
    assert verb_after == seg._V2_VERB_AFTER_NOUN
    assert chunk_final == seg._V2_CHUNK_FINAL_NOUNS
