"""Real-data scale: load, index and oracle throughput on an ESCI-format catalog of a million products.

Generates a catalog in the published ESCI schema (``shopping_queries_dataset_{products,examples}.parquet``:
titles, HTML descriptions, bullets, brands, colours; Zipf-distributed words with product categories; queries
with E/S/C/I-labelled pools of 20) and measures, each phase in a fresh process so that peak memory
(``resource.getrusage`` max RSS) is the phase's own:

* ``load_cold``: :func:`ospo_gym.data.esci.load_esci` from the parquet files, cache empty;
* ``load_cached``: the same call again (the processed task comes from the ``.npz`` cache);
* ``index_build`` / ``index_cached``: the BM25 index over the whole catalog
  (:class:`~ospo_gym.retrieval.TopListBM25Retriever`), first built (tokenise, index, write the on-disk
  index cache, :mod:`ospo_gym.retrieval.index_cache`), then loaded from that cache; both score the same fixed
  texts, whose pooled rewards must be bit-identical;
* ``env``: the env around the (cached) index;
* ``oracle``: coalition values per second — batches of ``--batch`` completions (a train query plus words
  from the titles of its Exact products, ``--words`` words, word segments), each with its OSPO coalitions at
  ``--w-max`` / ``--max-coalitions`` (:func:`ospo_gym.credit.sample_coalitions`), one
  ``oracle.values_batch`` call per batch. The first ``--reference-batches`` batches are also scored by full
  catalog scoring (:class:`~ospo_gym.retrieval.BM25Retriever`'s path) to report agreement and speed-up.

    python benchmarks/real_data_scale.py                                   # 1,000,000 products, 100,000 judgements
    python benchmarks/real_data_scale.py --products 20000 --judgements 4000 --repeats 2   # a smoke run

Writes ``benchmarks/results/real_data_scale.json`` (``--out``). Generated files are kept in ``--data-dir`` and
reused when the sizes and seed match (default: under the user cache dir, outside the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
def default_data_root() -> Path:
    from ospo_gym.data.paths import user_cache_dir

    return user_cache_dir() / "benchmarks"
TARGET_VALUES_PER_SECOND = 2_000
POOL = 20  # judgements per query


def peak_rss_mb() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, 1)


# --------------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------------


def generate(folder: Path, products: int, judgements: int, seed: int) -> dict:
    """Write the two ESCI parquet files; returns a summary."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ospo_gym.data.esci_schema import EXAMPLES_FILE, PRODUCTS_FILE

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"] + ["sha", "tri", "qua", "ple", "cro"]
    n_syl = len(syllables)
    vocab_size = 50_000
    words = pa.array([syllables[i % n_syl] + syllables[(i // n_syl) % n_syl] + syllables[i // n_syl**2 % n_syl] for i in range(vocab_size)])
    weights = 1.0 / (np.arange(vocab_size) + 30.0)
    cdf = np.cumsum(weights / weights.sum())

    def zipf(n: int) -> np.ndarray:
        return np.minimum(np.searchsorted(cdf, rng.random(n)), vocab_size - 1).astype(np.int32)

    def join(token_ids: np.ndarray, lengths: np.ndarray) -> pa.Array:
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
        return pc.binary_join(pa.ListArray.from_arrays(offsets, words.take(pa.array(token_ids))), " ")

    n_categories = max(products // 200, 10)
    category_words = rng.integers(100, 20_000, size=(n_categories, 8)).astype(np.int32)
    category_p = 1.0 / (np.arange(n_categories) + 10.0)
    category = rng.choice(n_categories, size=products, p=category_p / category_p.sum())
    brands = pa.array([f"brand{i}" for i in range(max(products // 50, 10))])
    colours = pa.array(["black", "white", "red", "blue", "green", "grey", "pink", "silver", "gold", "navy"])

    # Titles: 3-5 of the category's words then 3-8 general words.
    n_cat = rng.integers(3, 6, size=products)
    n_gen = rng.integers(3, 9, size=products)
    cat_tokens = category_words[np.repeat(category, n_cat), rng.integers(0, 8, size=int(n_cat.sum()))]
    gen_tokens = zipf(int(n_gen.sum()))
    title_lengths = n_cat + n_gen
    title_tokens = np.empty(int(title_lengths.sum()), dtype=np.int32)
    starts = np.concatenate([[0], np.cumsum(title_lengths)[:-1]])
    cat_pos = np.repeat(starts, n_cat) + (np.arange(int(n_cat.sum())) - np.repeat(np.cumsum(n_cat) - n_cat, n_cat))
    mask = np.ones(len(title_tokens), dtype=bool)
    mask[cat_pos] = False
    title_tokens[cat_pos] = cat_tokens
    title_tokens[mask] = gen_tokens
    brand_idx = np.minimum(rng.zipf(1.3, size=products) - 1, len(brands) - 1)
    titles = pc.binary_join_element_wise(brands.take(pa.array(brand_idx)), join(title_tokens, title_lengths), " ")
    desc_lengths = rng.integers(20, 80, size=products)
    descriptions = pc.binary_join_element_wise("<p>", join(zipf(int(desc_lengths.sum())), desc_lengths), "</p>", "")
    descriptions = pc.if_else(pa.array(rng.random(products) < 0.4), pa.nulls(products, pa.string()), descriptions)
    bullet_lengths = rng.integers(10, 30, size=products)
    bullets = join(zipf(int(bullet_lengths.sum())), bullet_lengths)
    product_ids = pa.array([f"B0{i:08X}" for i in rng.permutation(products)])
    product_table = pa.table(
        {
            "product_id": product_ids,
            "product_title": titles,
            "product_description": descriptions,
            "product_bullet_point": bullets,
            "product_brand": brands.take(pa.array(brand_idx)),
            "product_color": colours.take(pa.array(rng.integers(0, len(colours), size=products))),
            "product_locale": pa.array(["us"] * products),
        }
    )

    # Queries: 2-4 of a category's words; pools of 20 with 3-10 Exact products of that category.
    n_queries = max(judgements // POOL, 1)
    by_category = np.argsort(category, kind="stable")
    cat_start = np.searchsorted(category[by_category], np.arange(n_categories))
    cat_end = np.searchsorted(category[by_category], np.arange(n_categories), side="right")
    populated = np.flatnonzero(cat_end - cat_start >= 15)
    rows = {name: [] for name in ("query", "query_id", "product_id", "esci_label")}
    vocab_list = words.to_pylist()
    for q in range(n_queries):
        c = int(rng.choice(populated))
        members = by_category[cat_start[c] : cat_end[c]]
        n_exact = int(rng.integers(3, 11))
        same = rng.choice(members, size=min(n_exact + 5, len(members)), replace=False)
        others = rng.choice(products, size=2 * POOL, replace=False)
        others = others[~np.isin(others, same)][: POOL - len(same)]
        pool = np.concatenate([same, others])
        labels = ["E"] * n_exact + ["S"] * (len(same) - n_exact) + ["C"] * 3 + ["I"] * (POOL - len(same) - 3)
        text = " ".join(vocab_list[w] for w in rng.choice(category_words[c], size=int(rng.integers(2, 5)), replace=False))
        rows["query"] += [text] * len(pool)
        rows["query_id"] += [q] * len(pool)
        rows["product_id"] += product_ids.take(pa.array(pool)).to_pylist()
        rows["esci_label"] += labels[: len(pool)]
    n_rows = len(rows["query_id"])
    query_ids = np.asarray(rows["query_id"])
    test = rng.random(n_queries) < 0.3
    example_table = pa.table(
        {
            "example_id": pa.array(np.arange(n_rows, dtype=np.int64)),
            "query": pa.array(rows["query"]),
            "query_id": pa.array(query_ids.astype(np.int64)),
            "product_id": pa.array(rows["product_id"]),
            "product_locale": pa.array(["us"] * n_rows),
            "esci_label": pa.array(rows["esci_label"]),
            "small_version": pa.array(np.ones(n_rows, dtype=np.int64)),
            "large_version": pa.array(np.ones(n_rows, dtype=np.int64)),
            "split": pa.array(np.where(test[query_ids], "test", "train").tolist()),
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(product_table, folder / PRODUCTS_FILE)
    pq.write_table(example_table, folder / EXAMPLES_FILE)
    summary = {
        "products": products,
        "judgements": n_rows,
        "queries": n_queries,
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 1),
        "bytes": {p.name: p.stat().st_size for p in (folder / PRODUCTS_FILE, folder / EXAMPLES_FILE)},
    }
    (folder / "generated.json").write_text(json.dumps(summary, indent=1))
    return summary


# --------------------------------------------------------------------------------------------------------
# Phases (each runs in its own process)
# --------------------------------------------------------------------------------------------------------


def phase_load(args: argparse.Namespace) -> dict:
    from ospo_gym.data.esci import load_esci

    started = time.perf_counter()
    data = load_esci(args.data_dir, cache_dir=args.cache_dir)
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "cached": data.info["cached"],
        "products": len(data.product_ids),
        "queries": len(data.query_ids),
        "judgements": len(data.pool_docs),
        "peak_rss_mb": peak_rss_mb(),
    }


def phase_index(args: argparse.Namespace) -> dict:
    """Time the BM25 index (built, or loaded from the index cache) and digest the rewards of fixed texts."""
    import hashlib

    from ospo_gym.data.esci import load_esci
    from ospo_gym.envs.esci import BM25_LOCALE_DEFAULTS
    from ospo_gym.retrieval import make_retriever, pooled_ndcg

    data = load_esci(args.data_dir, cache_dir=args.cache_dir)
    rss_before = peak_rss_mb()
    started = time.perf_counter()
    retriever = make_retriever(
        "bm25", data.texts, full_scoring_options(args), BM25_LOCALE_DEFAULTS["us"], index_cache=args.cache_dir
    )
    seconds = time.perf_counter() - started
    rss = peak_rss_mb()
    rows = np.arange(min(200, len(data.queries)))
    starts, ends = data.pool_offsets[rows], data.pool_offsets[rows + 1]
    pools = [data.pool_docs[s:e] for s, e in zip(starts, ends, strict=True)]
    gains = [(data.pool_labels[s:e] == 0).astype(np.float64) for s, e in zip(starts, ends, strict=True)]
    # The queries, and the queries plus the first words of a judged product's text (longer, multi-term texts).
    texts = [data.queries[r] for r in rows] + [
        data.queries[r] + " " + " ".join(data.texts[int(p[0])].split()[:8]) for r, p in zip(rows, pools, strict=True)
    ]
    rewards = pooled_ndcg(retriever, texts, pools + pools, gains + gains, k=10, cutoff=1000)
    entries = list(Path(args.cache_dir).glob("bm25-*/arrays.npz"))
    return {
        "seconds": round(seconds, 2),
        "cached": retriever.index_info["cached"],
        "entry_mb": round(sum(p.stat().st_size for p in entries) / 2**20, 1),
        "vocab_size": retriever.vocab_size,
        "peak_rss_mb_before": rss_before,
        "peak_rss_mb": rss,
        "rewards_sha256": hashlib.sha256(rewards.tobytes()).hexdigest(),
        "mean_reward": round(float(rewards.mean()), 4),
    }


def full_scoring_options(args: argparse.Namespace) -> dict:
    return {} if args.full_scoring_below is None else {"full_scoring_below": args.full_scoring_below}


def make_batches(env, rng: np.random.Generator, args: argparse.Namespace) -> list[tuple]:
    """Completions: a train query plus words of its Exact products' titles (a good rewrite), with coalitions."""
    from ospo_gym.credit import sample_coalitions

    data = env.data
    title_words = {}
    batches = []
    for repeat in range(args.repeats + args.reference_batches + 1):
        prompt_ids, texts = [], []
        for _ in range(args.batch):
            pid = env.prompt_ids[int(rng.integers(len(env.prompt_ids)))]
            words = env.judged.queries[pid].split()
            pool, gains = env.judged.pools[pid], env.judged.gains[pid]
            # Title words of the Exact products first, then of the other judged products.
            ranked = np.concatenate([rng.permutation(pool[gains >= 1.0]), rng.permutation(pool[gains < 1.0])])
            for doc in ranked.tolist():
                if doc not in title_words:
                    title_words[doc] = data.texts[doc].split()[:12]
                words = list(dict.fromkeys(words + title_words[doc][:4]))
                if len(words) >= args.words:
                    break
            words = words[: args.words]
            prompt_ids.append(pid)
            texts.append(" ".join(words))
        spans = [env.oracle.segment(t) for t in texts]
        coalitions = [
            sample_coalitions(len(s), args.w_max, args.max_coalitions, rng=repeat * 1000 + i) for i, s in enumerate(spans)
        ]
        batches.append((prompt_ids, texts, spans, coalitions))
    return batches


def phase_oracle(args: argparse.Namespace) -> dict:
    import gymnasium as gym

    import ospo_gym  # noqa: F401
    from ospo_gym.envs.esci import BM25_LOCALE_DEFAULTS
    from ospo_gym.retrieval import BM25Retriever, make_retriever

    built = {}

    def timed_index(docs: list[str]):
        t0 = time.perf_counter()
        built["retriever"] = make_retriever(
            "bm25", docs, full_scoring_options(args), BM25_LOCALE_DEFAULTS["us"], index_cache=args.cache_dir
        )
        built["seconds"] = time.perf_counter() - t0
        built["rss"] = peak_rss_mb()
        return built["retriever"]

    started = time.perf_counter()
    env = gym.make(
        "ospo/ESCI-v0", data_dir=args.data_dir, cache_dir=args.cache_dir, retriever=timed_index,
        segmentation=args.segmentation,
    ).unwrapped  # fmt: skip
    env_seconds = time.perf_counter() - started
    retriever = built["retriever"]
    rng = np.random.default_rng(args.seed)
    batches = make_batches(env, rng, args)
    oracle = env.oracle
    oracle.values_batch(*batches[0])  # warm-up: first calls fill the per-term caches
    values = 0
    scored_before = oracle.num_scored
    ties_before = retriever.num_tie_rows
    elapsed = 0.0
    timed = batches[1 : args.repeats + 1]
    results = []
    for batch in timed:
        t0 = time.perf_counter()
        out = oracle.values_batch(*batch)
        elapsed += time.perf_counter() - t0
        values += sum(len(v) for v in out)
        results.append(out)
    scored = oracle.num_scored - scored_before
    mean_reward = float(np.mean([v[-1] for out in results for v in out]))

    # Reference: the same batches through full catalog scoring (BM25Retriever.pool_frontier).
    reference = {}
    if args.reference_batches:
        env.retriever.pool_frontier = lambda texts, ids, cutoff: BM25Retriever.pool_frontier(retriever, texts, ids, cutoff)
        ref_elapsed, ref_values, diffs = 0.0, 0, []
        for batch, fast in zip(timed[: args.reference_batches], results, strict=False):
            t0 = time.perf_counter()
            out = oracle.values_batch(*batch)
            ref_elapsed += time.perf_counter() - t0
            ref_values += sum(len(v) for v in out)
            diffs += [float(np.abs(a - b).max()) for a, b in zip(out, fast, strict=True)]
        reference = {
            "batches": args.reference_batches,
            "values_per_second": round(ref_values / ref_elapsed, 1),
            "max_abs_difference": max(diffs),
            "speedup": round((values / elapsed) / (ref_values / ref_elapsed), 1),
        }
    return {
        "env_build_seconds": round(env_seconds, 1),
        "bm25_index_seconds": round(built["seconds"], 1),
        "bm25_index_cached": retriever.index_info["cached"],
        "peak_rss_mb_after_index": built["rss"],
        "train_queries": len(env.prompt_ids),
        "vocab_size": retriever.vocab_size,
        "coalitions_per_completion": round(values / (len(timed) * args.batch), 1),
        "coalition_values_per_second": round(values / elapsed, 1),
        "distinct_texts_scored_per_second": round(scored / elapsed, 1),
        "seconds_per_batch": round(elapsed / len(timed), 4),
        "rows_with_threshold_ties": retriever.num_tie_rows - ties_before,
        "mean_full_completion_reward": round(mean_reward, 4),
        "reference_full_scoring": reference,
        "peak_rss_mb": peak_rss_mb(),
    }


def run_phase(name: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--phase", name, *forward(args)]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"phase {name} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def forward(args: argparse.Namespace) -> list[str]:
    keys = ("products", "judgements", "seed", "batch", "words", "w_max", "max_coalitions", "repeats",
            "reference_batches", "segmentation", "data_dir", "cache_dir", "full_scoring_below")  # fmt: skip
    out = []
    for key in keys:
        if getattr(args, key) is not None:
            out += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--judgements", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=8, help="completions per oracle call")
    parser.add_argument("--words", type=int, default=16, help="words per completion")
    parser.add_argument("--w-max", type=int, default=8)
    parser.add_argument("--max-coalitions", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=10, help="timed batches")
    parser.add_argument("--reference-batches", type=int, default=1, help="batches also run with full scoring")
    parser.add_argument("--segmentation", default="word", choices=["word", "phrase", "sentence"])
    parser.add_argument(
        "--full-scoring-below", type=int, default=None, help="TopListBM25Retriever's switch (default: its own)"
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="generated files (default ~/.cache/ospo-gym/benchmarks/...)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="processed cache (default <data-dir>/cache)")
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "real_data_scale.json")
    parser.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.data_dir is None:
        args.data_dir = default_data_root() / f"real_data_scale_{args.products}_{args.judgements}_{args.seed}"
    if args.cache_dir is None:
        args.cache_dir = args.data_dir / "cache"
    if args.phase is not None:
        phase = {"load": phase_load, "index": phase_index, "oracle": phase_oracle}[args.phase]
        print(json.dumps(phase(args)))
        return

    summary_path = args.data_dir / "generated.json"
    if args.regenerate or not summary_path.exists():
        print(f"generating {args.products:,} products / {args.judgements:,} judgements in {args.data_dir} ...", flush=True)
        generated = generate(args.data_dir, args.products, args.judgements, args.seed)
    else:
        generated = json.loads(summary_path.read_text())
    shutil.rmtree(args.cache_dir, ignore_errors=True)
    load_before = os.getloadavg()
    print("load (cold) ...", flush=True)
    cold = run_phase("load", args)
    print("load (cached) ...", flush=True)
    cached = run_phase("load", args)
    print("BM25 index (built, then from the index cache) ...", flush=True)
    build = run_phase("index", args)
    cached_index = run_phase("index", args)
    if build["cached"] or not cached_index["cached"]:
        raise SystemExit(f"index cache not used as expected: build {build}, cached {cached_index}")
    index = {
        "build": build,
        "cached": cached_index,
        "speedup": round(build["seconds"] / max(cached_index["seconds"], 1e-9), 1),
        "rewards_identical": build["rewards_sha256"] == cached_index["rewards_sha256"],
    }
    print("env + oracle throughput ...", flush=True)
    oracle = run_phase("oracle", args)
    result = {
        "benchmark": "real_data_scale",
        "command": "python benchmarks/real_data_scale.py " + " ".join(
            f"--{k.replace('_', '-')} {getattr(args, k)}"
            for k in ("products", "judgements", "batch", "words", "w_max", "max_coalitions", "repeats", "segmentation")
        ),
        "generated": generated,
        "load_cold": cold,
        "load_cached": cached,
        "bm25_index": index,
        "index_and_oracle": oracle,
        "target_values_per_second": TARGET_VALUES_PER_SECOND,
        "met": oracle["coalition_values_per_second"] >= TARGET_VALUES_PER_SECOND,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "platform": platform.platform(),
            # 1-minute load average at the start and the end: above ~1 another job shared the CPUs.
            "load_average_1min": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
