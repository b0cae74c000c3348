"""Catalog documents as text: the retriever sees product fields joined by spaces, HTML stripped, whitespace
collapsed — the same text whether it comes from the real files or from the synthetic catalog."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["catalog_text", "catalog_texts", "strip_html"]

_HTML_TAG = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"\s+")


def strip_html(text: str) -> str:
    """Replace HTML tags by spaces, unescape entities and collapse whitespace."""
    return _SPACES.sub(" ", html.unescape(_HTML_TAG.sub(" ", text))).strip()


def catalog_text(parts: Sequence[str | None]) -> str:
    """Join text fields by spaces; strip HTML tags and entities; collapse whitespace; drop NULs.

    The same text as :func:`catalog_texts` gives, computed with a fast path for fields without markup.
    """
    text = " ".join(p if p else "" for p in parts).replace("\x00", " ")
    if "<" in text or "&" in text:
        return strip_html(text)
    return " ".join(text.split())


def catalog_texts(products: pd.DataFrame, fields: Sequence[str] = ("product_title", "product_description")) -> list[str]:
    """One text per row of the ``products`` frame (the retriever's documents): ``fields`` joined by spaces, HTML
    stripped, nulls as "". Returns a list of ``len(products)`` strings."""
    import pandas as pd

    missing = [f for f in fields if f not in products.columns]
    if missing:
        raise ValueError(f"products has no column(s) {missing}; choose among {list(products.columns)}")
    parts = [products[f].astype(object).where(products[f].notna(), "").astype(str) for f in fields]
    joined = parts[0] if parts else pd.Series([""] * len(products), index=products.index)
    for part in parts[1:]:
        joined = joined + " " + part
    return [strip_html(t) for t in joined.tolist()]
