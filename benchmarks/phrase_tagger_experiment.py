"""Can a learned chunker imitate spaCy's phrases better than rules-v2? An averaged perceptron (``phrase_tagger.py``)
trained on the phrases of ``backend="spacy:MODEL"``; a dev experiment that needs spaCy.

Corpus sources (every text of every ``benchmarks/data/phrase_eval_*.txt`` file removed from the synthetic ones):

* ``eval_train_split``: the training texts (``sha256 % 10 >= 3``) of the hand-written and ESCI-synthetic English
  evaluation sets, less a dev fifth (:func:`is_dev`) that the experiment scores on;
* ``esci_synthetic``: texts drawn as ``phrase_synthetic_texts.py`` draws them, from other seeds;
* ``lexicon_queries``: keyword queries of ``phrase_v2_lexicon.py``'s vocabulary, from other seeds;
* ``generated``: shopping queries, requests, comma lists and titles from the templates and vocabulary below
  (written for this script).

Each configuration (how many times each source's texts count) trains the perceptron (seeded) and is scored, mean
phrase-set Jaccard against the committed spaCy references, on the train and dev texts of both English sets, next
to rules-v2 on the same texts. The held-out texts are never parsed, trained on or scored here.

    python benchmarks/phrase_tagger_experiment.py /path/to/en_core_web_sm   # needs spaCy (see .ci/stage_spacy.sh)
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
from pathlib import Path

import numpy as np
from _common import write_report
from phrase_agreement import DATA, is_held_out, jaccard, load_reference, load_texts, phrases
from phrase_synthetic_texts import synthetic_texts
from phrase_tagger import PhraseTagger, labels_of_spans, rules_hints, tokens, train_weights
from phrase_v2_lexicon import ADJECTIVES, HEADS, MODIFIERS, synthetic_queries

from ospo_gym.segment import _dedupe, phrase_spans

RESULTS = Path(__file__).parent / "results" / "phrase_tagger_experiment.json"

HEADS_MORE = """
earbuds sneakers jeans hoodie sweater leggings stroller carrier crib monitor blender skillet cookware stemware
toothbrush moisturizer cleanser sunscreen serum shampoo conditioner lotion perfume lipstick mascara sofa couch
dresser nightstand bookshelf lamp bulb strip projector turntable soundbar subwoofer charger powerbank tripod
drone smartwatch tracker scale thermometer humidifier purifier dehumidifier treadmill dumbbells kettlebell
racket racquet ball glove bat skateboard scooter kayak paddle tent sleeping-bag cooler thermos tumbler flask
blanket duvet comforter quilt sheets pillowcase curtains drapes blinds rug runner doormat planter vase frame
""".split()
BRANDS = """
apple samsung sony nintendo logitech anker bose dell lenovo hp canon nikon garmin fitbit dyson ninja keurig
nike adidas levis carhartt patagonia lego crayola ikea kitchenaid cuisinart pyrex yeti stanley hydro-flask
""".split()
PRODUCT_LINES = """
iphone ipad macbook airpods switch playstation xbox kindle galaxy pixel echo alexa roku chromebook
""".split()
AUDIENCES = """
women men kids toddlers boys girls teens adults seniors babies dogs cats puppies beginners athletes
""".split()
USES = """
travel camping hiking running sleeping cooking baking gaming office school work gym yoga swimming cycling
fishing hunting gardening cleaning studying reading driving parties weddings winter summer
""".split()
COLOURS = "black white red blue green navy grey pink purple beige brown gold silver clear cream olive".split()
MATERIALS = (
    "cotton linen wool leather denim silk fleece bamboo steel aluminum wood glass ceramic silicone".split()
)
NUMBERS = "2 3 4 5 6 8 10 12 16 20 24 32 40 50 64 100 128 256".split()
UNITS = "inch oz ft lb gb tb mm cm ml pack pcs count piece watt mah".split()
VERBS = "fits works keeps holds stays protects lasts folds charges".split()
REQUESTS = (
    "looking for {np}",
    "looking for {np} for {aud}",
    "i'm looking for {np} that {verb} {pp}",
    "i need {det} {np}",
    "i need {det} {np} for {use}",
    "need {det} {np} that {verb} {pp}",
    "want {det} {np} with {np2}",
    "best {np} for {aud}",
    "best {np} under {num} dollars",
    "{np} for {aud}",
    "{np} for {use}",
    "{np} with {np2}",
    "{np} with {np2} and {np3}",
    "{np} that {verb} {pp}",
    "something to {verb0} my {np}",
    "cheap {np} for {use}",
    "{det} {np} for my {np2}",
    "gift for {aud} who like {use}",
    "replacement {np} for {brand} {np2}",
    "{np} compatible with {brand} {line}",
)
VERB0 = "keep hold protect clean store organize charge carry".split()
PPS = (
    "in my bag",
    "all day",
    "during workouts",
    "on carpet",
    "in the car",
    "at night",
    "in the rain",
    "on the go",
)


def _noun_phrase(rng: random.Random) -> str:
    """A keyword noun phrase: optional colour/material/adjective, one or two modifiers, a head."""
    words = []
    if rng.random() < 0.35:
        words.append(rng.choice(ADJECTIVES))
    if rng.random() < 0.25:
        words.append(rng.choice(COLOURS + MATERIALS))
    for _ in range(rng.choice((0, 1, 1, 2))):
        words.append(rng.choice(MODIFIERS + USES))
    words.append(rng.choice(HEADS + HEADS_MORE))
    return " ".join(words)


def _keyword_query(rng: random.Random) -> str:
    """A bare keyword query: brand/line, noun phrase, trailing attributes in any order."""
    parts = []
    if rng.random() < 0.25:
        parts.append(
            rng.choice(BRANDS + PRODUCT_LINES) + (f" {rng.choice(NUMBERS)}" if rng.random() < 0.3 else "")
        )
    parts.append(_noun_phrase(rng))
    for _ in range(rng.choice((0, 0, 1, 2))):
        parts.append(
            rng.choice(
                [
                    rng.choice(ADJECTIVES),
                    rng.choice(COLOURS),
                    rng.choice(AUDIENCES),
                    f"{rng.choice(NUMBERS)} {rng.choice(UNITS)}",
                    f"{rng.choice(NUMBERS)}{rng.choice(UNITS)}",
                    f"set of {rng.choice(NUMBERS)}",
                ]
            )
        )
    return " ".join(parts)


def generated_texts(n: int, seed: int) -> list[str]:
    """``n`` distinct texts: keyword queries, requests, comma lists of 2-4 items and capitalised titles."""
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < n:
        kind = rng.random()
        if kind < 0.3:
            text = _keyword_query(rng)
        elif kind < 0.65:
            text = rng.choice(REQUESTS).format(
                np=_noun_phrase(rng),
                np2=_noun_phrase(rng),
                np3=_noun_phrase(rng),
                aud=rng.choice(AUDIENCES),
                use=rng.choice(USES),
                verb=rng.choice(VERBS),
                verb0=rng.choice(VERB0),
                pp=rng.choice(PPS),
                det=rng.choice(("a", "an", "the", "some", "a good", "a new")),
                num=rng.choice(NUMBERS),
                brand=rng.choice(BRANDS),
                line=rng.choice(PRODUCT_LINES),
            )
            text = text.replace(" an ", " a ")
        elif kind < 0.9:
            items = [_keyword_query(rng) if rng.random() < 0.6 else f"{_noun_phrase(rng)} with {_noun_phrase(rng)}"
                     for _ in range(rng.choice((2, 3, 3, 4)))]  # fmt: skip
            text = ", ".join(items)
        else:
            text = f"{_noun_phrase(rng)} with a {_noun_phrase(rng)} and {_noun_phrase(rng)}"
            text = text[0].upper() + text[1:]
        if rng.random() < 0.1:
            text = text[0].upper() + text[1:]
        out.add(text)
    return sorted(out)


def is_dev(text: str) -> bool:
    """A fifth of the evaluation sets' training texts, kept out of the corpus and scored on."""
    return int(hashlib.sha256(("dev:" + text).encode("utf-8")).hexdigest(), 16) % 5 == 0


def corpus(n_generated: int, seed: int) -> dict[str, list[str]]:
    """The training texts by source: the evaluation sets' training texts less the dev texts, and synthetic texts
    with every evaluation text (any split, any language) removed."""
    evaluation = {
        t
        for path in sorted(DATA.glob("phrase_eval_*.txt"))
        for t in load_texts(path.stem[len("phrase_eval_") :])
    }
    train_split = [
        t for lang in ("en", "en_esci") for t in load_texts(lang) if not is_held_out(t) and not is_dev(t)
    ]
    esci = [t for s in (10, 20, 30, 40, 50, 60) for t in synthetic_texts(seed=s)]
    lexicon = [t for s in (10, 11) for t in synthetic_queries(3000, seed=s)]
    sources = {
        "eval_train_split": train_split,
        "esci_synthetic": esci,
        "lexicon_queries": lexicon,
        "generated": generated_texts(n_generated, seed),
    }
    seen: set[str] = set()
    out = {}
    for name, texts in sources.items():
        kept = []
        for text in texts:
            if text in seen or (text in evaluation and name != "eval_train_split"):
                continue
            seen.add(text)
            kept.append(text)
        out[name] = kept
    return out


CONFIGURATIONS = (
    {"eval_train_split": 1},
    {"eval_train_split": 3, "esci_synthetic": 1},
    {"eval_train_split": 3, "lexicon_queries": 1},
    {"eval_train_split": 3, "generated": 1},
    {"eval_train_split": 10, "esci_synthetic": 1, "lexicon_queries": 1, "generated": 1},
)


def scores(segment) -> dict[str, dict[str, float]]:
    """Mean Jaccard of ``segment(text) -> phrases`` against the spaCy reference, per English set and split."""
    out: dict[str, dict[str, float]] = {}
    for lang in ("en", "en_esci"):
        by_split: dict[str, list[float]] = {}
        for row in load_reference(lang)["rows"]:
            if row["held_out"]:
                continue
            split = "dev" if is_dev(row["text"]) else "train"
            by_split.setdefault(split, []).append(jaccard(segment(row["text"]), row["spacy"]))
        out[lang] = {split: round(float(np.mean(v)), 3) for split, v in sorted(by_split.items())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="spaCy model folder (en_core_web_sm 3.8)")
    parser.add_argument("--generated", type=int, default=6000, help="texts from this script's templates")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    import spacy

    texts_by_source = corpus(args.generated, args.seed)
    held = {t for lang in ("en", "en_esci") for t in load_texts(lang) if is_held_out(t)}
    if held & {t for group in texts_by_source.values() for t in group}:
        sys.exit("a held-out evaluation text is in the training corpus")
    start = time.perf_counter()
    examples: dict[str, list] = {}
    for name, texts in texts_by_source.items():
        examples[name] = []
        for text in texts:
            found = tokens(text)
            gold = labels_of_spans(found, phrase_spans(text, backend=f"spacy:{args.model}"))
            examples[name].append(([t for _, _, t in found], rules_hints(text, found), gold))
    parsed = time.perf_counter() - start
    rules = scores(lambda text: phrases(text, "rules-v2"))
    runs = []
    for weights in CONFIGURATIONS:
        chosen = [
            example for name, times in weights.items() for example in examples[name] for _ in range(times)
        ]
        tagger = PhraseTagger(train_weights(chosen, epochs=args.epochs, seed=args.seed))
        got = scores(lambda text, tagger=tagger: [text[a:b] for a, b in _dedupe(text, tagger.spans(text))])
        runs.append({"sources": weights, "tagger": got})
        print(weights, got, flush=True)
    report = {
        "command": f"python benchmarks/phrase_tagger_experiment.py MODEL --generated {args.generated} "
        f"--epochs {args.epochs} --seed {args.seed}",
        "spacy": spacy.__version__,
        "texts": {name: len(group) for name, group in texts_by_source.items()},
        "parse_seconds": round(parsed),
        "rules_v2": rules,
        "runs": runs,
    }
    print("rules-v2", rules)
    write_report(report, args.out)


if __name__ == "__main__":
    main()
