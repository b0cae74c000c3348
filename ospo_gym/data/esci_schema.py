"""The Amazon Shopping Queries (ESCI) file schema, defined once for the loader and the synthetic catalog.

The published folder ``shopping_queries_dataset`` holds two parquet files: the examples (one judgement per row)
and the products (one product per ``(product_locale, product_id)``). The synthetic catalog writes these columns
with these types, and the loader reads and checks them.
"""

from __future__ import annotations

__all__ = [
    "EXAMPLES_FILE",
    "EXAMPLE_COLUMNS",
    "EXAMPLE_COLUMN_KINDS",
    "LABELS",
    "LOCALES",
    "PRODUCTS_FILE",
    "PRODUCT_COLUMNS",
    "PRODUCT_TEXT_COLUMNS",
    "SPLIT_NAMES",
]

EXAMPLES_FILE = "shopping_queries_dataset_examples.parquet"
PRODUCTS_FILE = "shopping_queries_dataset_products.parquet"
PRODUCT_COLUMNS: tuple[str, ...] = (
    "product_id",
    "product_title",
    "product_description",
    "product_bullet_point",
    "product_brand",
    "product_color",
    "product_locale",
)
"""Every column of the products file, in file order; all strings."""
PRODUCT_TEXT_COLUMNS: tuple[str, ...] = PRODUCT_COLUMNS[1:-1]
"""The product columns that hold text a catalog document can be made of."""
EXAMPLE_COLUMN_KINDS: dict[str, str] = {
    "example_id": "int",
    "query": "string",
    "query_id": "int",
    "product_id": "string",
    "product_locale": "string",
    "esci_label": "string",
    "small_version": "int",
    "large_version": "int",
    "split": "string",
}
"""Every column of the examples file, in file order, with its kind (``"int"``: int64, ``"string"``)."""
EXAMPLE_COLUMNS: tuple[str, ...] = tuple(EXAMPLE_COLUMN_KINDS)
LOCALES: tuple[str, ...] = ("us", "es", "jp")
LABELS = "ESCI"
"""The ``esci_label`` values: Exact, Substitute, Complement, Irrelevant (loaders store indices into this string)."""
SPLIT_NAMES: tuple[str, ...] = ("train", "test")
