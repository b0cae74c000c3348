"""Real datasets in their published formats: find, validate, load, cache and download them.

* :mod:`ospo_gym.data.esci` — Amazon Shopping Queries (ESCI) as a judged retrieval task, from the published
  ``shopping_queries_dataset_{examples,products}.parquet``; :mod:`ospo_gym.data.esci_schema` — their columns.
* :mod:`ospo_gym.data.hm` — H&M Personalized Fashion Recommendations (Kaggle) as a next-purchase task;
  :mod:`ospo_gym.data.hm_files` — reading and checking ``articles.csv``, ``customers.csv``,
  ``transactions_train.csv``.
* :mod:`ospo_gym.data.paths` — where data is looked for: ``data_dir=``, else ``$OSPO_GYM_DATA``, else the user
  cache dir (``~/.cache/ospo-gym``).
* :mod:`ospo_gym.data.cache` — cache entries as ``.npz`` + JSON (no pickle), keyed by the source files' size,
  mtime and head/tail hash plus the options, written atomically and checked on load;
  :mod:`ospo_gym.data.task_codec` — the one codec of the ESCI and H&M tasks, and the cache-or-build step (the
  BM25 index cache beside it is :mod:`ospo_gym.retrieval.index_cache`).
* :mod:`ospo_gym.data.tables` — columnar parquet / CSV reads with schema checks.
* :mod:`ospo_gym.data.text` — catalog documents as text (fields joined, HTML stripped).
* :mod:`ospo_gym.data.download` — ``ospo-gym data esci`` (resumable, checksum-verified download).
* :mod:`ospo_gym.data.synthetic_catalog` — a generated catalog in the ESCI schema, from the words of
  :mod:`ospo_gym.data.synthetic_words`; :mod:`ospo_gym.data.fixtures` — small generated files in the published
  formats (tests, examples).

Every problem with the data itself raises :class:`DataError`: what was expected, where it was looked for, and
how to get it. Importing this package is cheap; pandas and pyarrow are imported by the loaders when used.
"""

from __future__ import annotations


class DataError(ValueError):
    """Missing or malformed dataset files: the message says what was expected, where, and how to get it."""


__all__ = ["DataError"]
