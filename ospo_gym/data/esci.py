"""Amazon Shopping Queries (ESCI): load the published parquet files into a judged retrieval task.

Files (https://github.com/amazon-science/esci-data, folder ``shopping_queries_dataset``):

* ``shopping_queries_dataset_examples.parquet``: one judgement per row — ``example_id, query, query_id,
  product_id, product_locale, esci_label (E/S/C/I), small_version, large_version, split (train/test)``;
* ``shopping_queries_dataset_products.parquet``: ``product_id, product_title, product_description,
  product_bullet_point, product_brand, product_color, product_locale``; a product is identified by
  ``(product_locale, product_id)``.

:func:`load_esci` keeps one locale and one version (the paper: ``"us"``, the small version = Task 1), keeps the
queries with ``min_exact..max_exact`` Exact products, and returns :class:`EsciData`: the catalog texts and, per
query, its judged pool as catalog row numbers with E/S/C/I codes. Only the needed columns are read, the locale
(and version) filters are pushed into the parquet reader, and the result is cached (:mod:`.task_codec`). The
file schema is :mod:`ospo_gym.data.esci_schema`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ospo_gym.data import DataError
from ospo_gym.data.esci_schema import (
    EXAMPLE_COLUMN_KINDS,
    EXAMPLES_FILE,
    LABELS,
    LOCALES,
    PRODUCT_TEXT_COLUMNS,
    PRODUCTS_FILE,
    SPLIT_NAMES,
)
from ospo_gym.data.paths import find_dataset_dir
from ospo_gym.data.tables import check_no_nul_characters, check_no_nulls, check_unique, read_parquet_columns
from ospo_gym.data.task_codec import Field, TaskCodec, load_or_build
from ospo_gym.data.text import catalog_text
from ospo_gym.knobs import check_knob

__all__ = [
    "CATALOGS",
    "FIELD_ALIASES",
    "MAX_EXACT",
    "VERSIONS",
    "EsciData",
    "esci_how_to_get",
    "load_esci",
    "resolve_fields",
]

SUBDIRS = ("shopping_queries_dataset", "esci", "esci/shopping_queries_dataset")
VERSIONS = {"small": "small_version", "large": "large_version"}
CATALOGS = ("locale", "judged")
MAX_EXACT = 10_000
"""Upper bound of ``min_exact`` / ``max_exact`` (ESCI judges at most a few dozen products per query)."""
FIELD_ALIASES = {
    "title": "product_title",
    "description": "product_description",
    "bullets": "product_bullet_point",
    "bullet_point": "product_bullet_point",
    "brand": "product_brand",
    "color": "product_color",
    "colour": "product_color",
}
# The examples' columns the loader reads (the example_id is not needed).
_READ_COLUMNS = {name: kind for name, kind in EXAMPLE_COLUMN_KINDS.items() if name != "example_id"}
ESCI_URL = "https://github.com/amazon-science/esci-data/tree/main/shopping_queries_dataset"


def esci_how_to_get(folder: str | os.PathLike | None = None) -> str:
    dest = f" --dest {folder}" if folder is not None else ""
    return (
        f"run `ospo-gym data esci{dest}` (downloads and checks the two parquet files, ~1.2 GB) or download "
        f"{EXAMPLES_FILE} and {PRODUCTS_FILE} from {ESCI_URL}"
    )


@dataclass(frozen=True)
class EsciData:
    """An ESCI locale as a judged retrieval task.

    Attributes:
        product_ids: ``(N,)`` catalog product ids; a document's id in the retriever is its position here.
        texts: ``(N,)`` catalog texts (the chosen fields, HTML stripped, whitespace collapsed).
        query_ids: ``(Q,)`` int64, ascending (uint64 when the file stores them as uint64 and one exceeds
            2**63 - 1: ids are kept exact, never wrapped).
        queries: ``(Q,)`` the shoppers' raw queries.
        query_split: ``(Q,)`` uint8, 0 = train, 1 = test (the dataset's own ``split``).
        pool_offsets: ``(Q + 1,)`` int64; query ``i``'s judgements are rows ``pool_offsets[i]:pool_offsets[i+1]``
            of ``pool_docs`` / ``pool_labels``, in file order.
        pool_docs: ``(J,)`` int64 catalog rows.
        pool_labels: ``(J,)`` uint8 indices into ``"ESCI"``.
        info: where it came from (folder, options, counts, whether the cache was used, seconds).
    """

    product_ids: list[str]
    texts: list[str]
    query_ids: np.ndarray
    queries: list[str]
    query_split: np.ndarray
    pool_offsets: np.ndarray
    pool_docs: np.ndarray
    pool_labels: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def split_rows(self, split: str) -> np.ndarray:
        """Row numbers of the queries of ``split`` (``"train"``, ``"test"`` or ``"all"``)."""
        if split == "all":
            return np.arange(len(self.query_ids))
        if split not in SPLIT_NAMES:
            raise ValueError(f"unknown split {split!r}; expected one of {(*SPLIT_NAMES, 'all')}")
        return np.flatnonzero(self.query_split == SPLIT_NAMES.index(split))


def resolve_fields(fields: Sequence[str] | str) -> tuple[str, ...]:
    """Product columns for the catalog text, accepting the short names of :data:`FIELD_ALIASES`."""
    if isinstance(fields, str):
        fields = (fields,)
    out = tuple(FIELD_ALIASES.get(f, f) for f in fields)
    bad = [f for f in out if f not in PRODUCT_TEXT_COLUMNS]
    if bad or not out:
        raise ValueError(
            f"unknown catalog field(s) {bad or list(fields)}; choose from {list(PRODUCT_TEXT_COLUMNS)} "
            f"or the short names {sorted(FIELD_ALIASES)}"
        )
    return out


def load_esci(
    data_dir: str | os.PathLike | None = None,
    *,
    locale: str = "us",
    version: str = "small",
    min_exact: int | None = 3,
    max_exact: int | None = 10,
    fields: Sequence[str] | str = ("product_title", "product_description"),
    catalog: str = "locale",
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> EsciData:
    """Load ESCI as a judged retrieval task (see the module doc).

    Args:
        data_dir: folder holding the two parquet files (or their ``shopping_queries_dataset/`` folder); None:
            ``$OSPO_GYM_DATA``, else the user cache dir (:mod:`ospo_gym.data.paths`).
        locale: ``"us"``, ``"es"`` or ``"jp"``.
        version: ``"small"`` (``small_version == 1``: Task 1, the paper) or ``"large"`` (``large_version == 1``).
        min_exact, max_exact: keep queries with this many Exact judgements (inclusive; 0 to :data:`MAX_EXACT`,
            None: no bound).
        fields: product columns joined into the catalog text (short names allowed: title, description, bullets,
            brand, color).
        catalog: ``"locale"`` — every product of the locale is a document (the whole catalog); ``"judged"`` —
            only products judged for some query of the locale and version.
        cache_dir: processed-task cache folder (default :func:`~ospo_gym.data.paths.processed_cache_dir`).
        use_cache: read and write the cache.

    Raises:
        DataError: the files are missing, unreadable or not in the published schema.
        ValueError: an argument is out of range.
    """
    started = time.perf_counter()
    options = _check_options(locale, version, min_exact, max_exact, fields, catalog)
    folder = find_dataset_dir("ESCI", (EXAMPLES_FILE, PRODUCTS_FILE), SUBDIRS, data_dir, esci_how_to_get(data_dir))
    paths = (folder / EXAMPLES_FILE, folder / PRODUCTS_FILE)
    data, cached = load_or_build(
        CODEC, paths, options, lambda: _build(paths, **options), _restore, cache_dir=cache_dir, use_cache=use_cache
    )
    info = {
        "folder": str(folder),
        "options": options,
        "cached": cached,
        "seconds": round(time.perf_counter() - started, 3),
        **CODEC.counts(data),
    }
    return EsciData(**{**data.__dict__, "info": info})


def _check_options(
    locale: str, version: str, min_exact: int | None, max_exact: int | None, fields: Sequence[str] | str, catalog: str
) -> dict[str, Any]:
    if locale not in LOCALES:
        raise ValueError(f"unknown locale {locale!r}; expected one of {LOCALES}")
    if version not in VERSIONS:
        raise ValueError(f"unknown version {version!r}; expected one of {tuple(VERSIONS)}")
    if catalog not in CATALOGS:
        raise ValueError(f"unknown catalog {catalog!r}; expected one of {CATALOGS}")
    for name, value in (("min_exact", min_exact), ("max_exact", max_exact)):
        check_knob(name, value, 0, MAX_EXACT, "ESCI judges a few dozen products per query; None: no bound", optional=True)
    if min_exact is not None and max_exact is not None and min_exact > max_exact:
        raise ValueError(f"min_exact ({min_exact}) is larger than max_exact ({max_exact}): no query could pass")
    return {
        "locale": locale,
        "version": version,
        "min_exact": None if min_exact is None else int(min_exact),
        "max_exact": None if max_exact is None else int(max_exact),
        "fields": list(resolve_fields(fields)),
        "catalog": catalog,
    }


def _build(
    paths: tuple[Path, Path],
    *,
    locale: str,
    version: str,
    min_exact: int | None,
    max_exact: int | None,
    fields: list[str],
    catalog: str,
) -> EsciData:
    import pyarrow as pa
    import pyarrow.compute as pc

    examples_path, products_path = paths
    how = esci_how_to_get(examples_path.parent)
    version_column = VERSIONS[version]
    examples = read_parquet_columns(
        examples_path,
        _READ_COLUMNS,
        filters=[("product_locale", "=", locale), (version_column, "=", 1)],
        how_to_get=how,
    )
    if examples.num_rows == 0:
        raise DataError(
            f"{examples_path} has no judgements for locale {locale!r} with {version_column} == 1 "
            f"(locales in the file: {_locales(examples_path, how)}). {how}"
        )
    check_no_nulls(examples, ["query", "query_id", "product_id", "esci_label", "split"], examples_path, how)
    labels = pc.index_in(examples.column("esci_label"), value_set=pa.array(list(LABELS)))
    _check_values(labels, examples.column("esci_label"), "esci_label", list(LABELS), examples_path, how)
    splits = pc.index_in(examples.column("split"), value_set=pa.array(list(SPLIT_NAMES)))
    _check_values(splits, examples.column("split"), "split", list(SPLIT_NAMES), examples_path, how)

    products = read_parquet_columns(
        products_path,
        {"product_id": "string", "product_locale": "string", **dict.fromkeys(fields, "string")},
        filters=[("product_locale", "=", locale)],
        how_to_get=how,
    )
    if products.num_rows == 0:
        raise DataError(
            f"{products_path} has no products for locale {locale!r} "
            f"(locales in the file: {_locales(products_path, how)}). {how}"
        )
    check_no_nulls(products, ["product_id"], products_path, how)
    check_no_nul_characters(products.column("product_id"), "product_id", products_path, how, f" of locale {locale!r}")
    check_unique(products.column("product_id"), f"product ids of locale {locale!r}", products_path, how)
    if catalog == "judged":
        products = products.filter(pc.is_in(products.column("product_id"), value_set=examples.column("product_id")))

    doc = pc.index_in(examples.column("product_id"), value_set=products.column("product_id"))
    if doc.null_count:
        unknown = pc.filter(examples.column("product_id"), pc.is_null(doc)).unique()[:5].to_pylist()
        raise DataError(
            f"{examples_path} judges {doc.null_count} product(s) of locale {locale!r} that are not in "
            f"{products_path} (e.g. {unknown}); the two files do not belong together. {how}"
        )
    query_id = _exact_ids(examples.column("query_id"))
    doc_np = doc.to_numpy(zero_copy_only=False).astype(np.int64)
    label_np = labels.to_numpy(zero_copy_only=False).astype(np.uint8)
    split_np = splits.to_numpy(zero_copy_only=False).astype(np.uint8)

    order = np.argsort(query_id, kind="stable")
    query_id, doc_np, label_np, split_np = query_id[order], doc_np[order], label_np[order], split_np[order]
    starts = np.flatnonzero(np.concatenate([[True], query_id[1:] != query_id[:-1]]))
    group = np.cumsum(np.concatenate([[False], query_id[1:] != query_id[:-1]]))
    pair = group * np.int64(max(products.num_rows, 1)) + doc_np
    uniq, first, repeats = np.unique(pair, return_index=True, return_counts=True)
    if len(uniq) != len(pair):
        at = first[repeats > 1][:3]
        names = products.column("product_id").take(pa.array(doc_np[at])).to_pylist()
        dupes = [(int(q), n) for q, n in zip(query_id[at], names, strict=True)]
        raise DataError(
            f"{examples_path}: {int((repeats > 1).sum())} (query_id, product_id) pair(s) are judged twice "
            f"(e.g. {dupes}); each pair must appear once. The file looks edited or concatenated. {how}"
        )
    if np.any(split_np != split_np[starts][group]):
        raise DataError(f"{examples_path}: a query_id appears in both the train and the test split. {how}")

    n_exact = np.bincount(group, weights=(label_np == LABELS.index("E")), minlength=len(starts))
    keep = np.ones(len(starts), dtype=bool)
    if min_exact is not None:
        keep &= n_exact >= min_exact
    if max_exact is not None:
        keep &= n_exact <= max_exact
    rows = keep[group]
    query_text = examples.column("query").take(pa.array(order[starts[keep]])).to_pylist()
    lengths = np.diff(np.concatenate([starts, [len(query_id)]]))[keep]
    texts = _catalog_texts(products, fields)
    return EsciData(
        product_ids=products.column("product_id").to_pylist(),
        texts=texts,
        query_ids=query_id[starts[keep]],
        queries=[q.replace("\x00", " ") for q in query_text],
        query_split=split_np[starts[keep]],
        pool_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        pool_docs=doc_np[rows],
        pool_labels=label_np[rows],
    )


def _exact_ids(column: Any) -> np.ndarray:
    """An integer id column as int64, or as uint64 when it is unsigned and holds ids above 2**63 - 1 (which
    int64 would wrap to negative numbers)."""
    values = column.to_numpy()
    if values.dtype.kind == "u" and values.size and values.max() > np.iinfo(np.int64).max:
        return values.astype(np.uint64)
    return values.astype(np.int64)


def _check_values(codes: Any, column: Any, name: str, allowed: list[str], path: Path, how: str) -> None:
    import pyarrow.compute as pc

    if codes.null_count:
        bad = pc.filter(column, pc.is_null(codes)).unique()[:5].to_pylist()
        raise DataError(f"{path}: column {name!r} holds {bad}, expected only {allowed}. {how}")


def _locales(path: Path, how: str) -> list[str]:
    table = read_parquet_columns(path, {"product_locale": "string"}, how_to_get=how)
    return sorted(v for v in table.column("product_locale").unique().to_pylist() if v is not None)


def _catalog_texts(products: Any, fields: Sequence[str]) -> list[str]:
    columns = [products.column(f).to_pylist() for f in fields]
    return [catalog_text(parts) for parts in zip(*columns, strict=True)]


CODEC = TaskCodec(
    "esci",
    counts={"num_products": "product_ids", "num_queries": "query_ids", "num_judgements": "pool_docs"},
    fields=(
        Field("product_ids", "strings", "num_products"),
        Field("texts", "strings", "num_products"),
        Field("query_ids", "array", "num_queries", ("int64", "uint64")),
        Field("queries", "strings", "num_queries"),
        Field("query_split", "codes", "num_queries", ("uint8",), len(SPLIT_NAMES)),
        Field("pool_offsets", "offsets", "num_queries", bound="num_judgements"),
        Field("pool_docs", "codes", "num_judgements", ("int64",), "num_products"),
        Field("pool_labels", "codes", "num_judgements", ("uint8",), len(LABELS)),
    ),
)
"""How an :class:`EsciData` is stored in the processed-data cache."""


def _restore(fields: dict[str, Any], meta: Any) -> EsciData:
    """The task of a decoded cache entry, once its query ids are checked to be strictly ascending."""
    query_ids = fields["query_ids"]
    if np.any(query_ids[1:] <= query_ids[:-1]):
        raise ValueError("query_ids are not strictly ascending")
    return EsciData(**fields)
