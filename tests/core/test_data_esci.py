"""ESCI loader: the published parquet schema in, a judged task out; every malformed input is one DataError."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixtures_real import esci_dir

from ospo_gym.data import DataError
from ospo_gym.data.esci import load_esci
from ospo_gym.data.esci_schema import EXAMPLES_FILE, LABELS, PRODUCTS_FILE
from ospo_gym.data.fixtures import write_esci_parquet
from ospo_gym.data.text import catalog_texts
from ospo_gym.envs.esci import judged_from_arrays
from ospo_gym.envs.retrieval import judged_queries_from_esci


def frames():
    return pd.read_parquet(esci_dir() / PRODUCTS_FILE), pd.read_parquet(esci_dir() / EXAMPLES_FILE)


def load(folder, **kwargs):
    return load_esci(folder, use_cache=False, **kwargs)


def test_pools_match_judged_queries_from_esci_on_the_same_frames():
    products, examples = frames()
    data = load(esci_dir(), min_exact=None, max_exact=None)
    us_products = products[products.product_locale == "us"].reset_index(drop=True)
    reference = judged_queries_from_esci(us_products, examples[examples.product_locale == "us"], split="all")
    assert data.product_ids == us_products.product_id.tolist()
    assert [int(q) for q in data.query_ids] == list(reference.queries)
    assert data.queries == list(reference.queries.values())
    table = np.array([1.0, 0.1, 0.01, 0.0])
    for i, q in enumerate(reference.queries):
        lo, hi = data.pool_offsets[i], data.pool_offsets[i + 1]
        np.testing.assert_array_equal(data.pool_docs[lo:hi], reference.pools[q])
        np.testing.assert_array_equal(table[data.pool_labels[lo:hi]], reference.gains[q])


def test_paper_defaults_filter_exact_counts_and_keep_the_dataset_split():
    _, examples = frames()
    us = examples[(examples.product_locale == "us") & (examples.small_version == 1)]
    n_exact = us.assign(e=us.esci_label == "E").groupby("query_id").e.sum()
    want = sorted(n_exact[(n_exact >= 3) & (n_exact <= 10)].index)
    data = load(esci_dir())
    assert data.info["options"] == {
        "locale": "us", "version": "small", "min_exact": 3, "max_exact": 10,
        "fields": ["product_title", "product_description"], "catalog": "locale",
    }  # fmt: skip
    assert data.query_ids.tolist() == want and 0 < len(want) < us.query_id.nunique()
    split = us.groupby("query_id").split.first()
    assert [("train", "test")[s] for s in data.query_split] == split.loc[want].tolist()
    assert set(data.split_rows("train")) | set(data.split_rows("test")) == set(range(len(want)))
    with pytest.raises(ValueError, match="split"):
        data.split_rows("dev")


@pytest.mark.parametrize("locale", ["es", "jp"])
def test_other_locales_load_their_own_products(locale):
    products, _ = frames()
    data = load(esci_dir(), locale=locale)
    assert data.product_ids == products[products.product_locale == locale].product_id.tolist()
    assert len(data.query_ids) > 0 and any(not q.isascii() for q in data.queries + data.texts)


def test_judged_catalog_keeps_only_judged_products():
    _, examples = frames()
    data = load(esci_dir(), catalog="judged", min_exact=None, max_exact=None)
    judged = set(examples[examples.product_locale == "us"].product_id)
    assert set(data.product_ids) == judged
    assert len(data.product_ids) < len(load(esci_dir()).product_ids)


def test_fields_strip_html_like_catalog_texts(tmp_path):
    products, examples = frames()
    products = products.copy()
    products.loc[0, "product_description"] = "<p>Soft &amp; warm<br/>wool</p>"
    products.loc[1, "product_bullet_point"] = "<b>Fast</b>\n\tcharging&nbsp;case"
    products.loc[2, "product_brand"] = None
    write_esci_parquet(products, examples, tmp_path)
    fields = ("title", "description", "bullets", "brand", "color")
    data = load(tmp_path, fields=fields)
    columns = ["product_title", "product_description", "product_bullet_point", "product_brand", "product_color"]
    assert data.texts == catalog_texts(products[products.product_locale == "us"], columns)
    assert "Soft & warm wool" in data.texts[0]
    with pytest.raises(ValueError, match="unknown catalog field"):
        load(tmp_path, fields=("price",))


def test_only_the_needed_columns_are_read(monkeypatch):
    seen = []
    original = pq.read_table

    def spy(path, columns=None, **kwargs):
        seen.append(list(columns))
        return original(path, columns=columns, **kwargs)

    monkeypatch.setattr(pq, "read_table", spy)
    load(esci_dir())
    assert all(c is not None for c in seen)
    products_columns = [c for c in seen if "product_title" in c][0]
    assert sorted(products_columns) == ["product_description", "product_id", "product_locale", "product_title"]
    assert not any("example_id" in c for c in seen)


def test_processed_task_is_cached_and_invalidated(tmp_path):
    write_esci_parquet(*frames(), tmp_path / "data")
    cache = tmp_path / "cache"
    first = load_esci(tmp_path / "data", cache_dir=cache)
    second = load_esci(tmp_path / "data", cache_dir=cache)
    assert not first.info["cached"] and second.info["cached"]
    for name in ("product_ids", "texts", "queries"):
        assert getattr(first, name) == getattr(second, name)
    for name in ("query_ids", "query_split", "pool_offsets", "pool_docs", "pool_labels"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    assert not load_esci(tmp_path / "data", cache_dir=cache, locale="es").info["cached"]  # other options
    products, examples = frames()
    write_esci_parquet(products, examples.assign(esci_label="E"), tmp_path / "data")  # the source changed
    changed = load_esci(tmp_path / "data", cache_dir=cache, min_exact=None, max_exact=None)
    assert not changed.info["cached"] and set(changed.pool_labels.tolist()) == {LABELS.index("E")}
    load_esci(tmp_path / "data", cache_dir=tmp_path / "unused", use_cache=False)
    assert not (tmp_path / "unused").exists()


def test_subfolder_and_env_var_resolution(tmp_path, monkeypatch):
    write_esci_parquet(*frames(), tmp_path / "root" / "shopping_queries_dataset")
    monkeypatch.setenv("OSPO_GYM_DATA", str(tmp_path / "root"))
    assert load_esci(use_cache=False).info["folder"] == str(tmp_path / "root" / "shopping_queries_dataset")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"locale": "fr"}, "locale"),
        ({"version": "tiny"}, "version"),
        ({"catalog": "all"}, "catalog"),
        ({"min_exact": 5, "max_exact": 2}, "min_exact"),
        ({"min_exact": -1}, "min_exact"),
    ],
)
def test_bad_arguments_are_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        load(esci_dir(), **kwargs)
    assert not isinstance(err.value, DataError)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_exact": 10_001}, r"min_exact must be an int in \[0, 10000\] or None \("),
        ({"max_exact": 10**9}, r"max_exact must be an int in \[0, 10000\] or None \("),
        ({"min_exact": 2.5}, "min_exact must be an int"),
    ],
)
def test_knobs_have_checked_upper_bounds(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        load(esci_dir(), **kwargs)
    assert not isinstance(err.value, DataError) and "\n" not in str(err.value)


# --- malformed data: one DataError each, saying what, where and how to get it ------------------------------


def _write(folder, products, examples, product_schema=None, example_schema=None):
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(products, schema=product_schema, preserve_index=False), folder / PRODUCTS_FILE)
    pq.write_table(pa.Table.from_pandas(examples, schema=example_schema, preserve_index=False), folder / EXAMPLES_FILE)


def _breakers():
    def drop_label(p, e):
        return p, e.drop(columns=["esci_label"])

    def string_query_id(p, e):
        return p, e.assign(query_id=e.query_id.astype(str))

    def empty_examples(p, e):
        return p, e.iloc[:0]

    def only_es(p, e):
        return p[p.product_locale == "es"], e[e.product_locale == "es"]

    def null_product_id(p, e):
        p = p.copy()
        p.loc[3, "product_id"] = None
        return p, e

    def null_query_id(p, e):
        return p, e.assign(query_id=e.query_id.astype("Int64").mask(e.index == 0))

    def duplicate_product(p, e):
        return pd.concat([p, p.iloc[[0]]], ignore_index=True), e

    def bad_label(p, e):
        e = e.copy()
        e.loc[0, "esci_label"] = "exact"
        return p, e

    def bad_split(p, e):
        return p, e.assign(split="dev")

    def duplicate_judgement(p, e):
        return p, pd.concat([e, e.iloc[[0]]], ignore_index=True)

    def unknown_product(p, e):
        e = e.copy()
        e.loc[0, "product_id"] = "B0NOTTHERE"
        return p, e

    def nul_in_product_id(p, e):  # in both files, so that the judgements still find the product
        old = p.product_id[3]
        new = f"{old[:2]}\x00{old[2:]}"
        return p.assign(product_id=p.product_id.replace(old, new)), e.assign(product_id=e.product_id.replace(old, new))

    return {
        "missing column": (drop_label, "lacks column"),
        "wrong dtype": (string_query_id, "wrong type"),
        "empty examples": (empty_examples, "no judgements"),
        "locale absent": (only_es, "no judgements for locale 'us'"),
        "null product id": (null_product_id, "null"),
        "null query id": (null_query_id, "null"),
        "duplicate product id": (duplicate_product, "unique"),
        "label outside ESCI": (bad_label, "'exact'"),
        "split outside train/test": (bad_split, "'dev'"),
        "duplicate judgement": (duplicate_judgement, "judged twice"),
        "judged product missing": (unknown_product, "B0NOTTHERE"),
        "NUL in a product id": (nul_in_product_id, "'product_id' has 1 value.* NUL character"),
    }


@pytest.mark.parametrize("case", sorted(_breakers()))
def test_malformed_tables_raise_one_clear_error(case, tmp_path):
    breaker, match = _breakers()[case]
    products, examples = breaker(*frames())
    _write(tmp_path, products, examples)
    with pytest.raises(DataError, match=match) as err:
        load(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "ospo-gym data esci" in message
    assert err.value.__cause__ is None


def test_a_nul_in_a_product_id_names_the_file_column_and_row(tmp_path):
    products, examples = _breakers()["NUL in a product id"][0](*frames())
    _write(tmp_path, products, examples)
    for use_cache in (False, True):  # it used to pass without the cache and fail without a file name with it
        with pytest.raises(DataError) as err:
            load_esci(tmp_path, cache_dir=tmp_path / "cache", use_cache=use_cache)
        message = str(err.value)
        assert message.startswith(f"{tmp_path / PRODUCTS_FILE}: column 'product_id' has 1 value(s) with a NUL")
        assert f"row 3 of locale 'us' ({products.product_id[3]!r})" in message and "\n" not in message
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_uint64_query_ids_above_2_63_stay_exact(tmp_path):
    products, examples = frames()
    want = load(esci_dir())
    big = examples.assign(query_id=examples.query_id.astype(np.uint64) + np.uint64(2**63))
    _write(tmp_path / "big", products, big)
    assert pq.read_schema(tmp_path / "big" / EXAMPLES_FILE).field("query_id").type == pa.uint64()
    first = load_esci(tmp_path / "big", cache_dir=tmp_path / "cache")
    cached = load_esci(tmp_path / "big", cache_dir=tmp_path / "cache")
    assert not first.info["cached"] and cached.info["cached"]
    for data in (first, cached):
        assert data.query_ids.dtype == np.uint64
        assert [int(q) for q in data.query_ids] == [int(q) + 2**63 for q in want.query_ids]
        np.testing.assert_array_equal(data.pool_docs, want.pool_docs)
        np.testing.assert_array_equal(data.pool_labels, want.pool_labels)
        judged = judged_from_arrays(
            data.query_ids, data.queries, data.pool_offsets, data.pool_docs, data.pool_labels,
            np.arange(len(data.query_ids)), "graded",
        )  # fmt: skip
        assert min(judged.queries) >= 2**63 and list(judged.queries.values()) == want.queries
    # uint64 ids that fit int64 load as int64, as before
    _write(tmp_path / "small", products, examples.assign(query_id=examples.query_id.astype(np.uint64)))
    small = load(tmp_path / "small")
    assert small.query_ids.dtype == np.int64 and small.query_ids.tobytes() == want.query_ids.tobytes()


@pytest.mark.parametrize("damage", ["truncated", "not parquet", "empty file"])
def test_damaged_files_raise_data_error(damage, tmp_path):
    write_esci_parquet(*frames(), tmp_path)
    path = tmp_path / PRODUCTS_FILE
    raw = path.read_bytes()
    path.write_bytes({"truncated": raw[: len(raw) // 2], "not parquet": b"product_id,title\n1,a\n", "empty file": b""}[damage])
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        load(tmp_path)
    assert str(path) in str(err.value) and err.value.__cause__ is None and err.value.__suppress_context__


def test_missing_files_say_where_and_how(tmp_path):
    write_esci_parquet(*frames(), tmp_path)
    (tmp_path / EXAMPLES_FILE).unlink()
    with pytest.raises(DataError) as err:
        load(tmp_path)
    message = str(err.value)
    assert EXAMPLES_FILE in message and str(tmp_path / "shopping_queries_dataset") in message
    assert "ospo-gym data esci" in message and "github.com/amazon-science/esci-data" in message
