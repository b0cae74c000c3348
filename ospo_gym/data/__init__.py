"""Real datasets in their published formats: find, validate, load, cache and download them.

* :mod:`ospo_gym.data.esci` — Amazon Shopping Queries (ESCI): ``shopping_queries_dataset_examples.parquet``
  and ``shopping_queries_dataset_products.parquet``.
* :mod:`ospo_gym.data.hm` — H&M Personalized Fashion Recommendations (Kaggle): ``articles.csv``,
  ``customers.csv``, ``transactions_train.csv``.
* :mod:`ospo_gym.data.paths` — where data is looked for: ``data_dir=``, else ``$OSPO_GYM_DATA``, else the user
  cache dir (``~/.cache/ospo-gym``).
* :mod:`ospo_gym.data.cache` — processed tasks cached as ``.npz`` + JSON (no pickle), keyed by the source
  files' size, mtime and head/tail hash plus the loader options; every part of an entry is checked on load and a
  damaged entry is rebuilt with a warning.
* :mod:`ospo_gym.data.bm25_cache` — built BM25 indexes cached next to them, the same way, keyed by the catalog
  texts and the BM25 / tokenizer settings (the real-data envs' ``index_cache=``).
* :mod:`ospo_gym.data.download` — ``ospo-gym data esci`` (resumable, checksum-verified download).
* :mod:`ospo_gym.data.fixtures` — small generated files in the published formats (tests, examples).
* :mod:`ospo_gym.data.fast_bm25` — BM25 whose pooled reward does not score the whole catalog (the real
  catalogs have 10^5-10^6 products; same results as full scoring).

Every problem with the data itself raises :class:`DataError`: what was expected, where it was looked for, and
how to get it. Importing this package is cheap; pandas and pyarrow are imported by the loaders when used.
"""

from __future__ import annotations


class DataError(ValueError):
    """Missing or malformed dataset files: the message says what was expected, where, and how to get it."""


__all__ = ["DataError"]
