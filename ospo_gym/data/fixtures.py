"""Small generated datasets in the *published* file formats, for tests, examples and benchmarks.

* ESCI: :func:`write_esci_fixture` writes ``shopping_queries_dataset_{examples,products}.parquet`` from
  :mod:`ospo_gym.data.synthetic_catalog` (one locale or several); :func:`write_esci_parquet` writes any two
  frames in that schema.
* H&M: :func:`write_hm_fixture` writes ``articles.csv``, ``customers.csv`` and ``transactions_train.csv`` with the
  Kaggle columns: 10-digit article ids with a leading zero, 64-hex customer ids, ISO dates. Customers have
  taste (an index group, a few product types, a colour), so their next purchase is predictable from their
  history, as in the real data.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ospo_gym.data.esci_schema import (
    EXAMPLE_COLUMN_KINDS,
    EXAMPLE_COLUMNS,
    EXAMPLES_FILE,
    PRODUCT_COLUMNS,
    PRODUCTS_FILE,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "HM_ARTICLE_COLUMNS",
    "HM_CUSTOMER_COLUMNS",
    "HM_TRANSACTION_COLUMNS",
    "write_esci_fixture",
    "write_esci_parquet",
    "write_hm_fixture",
]

HM_ARTICLE_COLUMNS = (
    "article_id", "product_code", "prod_name", "product_type_no", "product_type_name", "product_group_name",
    "graphical_appearance_no", "graphical_appearance_name", "colour_group_code", "colour_group_name",
    "perceived_colour_value_id", "perceived_colour_value_name", "perceived_colour_master_id",
    "perceived_colour_master_name", "department_no", "department_name", "index_code", "index_name",
    "index_group_no", "index_group_name", "section_no", "section_name", "garment_group_no", "garment_group_name",
    "detail_desc",
)  # fmt: skip
HM_CUSTOMER_COLUMNS = ("customer_id", "FN", "Active", "club_member_status", "fashion_news_frequency", "age", "postal_code")
HM_TRANSACTION_COLUMNS = ("t_dat", "customer_id", "article_id", "price", "sales_channel_id")

_TYPES = (
    ("Trousers", "Garment Lower body"), ("Shorts", "Garment Lower body"), ("Skirt", "Garment Lower body"),
    ("Sweater", "Garment Upper body"), ("T-shirt", "Garment Upper body"), ("Blouse", "Garment Upper body"),
    ("Dress", "Garment Full body"), ("Jumpsuit/Playsuit", "Garment Full body"), ("Bra", "Underwear"),
    ("Socks", "Socks & Tights"), ("Sneakers", "Shoes"), ("Bag", "Accessories"), ("Hat/beanie", "Accessories"),
    ("Swimsuit", "Swimwear"), ("Pyjama set", "Nightwear"),
)  # fmt: skip
_INDEX_GROUPS = ("Ladieswear", "Menswear", "Divided", "Sport", "Baby/Children")
_COLOURS = ("Black", "White", "Dark Blue", "Light Pink", "Grey", "Beige", "Red", "Dark Green", "Yellow", "Light Blue")
_NAMES = ("Luna", "Tilda", "Bobby", "Slim", "Relaxed", "Cosy", "Wide", "Skinny", "Nova", "Pluto", "Ivy", "Max")
_MATERIALS = ("cotton jersey", "soft rib-knit", "denim", "recycled polyester", "linen blend", "fine-knit wool")
_CUT = ("a regular fit", "a relaxed fit", "a slim fit", "an oversized fit", "a high waist", "short sleeves")


def write_esci_fixture(
    directory: str | os.PathLike,
    *,
    num_products: int = 1000,
    num_queries: int = 30,
    pool_size: int = 20,
    attributes_per_query: int = 1,
    locales: Sequence[str] = ("us",),
    seed: int = 0,
) -> tuple[Path, Path]:
    """Write an ESCI fixture (one generated catalog per locale, concatenated as in the real files).

    With the defaults most queries have 3-10 Exact products (the paper's filter keeps them).
    Returns the paths of the products and the examples files.
    """
    import pandas as pd

    from ospo_gym.data.synthetic_catalog import CatalogConfig, generate_catalog

    products, examples = [], []
    for i, locale in enumerate(locales):
        config = CatalogConfig(
            num_products=num_products,
            num_queries=num_queries,
            pool_size=pool_size,
            attributes_per_query=attributes_per_query,
            seed=seed + i,
            locale=locale,
        )
        p, e = generate_catalog(config)
        e = e.assign(query_id=e["query_id"] + i * num_queries, example_id=e["example_id"] + sum(len(x) for x in examples))
        products.append(p)
        examples.append(e)
    return write_esci_parquet(pd.concat(products, ignore_index=True), pd.concat(examples, ignore_index=True), directory)


def write_esci_parquet(products: pd.DataFrame, examples: pd.DataFrame, directory: str | os.PathLike) -> tuple[Path, Path]:
    """Write the two frames as the real ESCI files (string and int64 columns), creating ``directory``.

    Returns:
        The paths of the products file and the examples file.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    product_schema = pa.schema([(c, pa.string()) for c in PRODUCT_COLUMNS])
    example_schema = pa.schema(
        [(c, pa.int64() if kind == "int" else pa.string()) for c, kind in EXAMPLE_COLUMN_KINDS.items()]
    )
    paths = (out / PRODUCTS_FILE, out / EXAMPLES_FILE)
    for frame, schema, path, columns in (
        (products, product_schema, paths[0], PRODUCT_COLUMNS),
        (examples, example_schema, paths[1], EXAMPLE_COLUMNS),
    ):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"frame lacks ESCI column(s) {missing}")
        arrays = [
            pa.array(
                frame[c].astype(object).where(frame[c].notna(), None).tolist()
                if schema.field(c).type == pa.string()
                else frame[c].to_numpy(dtype=np.int64),
                type=schema.field(c).type,
            )
            for c in columns
        ]
        pq.write_table(pa.Table.from_arrays(arrays, schema=schema), path)
    return paths


def write_hm_fixture(
    directory: str | os.PathLike,
    *,
    num_articles: int = 300,
    num_customers: int = 60,
    purchases_per_customer: tuple[int, int] = (4, 14),
    first_day: str = "2020-08-01",
    last_day: str = "2020-09-22",
    seed: int = 0,
) -> tuple[Path, Path, Path]:
    """Write H&M fixture CSVs; returns the paths of articles, customers and transactions files."""
    rng = np.random.default_rng(seed)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)

    article_type = rng.integers(len(_TYPES), size=num_articles)
    article_index = rng.integers(len(_INDEX_GROUPS), size=num_articles)
    article_colour = rng.integers(len(_COLOURS), size=num_articles)
    codes = 108775 + np.sort(rng.choice(800_000, size=num_articles, replace=False))
    articles = []
    for i in range(num_articles):
        ptype, group = _TYPES[article_type[i]]
        colour = _COLOURS[article_colour[i]]
        index_group = _INDEX_GROUPS[article_index[i]]
        name = f"{_NAMES[rng.integers(len(_NAMES))]} {ptype.split('/')[0].lower()}"
        desc = (
            ""
            if rng.random() < 0.05
            else f"{ptype} in {_MATERIALS[rng.integers(len(_MATERIALS))]} with {_CUT[rng.integers(len(_CUT))]}."
        )
        articles.append(
            {
                "article_id": f"0{codes[i]:06d}{1 + rng.integers(30):03d}",
                "product_code": f"0{codes[i]:06d}",
                "prod_name": name,
                "product_type_no": 250 + int(article_type[i]),
                "product_type_name": ptype,
                "product_group_name": group,
                "graphical_appearance_no": 1010016,
                "graphical_appearance_name": "Solid",
                "colour_group_code": 9 + int(article_colour[i]),
                "colour_group_name": colour,
                "perceived_colour_value_id": 4,
                "perceived_colour_value_name": "Dark",
                "perceived_colour_master_id": 5,
                "perceived_colour_master_name": colour.split()[-1],
                "department_no": 1676 + int(article_type[i]),
                "department_name": f"{ptype} {index_group}",
                "index_code": "ABCDE"[article_index[i]],
                "index_name": index_group,
                "index_group_no": 1 + int(article_index[i]),
                "index_group_name": index_group,
                "section_no": 16,
                "section_name": f"{index_group} {group}",
                "garment_group_no": 1002,
                "garment_group_name": group,
                "detail_desc": desc,
            }
        )
    article_ids = [a["article_id"] for a in articles]
    paths = (out / "articles.csv", out / "customers.csv", out / "transactions_train.csv")
    _write_csv(paths[0], HM_ARTICLE_COLUMNS, articles)

    customer_ids = [hashlib.sha256(f"customer-{seed}-{i}".encode()).hexdigest() for i in range(num_customers)]
    customers = [
        {
            "customer_id": cid,
            "FN": "1.0" if rng.random() < 0.4 else "",
            "Active": "1.0" if rng.random() < 0.4 else "",
            "club_member_status": "ACTIVE",
            "fashion_news_frequency": "NONE",
            "age": int(rng.integers(18, 70)),
            "postal_code": hashlib.sha256(f"postal-{i % 7}".encode()).hexdigest(),
        }
        for i, cid in enumerate(customer_ids)
    ]
    _write_csv(paths[1], HM_CUSTOMER_COLUMNS, customers)

    start = dt.date.fromisoformat(first_day)
    span = (dt.date.fromisoformat(last_day) - start).days
    rows = []
    for cid in customer_ids:
        # Taste: an index group, three product types and a colour; 80% of purchases follow it.
        index_group = rng.integers(len(_INDEX_GROUPS))
        types = rng.choice(len(_TYPES), size=3, replace=False)
        colour = rng.integers(len(_COLOURS))
        liked = np.flatnonzero(
            (article_index == index_group) & np.isin(article_type, types) & ((article_colour == colour) | (rng.random(num_articles) < 0.3))
        )
        n = int(rng.integers(purchases_per_customer[0], purchases_per_customer[1] + 1))
        days = np.sort(rng.integers(0, span + 1, size=n))
        days[-1] = span - int(rng.integers(0, 14))  # most customers buy in the last two weeks
        for day in days:
            use_taste = len(liked) and rng.random() < 0.8
            article = int(rng.choice(liked)) if use_taste else int(rng.integers(num_articles))
            record = {
                "t_dat": str(start + dt.timedelta(days=int(day))),
                "customer_id": cid,
                "article_id": article_ids[article],
                "price": f"{rng.uniform(0.005, 0.08):.6f}",
                "sales_channel_id": int(rng.integers(1, 3)),
            }
            rows.append(record)
            if rng.random() < 0.05:  # the same item twice (two sizes), as in the real file
                rows.append(dict(record))
    rows.sort(key=lambda r: r["t_dat"])
    _write_csv(paths[2], HM_TRANSACTION_COLUMNS, rows)
    return paths


def _write_csv(path: Path, columns: Sequence[str], rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
