"""Validation at the retriever boundary (a user's retriever is code we did not write).

Each ``check_*`` function takes what a :class:`~ospo_gym.retrieval.protocol.Retriever` method returned and
either gives it back as arrays or raises one ``ValueError`` naming the retriever, what it returned (type,
shape, dtype), what is wrong with it and what was expected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np

__all__ = ["check_frontier", "check_ranking", "check_scores", "check_texts"]


def _describe(value: object) -> str:
    """``value`` as an error message names it: its type, and its shape and dtype when it has them."""
    if value is None:
        return "None"
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is None and isinstance(value, (list, tuple)):
        with contextlib.suppress(Exception):
            as_array = np.asarray(value)
            shape, dtype = as_array.shape, as_array.dtype
    if shape is None:
        return type(value).__name__
    return f"{type(value).__name__} with shape {tuple(shape)} and dtype {dtype}"


def _retriever_error(retriever: object, method: str, returned: object, problem: str, expected: str) -> ValueError:
    name = "retriever" if retriever is None else type(retriever).__name__
    return ValueError(
        f"{name}.{method}() returned {_describe(returned)} ({problem}); expected {expected}. Fix the retriever "
        "so that it follows the ospo_gym.retrieval.Retriever protocol."
    )


def _real_array(value: object) -> np.ndarray | None:
    """``value`` as an array (no copy) if it holds real numbers (int or float dtype), else None."""
    if value is None:
        return None
    try:
        array = np.asarray(value)
    except Exception:  # e.g. a ragged list: the caller reports the value as it was returned
        return None
    return array if array.dtype.kind in "fiu" else None


def _all_finite(array: np.ndarray) -> bool:
    """Whether every entry is finite, in one pass: NaN or ±inf anywhere make the float64 sum non-finite."""
    if array.dtype.kind != "f":
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(array.sum(dtype=np.float64)):
            return True
    # Finite float64 scores can still overflow their sum: then the entries themselves decide.
    return bool(np.isfinite(array).all())


def _shape_problem(array: np.ndarray | None, shape: tuple[int, ...]) -> str | None:
    """Why ``array`` (None: not convertible to real numbers) is not real numbers of ``shape``; None if it is."""
    if array is None:
        return "not an array of real numbers"
    if array.shape != shape:
        return "wrong shape"
    return None


def check_scores(scores: object, num_texts: int, num_docs: int, retriever: object = None) -> np.ndarray:
    """Check a :meth:`Retriever.scores` result; return it as an array (not copied, dtype kept).

    Expected: ``(num_texts, num_docs)`` finite real numbers (int or float dtype). NaN and ±inf are refused:
    a NaN has no place in a ranking, and documents scored +inf would all tie.

    Raises:
        ValueError: naming what was returned (type, shape, dtype), what is wrong with it and what was expected.
    """
    expected = (
        f"a ({num_texts}, {num_docs}) array = (number of texts, catalog size) of finite real numbers "
        "(int or float dtype)"
    )
    array = _real_array(scores)
    problem = _shape_problem(array, (num_texts, num_docs))
    if problem is None and not _all_finite(array):
        problem = "NaN or infinite scores"
    if problem is not None:
        raise _retriever_error(retriever, "scores", scores, problem, expected)
    return array


def check_frontier(frontier: object, pool_ids: np.ndarray, retriever: object = None) -> tuple[np.ndarray, np.ndarray]:
    """Check a :meth:`PoolRetriever.pool_frontier` result against the padded ``pool_ids`` ``(Q, P)``.

    Expected: a pair ``(pool_scores, retrieved)`` of ``(Q, P)`` arrays: finite real scores, and a bool mask
    that is False at the padding (``pool_ids == -1``).

    Raises:
        ValueError: naming what was returned, what is wrong with it and what was expected.
    """
    shape = tuple(pool_ids.shape)
    expected = (
        f"a pair (pool_scores, retrieved) of {shape} arrays = (number of texts, pool width): finite real "
        "scores and a bool mask that is False where pool_ids is -1"
    )
    if not isinstance(frontier, (tuple, list)) or len(frontier) != 2:
        raise _retriever_error(retriever, "pool_frontier", frontier, "not a pair", expected)
    pool_scores = _real_array(frontier[0])
    problem = _shape_problem(pool_scores, shape)
    if problem is None and not _all_finite(pool_scores):
        problem = "NaN or infinite scores"
    if problem is not None:
        raise _retriever_error(retriever, "pool_frontier", frontier[0], f"pool_scores: {problem}", expected)
    retrieved = np.asarray(frontier[1]) if frontier[1] is not None else None
    if retrieved is None or retrieved.dtype != np.bool_:
        problem = "not a bool array"
    elif retrieved.shape != shape:
        problem = "wrong shape"
    elif (retrieved & (pool_ids < 0)).any():
        problem = "True at padding slots"
    if problem is not None:
        raise _retriever_error(retriever, "pool_frontier", frontier[1], f"retrieved: {problem}", expected)
    return pool_scores, retrieved


def check_ranking(
    ranking: object, num_texts: int, k: int, num_docs: int, retriever: object = None
) -> tuple[np.ndarray, np.ndarray]:
    """Check a :meth:`Retriever.rank` result: ids ``(num_texts, k)`` of ints in ``[-1, num_docs)`` (-1 pads),
    no document twice in a row, and scores ``(num_texts, k)`` of real numbers, finite where an id is listed.

    Raises:
        ValueError: naming what was returned, what is wrong with it and what was expected.
    """
    shape = (num_texts, k)
    expected = (
        f"a pair (ids, scores) of {shape} arrays = (number of texts, k): int ids in [-1, {num_docs}) (-1 pads), "
        "no document twice in a row, and finite real scores where an id is listed"
    )
    if not isinstance(ranking, (tuple, list)) or len(ranking) != 2:
        raise _retriever_error(retriever, "rank", ranking, "not a pair", expected)
    ids, scores = _real_array(ranking[0]), _real_array(ranking[1])
    problem = _shape_problem(ids, shape)
    if problem is None and ids.dtype.kind not in "iu":
        problem = "not an int array"
    if problem is None and ids.size and (ids.min() < -1 or ids.max() >= num_docs):
        problem = f"ids in [{ids.min()}, {ids.max()}]"
    if problem is None:
        ordered = np.sort(ids, axis=1)
        if (ordered[:, 1:] == ordered[:, :-1])[ordered[:, 1:] >= 0].any():
            problem = "a document listed twice in a row"
    if problem is not None:
        raise _retriever_error(retriever, "rank", ranking[0], f"ids: {problem}", expected)
    problem = _shape_problem(scores, shape)
    if problem is None and not _all_finite(scores[ids >= 0]):
        problem = "NaN or infinite scores of listed ids"
    if problem is not None:
        raise _retriever_error(retriever, "rank", ranking[1], f"scores: {problem}", expected)
    return ids, scores


def check_texts(texts: Sequence[str]) -> None:
    """Refuse one bare string where a sequence of query texts is expected (it would be read letter by letter).

    Raises:
        TypeError: ``texts`` is a ``str``.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string; wrap it in a list")
