"""Throughput of :class:`ospo_gym.retrieval.DenseRetriever` with a local random model (no downloads).

On a synthetic ESCI-style catalog, with a random BERT built by
:func:`ospo_gym.retrieval.random_model.build_random_model` (``--dim``/``--layers``; 384 wide like
all-MiniLM-L6-v2 but 1 layer deep by default, so encoding is about 6x faster than MiniLM's), it measures in one
run:

* encoding: documents and queries per second;
* exact search: the retriever's torch matmul + topk against faiss ``IndexFlatIP`` on the same embeddings
  (queries per second, their ratio, and whether the two return the same top-k);
* HNSW: index build time for each ``--hnsw-sizes`` catalog (generated at that size and encoded first),
  its search speed and recall@k against exact search;
* the reward: :func:`ospo_gym.retrieval.pooled_ndcg` per second with and without the cutoff.

    python benchmarks/bench_dense.py                                   # 20k products, 256 queries
    python benchmarks/bench_dense.py --num-products 50000 --hnsw-sizes 20000 100000

Prints one JSON object and writes it to ``benchmarks/results/dense.json`` (``--output``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ospo_gym.data.synthetic_catalog import CatalogConfig, generate_catalog
from ospo_gym.data.text import catalog_texts
from ospo_gym.metrics import ESCI_GAINS
from ospo_gym.retrieval import DenseRetriever, pooled_ndcg
from ospo_gym.retrieval.random_model import build_random_model

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "dense.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--num-products", type=int, default=20_000, help="catalog size for encode/flat/reward"
    )
    parser.add_argument("--queries", type=int, default=256, help="queries per search / reward batch")
    parser.add_argument("--k", type=int, default=10, help="top-k of the search timings and NDCG@k")
    parser.add_argument("--cutoff", type=int, default=1000, help="retrieval depth of the reward")
    parser.add_argument(
        "--hnsw-sizes", type=int, nargs="*", default=[20_000], help="catalog sizes to build HNSW on"
    )
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-search", type=int, default=128)
    parser.add_argument("--dim", type=int, default=384, help="random model width")
    parser.add_argument("--layers", type=int, default=1, help="random model depth")
    parser.add_argument("--batch-size", type=int, default=64, help="encoding batch size")
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed calls per search setting (best and median kept)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser.parse_args(argv)


def catalog(num_products: int, num_queries: int, seed: int):
    """(documents, query texts, pools, pool gains) of a generated catalog."""
    config = CatalogConfig(num_products=num_products, num_queries=num_queries, seed=seed)
    products, examples = generate_catalog(config)
    row_of = {pid: i for i, pid in enumerate(products["product_id"])}
    texts, pools, gains = [], [], []
    for _, group in examples.groupby("query_id", sort=True):
        texts.append(str(group["query"].iloc[0]))
        pools.append(np.array([row_of[p] for p in group["product_id"]], dtype=np.int64))
        gains.append(group["esci_label"].map(ESCI_GAINS).to_numpy(dtype=np.float64))
    return catalog_texts(products), texts, pools, gains


def time_calls(fn: Callable[[], object], repeats: int) -> dict:
    fn()  # warm-up: kernel selection for these shapes, thread pools
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"best_s": min(times), "median_s": float(np.median(times))}


def time_pair(a: Callable[[], object], b: Callable[[], object], repeats: int) -> tuple[dict, dict]:
    """Time two callables alternately, so that load from other processes affects both alike."""
    a(), b()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((a, times[0]), (b, times[1])):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return tuple({"best_s": min(t), "median_s": float(np.median(t))} for t in times)


def per_second(timing: dict, n: int) -> dict:
    return {**timing, "per_s_best": n / timing["best_s"], "per_s_median": n / timing["median_s"]}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_dense_") as workdir:
        result = run(args, Path(workdir), sys.argv[1:] if argv is None else argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


def run(args: argparse.Namespace, workdir: Path, argv: list[str]) -> dict:
    """All measurements; the model and the caches live in ``workdir``."""
    import faiss
    import sentence_transformers
    import torch

    docs, texts, pools, gains = catalog(args.num_products, args.queries, args.seed)
    model_dir = build_random_model(
        workdir, docs[:5000] + texts, dim=args.dim, layers=args.layers, heads=max(1, args.dim // 32)
    )
    retriever = DenseRetriever(docs[:10], model_dir, index="flat", device="cpu", batch_size=args.batch_size)

    # ---- encoding ----
    start = time.perf_counter()
    doc_emb = retriever._encode(docs, "document")
    encode_docs_s = time.perf_counter() - start
    start = time.perf_counter()
    query_emb = retriever._encode(texts, "query")
    encode_queries_s = time.perf_counter() - start
    flat = DenseRetriever(docs, retriever.model, index="flat", device="cpu", batch_size=args.batch_size)
    np.testing.assert_allclose(flat.doc_embeddings, doc_emb, atol=1e-5)
    queries = torch.from_numpy(query_emb)
    n_q = len(texts)

    # ---- exact search: torch vs faiss IndexFlatIP, same embeddings ----
    flat_ip = faiss.IndexFlatIP(flat.dim)
    flat_ip.add(flat.doc_embeddings)
    search = {}
    for k in sorted({args.k, args.cutoff}):
        ours, theirs = time_pair(
            lambda k=k: flat._search(queries, k), lambda k=k: flat_ip.search(query_emb, k), args.repeats
        )
        ours, theirs = per_second(ours, n_q), per_second(theirs, n_q)
        our_ids = flat._search(queries, k)[1]
        faiss_ids = flat_ip.search(query_emb, k)[1]
        search[f"k={k}"] = {
            "torch_flat": ours,
            "faiss_IndexFlatIP": theirs,
            "speedup_best": theirs["best_s"] / ours["best_s"],
            "speedup_median": theirs["median_s"] / ours["median_s"],
            # Equal up to float rounding and the order of tied documents.
            "topk_set_agreement": float(
                np.mean([len(set(a) & set(b)) / k for a, b in zip(our_ids, faiss_ids, strict=True)])
            ),
        }

    # ---- the reward ----
    reward = {}
    for cutoff in (args.cutoff, None):
        timing = time_calls(
            lambda c=cutoff: pooled_ndcg(flat, texts, pools, gains, k=args.k, cutoff=c), args.repeats
        )
        reward[f"cutoff={cutoff}"] = per_second(timing, n_q)
    rank_timing = per_second(time_calls(lambda: flat.rank(texts, args.k), args.repeats), n_q)

    # ---- HNSW ----
    hnsw = {}
    for size in args.hnsw_sizes:
        sub = docs if size == args.num_products else catalog(size, 1, args.seed)[0]
        exact = DenseRetriever(
            sub, flat.model, index="flat", device="cpu", batch_size=args.batch_size, cache_dir=workdir
        )
        # Embeddings now cached: the timed construction is the HNSW build (plus writing the index file).
        start = time.perf_counter()
        approx = DenseRetriever(
            sub,
            flat.model,
            index="hnsw",
            device="cpu",
            cache_dir=workdir,
            hnsw_m=args.hnsw_m,
            ef_search=args.ef_search,
        )
        build_s = time.perf_counter() - start
        truth = exact._search(queries, args.k)[1]
        found = approx._search(queries, args.k)[1]
        hnsw_t, flat_t = time_pair(
            lambda a=approx: a._search(queries, args.k),
            lambda e=exact: e._search(queries, args.k),
            args.repeats,
        )
        hnsw[str(size)] = {
            "build_s": build_s,
            "docs_per_s": size / build_s,
            "search_k": per_second(
                time_calls(lambda a=approx: a._search(queries, args.k), args.repeats), n_q
            ),
            "flat_search_k": per_second(
                time_calls(lambda e=exact: e._search(queries, args.k), args.repeats), n_q
            ),
            "recall_at_k": float(
                np.mean([len(set(a) & set(b)) / args.k for a, b in zip(found, truth, strict=True)])
            ),
        }

    result = {
        "benchmark": "dense",
        "command": shlex.join(
            ["python", "benchmarks/bench_dense.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "workload": {
            "num_products": args.num_products,
            "queries": n_q,
            "mean_doc_chars": float(np.mean([len(d) for d in docs])),
            "mean_query_words": float(np.mean([len(t.split()) for t in texts])),
            "mean_pool": float(np.mean([len(p) for p in pools])),
            "k": args.k,
            "cutoff": args.cutoff,
            "model": {"kind": "random BERT, mean pooling", "dim": args.dim, "layers": args.layers},
            "batch_size": args.batch_size,
            "seed": args.seed,
        },
        "encode": {
            "docs_per_s": len(docs) / encode_docs_s,
            "queries_per_s": n_q / encode_queries_s,
        },
        "flat_search": search,
        "rank_end_to_end_k": rank_timing,
        "pooled_ndcg": reward,
        "mean_reward": float(np.mean(pooled_ndcg(flat, texts, pools, gains, k=args.k, cutoff=args.cutoff))),
        "hnsw": {"m": args.hnsw_m, "ef_search": args.ef_search, "sizes": hnsw},
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "faiss_threads": faiss.omp_get_max_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "faiss": faiss.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "numpy": np.__version__,
        },
    }
    return result


if __name__ == "__main__":
    main()
