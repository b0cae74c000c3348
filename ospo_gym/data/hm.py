"""H&M Personalized Fashion Recommendations (Kaggle) as a next-purchase retrieval task, from a customer's history.

The files and their checks are :mod:`ospo_gym.data.hm_files`. The task (:func:`load_hm`): the transactions are
split by date. The *target window* of ``split="test"`` is the ``window_days`` days starting at ``cutoff_date``
(default: the last ``window_days`` days of the file); that of ``split="train"`` is the ``window_days`` days before
it. A customer is a prompt when they bought something in the target window and had at least ``min_history``
purchases before it. Their history is their last ``max_history`` purchases before the window (one per article and
day, most recent last); their targets are the distinct articles bought in the window; their pool is the targets
plus seeded negatives: ``negatives[0]`` from the targets' product groups, ``negatives[1]`` from *related* groups
(other product groups of the first target's ``index_group_name``, e.g. Ladieswear) and ``negatives[2]`` uniformly
from the rest (a stratum short of articles passes its shortfall on to the next). The task is cached
(:mod:`ospo_gym.data.task_codec`).
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
from ospo_gym.data.hm_files import (
    ARTICLE_TEXT_COLUMNS,
    DEFAULT_FIELDS,
    EPOCH,
    FILES,
    HISTORY_FIELDS,
    find_hm_dir,
    read_articles,
    read_customers,
    read_transactions,
)
from ospo_gym.data.task_codec import Field, TaskCodec, load_or_build
from ospo_gym.knobs import check_knob

__all__ = ["KNOB_BOUNDS", "SPLITS", "HmData", "load_hm"]

SPLITS = ("train", "test")
# Upper bounds of the integer knobs, and why each is there (the real files: 105,542 articles, 1,371,980 customers,
# 31.8 million purchases over 734 days).
KNOB_BOUNDS: dict[str, tuple[int, int, str]] = {
    "window_days": (1, 3650, "a target window is days of the transactions, which span two years"),
    "max_history": (1, 10_000, "each prompt lists that many purchases"),
    "min_history": (0, 10_000, "purchases a customer needs before the window"),
    "max_customers": (1, 10**7, "a sample of that many customers; None keeps all"),
    "max_targets": (1, 100_000, "targets per customer; None keeps all"),
    "negatives": (0, 100_000, "each is one stratum of a customer's pool, which cannot exceed the catalog"),
    "seed": (0, 2**63 - 1, "seeds numpy's generators"),
}

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
    folder = find_hm_dir(data_dir)
    paths = tuple(folder / name for name in FILES)
    data, cached = load_or_build(
        CODEC,
        paths,
        options,
        lambda: _build(paths, **options),
        _restore,
        cache_dir=cache_dir,
        use_cache=use_cache,
        sections=lambda task: {"windows": task.info},
    )
    info = {
        "folder": str(folder),
        "options": options,
        "cached": cached,
        "seconds": round(time.perf_counter() - started, 3),
        **data.info,
        **CODEC.counts(data),
    }
    return HmData(**{**data.__dict__, "info": info})


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
    for name, value in (("window_days", window_days), ("max_history", max_history), ("min_history", min_history)):
        check_knob(name, value, *KNOB_BOUNDS[name])
    check_knob("seed", seed, *KNOB_BOUNDS["seed"])
    for name, value in (("max_customers", max_customers), ("max_targets", max_targets)):
        check_knob(name, value, *KNOB_BOUNDS[name], optional=True)
    negatives = tuple(negatives)
    if len(negatives) != 3:
        raise ValueError(f"negatives must be 3 ints (same group, related groups, random), got {negatives!r}")
    for name, count in zip(("negatives[0]", "negatives[1]", "negatives[2]"), negatives, strict=True):
        check_knob(name, count, *KNOB_BOUNDS["negatives"])
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
    articles, article_ids, how = read_articles(articles_path, fields)
    customer_ids = read_customers(customers_path)
    tx = read_transactions(transactions_path, article_ids, customer_ids)
    day = tx["day"]

    last_day = int(day.max())
    test_start = last_day - window_days + 1 if cutoff_date is None else (dt.date.fromisoformat(cutoff_date) - EPOCH).days
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
    return str(EPOCH + dt.timedelta(days=int(day)))


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

CODEC = TaskCodec(
    "hm",
    counts={"num_articles": "article_ids", "num_customers": "customer_ids", "num_pool_entries": "pool_docs"},
    fields=(
        Field("article_ids", "strings", "num_articles"),
        Field("texts", "strings", "num_articles"),
        Field("customer_ids", "strings", "num_customers"),
        Field("histories", "strings", "num_customers"),
        Field("pool_offsets", "offsets", "num_customers", bound="num_pool_entries"),
        Field("pool_docs", "codes", "num_pool_entries", ("int64",), "num_articles"),
        Field("pool_gains", "array", "num_pool_entries", ("float64",)),
    ),
    sections=("windows",),
)
"""How an :class:`HmData` is stored in the processed-data cache (its date windows in the ``windows`` section)."""
_WINDOWS = ("history_before", "target_from", "target_to")


def _restore(fields: dict[str, Any], meta: Any) -> HmData:
    """The task of a decoded cache entry, once its windows, customer order and gains are checked."""
    windows, window_days = meta["windows"], meta["options"]["window_days"]
    if not isinstance(windows, dict) or sorted(windows) != sorted(_WINDOWS) or not all(isinstance(v, str) for v in windows.values()):
        raise ValueError(f"its windows are {windows!r}, expected ISO dates {list(_WINDOWS)}")
    first, last = dt.date.fromisoformat(windows["target_from"]), dt.date.fromisoformat(windows["target_to"])
    if windows["history_before"] != windows["target_from"] or (last - first).days + 1 != window_days:
        raise ValueError(f"its windows {windows!r} do not span window_days={window_days}")
    customer_ids = fields["customer_ids"]
    if any(a >= b for a, b in zip(customer_ids, customer_ids[1:], strict=False)):
        raise ValueError("customer_ids are not strictly ascending")
    if not np.all((fields["pool_gains"] == 0.0) | (fields["pool_gains"] == 1.0)):
        raise ValueError("pool_gains holds values other than 0 and 1")
    return HmData(**fields, info=dict(windows))
