"""Where rules-v2 (or another rules backend) still disagrees with spaCy's phrases, by category.

For each text whose phrase set differs from the committed spaCy reference (``data/phrase_reference_<set>.json``),
the text's Jaccard loss ``1 - J`` is charged to one category: that of the first spaCy token whose membership in
some phrase differs between the two sides, named by spaCy's part of speech for it (a number or a token after a
number, a token spaCy tags VERB/AUX, ADJ, PROPN, a function word or adverb, punctuation, a NOUN at a compound
boundary), or "chunk over 5 tokens" when spaCy's noun chunk around it is longer than the 5-token limit (spaCy
drops it), or "same words, other cut" when both sides cover the same tokens. A category's share is its summed
loss over all texts of the split, so the shares add up to ``1 - mean Jaccard``. Needs spaCy and the model (the
tags come from a fresh parse; see ``.ci/stage_spacy.sh``).

    python benchmarks/phrase_error_categories.py MODEL [--set en|en_esci] [--split train|held_out|all]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import phrase_agreement as pa  # noqa: E402  (the benchmark folder is no package)

FUNCTION_POS = frozenset({"ADP", "CCONJ", "SCONJ", "DET", "PRON", "PART", "ADV"})


def covered(text: str, phrase_texts: list[str], doc: Any) -> set[int]:
    """Indices of the spaCy tokens that lie in some occurrence of one of the (lowercased) phrase texts."""
    low, out = text.lower(), set()
    for phrase in phrase_texts:
        p = phrase.lower()
        at = low.find(p)
        while at >= 0:
            out.update(t.i for t in doc if at <= t.idx < at + len(p))
            at = low.find(p, at + 1)
    return out


def category(doc: Any, ours: set[int], theirs: set[int]) -> str:
    """The category of one disagreeing text (see the module docstring)."""
    diff = [t for t in doc if (t.i in ours) != (t.i in theirs)]
    if not diff:
        return "same words, other cut"
    t = diff[0]
    chunk = next((c for c in doc.noun_chunks if c.start <= t.i < c.end), None)
    if chunk is not None and sum(not x.is_punct for x in chunk) > pa_max_tokens():
        return "chunk over 5 tokens"
    if any(c.isdigit() for c in t.text) or t.like_num or (t.i > 0 and doc[t.i - 1].like_num):
        return "number / unit"
    if t.pos_ in ("VERB", "AUX"):
        return "word spaCy reads as a verb" + (" (kept in our chunk)" if t.i in ours else " (in spaCy's chunk)")
    if t.pos_ == "ADJ":
        return "adjective"
    if t.pos_ == "PROPN":
        return "proper noun / brand"
    if t.pos_ in FUNCTION_POS:
        return "function word / adverb"
    if t.is_punct:
        return "punctuation"
    if t.pos_ == "NOUN":
        return "noun at a compound boundary"
    return f"other ({t.pos_})"


def pa_max_tokens() -> int:
    from ospo_gym.segment import MAX_GROUP_WORDS

    return MAX_GROUP_WORDS


def table(nlp: Any, rows: list[dict], backend: str) -> tuple[float, dict[str, tuple[int, float]]]:
    """Mean Jaccard and, per category, (texts, summed loss / number of rows)."""
    loss: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for row in rows:
        got = pa.phrases(row["text"], backend)
        j = pa.jaccard(got, row["spacy"])
        if j == 1.0:
            continue
        doc = nlp(row["text"])
        name = category(doc, covered(row["text"], got, doc), covered(row["text"], row["spacy"], doc))
        loss[name] += 1.0 - j
        count[name] += 1
    n = max(len(rows), 1)
    mean = 1.0 - sum(loss.values()) / n
    return mean, {k: (count[k], loss[k] / n) for k in sorted(loss, key=lambda k: -loss[k])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="spaCy model name or folder")
    parser.add_argument("--set", default="en", choices=("en", "en_esci"))
    parser.add_argument("--split", default="held_out", choices=("train", "held_out", "all"))
    parser.add_argument("--backend", default="rules-v2", choices=pa.RULES_BACKENDS)
    args = parser.parse_args(argv)
    import spacy  # only this script and --write-reference need it

    rows = pa.load_reference(args.set)["rows"]
    if args.split != "all":
        rows = [row for row in rows if row["held_out"] == (args.split == "held_out")]
    mean, cats = table(spacy.load(args.model), rows, args.backend)
    print(f"{args.set} {args.split} {args.backend}: {len(rows)} texts, mean Jaccard {mean:.3f}")
    print("| category | texts | Jaccard lost |\n|---|---|---|")
    for name, (texts, share) in cats.items():
        print(f"| {name} | {texts} | {share:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
