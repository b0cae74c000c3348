"""A second English phrase-agreement set, drawn from the project's ESCI-schema synthetic catalog generator.

``benchmarks/data/phrase_eval_en.txt`` (260 hand-written texts, 73 held out) is small for a held-out number;
this script draws more English texts, with no hand in their choice, from :func:`generate_catalog` ("us" locale,
every product type, 60 pseudo-brands): judged queries naming 1, 2 or 3 attributes ("{brand} {colour}
{material} {type}"), product titles ("{brand} {colour} {material} {type} {descriptor}", with the title noise)
and product descriptions with their HTML tags replaced by sentence breaks. It writes
``benchmarks/data/phrase_eval_en_esci.txt``, which ``benchmarks/phrase_agreement.py`` treats as one more
language key (``en_esci``) with the same held-out rule (``sha256(text) % 10 < 3``), fixed by the text itself
before any rule looks at it. The texts are narrower than the hand-written ones (40 product types, 16 colours,
16 materials), so their agreement is reported next to, never pooled with, the hand-written set's.

    python benchmarks/phrase_synthetic_texts.py   # writes the texts file (no spaCy needed)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

from ospo_gym.data.synthetic_catalog import CatalogConfig, generate_catalog

OUT = Path(__file__).resolve().parent / "data" / "phrase_eval_en_esci.txt"
N_QUERIES, N_TITLES, N_DESCRIPTIONS = 240, 130, 130
SEED = 0
_TAG = re.compile(r"<[^>]+>")


def _plain(html: str) -> str:
    """A description's text: each tag becomes a sentence break, '&amp;' becomes 'and', runs of breaks collapse."""
    text = _TAG.sub(". ", html.replace("&amp;", "and"))
    text = re.sub(r"\s*\.(?:\s*\.)+", ".", text)  # ". ." runs left by adjacent tags
    text = re.sub(r"\s+", " ", text).strip(" .")
    return text + "."


def synthetic_texts(seed: int = SEED) -> list[str]:
    """N_QUERIES + N_TITLES + N_DESCRIPTIONS distinct English texts, in a seeded order (queries, titles,
    descriptions)."""
    rng = np.random.default_rng(seed)
    queries: list[str] = []
    titles: list[str] = []
    descriptions: list[str] = []
    for k, attributes in enumerate((1, 2, 3)):
        config = CatalogConfig(
            num_products=400, num_queries=150, num_types=40, num_brands=60, num_colors=16, num_materials=16,
            attributes_per_query=attributes, pool_size=5, seed=seed + k, locale="us",
        )  # fmt: skip
        products, examples = generate_catalog(config)
        queries += list(dict.fromkeys(examples["query"]))
        titles += list(products["product_title"])
        descriptions += [_plain(d) for d in products["product_description"] if isinstance(d, str)]

    def draw(pool: list[str], n: int, taken: set[str]) -> list[str]:
        unique = [t for t in dict.fromkeys(pool) if t not in taken]
        picked = [unique[i] for i in sorted(rng.choice(len(unique), size=n, replace=False))]
        taken.update(picked)
        return picked

    taken: set[str] = set()
    return draw(queries, N_QUERIES, taken) + draw(titles, N_TITLES, taken) + draw(descriptions, N_DESCRIPTIONS, taken)


def main() -> int:
    header = (
        "# English texts from the ESCI-schema synthetic catalog (benchmarks/phrase_synthetic_texts.py, seed 0):\n"
        f"# {N_QUERIES} queries, {N_TITLES} titles, {N_DESCRIPTIONS} descriptions. Held-out: sha256(text) % 10 < 3.\n"
    )
    OUT.write_text(header + "\n".join(synthetic_texts()) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
