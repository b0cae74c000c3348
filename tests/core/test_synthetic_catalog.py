"""Tests of ospo_gym.data.synthetic_catalog: ESCI schema, determinism, labels, parquet round-trip."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ospo_gym.data.esci_schema import EXAMPLE_COLUMNS, EXAMPLES_FILE, PRODUCT_COLUMNS, PRODUCTS_FILE
from ospo_gym.data.fixtures import write_esci_parquet
from ospo_gym.data.synthetic_catalog import (
    CatalogConfig,
    generate_catalog,
    product_attributes,
    query_attributes,
)
from ospo_gym.data.synthetic_words import complement_map
from ospo_gym.data.text import catalog_texts, strip_html

SMALL = CatalogConfig(num_products=600, num_queries=60, pool_size=30, seed=3)


@pytest.fixture(scope="module")
def small_catalog():
    return generate_catalog(SMALL)


def test_exact_schema_and_dtypes(small_catalog):
    products, examples = small_catalog
    assert list(products.columns) == list(PRODUCT_COLUMNS)
    assert list(examples.columns) == list(EXAMPLE_COLUMNS)
    for col in PRODUCT_COLUMNS:
        assert pd.api.types.is_string_dtype(products[col]), col
    for col in ("example_id", "query_id", "small_version", "large_version"):
        assert examples[col].dtype == np.int64, col
    for col in ("query", "product_id", "product_locale", "esci_label", "split"):
        assert pd.api.types.is_string_dtype(examples[col]), col
    assert len(products) == 600 and products["product_id"].is_unique
    assert products["product_id"].str.fullmatch(r"B0[A-Z0-9]{8}").all()
    assert set(products["product_locale"]) == {"us"} and set(examples["product_locale"]) == {"us"}
    assert set(examples["esci_label"]) <= {"E", "S", "C", "I"}
    assert set(examples["split"]) <= {"train", "test"}
    assert (examples["small_version"] == 1).all()
    assert examples["example_id"].tolist() == list(range(len(examples)))
    assert examples["product_id"].isin(products["product_id"]).all()
    # Real-catalog quirks: some nulls in the optional fields, HTML in descriptions, bullets on lines.
    for col in ("product_description", "product_bullet_point", "product_brand", "product_color"):
        assert products[col].isna().any(), col
    assert products["product_title"].notna().all()
    assert products["product_description"].str.contains("<", regex=False).any()
    assert products["product_bullet_point"].dropna().str.contains("\n", regex=False).all()


def test_vocabulary_is_lowercase_ascii_for_us(small_catalog):
    products, examples = small_catalog
    for text in [*products["product_title"], *examples["query"].unique()]:
        assert re.fullmatch(r"[a-z ]+", text), text


def test_queries_and_pools(small_catalog):
    products, examples = small_catalog
    assert examples["query_id"].nunique() == 60
    per_query = examples.groupby("query_id")
    assert (per_query.size() == 30).all()
    assert (per_query["product_id"].nunique() == 30).all()  # no duplicate judgements
    assert (per_query["query"].nunique() == 1).all()
    assert examples.drop_duplicates("query_id")["query"].is_unique
    # Each query is its type plus attributes_per_query attribute words.
    for text in examples["query"].unique():
        assert len(query_attributes(text, SMALL)) == 1 + SMALL.attributes_per_query
    # Split by query, close to test_fraction.
    split = per_query["split"].agg(lambda s: set(s))
    assert all(len(s) == 1 for s in split)
    assert sum(s == {"test"} for s in split) == round(0.2 * 60)


def test_labels_follow_the_attributes(small_catalog):
    products, examples = small_catalog
    attrs = product_attributes(products, SMALL).set_index("product_id")
    complements = complement_map("us")
    merged = examples.join(attrs, on="product_id")
    n_exact = 0
    for text, group in merged.groupby("query", sort=False):
        named = query_attributes(text, SMALL)
        same_type = group["type"] == named["type"]
        matches = same_type.copy()
        for attr in ("brand", "color", "material"):
            if attr in named:
                matches &= group[attr] == named[attr]
        comp = group["type"].isin(complements[named["type"]])
        expect = np.where(matches, "E", np.where(same_type, "S", np.where(comp, "C", "I")))
        assert group["esci_label"].tolist() == expect.tolist(), text
        n_exact += int(matches.sum())
        # Each query was drawn from a product, so an exact match exists and is judged.
        assert (group["esci_label"] == "E").any(), text
    assert n_exact >= 60
    counts = examples["esci_label"].value_counts()
    assert {"E", "S", "C", "I"} <= set(counts.index)


def test_exact_products_mention_their_attributes_without_noise():
    config = CatalogConfig(num_products=300, num_queries=20, title_noise=0.0, seed=5)
    products, examples = generate_catalog(config)
    titles = products.set_index("product_id")["product_title"]
    for _, row in examples[examples["esci_label"] == "E"].iterrows():
        for word in row["query"].split():
            assert word in titles[row["product_id"]].split(), (row["query"], titles[row["product_id"]])


def test_title_noise_changes_titles():
    quiet = generate_catalog(CatalogConfig(num_products=400, title_noise=0.0, seed=1))[0]
    noisy = generate_catalog(CatalogConfig(num_products=400, title_noise=0.5, seed=1))[0]
    assert (quiet["product_title"].str.split().str.len() == 6).all()  # brand colour material type(2) descriptor
    assert (noisy["product_title"] != quiet["product_title"]).mean() > 0.3


def test_deterministic_per_seed_and_seeds_differ():
    a = generate_catalog(SMALL)
    b = generate_catalog(SMALL)
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])
    c = generate_catalog(CatalogConfig(num_products=600, num_queries=60, pool_size=30, seed=4))
    assert not a[0]["product_title"].equals(c[0]["product_title"])
    assert not a[1]["query"].equals(c[1]["query"])


@pytest.mark.parametrize("attributes", [0, 1, 3])
def test_difficulty_knob(attributes):
    config = CatalogConfig(num_products=500, num_queries=30, attributes_per_query=attributes, seed=2)
    _, examples = generate_catalog(config)
    for text in examples["query"].unique():
        assert len(query_attributes(text, config)) == 1 + attributes
    if attributes == 0:
        # Every same-type product is Exact; no Substitutes exist.
        assert "S" not in set(examples["esci_label"])


def test_small_catalogs_and_large_pools():
    config = CatalogConfig(num_products=30, num_queries=10, pool_size=100, num_types=4, seed=0)
    products, examples = generate_catalog(config)
    assert (examples.groupby("query_id").size() == 30).all()  # capped at the catalog


@pytest.mark.parametrize("locale", ["es", "jp"])
def test_other_locales(locale):
    config = CatalogConfig(num_products=300, num_queries=20, locale=locale, seed=1)
    products, examples = generate_catalog(config)
    assert set(products["product_locale"]) == {locale}
    assert any(not t.isascii() for t in products["product_title"])
    for text in examples["query"].unique():
        assert len(query_attributes(text, config)) == 3


def test_config_validation():
    with pytest.raises(ValueError, match="num_types"):
        CatalogConfig(num_types=41)
    with pytest.raises(ValueError, match="attributes_per_query"):
        CatalogConfig(attributes_per_query=4)
    with pytest.raises(ValueError, match="title_noise"):
        CatalogConfig(title_noise=1.5)
    with pytest.raises(ValueError, match="locale"):
        CatalogConfig(locale="de")
    with pytest.raises(ValueError, match="test_fraction"):
        CatalogConfig(test_fraction=-0.1)
    with pytest.raises(ValueError, match="num_products"):
        CatalogConfig(num_products=0)
    with pytest.raises(ValueError, match="seed"):
        CatalogConfig(seed=-1)


def test_catalog_texts_strip_html_and_nulls():
    products = pd.DataFrame(
        {
            "product_title": ["red shoes", "blue mat", None],
            "product_description": ["<p>Soft &amp; <b>light</b></p><br/>", None, "x<li>y</li>"],
        }
    )
    assert catalog_texts(products) == ["red shoes Soft & light", "blue mat", "x y"]
    assert catalog_texts(products, fields=("product_title",)) == ["red shoes", "blue mat", ""]
    assert strip_html("a<br>b") == "a b"
    with pytest.raises(ValueError, match="no column"):
        catalog_texts(products, fields=("nope",))


def test_parquet_round_trip(tmp_path, small_catalog):
    products, examples = small_catalog
    paths = write_esci_parquet(products, examples, tmp_path / "esci")
    assert [p.name for p in paths] == [PRODUCTS_FILE, EXAMPLES_FILE]
    schema = pq.read_schema(paths[1])
    assert schema.field("example_id").type == pa.int64() and schema.field("query").type == pa.string()
    assert all(f.type == pa.string() for f in pq.read_schema(paths[0]))
    back_products = pd.read_parquet(paths[0])
    back_examples = pd.read_parquet(paths[1])
    pd.testing.assert_frame_equal(back_products, products, check_dtype=False)
    pd.testing.assert_frame_equal(back_examples, examples, check_dtype=False)
    for col in ("example_id", "query_id", "small_version", "large_version"):
        assert back_examples[col].dtype == np.int64
    assert back_products["product_description"].isna().sum() == products["product_description"].isna().sum()
