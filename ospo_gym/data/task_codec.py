"""One codec for the processed tasks of every loader (ESCI, H&M): a task dataclass to the arrays and counts of its
cache entry and back, every part checked on the way back, and the cache-or-build step the loaders share.

A task is a frozen dataclass of string lists and 1-D arrays whose lengths are a few counts (products, queries,
judgements, ...). :class:`TaskCodec` declares them once per loader: which field has which kind, length, dtype and
value range. The entry's ``meta.json`` holds ``options``, ``counts`` and the loader's own sections; the entry is
untrusted, so :meth:`TaskCodec.decode` checks the counts, the array names, dtypes, shapes and ranges, and the
loader's ``restore`` checks what only it knows (ids ascending, gains 0/1, date windows).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

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
from ospo_gym.data.paths import processed_cache_dir

__all__ = ["FIELD_KINDS", "Field", "TaskCodec", "load_or_build"]

FIELD_KINDS = ("strings", "array", "codes", "offsets")
_T = TypeVar("_T")


@dataclass(frozen=True)
class Field:
    """One field of a task as a cache entry stores it.

    Attributes:
        name: the dataclass field and the array's name in ``arrays.npz``.
        kind: ``"strings"`` (a list of ``str``, packed), ``"array"`` (1-D of ``dtypes``), ``"codes"`` (an
            ``"array"`` whose values lie in ``[0, bound)``) or ``"offsets"`` (CSR offsets, int64, from 0 to the
            count ``bound``, one more than the count ``length``).
        length: the name of the count the field's length is (for offsets: the number of groups).
        dtypes: the accepted dtype names (``"array"`` and ``"codes"``; codes take the first).
        bound: ``"codes"``: a count's name or a number; ``"offsets"``: the count of the items.
    """

    name: str
    kind: str
    length: str
    dtypes: tuple[str, ...] = ()
    bound: str | int | None = None

    def __post_init__(self) -> None:
        if self.kind not in FIELD_KINDS:
            raise ValueError(f"unknown field kind {self.kind!r}; expected one of {FIELD_KINDS}")


class TaskCodec:
    """How the tasks of one loader ``kind`` are stored: their counts and fields (see the module doc).

    Args:
        kind: the cache kind (``"esci"``, ``"hm"``), also the cache key's first part.
        counts: count name -> the field whose length it is, in the order ``meta.json`` lists them.
        fields: every stored field, in the order they are checked.
        sections: ``meta.json`` sections besides ``options`` and ``counts`` that the loader writes and checks.
    """

    def __init__(self, kind: str, counts: Mapping[str, str], fields: Sequence[Field], sections: Sequence[str] = ()):
        self.kind = kind
        self.count_fields = dict(counts)
        self.fields = tuple(fields)
        self.sections = ("options", "counts", *sections)

    def counts(self, task: Any) -> dict[str, int]:
        """The task's counts, as ``meta.json`` and the load info report them."""
        return {name: len(getattr(task, field)) for name, field in self.count_fields.items()}

    def encode(self, task: Any) -> dict[str, np.ndarray]:
        """The arrays of the task's cache entry (strings packed by :func:`~ospo_gym.data.cache.pack_strings`)."""
        return {
            f.name: pack_strings(getattr(task, f.name)) if f.kind == "strings" else getattr(task, f.name)
            for f in self.fields
        }

    def decode(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
        """The task's fields from an entry, after checking its sections, options, counts and every array.

        Raises:
            ValueError: what does not fit (the cache then rebuilds the entry).
        """
        check_meta_keys(meta, self.sections)
        if meta["options"] != options:
            raise ValueError(f"its options {meta['options']!r} are not the ones asked for")
        counts = meta["counts"]
        if not isinstance(counts, dict) or sorted(counts) != sorted(self.count_fields):
            raise ValueError(f"its counts are {counts!r}, expected {list(self.count_fields)}")
        sizes = {name: entry_int(counts[name], name) for name in self.count_fields}
        names = sorted(f.name for f in self.fields)
        if sorted(arrays) != names:
            raise ValueError(f"arrays.npz holds {sorted(arrays)}, expected {names}")
        return {f.name: self._field(arrays, f, sizes) for f in self.fields}

    @staticmethod
    def _field(arrays: Mapping[str, np.ndarray], spec: Field, sizes: Mapping[str, int]) -> Any:
        length = sizes[spec.length]
        if spec.kind == "strings":
            return entry_strings(arrays, spec.name, length)
        if spec.kind == "array":
            return entry_array(arrays, spec.name, spec.dtypes, length)
        bound = sizes[spec.bound] if isinstance(spec.bound, str) else spec.bound
        if spec.kind == "codes":
            return entry_codes(arrays, spec.name, spec.dtypes[0], length, bound)
        return entry_offsets(arrays, spec.name, length, bound)


def load_or_build(
    codec: TaskCodec,
    paths: Sequence[str | os.PathLike],
    options: Mapping[str, Any],
    build: Callable[[], _T],
    restore: Callable[[dict[str, Any], Mapping[str, Any]], _T],
    *,
    cache_dir: str | os.PathLike | None,
    use_cache: bool,
    sections: Callable[[_T], Mapping[str, Any]] | None = None,
) -> tuple[_T, bool]:
    """The task of ``options`` over the files ``paths``: from the processed-data cache when a valid entry is
    there, else ``build()`` (then saved, unless ``use_cache`` is off). Returns ``(task, came from the cache)``.

    ``restore(fields, meta)`` makes the task of an entry's decoded fields and checks what the codec cannot;
    ``sections(task)`` gives the extra ``meta.json`` sections the codec declares.
    """
    if not use_cache:
        return build(), False
    cache = TaskCache(processed_cache_dir(cache_dir), codec.kind)
    key = cache_key(codec.kind, paths, options)
    hit = cache.load(key, lambda arrays, meta: restore(codec.decode(arrays, meta, options), meta))
    if hit is not None:
        return hit, True
    task = build()
    extra = dict(sections(task)) if sections is not None else {}
    cache.save(key, codec.encode(task), {"options": options, "counts": codec.counts(task), **extra})
    return task, False
