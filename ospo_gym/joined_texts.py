"""Texts made of pieces joined by single spaces, handed over as the pieces and which of them each text joins.

The coalition-value oracle's texts are its segments joined in their original order (``" ".join``): a few dozen
pieces make hundreds of texts. A :class:`JoinedTexts` is a ``Sequence[str]`` of those texts (indexing one joins
it), so any scorer of texts takes it as it is; a scorer that can work from the pieces (BM25 sums the pieces' term
counts: its tokens never span an ASCII space) skips joining and tokenising every text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import numpy as np


class JoinedTexts(Sequence[str]):
    """``Q`` texts, text ``q`` being ``" ".join(pieces[i] for i in indices[indptr[q]:indptr[q + 1]])``.

    Args:
        pieces: ``N`` strings.
        indptr: ``(Q + 1,)`` ints, non-decreasing from 0 to ``len(indices)``.
        indices: ``(nnz,)`` ints in ``[0, N)``, each text's pieces in text order (a piece may recur).

    Raises:
        ValueError: the arrays do not describe ``Q`` texts over ``N`` pieces as above.
    """

    def __init__(self, pieces: Sequence[str], indptr: np.ndarray, indices: np.ndarray) -> None:
        self.pieces = list(pieces)
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int64)
        if (
            self.indptr.ndim != 1
            or self.indices.ndim != 1
            or len(self.indptr) == 0
            or self.indptr[0] != 0
            or self.indptr[-1] != len(self.indices)
            or (np.diff(self.indptr) < 0).any()
            or (len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= len(self.pieces)))
        ):
            raise ValueError(
                f"indptr ({self.indptr.shape}) and indices ({self.indices.shape}) must be CSR rows over "
                f"{len(self.pieces)} pieces: indptr non-decreasing from 0 to len(indices), indices in [0, N)"
            )

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @overload
    def __getitem__(self, q: int) -> str: ...

    @overload
    def __getitem__(self, q: slice) -> list[str]: ...

    def __getitem__(self, q: int | slice) -> str | list[str]:
        if isinstance(q, slice):
            return [self[i] for i in range(*q.indices(len(self)))]
        n = len(self)
        if not -n <= q < n:
            raise IndexError(f"text {q} of {n}")
        q %= n
        start, end = self.indptr[q], self.indptr[q + 1]
        return " ".join(self.pieces[i] for i in self.indices[start:end].tolist())

    def rows(self) -> list[list[int]]:
        """Each text's piece indices, in text order."""
        flat = self.indices.tolist()
        bounds = self.indptr.tolist()
        return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
