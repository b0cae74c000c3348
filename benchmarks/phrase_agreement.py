"""Agreement of the phrase backends with spaCy en_core_web_sm's phrases, per language and split.

Two steps:

* ``--write-reference MODEL`` (needs spaCy and a model; see ``.ci/stage_spacy.sh``): segments every text of
  ``benchmarks/data/phrase_eval_<lang>.txt`` with ``backend="spacy:MODEL"`` (our spaCy noun-chunk backend) and
  ``backend="spacy-released:MODEL"`` (the released ``break_query_into_phrases``) and writes the phrase texts to
  ``benchmarks/data/phrase_reference_<lang>.json``. The released code loads ``en_core_web_sm`` for every
  language, so the Spanish and Japanese references are that English model's phrases too.
* the report (no spaCy needed): mean phrase-set Jaccard and exact-match rate of each rules backend against both
  committed references, and of the released reproduction against the spaCy backend, on the train and held-out
  texts of each language; for Spanish and Japanese also against the hand-written phrases of
  ``benchmarks/data/phrase_hand_<lang>.tsv`` (the package index has no spaCy 3.8 model for either language);
  written to ``benchmarks/results/phrase_agreement.json``.

A text's phrase set is the set of its lowercased phrase texts; Jaccard is ``|A ∩ B| / |A ∪ B|`` (1 when both are
empty). The held-out split (``sha256(text) % 10 < 3``) was fixed with the texts, before the rules were tuned.

    python benchmarks/phrase_agreement.py --write-reference /path/to/en_core_web_sm   # dev/CI, with spaCy
    python benchmarks/phrase_agreement.py                                             # anywhere
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np

from ospo_gym.segment import FUNCTION_WORDS, phrase_spans

ROOT = Path(__file__).resolve().parent
DATA = ROOT / "data"
RESULTS = ROOT / "results" / "phrase_agreement.json"
LANGUAGES = ("en", "en_esci", "es", "ja")  # en_esci: drawn by benchmarks/phrase_synthetic_texts.py
RULES_BACKENDS = ("rules", "rules-v2")
REFERENCES = ("spacy", "spacy-released")
HELD_OUT_BUCKETS = 3  # of 10
# phrase_eval_en_esci.txt: how many texts of each source, in file order (benchmarks/phrase_synthetic_texts.py)
ESCI_SOURCES = (("queries", 240), ("titles", 130), ("descriptions", 130))


def load_texts(lang: str) -> list[str]:
    """The evaluation texts of one language, in file order ('#' lines and blank lines skipped)."""
    lines = (DATA / f"phrase_eval_{lang}.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def is_held_out(text: str) -> bool:
    """The fixed held-out split: about 30 % of the texts, by a hash of the text."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest(), 16) % 10 < HELD_OUT_BUCKETS


def phrases(text: str, backend: str) -> list[str]:
    """Phrase texts of ``text`` under ``backend``, deduplicated as the released code does."""
    return [text[a:b] for a, b in phrase_spans(text, backend=backend, dedupe=True)]


def jaccard(a: list[str], b: list[str]) -> float:
    """Jaccard of the two lowercased phrase sets; 1.0 when both are empty."""
    sa, sb = {p.lower() for p in a}, {p.lower() for p in b}
    return 1.0 if not sa | sb else len(sa & sb) / len(sa | sb)


def reference_path(lang: str) -> Path:
    return DATA / f"phrase_reference_{lang}.json"


def write_reference(model: str) -> None:
    """Segment every evaluation text with both spaCy backends and write the phrase texts (needs spaCy)."""
    import spacy  # only this step needs it

    nlp = spacy.load(model)
    meta = {
        "model": f"{nlp.meta.get('lang')}_{nlp.meta.get('name')}",
        "model_version": nlp.meta.get("version"),
        "spacy_version": spacy.__version__,
    }
    # How stable spaCy's own phrases are under edits that should not change them: a ceiling for any imitation.
    edits = {
        "first letter capitalised": lambda t: t[:1].upper() + t[1:],
        "trailing period": lambda t: t + ".",
    }
    for english in ("en", "en_esci"):
        meta[f"spacy_self_agreement_{english}"] = {
            name: round(
                float(
                    np.mean(
                        [
                            jaccard(phrases(t, f"spacy:{model}"), _no_period(phrases(edit(t), f"spacy:{model}")))
                            for t in load_texts(english)
                        ]
                    )
                ),
                4,
            )
            for name, edit in edits.items()
        }
    for lang in LANGUAGES:
        rows = [
            {
                "text": text,
                "held_out": is_held_out(text),
                "spacy": phrases(text, f"spacy:{model}"),
                "spacy-released": phrases(text, f"spacy-released:{model}"),
            }
            for text in load_texts(lang)
        ]
        payload = {"meta": meta, "rows": rows}
        reference_path(lang).write_text(
            json.dumps(payload, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
        )
        print(f"wrote {reference_path(lang)} ({len(rows)} texts)")


def _no_period(phrases: list[str]) -> list[str]:
    return [p.removesuffix(".").strip() for p in phrases]


def load_reference(lang: str) -> dict:
    """The committed reference of one language; ValueError if it is out of date with the evaluation texts."""
    payload = json.loads(reference_path(lang).read_text(encoding="utf-8"))
    if [row["text"] for row in payload["rows"]] != load_texts(lang):
        raise ValueError(
            f"{reference_path(lang)} does not hold the texts of phrase_eval_{lang}.txt; "
            "rerun with --write-reference MODEL where spaCy is installed"
        )
    return payload


def load_hand_reference(lang: str) -> list[list[str]] | None:
    """Hand-written phrases of one language (``phrase_hand_<lang>.tsv``), one list per evaluation text, or None
    if there is no such file; ValueError if it does not match the evaluation texts."""
    path = DATA / f"phrase_hand_{lang}.tsv"
    if not path.exists():
        return None
    lines = [
        line for line in path.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")
    ]
    pairs = [line.split("\t") for line in lines]
    if [pair[0] for pair in pairs] != load_texts(lang) or any(len(pair) != 2 for pair in pairs):
        raise ValueError(
            f"{path} must hold 'text<TAB>phrases' for each text of phrase_eval_{lang}.txt, in order"
        )
    hand = [[p.strip() for p in phrases.split("|") if p.strip()] for _, phrases in pairs]
    for (text, _), phrases in zip(pairs, hand, strict=True):
        if any(p not in text for p in phrases):
            raise ValueError(f"{path}: a phrase of {text!r} is not in the text")
    return hand


def text_kind(text: str) -> str:
    """'list' (has a comma), 'request' (has a function word such as "for", "a", "I") or 'keywords'."""
    if "," in text:
        return "list"
    words = re.findall(r"\w+(?:['’-]\w+)*", text.lower())
    return "request" if any(w in FUNCTION_WORDS for w in words) else "keywords"


def by_kind(rows: list[dict], candidate: str, reference: str) -> dict:
    """Mean Jaccard per text kind (see :func:`text_kind`), over all rows."""
    out = {}
    for kind in ("request", "list", "keywords"):
        picked = [row for row in rows if text_kind(row["text"]) == kind]
        scores = [jaccard(phrases(row["text"], candidate), row[reference]) for row in picked]
        out[kind] = {"n": len(picked), "jaccard": round(float(np.mean(scores)), 4) if picked else None}
    return out


def by_source(rows: list[dict], candidate: str, reference: str) -> dict:
    """Mean Jaccard per source of the ESCI-synthetic texts (queries, titles, descriptions: the file holds them in
    that order, ``ESCI_SOURCES`` many of each), over all and over the held-out rows."""
    out, start = {}, 0
    for source, n in ESCI_SOURCES:
        picked = rows[start : start + n]
        start += n
        scores = np.array([jaccard(phrases(row["text"], candidate), row[reference]) for row in picked])
        held = np.array([row["held_out"] for row in picked], dtype=bool)
        out[source] = {
            "n": len(picked),
            "jaccard": round(float(scores.mean()), 4),
            "n_held_out": int(held.sum()),
            "jaccard_held_out": round(float(scores[held].mean()), 4),
        }
    return out


def agreement(rows: list[dict], candidate: str, reference: str) -> dict:
    """Mean Jaccard and exact-match rate of ``candidate`` (a backend, or a reference key) against ``reference``,
    over all rows and over the train / held-out rows."""
    got = [row[candidate] if candidate in row else phrases(row["text"], candidate) for row in rows]
    scores = np.array([jaccard(g, row[reference]) for g, row in zip(got, rows, strict=True)])
    exact = np.array(
        [
            {p.lower() for p in g} == {p.lower() for p in row[reference]}
            for g, row in zip(got, rows, strict=True)
        ]
    )
    held = np.array([row["held_out"] for row in rows], dtype=bool)
    out = {}
    for name, mask in (("all", np.ones_like(held)), ("train", ~held), ("held_out", held)):
        out[name] = {
            "n": int(mask.sum()),
            "jaccard": round(float(scores[mask].mean()), 4) if mask.any() else None,
            "exact": round(float(exact[mask].mean()), 4) if mask.any() else None,
        }
    return out


def report() -> dict:
    """Every agreement number, per language."""
    results: dict = {"languages": {}}
    for lang in LANGUAGES:
        payload = load_reference(lang)
        rows = payload["rows"]
        results["meta"] = payload["meta"]
        per_lang = {
            f"{backend} vs {ref}": agreement(rows, backend, ref)
            for backend in RULES_BACKENDS
            for ref in REFERENCES
        }
        per_lang["spacy-released vs spacy"] = agreement(rows, "spacy-released", "spacy")
        if lang == "en":
            results["en_by_kind"] = {f"{b} vs spacy": by_kind(rows, b, "spacy") for b in RULES_BACKENDS}
        if lang == "en_esci":
            results["en_esci_by_source"] = {
                f"{b} vs spacy": by_source(rows, b, "spacy") for b in RULES_BACKENDS
            }
        hand = load_hand_reference(lang)
        if hand is not None:
            rows = [{**row, "hand": phrases} for row, phrases in zip(rows, hand, strict=True)]
            for candidate in (*RULES_BACKENDS, "spacy-released"):
                per_lang[f"{candidate} vs hand"] = agreement(rows, candidate, "hand")
        results["languages"][lang] = per_lang
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write-reference", metavar="MODEL", help="spaCy model name or folder (needs spaCy)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.write_reference:
        write_reference(args.write_reference)
    results = report()
    args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    for name, sources in results["en_esci_by_source"].items():
        print(
            f"en_esci  {name:23s} by source: "
            + "  ".join(f"{k} J={v['jaccard']} held-out J={v['jaccard_held_out']}" for k, v in sources.items())
        )
    for name, kinds in results["en_by_kind"].items():
        print(
            f"en  {name:28s} by kind: "
            + "  ".join(f"{k} J={v['jaccard']} (n={v['n']})" for k, v in kinds.items())
        )
    for lang, per_lang in results["languages"].items():
        for name, numbers in per_lang.items():
            cells = "  ".join(
                f"{split} J={v['jaccard']} exact={v['exact']} (n={v['n']})" for split, v in numbers.items()
            )
            print(f"{lang}  {name:28s} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
