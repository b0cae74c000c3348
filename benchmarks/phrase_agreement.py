"""Agreement of the phrase backends with spaCy en_core_web_sm's phrases, per language and split.

Two steps:

* ``--write-reference MODEL`` (needs spaCy and a model; see ``.ci/stage_spacy.sh``): segments every text of
  ``benchmarks/data/phrase_eval_<lang>.txt`` with ``backend="spacy:MODEL"`` (our spaCy noun-chunk backend) and
  ``backend="spacy-released:MODEL"`` (the released ``break_query_into_phrases``) and writes the phrase texts to
  ``benchmarks/data/phrase_reference_<lang>.json``. The released code loads ``en_core_web_sm`` for every
  language, so the Spanish and Japanese references are that English model's phrases too.
* the report (no spaCy needed): mean phrase-set Jaccard and exact-match rate of each rules backend against both
  committed references, and of the released reproduction against the spaCy backend, on the train and held-out
  texts of each language; written to ``benchmarks/results/phrase_agreement.json``.

A text's phrase set is the set of its lowercased phrase texts; Jaccard is ``|A ∩ B| / |A ∪ B|`` (1 when both are
empty). The held-out split (``sha256(text) % 10 < 3``) was fixed with the texts, before the rules were tuned.

    python benchmarks/phrase_agreement.py --write-reference /path/to/en_core_web_sm   # dev/CI, with spaCy
    python benchmarks/phrase_agreement.py                                             # anywhere
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from ospo_gym.segment import phrase_spans

ROOT = Path(__file__).resolve().parent
DATA = ROOT / "data"
RESULTS = ROOT / "results" / "phrase_agreement.json"
LANGUAGES = ("en", "es", "ja")
RULES_BACKENDS = ("rules", "rules-v2")
REFERENCES = ("spacy", "spacy-released")
HELD_OUT_BUCKETS = 3  # of 10


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


def load_reference(lang: str) -> dict:
    """The committed reference of one language; ValueError if it is out of date with the evaluation texts."""
    payload = json.loads(reference_path(lang).read_text(encoding="utf-8"))
    if [row["text"] for row in payload["rows"]] != load_texts(lang):
        raise ValueError(
            f"{reference_path(lang)} does not hold the texts of phrase_eval_{lang}.txt; "
            "rerun with --write-reference MODEL where spaCy is installed"
        )
    return payload


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
    for lang, per_lang in results["languages"].items():
        for name, numbers in per_lang.items():
            cells = "  ".join(
                f"{split} J={v['jaccard']} exact={v['exact']} (n={v['n']})" for split, v in numbers.items()
            )
            print(f"{lang}  {name:28s} {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
