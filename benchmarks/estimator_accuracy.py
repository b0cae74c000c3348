"""How close is the Owen–Shapley estimate to exact Shapley values on tasks with interactions?

For the retrieval task (BM25 + pooled NDCG over a generated ESCI-schema catalog, words as players) and the
interaction task (phrase synergy and distractors, phrases as players), it draws completions, computes exact
Shapley values by enumerating all 2**n coalitions through the env's oracle, and compares the estimate from
sampled coalitions for every M, w_max, contiguous / non-contiguous and credit variant: Spearman rank correlation and
normalised L1 (``Σ|φ̂ − φ| / Σ|φ|``; the released variant, defined only up to scale, is rescaled to exact
efficiency first). Coalitions: contiguous windows (the paper), random subsets (the paper's non-contiguous
ablation), and contiguous windows plus their complements (``sample_coalitions(..., complements=True)``).

    python benchmarks/estimator_accuracy.py            # writes benchmarks/results/estimator_accuracy.{json,md}
"""

from __future__ import annotations

import argparse
import json
import time
from itertools import product
from pathlib import Path

import gymnasium as gym
import numpy as np
from _common import credit_accuracy

import ospo_gym  # noqa: F401  (registers the env ids)
from ospo_gym.credit import CREDIT_VARIANTS, sample_coalitions, segment_credit, shapley_exact

M_VALUES = (8, 16, 32, 64, 96)
KINDS = ("contiguous", "non-contiguous", "contiguous+complements")
W_VALUES = (1, 2, 4, 8)
RESULTS = Path(__file__).parent / "results"


def retrieval_completions(env, rng: np.random.Generator, count: int, min_words: int, max_words: int):
    """Enriched queries: the shopper's query words, catalog words, and a few off-topic words, shuffled."""
    vocab = np.array(env.vocabulary)
    out = []
    for _ in range(count):
        prompt_id = env.prompt_ids[int(rng.integers(len(env.prompt_ids)))]
        query = env.judged.queries[prompt_id].split()
        n = int(rng.integers(min_words, max_words + 1))
        extra = list(rng.choice(vocab, size=max(n - len(query), 0), replace=False))
        words = (query + extra)[:n]
        order = rng.permutation(len(words)) if rng.random() < 0.5 else np.arange(len(words))
        out.append((prompt_id, " ".join(words[i] for i in order)))
    return out


def interaction_completions(env, rng: np.random.Generator, count: int, min_phrases: int, max_phrases: int):
    """Target phrases (synergy pairs kept adjacent half the time), distractors and random phrases, comma-separated."""
    out = []
    for _ in range(count):
        prompt_id = env.prompt_ids[int(rng.integers(len(env.prompt_ids)))]
        listed = env.prompt(prompt_id).removeprefix("describe: ")
        targets, avoided = (part.split(", ") for part in listed.split(" | avoid: "))
        n = int(rng.integers(min_phrases, max_phrases + 1))
        others = [" ".join(p) for p in env.phrases]
        pool = targets + avoided + list(rng.choice(others, size=n, replace=False))
        phrases = pool[:n] if rng.random() < 0.5 else list(rng.permutation(pool)[:n])
        out.append((prompt_id, ", ".join(phrases)))
    return out


def evaluate(env, completions, *, seeds: int) -> list[dict]:
    oracle = env.oracle
    rows: dict[tuple, list[tuple[float, float]]] = {}
    for prompt_id, text in completions:
        spans = oracle.segment(text)
        n = len(spans)
        if n < 2:
            continue
        exact = shapley_exact(lambda cs, p=prompt_id, t=text, s=spans: oracle.values(p, t, s, cs), n)
        table = {}
        for m, w, kind, seed in product(M_VALUES, W_VALUES, KINDS, range(seeds)):
            coalitions = sample_coalitions(
                n, w, m, rng=seed, contiguous=kind != "non-contiguous", complements=kind == "contiguous+complements"
            )
            key = tuple(coalitions)
            if key not in table:
                table[key] = oracle.values(prompt_id, text, spans, coalitions)
            for variant in CREDIT_VARIANTS:
                estimate = segment_credit(coalitions, table[key], n, variant=variant)
                if variant == "released" and abs(estimate.sum()) > 1e-12:  # released is only defined up to scale
                    estimate = estimate * exact.sum() / estimate.sum()
                rows.setdefault((m, w, kind, variant), []).append(credit_accuracy(estimate, exact))
    out = []
    for (m, w, kind, variant), scores in sorted(rows.items()):
        arr = np.array(scores)
        out.append(
            {
                "M": m,
                "w_max": w,
                "coalitions": kind,
                "credit_variant": variant,
                "spearman": float(arr[:, 0].mean()),
                "spearman_std": float(arr[:, 0].std()),
                "l1": float(arr[:, 1].mean()),
                "n": len(arr),
            }
        )
    return out


def markdown(task: str, rows: list[dict], variant: str = "owen") -> str:
    lines = [f"### {task}, credit variant `{variant}`: Spearman / normalised L1 against exact Shapley", ""]
    lines += ["| coalitions | M | " + " | ".join(f"w_max={w}" for w in W_VALUES) + " |"]
    lines += ["|---|---|" + "---|" * len(W_VALUES)]
    index = {(r["M"], r["w_max"], r["coalitions"]): r for r in rows if r["credit_variant"] == variant}
    for kind in KINDS:
        for m in M_VALUES:
            cells = [f"{index[(m, w, kind)]['spearman']:.2f} / {index[(m, w, kind)]['l1']:.2f}" for w in W_VALUES]
            lines.append(f"| {kind} | {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def variant_summary(tasks: dict[str, list[dict]]) -> str:
    lines = ["### All credit variants at M=96, w_max=8: Spearman / normalised L1", ""]
    lines += ["| task | coalitions | " + " | ".join(CREDIT_VARIANTS) + " |", "|---|---|" + "---|" * len(CREDIT_VARIANTS)]
    for task, rows in tasks.items():
        index = {(r["coalitions"], r["credit_variant"]): r for r in rows if (r["M"], r["w_max"]) == (96, 8)}
        for kind in KINDS:
            cells = [f"{index[(kind, e)]['spearman']:.2f} / {index[(kind, e)]['l1']:.2f}" for e in CREDIT_VARIANTS]
            lines.append(f"| {task} | {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=24, help="completions per task")
    parser.add_argument("--seeds", type=int, default=3, help="coalition-sampling seeds per completion")
    parser.add_argument("--max-players", type=int, default=14, help="longest completion (exact needs 2**n calls)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not 2 <= args.max_players <= 20:
        parser.error(f"--max-players must be in 2..20 (exact Shapley needs 2**n oracle calls), got {args.max_players}")
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    retrieval = gym.make("ospo/SyntheticRetrieval-v0").unwrapped
    interaction = gym.make("ospo/Interaction-v0").unwrapped
    tasks = {
        "retrieval": evaluate(retrieval, retrieval_completions(retrieval, rng, args.texts, min(8, args.max_players), args.max_players), seeds=args.seeds),
        "interaction": evaluate(
            interaction, interaction_completions(interaction, rng, args.texts, min(6, args.max_players), min(args.max_players, 12)), seeds=args.seeds
        ),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    at_target = {
        r["coalitions"]: r["spearman"]
        for r in tasks["retrieval"]
        if (r["M"], r["w_max"], r["credit_variant"]) == (96, 8, "owen")
    }
    summary = {
        "command": "python benchmarks/estimator_accuracy.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"
        ),
        "seconds": round(time.perf_counter() - started, 1),
        "target": {
            "spearman_at_M96_w8_retrieval_owen": at_target,
            "goal": 0.9,
            "met_by": [kind for kind, rho in at_target.items() if rho >= 0.9],
        },
        "tasks": tasks,
    }
    (args.out / "estimator_accuracy.json").write_text(json.dumps(summary, indent=1))
    md = [f"Command: `{summary['command']}` ({summary['seconds']} s)\n", variant_summary(tasks)]
    for task, rows in tasks.items():
        md.append(markdown(task, rows, "owen"))
    contiguous = at_target["contiguous"]
    md.append(
        "### Reading\n\n"
        f"Target: Spearman >= 0.9 at M=96, w_max=8 on the retrieval task. The paper's contiguous windows reach "
        f"{contiguous:.3f} ({'met' if contiguous >= 0.9 else f'{0.9 - contiguous:.3f} short'}); windows plus their "
        f"complements reach {at_target['contiguous+complements']:.3f}; random subsets (non-contiguous) "
        f"{at_target['non-contiguous']:.3f}.\n\n"
        "Why contiguous windows fall short on retrieval: a window of at most w_max words only observes a word's "
        "marginal in *small* coalitions, while exact Shapley averages it over every coalition size. BM25 + pooled "
        "NDCG saturates: once the shopper's words are in the query, a further matching word adds little, and an "
        "off-topic word that hurts a short query is harmless in a long one. Small-coalition marginals therefore "
        "over-rate redundant words and mis-rank the many near-zero words (whose exact values differ by tiny "
        "amounts, so Spearman among them is nearly noise). Pooling the complements N \\ W adds the large-coalition "
        "end (N \\ {i} -> N), which is what lifts the agreement. The interaction task, whose interactions are local "
        "(adjacent synergy), is where contiguity pays: contiguous windows beat random subsets there, as in the "
        "paper's ablation.\n"
    )
    (args.out / "estimator_accuracy.md").write_text("\n".join(md))
    print(json.dumps(summary["target"]))


if __name__ == "__main__":
    main()
