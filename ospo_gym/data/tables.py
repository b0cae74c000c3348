"""Columnar reads of published tables with schema checks; every failure becomes one :class:`DataError`.

Parquet is read with ``pyarrow.parquet`` (only the needed columns, row filters pushed down); CSV with
``pyarrow.csv`` (only the needed columns, identifier columns as strings so that leading zeros survive).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ospo_gym.data import DataError

__all__ = [
    "check_csv_header",
    "check_no_nul_characters",
    "check_no_nulls",
    "check_unique",
    "column_strings",
    "corrupt_error",
    "csv_error",
    "read_csv_columns",
    "read_parquet_columns",
]

# Column kinds: what the published files hold, and which Arrow types are accepted for each.
KINDS = ("string", "int", "float", "date")


def _arrow_kind(arrow_type: Any) -> str | None:
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_integer(arrow_type):
        return "int"
    if pa.types.is_floating(arrow_type):
        return "float"
    if pa.types.is_date(arrow_type) or pa.types.is_timestamp(arrow_type):
        return "date"
    return None


def corrupt_error(path: Path, err: Exception, how_to_get: str) -> DataError:
    """The one-line :class:`DataError` for a file that a reader could not read at all."""
    return DataError(
        f"{path} could not be read ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no detail'}); "
        f"the file looks truncated or corrupt. Replace it: {how_to_get}"
    )


def read_parquet_columns(
    path: str | os.PathLike,
    columns: Mapping[str, str],
    *,
    filters: Sequence[tuple[str, str, Any]] | None = None,
    how_to_get: str,
) -> Any:
    """Read ``columns`` (name -> kind) of a parquet file as a ``pyarrow.Table``, keeping rows that pass
    ``filters`` (pyarrow's ``[(column, op, value), ...]``). Strings come back as plain ``string`` columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as err:
        raise corrupt_error(path, err, how_to_get) from None
    _check_schema(path, {f.name: f.type for f in schema}, columns, how_to_get)
    try:
        table = pq.read_table(path, columns=list(columns), filters=list(filters) if filters else None)
    except (pa.ArrowException, OSError) as err:
        raise corrupt_error(path, err, how_to_get) from None
    return _normalise_strings(table, columns)


def read_csv_columns(path: str | os.PathLike, columns: Mapping[str, str], *, how_to_get: str) -> Any:
    """Read ``columns`` (name -> kind) of a CSV file with a header as a ``pyarrow.Table``.

    ``"string"`` columns are read as text, never as numbers (ids keep their leading zeros); ``"date"`` columns
    must be ISO dates (``YYYY-MM-DD``); conversion failures name the column.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    path = Path(path)
    check_csv_header(path, columns, how_to_get)
    types = {"string": pa.string(), "int": pa.int64(), "float": pa.float64(), "date": pa.date32()}
    convert = pacsv.ConvertOptions(
        include_columns=list(columns),
        column_types={name: types[kind] for name, kind in columns.items()},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    try:
        return pacsv.read_csv(path, convert_options=convert)
    except pa.ArrowInvalid as err:
        raise csv_error(path, err, f"Expected column kinds {dict(columns)}.", how_to_get) from None
    except (pa.ArrowException, OSError) as err:
        raise corrupt_error(path, err, how_to_get) from None


def csv_error(path: Path, err: Exception, expected: str, how_to_get: str) -> DataError:
    """The :class:`DataError` for pyarrow's ``ArrowInvalid`` while reading a CSV file: a row with the wrong number
    of fields (a file cut inside a line, or not this CSV) is reported as truncated or corrupt; a value that does not
    convert as a malformed value, with ``expected``."""
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    if message.startswith("CSV parse error"):
        return DataError(
            f"{path} could not be parsed ({message}); the file looks truncated or corrupt. Replace it: {how_to_get}"
        )
    return DataError(f"{path} has a malformed value: {message}. {expected} {how_to_get}")


def check_csv_header(path: Path, columns: Mapping[str, str] | Sequence[str], how_to_get: str) -> None:
    """Raise :class:`DataError` unless the CSV file's header names every column in ``columns``.

    A UTF-8 byte-order mark (Excel writes one) is not part of the first column's name; pyarrow skips it too.
    """
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle), None)
    except (OSError, UnicodeDecodeError) as err:
        raise corrupt_error(path, err, how_to_get) from None
    if not header:
        raise DataError(f"{path} is empty: expected a CSV header with columns {list(columns)}. {how_to_get}")
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(
            f"{path} lacks column(s) {missing}: expected {list(columns)} among its columns, found {header}. "
            f"Is it the right file? {how_to_get}"
        )


def _check_schema(path: Path, found: Mapping[str, Any], columns: Mapping[str, str], how_to_get: str) -> None:
    missing = [c for c in columns if c not in found]
    if missing:
        raise DataError(
            f"{path} lacks column(s) {missing}: expected {list(columns)}, found {list(found)}. "
            f"Is it the right file? {how_to_get}"
        )
    wrong = {c: str(found[c]) for c, kind in columns.items() if _arrow_kind(found[c]) != kind}
    if wrong:
        expected = {c: columns[c] for c in wrong}
        raise DataError(f"{path} has column(s) of the wrong type: expected {expected}, found {wrong}. {how_to_get}")


def _normalise_strings(table: Any, columns: Mapping[str, str]) -> Any:
    import pyarrow as pa

    for name, kind in columns.items():
        column = table.column(name)
        if kind == "string" and column.type != pa.string():
            if pa.types.is_dictionary(column.type):
                column = column.cast(pa.string()) if column.type.value_type == pa.string() else column.dictionary_decode()
            table = table.set_column(table.schema.get_field_index(name), name, column.cast(pa.string()))
    return table


def check_no_nulls(table: Any, names: Sequence[str], path: Path, how_to_get: str) -> None:
    """Raise :class:`DataError` if any of the ``names`` columns holds a null (or, for strings, an empty id)."""
    for name in names:
        column = table.column(name)
        nulls = column.null_count
        if nulls:
            raise DataError(f"{path}: column {name!r} has {nulls} null value(s); every row needs one. {how_to_get}")


def check_no_nul_characters(values: Any, name: str, path: Path, how_to_get: str, where: str = "") -> None:
    """Raise :class:`DataError` if the string id column ``values`` (pyarrow) holds a NUL character.

    An id with a NUL is malformed (no published id has one, and ids are stored NUL-separated in the cache). The
    message names the file, the column, how many values, and the first one with its row (0-based, counting the
    rows read; ``where`` says which rows those are, e.g. ``" of locale 'us'"``).
    """
    import pyarrow.compute as pc

    has_nul = pc.fill_null(pc.match_substring(values, "\x00"), False)
    count = pc.sum(has_nul).as_py() or 0
    if count:
        row = pc.index(has_nul, True).as_py()
        raise DataError(
            f"{path}: column {name!r} has {count} value(s) with a NUL character, the first at row {row}{where} "
            f"({values[row].as_py()!r}); ids must not contain NUL. The file looks corrupt or edited. {how_to_get}"
        )


def check_unique(values: Any, what: str, path: Path, how_to_get: str) -> None:
    """Raise :class:`DataError` naming a few duplicates if ``values`` (a pyarrow or numpy array) has any."""
    import pyarrow.compute as pc

    if isinstance(values, np.ndarray):
        uniq, counts = np.unique(values, return_counts=True)
        if len(uniq) == len(values):
            return
        dupes, n_dupes = uniq[counts > 1][:5].tolist(), int((counts > 1).sum())
    else:
        if pc.count_distinct(values, mode="all").as_py() == len(values):
            return
        tally = pc.value_counts(values)
        repeated = tally.filter(pc.greater(tally.field("counts"), 1))
        dupes, n_dupes = repeated.field("values")[:5].to_pylist(), len(repeated)
    raise DataError(
        f"{path}: {what} must be unique, but {n_dupes} value(s) repeat (e.g. {dupes}). "
        f"The file looks edited or concatenated. {how_to_get}"
    )


def column_strings(table: Any, name: str) -> list[str]:
    """A string column as a Python list (nulls as "")."""
    import pyarrow.compute as pc

    return pc.fill_null(table.column(name), "").to_pylist()
