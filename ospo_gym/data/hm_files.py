"""H&M Personalized Fashion Recommendations (Kaggle): the three published CSV files — their names and columns,
where to get them, and reading them with every check (one :class:`~ospo_gym.data.DataError` each).

Files (https://www.kaggle.com/competitions/h-and-m-personalized-fashion-recommendations/data):

* ``articles.csv``: one row per article — ``article_id`` (10 digits with a leading zero), ``prod_name``,
  ``product_type_name``, ``product_group_name``, ``colour_group_name``, ``index_group_name``, ``detail_desc``, ...
* ``customers.csv``: ``customer_id`` (64 hex characters), ``age``, ...
* ``transactions_train.csv``: ``t_dat`` (YYYY-MM-DD), ``customer_id``, ``article_id``, ``price``,
  ``sales_channel_id``; one row per item bought (an item bought twice the same day appears twice).

Ids are read as strings (the leading zeros of ``article_id`` are kept). The transactions file (3.5 GB) is streamed
in blocks; only three columns are kept. The task built from them is :mod:`ospo_gym.data.hm`.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ospo_gym.data import DataError
from ospo_gym.data.paths import find_dataset_dir
from ospo_gym.data.tables import (
    check_csv_header,
    check_no_nul_characters,
    check_no_nulls,
    check_unique,
    corrupt_error,
    csv_error,
    read_csv_columns,
)

__all__ = [
    "ARTICLES_FILE",
    "ARTICLE_TEXT_COLUMNS",
    "CUSTOMERS_FILE",
    "DEFAULT_FIELDS",
    "EPOCH",
    "FILES",
    "HISTORY_FIELDS",
    "KAGGLE_STEPS",
    "SUBDIRS",
    "TRANSACTIONS_FILE",
    "find_hm_dir",
    "hm_how_to_get",
    "read_articles",
    "read_customers",
    "read_transactions",
    "verify_hm",
]

ARTICLES_FILE = "articles.csv"
CUSTOMERS_FILE = "customers.csv"
TRANSACTIONS_FILE = "transactions_train.csv"
FILES = (ARTICLES_FILE, CUSTOMERS_FILE, TRANSACTIONS_FILE)
SUBDIRS = ("hm", "h-and-m-personalized-fashion-recommendations", "hm/h-and-m-personalized-fashion-recommendations")
COMPETITION = "h-and-m-personalized-fashion-recommendations"
ARTICLE_TEXT_COLUMNS = (
    "prod_name",
    "product_type_name",
    "product_group_name",
    "graphical_appearance_name",
    "colour_group_name",
    "perceived_colour_value_name",
    "department_name",
    "index_name",
    "index_group_name",
    "section_name",
    "garment_group_name",
    "detail_desc",
)
# The article columns a prompt shows per purchase, and those of the default catalog text.
HISTORY_FIELDS = ("prod_name", "product_type_name", "colour_group_name")
DEFAULT_FIELDS = ("prod_name", "product_type_name", "colour_group_name", "detail_desc")
EPOCH = dt.date(1970, 1, 1)
"""Day 0 of the ``day`` numbers :func:`read_transactions` returns."""
KAGGLE_STEPS = f"""\
The H&M data is on Kaggle and needs an account that has accepted the competition rules:
  1. Sign in at https://www.kaggle.com and open
     https://www.kaggle.com/competitions/{COMPETITION}/rules ; click "I Understand and Accept".
  2. Create an API token: https://www.kaggle.com/settings -> API -> "Create New Token"; save kaggle.json
     to ~/.kaggle/kaggle.json (chmod 600).
  3. pip install kaggle
  4. Download the three CSV files (the images are not needed), into DEST:
       kaggle competitions download -c {COMPETITION} -f articles.csv -p DEST
       kaggle competitions download -c {COMPETITION} -f customers.csv -p DEST
       kaggle competitions download -c {COMPETITION} -f transactions_train.csv -p DEST
  5. Unzip them in place (Kaggle serves each as FILE.zip):  cd DEST && unzip -o '*.zip' && rm -f *.zip
  6. Check them:  ospo-gym data hm --verify DEST
  Then use data_dir=DEST, or export OSPO_GYM_DATA=DEST (files at DEST or DEST/hm)."""


def hm_how_to_get(folder: str | os.PathLike | None = None) -> str:
    """One line saying where the files come from (and where to put them), for error messages."""
    return (
        f"download {', '.join(FILES)} from https://www.kaggle.com/competitions/{COMPETITION}/data "
        "(`ospo-gym data hm` prints the exact steps)" + (f" into {folder}" if folder is not None else "")
    )


def find_hm_dir(data_dir: str | os.PathLike | None) -> Path:
    """The folder holding the three files: ``data_dir`` (or its ``hm/`` sub-folder), else ``$OSPO_GYM_DATA``, else
    the user cache dir; :class:`~ospo_gym.data.DataError` saying how to get them when none does."""
    return find_dataset_dir("H&M", FILES, SUBDIRS, data_dir, hm_how_to_get(data_dir))


def verify_hm(folder: str | os.PathLike) -> dict[str, Any]:
    """Check that ``folder`` (or its ``hm/`` sub-folder) holds the three files in the published schema.

    Reads the ids and dates of every file (not the full task). Returns counts and the date range.

    Raises:
        DataError: what is missing or malformed.
    """
    folder = find_hm_dir(folder)
    articles, article_ids, _ = read_articles(folder / ARTICLES_FILE, DEFAULT_FIELDS)
    customer_ids = read_customers(folder / CUSTOMERS_FILE)
    tx = read_transactions(folder / TRANSACTIONS_FILE, article_ids, customer_ids)
    return {
        "folder": str(folder),
        "articles": articles.num_rows,
        "customers": len(customer_ids),
        "transactions": int(len(tx["day"])),
        "first_day": str(EPOCH + dt.timedelta(days=int(tx["day"].min()))),
        "last_day": str(EPOCH + dt.timedelta(days=int(tx["day"].max()))),
    }


def read_articles(path: Path, fields: Sequence[str]) -> tuple[Any, Any, Any]:
    """``articles.csv`` as ``(table, article ids, how-to-get line)``: the id column, the prompt's and the negatives'
    columns and ``fields``, all strings; ids checked present, non-empty, NUL-free and unique."""
    how = hm_how_to_get(path.parent)
    columns = {"article_id": "string", **dict.fromkeys((*HISTORY_FIELDS, "product_group_name", "index_group_name", *fields), "string")}
    table = read_csv_columns(path, columns, how_to_get=how)
    if table.num_rows == 0:
        raise DataError(f"{path} has no articles. {how}")
    check_no_nulls(table, ["article_id"], path, how)
    ids = table.column("article_id")
    _check_ids(ids, "article_id", path, how)
    check_no_nul_characters(ids, "article_id", path, how)
    check_unique(ids, "article_id values", path, how)
    return table, ids, how


def read_customers(path: Path) -> Any:
    """The ``customer_id`` column of ``customers.csv`` (pyarrow strings), checked non-empty, NUL-free and unique."""
    how = hm_how_to_get(path.parent)
    table = read_csv_columns(path, {"customer_id": "string"}, how_to_get=how)
    if table.num_rows == 0:
        raise DataError(f"{path} has no customers. {how}")
    ids = table.column("customer_id")
    _check_ids(ids, "customer_id", path, how)
    check_no_nul_characters(ids, "customer_id", path, how)
    check_unique(ids, "customer_id values", path, how)
    return ids


def _check_ids(ids: Any, name: str, path: Path, how: str) -> None:
    import pyarrow.compute as pc

    empty = pc.sum(pc.equal(pc.utf8_length(ids), 0)).as_py() or 0
    if empty:
        raise DataError(f"{path}: column {name!r} has {empty} empty value(s); every row needs an id. {how}")


def read_transactions(path: Path, article_ids: Any, customer_ids: Any) -> dict[str, np.ndarray]:
    """Stream the transactions: ``day`` (days since :data:`EPOCH`), ``customer`` and ``article`` codes (rows of
    ``customer_ids`` / ``article_ids``), in file order; every id must be in its table."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    how = hm_how_to_get(path.parent)
    columns = {"t_dat": "date", "customer_id": "string", "article_id": "string"}
    check_csv_header(path, columns, how)
    convert = pacsv.ConvertOptions(
        include_columns=list(columns),
        column_types={"t_dat": pa.date32(), "customer_id": pa.string(), "article_id": pa.string()},
        strings_can_be_null=False,
    )
    # Each block is dictionary-encoded (one pass); the blocks' dictionaries are mapped to the id tables in one
    # lookup at the end (hashing the 1.4 M customer ids once, not once per block).
    days, blocks = [], {"customer_id": [], "article_id": []}
    try:
        reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=64 << 20), convert_options=convert)
        for batch in reader:
            if batch.column(0).null_count or batch.column(1).null_count or batch.column(2).null_count:
                raise DataError(f"{path}: a transaction lacks its date, customer_id or article_id. {how}")
            days.append(batch.column("t_dat").cast(pa.int32()).to_numpy())
            for name in blocks:
                encoded = pc.dictionary_encode(batch.column(name))
                blocks[name].append((encoded.indices.to_numpy(), encoded.dictionary))
    except pa.ArrowInvalid as err:
        raise csv_error(path, err, "Expected t_dat as YYYY-MM-DD.", how) from None
    except (pa.ArrowException, OSError) as err:
        raise corrupt_error(path, err, how) from None
    codes = {}
    for name, table, other in (("customer_id", customer_ids, CUSTOMERS_FILE), ("article_id", article_ids, ARTICLES_FILE)):
        if not blocks[name]:
            break
        dictionaries = pa.concat_arrays([d for _, d in blocks[name]])
        mapped = pc.index_in(dictionaries, value_set=table)
        if mapped.null_count:
            bad = pc.filter(dictionaries, pc.is_null(mapped)).unique()[:3].to_pylist()
            raise DataError(
                f"{path}: transactions name {name} values that are not in {other} (e.g. {bad}); were leading "
                f"zeros lost, or are the files from different sources? {how}"
            )
        mapped = mapped.to_numpy(zero_copy_only=False).astype(np.int32)
        starts = np.cumsum([0] + [len(d) for _, d in blocks[name]])
        codes[name] = [mapped[start + indices] for start, (indices, _) in zip(starts, blocks[name], strict=False)]
    if not days or sum(len(d) for d in days) == 0:
        raise DataError(f"{path} has no transactions. {how}")
    return {
        "day": np.concatenate(days),
        "customer": np.concatenate(codes["customer_id"]),
        "article": np.concatenate(codes["article_id"]),
    }
