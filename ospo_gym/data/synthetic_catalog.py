"""A generated product catalog and judged queries in the Amazon ESCI (Shopping Queries) schema.

Every product has a type (e.g. "running shoes"), a brand, a colour and a material. A query names a type
and ``attributes_per_query`` of those attributes; its judged pool is labelled from the attributes:

* ``E`` (Exact): same type and every named attribute matches;
* ``S`` (Substitute): same type, at least one named attribute differs;
* ``C`` (Complement): a complementary type (e.g. "athletic socks" for "running shoes");
* ``I`` (Irrelevant): any other type.

Labels follow the product's true attributes, not its title: ``title_noise`` drops or adds attribute words
in titles, so a lexical retriever can be misled the way it is by real listings.

The two frames match the files ``shopping_queries_dataset_products.parquet`` and
``shopping_queries_dataset_examples.parquet`` column for column, so the real-data loaders can be tested on
them (:func:`ospo_gym.data.fixtures.write_esci_parquet`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ospo_gym.data.esci_schema import EXAMPLE_COLUMNS, LOCALES, PRODUCT_COLUMNS
from ospo_gym.data.synthetic_words import (
    COLORS,
    FIELD_LABELS,
    FILLERS,
    MATERIALS,
    TYPE_PAIRS,
    CatalogVocabulary,
    build_vocabulary,
)

__all__ = [
    "ATTRIBUTES",
    "CatalogConfig",
    "generate_catalog",
    "product_attributes",
    "query_attributes",
]

# The attributes a query may name besides the product type, in the order a query states them.
ATTRIBUTES: tuple[str, ...] = ("brand", "color", "material")

# Probabilities that a product's optional text fields are null, as in the real catalog.
_NULL_DESCRIPTION = 0.15
_NULL_BULLETS = 0.1
_NULL_BRAND = 0.05
_NULL_COLOR = 0.1
# Target share of each label in a judged pool; whatever a label lacks is filled with Irrelevant.
_POOL_SHARE = {"E": 0.25, "S": 0.3, "C": 0.15}

_ASIN_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
# Upper bounds of the size knobs: each keeps generation within minutes and memory, and every loop bounded.
MAX_BRANDS = 5000
MAX_PRODUCTS = 10**7
MAX_QUERIES = 10**6
MAX_POOL_SIZE = 10**5
MAX_QUERY_PRODUCT_PAIRS = 10**10
MAX_EXAMPLES = 10**7
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class CatalogConfig:
    """Size, difficulty and noise of a generated catalog.

    Attributes:
        num_products: products in the catalog.
        num_queries: judged queries (texts are kept distinct while the attribute space allows it).
        num_types: product types used, at most 40; they are drawn as complementary pairs.
        num_brands: pseudo-brands, generated from syllables.
        num_colors: colours used, at most 16.
        num_materials: materials used, at most 16.
        attributes_per_query: how many of brand/colour/material a query names besides the type (0-3): the
            difficulty knob "number of relevant attributes".
        pool_size: judged products per query (capped at ``num_products``).
        title_noise: probability that a title drops one of its attribute words, and (independently) that it
            gains a wrong one: the noise knob.
        locale: "us", "es" or "jp" (the vocabulary's language and ``product_locale``).
        seed: seed of everything random.
        test_fraction: share of queries whose examples get ``split="test"``.
    """

    num_products: int = 2000
    num_queries: int = 200
    num_types: int = 24
    num_brands: int = 30
    num_colors: int = 12
    num_materials: int = 10
    attributes_per_query: int = 2
    pool_size: int = 40
    title_noise: float = 0.1
    locale: str = "us"
    seed: int = 0
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.locale not in LOCALES:
            raise ValueError(f"locale must be one of {LOCALES}, got {self.locale!r}")
        max_types = 2 * len(TYPE_PAIRS[self.locale])
        limits = {
            "num_types": (2, max_types, f"the {self.locale!r} locale has {max_types} product types"),
            "num_colors": (1, len(COLORS[self.locale]), f"the {self.locale!r} locale has that many colours"),
            "num_materials": (1, len(MATERIALS[self.locale]), f"the {self.locale!r} locale has that many materials"),
            "num_brands": (1, MAX_BRANDS, "pseudo-brands are drawn until that many distinct ones are found"),
            "num_products": (1, MAX_PRODUCTS, "the catalog is generated and indexed in memory, ~10 s per million"),
            "num_queries": (1, MAX_QUERIES, "each query is generated and judged one at a time"),
            "pool_size": (1, MAX_POOL_SIZE, "each judged product is one row of the examples frame"),
            "attributes_per_query": (0, len(ATTRIBUTES), f"a query can name only {', '.join(ATTRIBUTES)}"),
        }
        for name, (low, high, why) in limits.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must be an int, got {value!r}")
            if not low <= value <= high:
                raise ValueError(f"{name} must be in [{low}, {high}] ({why}), got {value}; pick a value in that range")
        if self.num_queries * self.num_products > MAX_QUERY_PRODUCT_PAIRS:
            raise ValueError(
                f"num_queries * num_products must be at most {MAX_QUERY_PRODUCT_PAIRS:.0e} (every query labels the "
                f"whole catalog, ~1 min at the bound), got {self.num_queries} * {self.num_products}; lower either"
            )
        if self.num_queries * min(self.pool_size, self.num_products) > MAX_EXAMPLES:
            raise ValueError(
                f"num_queries * pool_size must be at most {MAX_EXAMPLES:.0e} judged examples (rows held in memory; "
                f"ESCI has 2.6 million), got {self.num_queries} * {self.pool_size}; lower either"
            )
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        if not 0.0 <= self.title_noise <= 1.0:
            raise ValueError(f"title_noise is a probability; set it in [0, 1], got {self.title_noise}")
        if not 0.0 <= self.test_fraction <= 1.0:
            raise ValueError(f"test_fraction is a share of queries; set it in [0, 1], got {self.test_fraction}")



def _asin_ids(count: int, rng: np.random.Generator) -> list[str]:
    """``count`` distinct ASIN-like ids: "B0" + 8 upper-case alphanumerics."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < count:
        chars = _ASIN_ALPHABET[rng.integers(len(_ASIN_ALPHABET), size=(count - len(ids), 8))]
        for row in chars:
            pid = "B0" + "".join(row)
            if pid not in seen:
                seen.add(pid)
                ids.append(pid)
    return ids


def _titles(
    vocab: CatalogVocabulary, attrs: dict[str, np.ndarray], descriptor: np.ndarray, noise: float, rng: np.random.Generator
) -> list[str]:
    """Titles "{brand} {colour} {material} {type} {descriptor}", with attribute words dropped/added by noise."""
    n = len(descriptor)
    brand_w = np.array(vocab.brands, dtype=object)[attrs["brand"]]
    color_w = np.array(vocab.colors, dtype=object)[attrs["color"]]
    material_w = np.array(vocab.materials, dtype=object)[attrs["material"]]
    drop = rng.random(n) < noise
    drop_which = rng.integers(3, size=n)
    add = rng.random(n) < noise
    # The added word is a colour or material the product does not have (a misleading listing).
    add_is_color = rng.random(n) < 0.5
    add_color = (attrs["color"] + rng.integers(1, max(len(vocab.colors), 2), size=n)) % len(vocab.colors)
    add_material = (attrs["material"] + rng.integers(1, max(len(vocab.materials), 2), size=n)) % len(vocab.materials)
    extra = np.where(
        add_is_color,
        np.array(vocab.colors, dtype=object)[add_color],
        np.array(vocab.materials, dtype=object)[add_material],
    )
    words = np.stack([brand_w, color_w, material_w], axis=1)
    words[drop, drop_which[drop]] = ""
    type_w = np.array(vocab.types, dtype=object)[attrs["type"]]
    desc_w = np.array(vocab.descriptors, dtype=object)[descriptor]
    extra = np.where(add, extra, "")
    # Join per product; the few string concatenations are the unavoidable per-row step.
    raw = words[:, 0] + " " + words[:, 1] + " " + words[:, 2] + " " + type_w + " " + desc_w + " " + extra
    return [_SPACES.sub(" ", t).strip() for t in raw]


def _descriptions(
    vocab: CatalogVocabulary, attrs: dict[str, np.ndarray], locale: str, rng: np.random.Generator
) -> tuple[list[str | None], list[str | None]]:
    """HTML descriptions and newline-separated bullet points that state the true attributes."""
    n = len(attrs["type"])
    labels = FIELD_LABELS[locale]
    fillers = FILLERS[locale]
    filler_idx = rng.integers(len(fillers), size=(n, 4))
    style = rng.integers(3, size=n)
    null_desc = rng.random(n) < _NULL_DESCRIPTION
    null_bullets = rng.random(n) < _NULL_BULLETS
    descriptions: list[str | None] = []
    bullets: list[str | None] = []
    for i in range(n):
        brand = vocab.brands[attrs["brand"][i]]
        color = vocab.colors[attrs["color"][i]]
        material = vocab.materials[attrs["material"][i]]
        ptype = vocab.types[attrs["type"][i]]
        f = [fillers[j] for j in filler_idx[i]]
        if null_desc[i]:
            descriptions.append(None)
        elif style[i] == 0:
            descriptions.append(f"<p>{ptype} {labels['by']} {brand}, {labels['made']} {material}.</p><p>{f[0]}. {f[1]}.</p>")
        elif style[i] == 1:
            descriptions.append(f"<b>{brand}</b> {color} {ptype}<br>{f[0]} &amp; {f[2]}.<br/>{labels['made']} {material}.")
        else:
            descriptions.append(f"{f[1]}. <ul><li>{color} {material}</li><li>{f[3]}</li></ul>")
        if null_bullets[i]:
            bullets.append(None)
        else:
            bullets.append(
                f"{labels['material']}: {material}\n{labels['color']}: {color}\n{labels['brand']}: {brand}\n{f[2]}\n{f[3]}"
            )
    return descriptions, bullets


def _query_text(vocab: CatalogVocabulary, ptype: int, named: dict[str, int], locale: str) -> str:
    """Query words in a natural order: "{brand} {colour} {material} {type}" (Spanish: type first)."""
    words = [vocab.attribute_words(a)[named[a]] for a in ATTRIBUTES if a in named]
    if locale == "es":
        return " ".join([vocab.types[ptype], *words])
    return " ".join([*words, vocab.types[ptype]])


def _sample_pool(
    labels: dict[str, np.ndarray], pool_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Pick a judged pool from candidate product ids per label; returns (product indices, label chars).

    Takes up to the target share of E, S and C (at least one Exact when there is one) and fills the rest
    with Irrelevant, then with whatever label still has products left.
    """
    take: dict[str, np.ndarray] = {}
    remaining = pool_size
    for label in ("E", "S", "C"):
        cand = labels[label]
        want = int(round(_POOL_SHARE[label] * pool_size))
        if label == "E":
            want = max(want, 1)
        n = min(len(cand), want, remaining)
        take[label] = rng.choice(cand, size=n, replace=False) if n else cand[:0]
        remaining -= n
    cand_i = labels["I"]
    n_i = min(len(cand_i), remaining)
    take["I"] = rng.choice(cand_i, size=n_i, replace=False) if n_i else cand_i[:0]
    remaining -= n_i
    # Small catalogs may lack Irrelevant products: top the pool up from the unused E/S/C candidates.
    for label in ("S", "E", "C"):
        if remaining <= 0:
            break
        unused = np.setdiff1d(labels[label], take[label])
        n = min(len(unused), remaining)
        if n:
            take[label] = np.concatenate([take[label], rng.choice(unused, size=n, replace=False)])
            remaining -= n
    ids = np.concatenate([take[label] for label in ("E", "S", "C", "I")])
    chars = np.concatenate([np.full(len(take[label]), label) for label in ("E", "S", "C", "I")])
    order = rng.permutation(len(ids))
    return ids[order], chars[order]


def _draw_products(config: CatalogConfig) -> tuple[np.random.Generator, CatalogVocabulary, dict[str, np.ndarray]]:
    """The catalog's generator (advanced past these draws), vocabulary and per-product attribute indices.

    Shared by :func:`generate_catalog` and :func:`product_attributes` so that both see the same draws.
    """
    rng = np.random.default_rng(config.seed)
    vocab = build_vocabulary(config, rng)
    n = config.num_products
    attrs = {
        "type": rng.integers(config.num_types, size=n),
        "brand": rng.integers(config.num_brands, size=n),
        "color": rng.integers(config.num_colors, size=n),
        "material": rng.integers(config.num_materials, size=n),
    }
    return rng, vocab, attrs


def generate_catalog(config: CatalogConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generate ``(products, examples)`` in the ESCI schema; deterministic for ``config.seed``.

    Returns:
        products: ``num_products`` rows with columns :data:`PRODUCT_COLUMNS` (strings; description,
            bullets, brand and colour may be null).
        examples: one row per (query, judged product), columns :data:`EXAMPLE_COLUMNS`; int64 ids and
            version flags (``small_version`` is 1 everywhere, ``large_version`` too), string text columns.

    The generating attributes are recoverable with :func:`product_attributes` and :func:`query_attributes`.
    """
    rng, vocab, attrs = _draw_products(config)
    n = config.num_products
    descriptor = rng.integers(len(vocab.descriptors), size=n)
    product_ids = _asin_ids(n, rng)
    titles = _titles(vocab, attrs, descriptor, config.title_noise, rng)
    descriptions, bullets = _descriptions(vocab, attrs, config.locale, rng)
    brand_col = np.array(vocab.brands, dtype=object)[attrs["brand"]]
    brand_col[rng.random(n) < _NULL_BRAND] = None
    color_col = np.array(vocab.colors, dtype=object)[attrs["color"]]
    color_col[rng.random(n) < _NULL_COLOR] = None
    products = pd.DataFrame(
        {
            "product_id": product_ids,
            "product_title": titles,
            "product_description": descriptions,
            "product_bullet_point": bullets,
            "product_brand": list(brand_col),
            "product_color": list(color_col),
            "product_locale": [config.locale] * n,
        },
        columns=list(PRODUCT_COLUMNS),
    )

    by_type = [np.flatnonzero(attrs["type"] == t) for t in range(config.num_types)]
    pool_size = min(config.pool_size, n)
    queries: list[str] = []
    seen: set[str] = set()
    rows_query_id: list[np.ndarray] = []
    rows_product: list[np.ndarray] = []
    rows_label: list[np.ndarray] = []
    attempts = 0
    # Query texts stay distinct (ESCI has one query_id per text) until the attribute space runs out;
    # past 20 tries per query, repeats are allowed so that small spaces (e.g. 0 attributes) still work.
    while len(queries) < config.num_queries:
        attempts += 1
        seed_product = int(rng.integers(n))
        ptype = int(attrs["type"][seed_product])
        named_attrs = sorted(rng.choice(len(ATTRIBUTES), size=config.attributes_per_query, replace=False))
        named = {ATTRIBUTES[a]: int(attrs[ATTRIBUTES[a]][seed_product]) for a in named_attrs}
        text = _query_text(vocab, ptype, named, config.locale)
        if text in seen and attempts < 20 * config.num_queries:
            continue
        seen.add(text)
        same_type = by_type[ptype]
        match = np.ones(len(same_type), dtype=bool)
        for attr, value in named.items():
            match &= attrs[attr][same_type] == value
        comp_types = vocab.complements[ptype]
        comp = np.concatenate([by_type[c] for c in comp_types]) if comp_types else np.zeros(0, dtype=np.int64)
        irrelevant_mask = np.ones(n, dtype=bool)
        irrelevant_mask[same_type] = False
        irrelevant_mask[comp] = False
        cand = {"E": same_type[match], "S": same_type[~match], "C": comp, "I": np.flatnonzero(irrelevant_mask)}
        ids, chars = _sample_pool(cand, pool_size, rng)
        rows_query_id.append(np.full(len(ids), len(queries), dtype=np.int64))
        rows_product.append(ids)
        rows_label.append(chars)
        queries.append(text)

    query_id = np.concatenate(rows_query_id)
    product_idx = np.concatenate(rows_product).astype(np.int64)
    n_test = int(round(config.test_fraction * config.num_queries))
    is_test = np.zeros(config.num_queries, dtype=bool)
    is_test[rng.permutation(config.num_queries)[:n_test]] = True
    n_examples = len(query_id)
    examples = pd.DataFrame(
        {
            "example_id": np.arange(n_examples, dtype=np.int64),
            "query": list(np.array(queries, dtype=object)[query_id]),
            "query_id": query_id,
            "product_id": list(np.array(product_ids, dtype=object)[product_idx]),
            "product_locale": [config.locale] * n_examples,
            "esci_label": list(np.concatenate(rows_label).astype(object)),
            "small_version": np.ones(n_examples, dtype=np.int64),
            "large_version": np.ones(n_examples, dtype=np.int64),
            "split": list(np.where(is_test[query_id], "test", "train").astype(object)),
        },
        columns=list(EXAMPLE_COLUMNS),
    )
    return products, examples


def product_attributes(products: pd.DataFrame, config: CatalogConfig) -> pd.DataFrame:
    """The generating attributes of each product (type/brand/color/material words), for tests and oracles.

    Regenerates the catalog from ``config`` (cheap) rather than parsing noisy titles; ``products`` must
    be ``generate_catalog(config)[0]``.
    """
    _, vocab, idx = _draw_products(config)
    n = config.num_products
    if len(products) != n:
        raise ValueError(f"products has {len(products)} rows but config.num_products is {n}; pass the same config")
    return pd.DataFrame(
        {
            "product_id": products["product_id"].to_numpy(),
            "type": np.array(vocab.types, dtype=object)[idx["type"]],
            "brand": np.array(vocab.brands, dtype=object)[idx["brand"]],
            "color": np.array(vocab.colors, dtype=object)[idx["color"]],
            "material": np.array(vocab.materials, dtype=object)[idx["material"]],
        }
    )


def query_attributes(query: str, config: CatalogConfig) -> dict[str, str]:
    """Parse a generated query back into ``{"type": ..., "brand"/"color"/"material": ...}``."""
    vocab = build_vocabulary(config, np.random.default_rng(config.seed))
    out: dict[str, str] = {}
    rest = query
    # Types can be several words, so find the type phrase first; longest first avoids prefix clashes.
    for t in sorted(vocab.types, key=len, reverse=True):
        if rest == t or (config.locale == "es" and rest.startswith(t + " ")):
            out["type"], rest = t, rest[len(t):]
            break
        if config.locale != "es" and rest.endswith(" " + t):
            out["type"], rest = t, rest[: -len(t)]
            break
    if "type" not in out:
        raise ValueError(f"{query!r} names no product type of this catalog")
    for word in rest.split():
        for attr in ATTRIBUTES:
            if word in vocab.attribute_words(attr):
                out[attr] = word
                break
        else:
            raise ValueError(f"{query!r}: {word!r} is no attribute value of this catalog")
    return out

