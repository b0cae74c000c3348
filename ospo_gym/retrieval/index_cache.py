"""On-disk cache of built BM25 indexes: plain arrays in one ``.npz`` plus JSON, never pickle.

Building :class:`~ospo_gym.retrieval.bm25.BM25Retriever`'s index is dominated by tokenising the catalog and
``bm25s``'s indexing (51.6 s at a million products); loading the result is a read of a few arrays. An entry
holds exactly what the build produces:

* ``bm25s``'s score matrix, a ``(documents x terms)`` CSC matrix: ``data`` (float32), ``indices``, ``indptr``,
  plus ``nonoccurrence`` for BM25L / BM25+;
* the tokenizer's four dictionaries (``vocab`` = the index's term ids, ``word_to_id``, ``stem_to_sid``,
  ``word_to_stem``), each as packed strings (:func:`~ospo_gym.data.cache.pack_strings`) plus int64 ids or
  packed strings, in insertion order.

The key (:func:`index_key`) covers everything that changes the index: the catalog texts (SHA-256 of every
text and its length, in order), the tokenizer settings (token pattern, stopwords, stemmer language), ``k1``,
``b``, ``method``, the versions of ``bm25s``, PyStemmer (when stemming) and the Unicode tables used by NFKC,
and :data:`INDEX_FORMAT`. The derived scoring structures are rebuilt from the loaded arrays (under a second
at a million products), so they never go stale.

Entries sit next to the processed-data cache (:func:`~ospo_gym.data.paths.processed_cache_dir`) as
``bm25-<key>/``, are written to a temporary folder and renamed into place, and an unwritable folder only
warns. An entry that exists but can not be read — truncated or corrupt files (zip CRC-32 checks every array),
a meta file of another key or format, arrays that do not form a valid index — is reported with a warning
and rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ospo_gym.data.cache import (
    FORMAT_VERSION,
    TaskCache,
    check_meta_keys,
    entry_int,
    mark_used,
    pack_strings,
    read_entry,
    unpack_strings,
)

__all__ = ["INDEX_FORMAT", "BM25IndexCache", "index_key", "texts_digest"]

INDEX_FORMAT = 1
_KIND = "bm25"
_CHUNK = 8192  # texts hashed per update
_INT_DICTS = ("vocab", "word_to_id", "stem_to_sid")  # str -> int
_STR_DICTS = ("word_to_stem",)  # str -> str


def texts_digest(docs: Sequence[str]) -> str:
    """SHA-256 of the texts in order: their character lengths and their UTF-8 bytes (0.3 s per million)."""
    digest = hashlib.sha256(f"{len(docs)}:".encode())
    for start in range(0, len(docs), _CHUNK):
        chunk = docs[start : start + _CHUNK]
        digest.update(np.fromiter(map(len, chunk), dtype=np.int64, count=len(chunk)).tobytes())
        digest.update("".join(chunk).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def index_key(docs: Sequence[str], settings: Mapping[str, Any]) -> str:
    """Hex key of the index of ``docs`` under ``settings`` (k1, b, method and the tokenizer settings)."""
    import bm25s

    versions = {"bm25s": bm25s.__version__, "unicode": unicodedata.unidata_version}
    if settings.get("stemmer_language") is not None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            versions["PyStemmer"] = version("PyStemmer")
        except PackageNotFoundError:
            versions["PyStemmer"] = "unknown"
    payload = {
        "kind": _KIND,
        "format": FORMAT_VERSION,
        "index_format": INDEX_FORMAT,
        "texts": texts_digest(docs),
        "settings": dict(settings),
        "versions": versions,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class BM25IndexCache(TaskCache):
    """A folder of BM25 index entries, ``<directory>/bm25-<key>/`` (``arrays.npz`` + ``meta.json``).

    Args:
        directory: the cache folder, usually :func:`~ospo_gym.data.paths.processed_cache_dir`.
    """

    description = "BM25 index cache"

    def __init__(self, directory: str | os.PathLike) -> None:
        super().__init__(directory, _KIND)

    def load_index(self, key: str, num_docs: int, bm25: Any, tokenizer: Any) -> bool:
        """Fill the fresh ``bm25s.BM25`` ``bm25`` and ``bm25s`` ``tokenizer`` from the entry of ``key``.

        Returns False when there is no entry; an entry that can not be read or is not a valid index of
        ``num_docs`` documents warns, leaves both objects untouched and returns False (the caller rebuilds).
        """
        folder = self.entry(key)
        if not os.path.lexists(folder):
            return False
        try:
            arrays, meta = read_entry(folder, key, _KIND)
            if meta.get("index_format") != INDEX_FORMAT:
                raise ValueError("its meta.json belongs to another index format")
            restored = _restore(arrays, meta, num_docs)
        except Exception as err:  # untrusted bytes: any failure to read them means "rebuild"
            warnings.warn(f"ignoring the unreadable {self.description} entry {folder} ({err}); rebuilding it", stacklevel=3)
            return False
        mark_used(folder)
        # In the order bm25s's own index() sets them, so that a loaded index pickles to the same bytes.
        bm25.nonoccurrence_array = restored["nonoccurrence"]
        bm25.scores = restored["scores"]
        bm25.vocab_dict = restored["vocab"]
        bm25.unique_token_ids_set = set(bm25.vocab_dict.values())
        tokenizer.word_to_id = restored["word_to_id"]
        tokenizer.stem_to_sid = restored["stem_to_sid"]
        tokenizer.word_to_stem = restored["word_to_stem"]
        return True

    def save_index(self, key: str, bm25: Any, tokenizer: Any, settings: Mapping[str, Any]) -> Path | None:
        """Write the entry of ``key`` atomically; warn and return None when the folder is not writable or the
        vocabulary can not be packed (a token with a NUL character)."""
        scores = bm25.scores
        arrays: dict[str, np.ndarray] = {
            "data": np.asarray(scores["data"]),
            "indices": np.asarray(scores["indices"]),
            "indptr": np.asarray(scores["indptr"]),
        }
        if bm25.nonoccurrence_array is not None:
            arrays["nonoccurrence"] = np.asarray(bm25.nonoccurrence_array)
        dicts = {
            "vocab": bm25.vocab_dict,
            "word_to_id": tokenizer.word_to_id,
            "stem_to_sid": tokenizer.stem_to_sid,
            "word_to_stem": tokenizer.word_to_stem,
        }
        try:
            for name, table in dicts.items():
                arrays[f"{name}_keys"] = pack_strings(list(table))
                values = list(table.values())
                arrays[f"{name}_values"] = (
                    pack_strings(values) if name in _STR_DICTS else np.asarray(values, dtype=np.int64).reshape(-1)
                )
        except ValueError as err:
            warnings.warn(f"not caching the BM25 index: {err}", stacklevel=3)
            return None
        meta = {
            "index_format": INDEX_FORMAT,
            "num_docs": int(scores["num_docs"]),
            "sizes": {name: len(table) for name, table in dicts.items()},
            "settings": dict(settings),
        }
        return self.save(key, arrays, json.loads(json.dumps(meta, default=str)))


def _restore(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], num_docs: int) -> dict[str, Any]:
    """The index objects of an entry, after checking that they form a valid index; ValueError otherwise."""
    check_meta_keys(meta, ("index_format", "num_docs", "sizes", "settings"))
    if entry_int(meta["num_docs"], "num_docs") != num_docs:
        raise ValueError(f"it indexes {meta['num_docs']} documents, not {num_docs}")
    sizes = meta["sizes"]
    if not isinstance(sizes, dict) or set(sizes) != {*_INT_DICTS, *_STR_DICTS}:
        raise ValueError(f"its sizes are {sizes!r}, expected one per dictionary {[*_INT_DICTS, *_STR_DICTS]}")
    data, indices, indptr = arrays["data"], arrays["indices"], arrays["indptr"]
    if data.dtype != np.float32 or indices.dtype.kind not in "iu" or indptr.dtype.kind not in "iu":
        raise ValueError(f"unexpected dtypes {data.dtype}, {indices.dtype}, {indptr.dtype}")
    if data.ndim != 1 or indices.shape != data.shape or indptr.ndim != 1 or len(indptr) < 1:
        raise ValueError("the score matrix arrays have inconsistent shapes")
    n_terms = len(indptr) - 1
    if indptr[0] != 0 or indptr[-1] != len(data) or np.any(np.diff(indptr) < 0):
        raise ValueError("indptr is not a valid CSC pointer array")
    if len(indices) and (indices.min() < 0 or indices.max() >= num_docs):
        raise ValueError("document ids out of range")
    if not np.isfinite(data).all():
        raise ValueError("non-finite weights")
    out: dict[str, Any] = {}
    # One string object per distinct token across the dictionaries, as after a build (less memory; the same
    # pickle bytes as a freshly built index when there is no stemmer).
    pool: dict[str, str] = {}
    for name in (*_INT_DICTS, *_STR_DICTS):
        size = entry_int(sizes[name], f"sizes.{name}")
        keys = [pool.setdefault(k, k) for k in unpack_strings(arrays[f"{name}_keys"], size)]
        if name in _STR_DICTS:
            values: list = [pool.setdefault(v, v) for v in unpack_strings(arrays[f"{name}_values"], size)]
        else:
            ids = arrays[f"{name}_values"]
            if ids.dtype != np.int64 or ids.shape != (size,) or (size and (ids.min() < 0 or ids.max() >= n_terms)):
                raise ValueError(f"{name} ids are not term ids in [0, {n_terms})")
            values = ids.tolist()
        out[name] = dict(zip(keys, values, strict=True))
        if len(out[name]) != size:
            raise ValueError(f"{name} has repeated keys")
    if len(set(out["vocab"].values())) != n_terms:
        raise ValueError(f"the vocabulary does not name each of the {n_terms} terms once")
    nonocc = arrays.get("nonoccurrence")
    if nonocc is not None and (nonocc.dtype != np.float32 or nonocc.shape != (n_terms,)):
        raise ValueError("the non-occurrence array does not match the terms")
    out["scores"] = {"data": data, "indices": indices, "indptr": indptr, "num_docs": num_docs}
    out["nonoccurrence"] = nonocc
    return out
