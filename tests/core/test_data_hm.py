"""H&M loader: Kaggle CSVs in, a next-purchase task out (date windows, histories, seeded negative pools)."""

from __future__ import annotations

import datetime as dt
import shutil

import numpy as np
import pandas as pd
import pytest
from fixtures_real import hm_dir

from ospo_gym.data import DataError
from ospo_gym.data.fixtures import write_hm_fixture
from ospo_gym.data.hm import load_hm
from ospo_gym.data.hm_files import HISTORY_FIELDS, verify_hm


def frames(folder=None):
    folder = folder or hm_dir()
    read = {"dtype": str, "keep_default_na": False}
    return (
        pd.read_csv(folder / "articles.csv", **read),
        pd.read_csv(folder / "customers.csv", **read),
        pd.read_csv(folder / "transactions_train.csv", **read),
    )


def load(folder=None, **kwargs):
    return load_hm(folder or hm_dir(), use_cache=False, **kwargs)


def reference(split="train", window_days=7, max_history=10):
    """The task computed row by row with pandas, as the module doc describes it."""
    articles, _, tx = frames()
    tx = tx.assign(day=pd.to_datetime(tx.t_dat), row=np.arange(len(tx)))
    last = tx.day.max()
    test_start = last - pd.Timedelta(days=window_days - 1)
    start = test_start if split == "test" else test_start - pd.Timedelta(days=window_days)
    end = start + pd.Timedelta(days=window_days)
    label = articles.set_index("article_id")[list(HISTORY_FIELDS)].apply(", ".join, axis=1)
    window = tx[(tx.day >= start) & (tx.day < end)]
    out = {}
    for customer in sorted(window.customer_id.unique()):
        before = tx[(tx.customer_id == customer) & (tx.day < start)]
        if before.empty:
            continue
        before = before.drop_duplicates(["day", "article_id"]).sort_values(["day", "row"])
        history = " | ".join(label[a] for a in before.article_id.tail(max_history))
        bought = window[window.customer_id == customer].sort_values(["day", "row"]).article_id
        out[customer] = (history, list(dict.fromkeys(bought)))
    return out, str(start.date()), str((end - pd.Timedelta(days=1)).date())


@pytest.mark.parametrize("split", ["train", "test"])
def test_histories_and_targets_match_a_pandas_reference(split):
    want, start, last = reference(split)
    data = load(split=split)
    assert data.info["target_from"] == start and data.info["target_to"] == last
    assert data.customer_ids == list(want)
    for i, customer in enumerate(data.customer_ids):
        history, targets = want[customer]
        assert data.histories[i] == history
        pool = data.pool_docs[data.pool_offsets[i] : data.pool_offsets[i + 1]]
        gains = data.pool_gains[data.pool_offsets[i] : data.pool_offsets[i + 1]]
        assert [data.article_ids[d] for d in pool[gains > 0]] == targets
        assert gains[: len(targets)].tolist() == [1.0] * len(targets) and not gains[len(targets) :].any()


def test_ids_keep_their_leading_zeros():
    data = load()
    assert all(len(a) == 10 and a.startswith("0") for a in data.article_ids)
    assert all(len(c) == 64 for c in data.customer_ids)


def test_history_is_capped_most_recent_last_and_deduplicated():
    capped = load(max_history=2)
    full = load(max_history=50)
    for short, long in zip(capped.histories, full.histories, strict=True):
        items = long.split(" | ")
        assert short.split(" | ") == items[-2:]


def test_negative_pools_follow_the_strata_and_the_seed(tmp_path):
    write_hm_fixture(tmp_path, num_articles=4000, num_customers=40, seed=3)
    articles, _, _ = frames(tmp_path)
    data = load(tmp_path)
    group = articles.product_group_name.to_numpy()
    index_group = articles.index_group_name.to_numpy()
    for i in range(len(data.customer_ids)):
        pool = data.pool_docs[data.pool_offsets[i] : data.pool_offsets[i + 1]]
        gains = data.pool_gains[data.pool_offsets[i] : data.pool_offsets[i + 1]]
        targets, negatives = pool[gains > 0], pool[gains == 0]
        assert len(negatives) == 99 and len(set(pool.tolist())) == len(pool)
        assert set(group[negatives[:50]]) <= set(group[targets])
        first = targets[0]
        related = negatives[50:80]
        assert (index_group[related] == index_group[first]).all() and (group[related] != group[first]).all()
    again = load(tmp_path)
    np.testing.assert_array_equal(again.pool_docs, data.pool_docs)
    other = load(tmp_path, seed=1)
    assert not np.array_equal(other.pool_docs, data.pool_docs)
    small = load(tmp_path, negatives=(2, 1, 1))
    assert len(small.pool_docs) == int(small.pool_gains.sum()) + 4 * len(small.customer_ids)


def test_short_strata_pass_their_shortfall_on():
    data = load(negatives=(500, 0, 0))  # far more than one product group holds in the 300-article fixture
    for i in range(len(data.customer_ids)):
        pool = data.pool_docs[data.pool_offsets[i] : data.pool_offsets[i + 1]]
        assert len(pool) == 300  # every other article became a negative


def test_window_options():
    week = load(split="test")
    assert load(split="test", cutoff_date=week.info["target_from"]).customer_ids == week.customer_ids
    two = load(split="test", window_days=14)
    assert dt.date.fromisoformat(two.info["target_to"]) - dt.date.fromisoformat(two.info["target_from"]) == dt.timedelta(13)
    assert set(week.customer_ids) <= set(two.customer_ids)
    sample = load(max_customers=5)
    assert len(sample.customer_ids) == 5 and set(sample.customer_ids) <= set(load().customer_ids)
    assert load(max_targets=1).pool_gains.sum() == len(load(max_targets=1).customer_ids)
    with pytest.raises(DataError, match="no transactions in the test window"):
        load(split="test", cutoff_date="2031-01-01")
    with pytest.raises(DataError, match="min_history"):
        load(min_history=10_000)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "valid"}, "split"),
        ({"window_days": 0}, "window_days"),
        ({"cutoff_date": "22/09/2020"}, "cutoff_date"),
        ({"negatives": (1, 2)}, "negatives"),
        ({"fields": ("price",)}, "field"),
        ({"max_customers": 0}, "max_customers"),
    ],
)
def test_bad_arguments_are_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        load(**kwargs)
    assert not isinstance(err.value, DataError)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window_days": 3651}, r"window_days must be an int in \[1, 3650\] \("),
        ({"max_history": 10_001}, r"max_history must be an int in \[1, 10000\] \("),
        ({"min_history": 10_001}, r"min_history must be an int in \[0, 10000\] \("),
        ({"max_customers": 10**7 + 1}, r"max_customers must be an int in \[1, 10000000\] or None \("),
        ({"max_targets": 100_001}, r"max_targets must be an int in \[1, 100000\] or None \("),
        ({"negatives": (100_001, 0, 0)}, r"negatives\[0\] must be an int in \[0, 100000\] \("),
        ({"negatives": (1, 1, -1)}, r"negatives\[2\] must be an int in \[0, 100000\]"),
        ({"seed": 2**63}, r"seed must be an int in \[0, 9223372036854775807\]"),
    ],
)
def test_knobs_have_checked_upper_bounds(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        load(**kwargs)
    assert not isinstance(err.value, DataError) and "\n" not in str(err.value)


def test_cache_round_trip(tmp_path):
    shutil.copytree(hm_dir(), tmp_path / "data")
    first = load_hm(tmp_path / "data", cache_dir=tmp_path / "cache")
    second = load_hm(tmp_path / "data", cache_dir=tmp_path / "cache")
    assert not first.info["cached"] and second.info["cached"]
    assert second.histories == first.histories and second.customer_ids == first.customer_ids
    assert second.info["target_from"] == first.info["target_from"]
    np.testing.assert_array_equal(second.pool_docs, first.pool_docs)


def test_verify_reports_counts():
    summary = verify_hm(hm_dir())
    articles, customers, tx = frames()
    assert summary["articles"] == len(articles) and summary["customers"] == len(customers)
    assert summary["transactions"] == len(tx) and summary["last_day"] == tx.t_dat.max()


# --- malformed data ----------------------------------------------------------------------------------------


def _breakers():
    def drop_colour(a, c, t):
        return a.drop(columns=["colour_group_name"]), c, t

    def lost_zeros(a, c, t):
        return a, c, t.assign(article_id=t.article_id.str.lstrip("0"))

    def bad_date(a, c, t):
        t = t.copy()
        t.loc[3, "t_dat"] = "22/09/2020"
        return a, c, t

    def empty_customer(a, c, t):
        t = t.copy()
        t.loc[0, "customer_id"] = ""
        return a, c, t

    def duplicate_article(a, c, t):
        return pd.concat([a, a.iloc[[0]]]), c, t

    def no_articles(a, c, t):
        return a.iloc[:0], c, t

    def no_transactions(a, c, t):
        return a, c, t.iloc[:0]

    def unknown_customer(a, c, t):
        return a, c.iloc[1:], t

    def nul_in_article_id(a, c, t):  # in both files, so that the transactions still find the article
        old, new = a.article_id[5], f"{a.article_id[5][:4]}\x00{a.article_id[5][5:]}"
        return a.assign(article_id=a.article_id.replace(old, new)), c, t.assign(article_id=t.article_id.replace(old, new))

    def nul_in_customer_id(a, c, t):
        old, new = c.customer_id[2], f"{c.customer_id[2][:8]}\x00{c.customer_id[2][9:]}"
        return a, c.assign(customer_id=c.customer_id.replace(old, new)), t.assign(customer_id=t.customer_id.replace(old, new))

    return {
        "missing column": (drop_colour, "lacks column"),
        "leading zeros lost": (lost_zeros, "leading zeros"),
        "bad date": (bad_date, "malformed value"),
        "empty customer id": (empty_customer, "not in customers.csv"),
        "duplicate article": (duplicate_article, "unique"),
        "no articles": (no_articles, "no articles"),
        "no transactions": (no_transactions, "no transactions"),
        "unknown customer": (unknown_customer, "not in customers.csv"),
        "NUL in an article id": (nul_in_article_id, r"articles.csv: column 'article_id' has 1 value.* NUL character.* row 5 "),
        "NUL in a customer id": (nul_in_customer_id, r"customers.csv: column 'customer_id' has 1 value.* NUL character.* row 2 "),
    }


@pytest.mark.parametrize("case", sorted(_breakers()))
def test_malformed_files_raise_one_clear_error(case, tmp_path):
    breaker, match = _breakers()[case]
    for frame, name in zip(breaker(*frames()), ("articles", "customers", "transactions_train"), strict=True):
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    with pytest.raises(DataError, match=match) as err:
        load(tmp_path)
    assert str(tmp_path) in str(err.value) and "kaggle.com" in str(err.value)
    assert err.value.__cause__ is None
    with pytest.raises(DataError):
        verify_hm(tmp_path)


def test_csv_files_with_a_utf8_byte_order_mark_load(tmp_path):
    for path in hm_dir().iterdir():  # as Excel saves them
        (tmp_path / path.name).write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    data, want = load(tmp_path), load()
    assert data.article_ids == want.article_ids and data.customer_ids == want.customer_ids
    assert data.texts == want.texts and data.histories == want.histories
    np.testing.assert_array_equal(data.pool_docs, want.pool_docs)
    assert verify_hm(tmp_path) == {**verify_hm(hm_dir()), "folder": str(tmp_path)}


def test_truncated_and_missing_files(tmp_path):
    shutil.copytree(hm_dir(), tmp_path, dirs_exist_ok=True)
    path = tmp_path / "transactions_train.csv"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2 - 7])  # cut inside a line
    with pytest.raises(DataError, match="transactions_train.csv"):
        load(tmp_path)
    path.unlink()
    with pytest.raises(DataError, match="ospo-gym data hm") as err:
        load(tmp_path)
    assert "(lacks transactions_train.csv)" in str(err.value)
