"""H&M Personalized Fashion Recommendations (Kaggle): next-purchase retrieval from a customer's history.

Files (https://www.kaggle.com/competitions/h-and-m-personalized-fashion-recommendations/data):

* ``articles.csv``: one row per article — ``article_id`` (10 digits with a leading zero), ``prod_name``,
  ``product_type_name``, ``product_group_name``, ``colour_group_name``, ``index_group_name``, ``detail_desc``, ...
* ``customers.csv``: ``customer_id`` (64 hex characters), ``age``, ...
* ``transactions_train.csv``: ``t_dat`` (YYYY-MM-DD), ``customer_id``, ``article_id``, ``price``,
  ``sales_channel_id``; one row per item bought (an item bought twice the same day appears twice).

Ids are read as strings (the leading zeros of ``article_id`` are kept). The task (:func:`load_hm`): the
transactions are split by date. The *target window* of ``split="test"`` is the ``window_days`` days starting at
``cutoff_date`` (default: the last ``window_days`` days of the file); that of ``split="train"`` is the
``window_days`` days before it. A customer is a prompt when they bought something in the target window and had
at least ``min_history`` purchases before it. Their history is their last ``max_history`` purchases before the
window (one per article and day, most recent last); their targets are the distinct articles bought in the
window; their pool is the targets plus seeded negatives: ``negatives[0]`` from the targets' product groups,
``negatives[1]`` from *related* groups (other product groups of the first target's ``index_group_name``,
e.g. Ladieswear) and ``negatives[2]`` uniformly from the rest (a stratum short of articles passes its
shortfall on to the next). The transactions file (3.5 GB) is streamed in blocks; only four columns are kept.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ospo_gym.data import DataError
from ospo_gym.data.cache import (
    TaskCache,
    cache_key,
    check_meta_keys,
    entry_array,
    entry_codes,
    entry_int,
    entry_offsets,
    entry_strings,
    pack_strings,
)
from ospo_gym.data.paths import find_dataset_dir, processed_cache_dir
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
    "FILES",
    "HISTORY_FIELDS",
    "KAGGLE_STEPS",
    "TRANSACTIONS_FILE",
    "HmData",
    "hm_how_to_get",
    "load_hm",
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
HISTORY_FIELDS = ("prod_name", "product_type_name", "colour_group_name")
DEFAULT_FIELDS = ("prod_name", "product_type_name", "colour_group_name", "detail_desc")
SPLITS = ("train", "test")
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
    return (
        f"download {', '.join(FILES)} from https://www.kaggle.com/competitions/{COMPETITION}/data "
        "(`ospo-gym data hm` prints the exact steps)" + (f" into {folder}" if folder is not None else "")
    )


@dataclass(frozen=True)
class HmData:
    """H&M as a next-purchase retrieval task.

    Attributes:
        article_ids: ``(N,)`` catalog article ids (strings, leading zeros kept); a document's id is its position.
        texts: ``(N,)`` catalog texts (the chosen article fields).
        customer_ids: ``(Q,)`` the prompts' customers, ascending.
        histories: ``(Q,)`` purchase histories, ``"name, type, colour | ..."``, most recent last.
        pool_offsets: ``(Q + 1,)`` int64; customer ``i``'s pool is ``pool_docs[pool_offsets[i]:pool_offsets[i+1]]``.
        pool_docs: ``(J,)`` int64 catalog rows, targets first.
        pool_gains: ``(J,)`` float64, 1 for a target, 0 for a negative.
        info: the date windows, options and counts.
    """

    article_ids: list[str]
    texts: list[str]
    customer_ids: list[str]
    histories: list[str]
    pool_offsets: np.ndarray
    pool_docs: np.ndarray
    pool_gains: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def load_hm(
    data_dir: str | os.PathLike | None = None,
    *,
    split: str = "train",
    window_days: int = 7,
    cutoff_date: str | dt.date | None = None,
    max_history: int = 10,
    min_history: int = 1,
    max_customers: int | None = None,
    max_targets: int | None = None,
    negatives: Sequence[int] = (50, 30, 19),
    fields: Sequence[str] | str = DEFAULT_FIELDS,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> HmData:
    """Load H&M as a next-purchase task (see the module doc for the protocol).

    Args:
        data_dir: folder holding the three CSV files (or an ``hm/`` sub-folder with them); None:
            ``$OSPO_GYM_DATA``, else the user cache dir.
        split: ``"train"`` (the window before the test window) or ``"test"`` (the window at ``cutoff_date``).
        window_days: length of a target window in days.
        cutoff_date: first day of the test window (``"YYYY-MM-DD"``); None: the last ``window_days`` days.
        max_history, min_history: purchases shown in the prompt (most recent), and required before the window.
        max_customers: keep this many customers (a seeded sample), None: all.
        max_targets: keep at most this many targets per customer (the first bought), None: all.
        negatives: ``(same group, related groups, random)`` negative counts per pool; the default makes the
            99 negatives of a 1-in-100 pool.
        fields: article columns joined into the catalog text.
        seed: seeds the negatives and the customer sample.
        cache_dir, use_cache: processed-task cache (see :func:`ospo_gym.data.esci.load_esci`).

    Raises:
        DataError: files missing, unreadable or not in the published schema; no customer in the window.
        ValueError: an argument is out of range.
    """
    started = time.perf_counter()
    options = _check_options(
        split, window_days, cutoff_date, max_history, min_history, max_customers, max_targets, negatives, fields, seed
    )
    folder = find_dataset_dir("H&M", FILES, SUBDIRS, data_dir, hm_how_to_get(data_dir))
    paths = tuple(folder / name for name in FILES)
    cache = TaskCache(processed_cache_dir(cache_dir), "hm") if use_cache else None
    key = cache_key("hm", paths, options) if cache is not None else ""
    hit = cache.load(key, lambda arrays, meta: _from_arrays(arrays, meta, options)) if cache is not None else None
    if hit is not None:
        data = hit
    else:
        data = _build(paths, **options)
        if cache is not None:
            cache.save(key, _to_arrays(data), {"options": options, "counts": _counts(data), "windows": data.info})
    info = {
        "folder": str(folder),
        "options": options,
        "cached": hit is not None,
        "seconds": round(time.perf_counter() - started, 3),
        **data.info,
        **_counts(data),
    }
    return HmData(**{**data.__dict__, "info": info})


def verify_hm(folder: str | os.PathLike) -> dict[str, Any]:
    """Check that ``folder`` (or its ``hm/`` sub-folder) holds the three files in the published schema.

    Reads the ids and dates of every file (not the full task). Returns counts and the date range.

    Raises:
        DataError: what is missing or malformed.
    """
    folder = find_dataset_dir("H&M", FILES, SUBDIRS, folder, hm_how_to_get(folder))
    articles, article_ids, _ = _read_articles(folder / ARTICLES_FILE, DEFAULT_FIELDS)
    customer_ids = _read_customers(folder / CUSTOMERS_FILE)
    tx = _read_transactions(folder / TRANSACTIONS_FILE, article_ids, customer_ids)
    return {
        "folder": str(folder),
        "articles": articles.num_rows,
        "customers": len(customer_ids),
        "transactions": int(len(tx["day"])),
        "first_day": str(_EPOCH + dt.timedelta(days=int(tx["day"].min()))),
        "last_day": str(_EPOCH + dt.timedelta(days=int(tx["day"].max()))),
    }


_EPOCH = dt.date(1970, 1, 1)


def _check_options(
    split: str,
    window_days: int,
    cutoff_date: str | dt.date | None,
    max_history: int,
    min_history: int,
    max_customers: int | None,
    max_targets: int | None,
    negatives: Sequence[int],
    fields: Sequence[str] | str,
    seed: int,
) -> dict[str, Any]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    ints = {"window_days": (window_days, 1), "max_history": (max_history, 1), "min_history": (min_history, 0), "seed": (seed, 0)}
    for name, (value, low) in ints.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    for name, value in (("max_customers", max_customers), ("max_targets", max_targets)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{name} must be an int >= 1 or None, got {value!r}")
    negatives = tuple(negatives)
    if len(negatives) != 3 or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0 for n in negatives):
        raise ValueError(f"negatives must be 3 ints >= 0 (same group, related groups, random), got {negatives!r}")
    if cutoff_date is not None:
        try:
            cutoff_date = dt.date.fromisoformat(str(cutoff_date))
        except ValueError:
            raise ValueError(f"cutoff_date must be a date 'YYYY-MM-DD', got {cutoff_date!r}") from None
    fields = (fields,) if isinstance(fields, str) else tuple(fields)
    bad = [f for f in fields if f not in ARTICLE_TEXT_COLUMNS]
    if bad or not fields:
        raise ValueError(f"unknown article field(s) {bad or list(fields)}; choose from {list(ARTICLE_TEXT_COLUMNS)}")
    return {
        "split": split,
        "window_days": int(window_days),
        "cutoff_date": None if cutoff_date is None else str(cutoff_date),
        "max_history": int(max_history),
        "min_history": int(min_history),
        "max_customers": None if max_customers is None else int(max_customers),
        "max_targets": None if max_targets is None else int(max_targets),
        "negatives": [int(n) for n in negatives],
        "fields": list(fields),
        "seed": int(seed),
    }


def _read_articles(path: Path, fields: Sequence[str]) -> tuple[Any, Any, Any]:
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


def _read_customers(path: Path) -> Any:
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


def _read_transactions(path: Path, article_ids: Any, customer_ids: Any) -> dict[str, np.ndarray]:
    """Stream the transactions: ``day`` (days since 1970), ``customer`` and ``article`` codes, ``row`` order."""
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


def _build(
    paths: tuple[Path, ...],
    *,
    split: str,
    window_days: int,
    cutoff_date: str | None,
    max_history: int,
    min_history: int,
    max_customers: int | None,
    max_targets: int | None,
    negatives: list[int],
    fields: list[str],
    seed: int,
) -> HmData:
    import pyarrow.compute as pc

    articles_path, customers_path, transactions_path = paths
    articles, article_ids, how = _read_articles(articles_path, fields)
    customer_ids = _read_customers(customers_path)
    tx = _read_transactions(transactions_path, article_ids, customer_ids)
    day = tx["day"]

    last_day = int(day.max())
    test_start = last_day - window_days + 1 if cutoff_date is None else (dt.date.fromisoformat(cutoff_date) - _EPOCH).days
    start = test_start if split == "test" else test_start - window_days
    end = start + window_days
    in_window = (day >= start) & (day < end)
    before = day < start
    window = {"history_before": _iso(start), "target_from": _iso(start), "target_to": _iso(end - 1)}
    if not in_window.any():
        raise DataError(
            f"{transactions_path} has no transactions in the {split} window {_iso(start)}..{_iso(end - 1)} "
            f"(data spans {_iso(int(day.min()))}..{_iso(last_day)}); choose another cutoff_date or window_days."
        )

    # Customers with a purchase in the window and enough history before it.
    n_customers = len(customer_ids)
    bought = np.zeros(n_customers, dtype=bool)
    bought[tx["customer"][in_window]] = True
    history_count = np.bincount(tx["customer"][before], minlength=n_customers)
    chosen = np.flatnonzero(bought & (history_count >= max(min_history, 0)))
    if len(chosen) == 0:
        raise DataError(
            f"no customer bought in the {split} window {_iso(start)}..{_iso(end - 1)} with at least "
            f"{min_history} earlier purchase(s); lower min_history or move the window."
        )
    # Sort prompts by customer id string (stable, readable) and sample if asked.
    chosen_ids = customer_ids.take(chosen).to_pylist()
    order = np.argsort(np.asarray(chosen_ids, dtype=object), kind="stable")
    chosen, chosen_ids = chosen[order], [chosen_ids[i] for i in order]
    if max_customers is not None and len(chosen) > max_customers:
        keep = np.sort(np.random.default_rng(seed).choice(len(chosen), max_customers, replace=False))
        chosen, chosen_ids = chosen[keep], [chosen_ids[i] for i in keep]
    slot = np.full(n_customers, -1, dtype=np.int64)
    slot[chosen] = np.arange(len(chosen))

    histories = _histories(tx, before, slot, len(chosen), articles, max_history)
    targets = _targets(tx, in_window, slot, len(chosen), max_targets)
    groups = pc.fill_null(articles.column("product_group_name"), "").to_numpy(zero_copy_only=False)
    index_groups = pc.fill_null(articles.column("index_group_name"), "").to_numpy(zero_copy_only=False)
    pools, gains = _pools(targets, chosen_ids, groups, index_groups, negatives, seed)
    lengths = np.array([len(p) for p in pools], dtype=np.int64)
    field_values = [pc.fill_null(articles.column(f), "").to_pylist() for f in fields]
    texts = [" ".join(" ".join(parts).replace("\x00", " ").split()) for parts in zip(*field_values, strict=True)]
    return HmData(
        article_ids=article_ids.to_pylist(),
        texts=texts,
        customer_ids=chosen_ids,
        histories=histories,
        pool_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        pool_docs=np.concatenate(pools).astype(np.int64),
        pool_gains=np.concatenate(gains).astype(np.float64),
        info=window,
    )


def _iso(day: int) -> str:
    return str(_EPOCH + dt.timedelta(days=int(day)))


def _histories(
    tx: dict[str, np.ndarray], before: np.ndarray, slot: np.ndarray, n: int, articles: Any, max_history: int
) -> list[str]:
    """The last ``max_history`` purchases (one per article and day) of each chosen customer, oldest first."""
    import pyarrow.compute as pc

    rows = np.flatnonzero(before & (slot[tx["customer"]] >= 0))
    who, day, art = slot[tx["customer"][rows]], tx["day"][rows], tx["article"][rows]
    # One purchase per (customer, day, article): sort so that repeats are adjacent, keep the first ...
    order = np.lexsort((rows, art, day, who))
    who, day, art, rows = who[order], day[order], art[order], rows[order]
    first = np.ones(len(who), dtype=bool)
    first[1:] = (who[1:] != who[:-1]) | (day[1:] != day[:-1]) | (art[1:] != art[:-1])
    who, day, art, rows = who[first], day[first], art[first], rows[first]
    # ... then order each customer's purchases by date and, within a day, by position in the file.
    order = np.lexsort((rows, day, who))
    who, art = who[order], art[order]
    # Keep each customer's last max_history rows.
    ends = np.searchsorted(who, np.arange(n), side="right")
    rank_from_end = ends[who] - np.arange(len(who))
    keep = rank_from_end <= max_history
    who, art = who[keep], art[keep]
    # NULs become spaces, as in the catalog texts (histories are stored NUL-separated in the cache).
    labels = [", ".join(p for p in parts if p).replace("\x00", " ") for parts in zip(
        *(pc.fill_null(articles.column(f), "").to_pylist() for f in HISTORY_FIELDS), strict=True
    )]
    out: list[list[str]] = [[] for _ in range(n)]
    for w, a in zip(who.tolist(), art.tolist(), strict=True):
        out[w].append(labels[a].replace("|", "/"))
    return [" | ".join(items) for items in out]


def _targets(tx: dict[str, np.ndarray], in_window: np.ndarray, slot: np.ndarray, n: int, max_targets: int | None) -> list[np.ndarray]:
    """Distinct articles each chosen customer bought in the window, in order of first purchase."""
    rows = np.flatnonzero(in_window & (slot[tx["customer"]] >= 0))
    who, day, art = slot[tx["customer"][rows]], tx["day"][rows], tx["article"][rows]
    order = np.lexsort((rows, day, who))
    who, art = who[order], art[order]
    pair = who.astype(np.int64) * (int(art.max()) + 1) + art
    _, first_at = np.unique(pair, return_index=True)
    first_at = np.sort(first_at)
    who, art = who[first_at], art[first_at]
    out = np.split(art.astype(np.int64), np.searchsorted(who, np.arange(1, n)))
    if max_targets is not None:
        out = [t[:max_targets] for t in out]
    return out


def _pools(
    targets: list[np.ndarray],
    customer_ids: list[str],
    groups: np.ndarray,
    index_groups: np.ndarray,
    negatives: list[int],
    seed: int,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Targets plus seeded negatives per customer (see the module doc)."""
    group_codes, group_of = np.unique(groups.astype(str), return_inverse=True)
    index_codes, index_of = np.unique(index_groups.astype(str), return_inverse=True)
    n_articles = len(groups)
    by_group = [np.flatnonzero(group_of == g) for g in range(len(group_codes))]
    by_index = [np.flatnonzero(index_of == i) for i in range(len(index_codes))]
    same_cache: dict[tuple[int, ...], np.ndarray] = {}
    related_cache: dict[tuple[int, int], np.ndarray] = {}
    pools, gains = [], []
    for customer, target in zip(customer_ids, targets, strict=True):
        rng = np.random.default_rng([seed, zlib.crc32(customer.encode("utf-8"))])
        taken = set(target.tolist())
        groups_key = tuple(sorted(set(group_of[target].tolist())))
        if groups_key not in same_cache:  # the targets' groups are disjoint sets of articles
            same_cache[groups_key] = np.concatenate([by_group[g] for g in groups_key])
        same = same_cache[groups_key]
        first = int(target[0])
        related_key = (int(index_of[first]), int(group_of[first]))
        if related_key not in related_cache:
            members = by_index[related_key[0]]
            related_cache[related_key] = members[group_of[members] != related_key[1]]
        related = related_cache[related_key]
        picked: list[int] = []
        carry = 0
        for candidates, count in ((same, negatives[0]), (related, negatives[1]), (None, negatives[2])):
            want = count + carry
            got = _sample(rng, candidates, want, taken, n_articles)
            picked.extend(got)
            taken.update(got)
            carry = want - len(got)
        pools.append(np.concatenate([target, np.asarray(picked, dtype=np.int64)]))
        gains.append(np.concatenate([np.ones(len(target)), np.zeros(len(picked))]))
    return pools, gains


def _sample(rng: np.random.Generator, candidates: np.ndarray | None, count: int, taken: set[int], n_articles: int) -> list[int]:
    """Up to ``count`` distinct articles from ``candidates`` (None: all articles) that are not in ``taken``."""
    if count <= 0:
        return []
    size = n_articles if candidates is None else len(candidates)
    if size <= 4 * (count + len(taken)):  # few candidates: filter, then draw exactly
        pool = np.arange(size, dtype=np.int64) if candidates is None else np.asarray(candidates, dtype=np.int64)
        pool = pool[~np.isin(pool, np.fromiter(taken, dtype=np.int64, count=len(taken)))]
        if len(pool) <= count:
            return rng.permutation(pool).tolist()
        return rng.choice(pool, size=count, replace=False).tolist()
    out: list[int] = []  # many candidates: draw with rejection (at most len(taken) rejects)
    seen: set[int] = set()
    while len(out) < count:
        draw = rng.choice(size, size=2 * (count - len(out)) + 8, replace=False)
        for article in (draw if candidates is None else candidates[draw]).tolist():
            if article in taken or article in seen:
                continue
            seen.add(article)
            out.append(article)
            if len(out) == count:
                break
    return out


def _counts(data: HmData) -> dict[str, int]:
    return {"num_articles": len(data.article_ids), "num_customers": len(data.customer_ids), "num_pool_entries": len(data.pool_docs)}


def _to_arrays(data: HmData) -> dict[str, np.ndarray]:
    return {
        "article_ids": pack_strings(data.article_ids),
        "texts": pack_strings(data.texts),
        "customer_ids": pack_strings(data.customer_ids),
        "histories": pack_strings(data.histories),
        "pool_offsets": data.pool_offsets,
        "pool_docs": data.pool_docs,
        "pool_gains": data.pool_gains,
    }


_ARRAYS = ("article_ids", "texts", "customer_ids", "histories", "pool_offsets", "pool_docs", "pool_gains")
_COUNTS = ("num_articles", "num_customers", "num_pool_entries")
_WINDOWS = ("history_before", "target_from", "target_to")


def _from_arrays(arrays: dict[str, np.ndarray], meta: dict[str, Any], options: dict[str, Any]) -> HmData:
    """The task of a cache entry, after checking every part of it against the others (the entry is untrusted).

    Raises:
        ValueError: what does not fit (the cache then rebuilds the entry).
    """
    check_meta_keys(meta, ("options", "counts", "windows"))
    if meta["options"] != options:
        raise ValueError(f"its options {meta['options']!r} are not the ones asked for")
    counts, windows = meta["counts"], meta["windows"]
    if not isinstance(counts, dict) or sorted(counts) != sorted(_COUNTS):
        raise ValueError(f"its counts are {counts!r}, expected {list(_COUNTS)}")
    n, q, j = (entry_int(counts[name], name) for name in _COUNTS)
    if not isinstance(windows, dict) or sorted(windows) != sorted(_WINDOWS) or not all(isinstance(v, str) for v in windows.values()):
        raise ValueError(f"its windows are {windows!r}, expected ISO dates {list(_WINDOWS)}")
    first, last = dt.date.fromisoformat(windows["target_from"]), dt.date.fromisoformat(windows["target_to"])
    if windows["history_before"] != windows["target_from"] or (last - first).days + 1 != options["window_days"]:
        raise ValueError(f"its windows {windows!r} do not span window_days={options['window_days']}")
    if sorted(arrays) != sorted(_ARRAYS):
        raise ValueError(f"arrays.npz holds {sorted(arrays)}, expected {sorted(_ARRAYS)}")
    customer_ids = entry_strings(arrays, "customer_ids", q)
    if any(a >= b for a, b in zip(customer_ids, customer_ids[1:], strict=False)):
        raise ValueError("customer_ids are not strictly ascending")
    gains = entry_array(arrays, "pool_gains", "float64", j)
    if not np.all((gains == 0.0) | (gains == 1.0)):
        raise ValueError("pool_gains holds values other than 0 and 1")
    return HmData(
        article_ids=entry_strings(arrays, "article_ids", n),
        texts=entry_strings(arrays, "texts", n),
        customer_ids=customer_ids,
        histories=entry_strings(arrays, "histories", q),
        pool_offsets=entry_offsets(arrays, "pool_offsets", q, j),
        pool_docs=entry_codes(arrays, "pool_docs", "int64", j, n),
        pool_gains=gains,
        info=dict(windows),
    )
