"""Do contiguous coalitions miss long-range interactions, and do complements or a priori unions recover them?

On ``ospo/LongRange-v0`` (14 words: a synergy pair and an AND-pair whose members sit ``gap`` filler words apart,
the rest fillers) it draws completions — the intended answer with some fillers swapped for distractors or unknown
words, written as sentences of four words so that sentence unions exist — computes exact Shapley values by
enumerating all 2**14 coalitions through the env's oracle, and compares the estimate of each coalition structure
(``sample_coalitions(..., coalition_structure=...)`` + ``structured_credit``) for every gap, budget M and w_max:
Spearman rank correlation and normalised L1 (``Σ|φ̂ − φ| / Σ|φ|``) over all words, normalised L1 over the four
pair members alone, and the oracle calls (distinct coalitions evaluated). Structures: ``windows`` (the paper),
``random`` (its ablation), ``windows+complements``, ``owen-lexical`` (unions of words sharing character trigrams:
partners share a stem), ``owen-sentences`` (unions = the four-word sentences, unrelated to the pairs), ``owen-embedding`` (average-linkage
clusters of the words' all-MiniLM-L6-v2 embeddings at cosine >= 0.5, ``ospo_gym.credit.embedding``). A control
re-runs ``gap=5`` with ``related=False`` (partners share no stem, so lexical unions cannot find them).

    nice -n 19 python benchmarks/long_range_accuracy.py   # writes benchmarks/results/long_range/*.{json,md}
"""

from __future__ import annotations

import argparse
import json
import time
from itertools import product
from pathlib import Path

import numpy as np
from _common import credit_accuracy

from ospo_gym.credit import sample_coalitions, segment_unions, shapley_exact, structured_credit
from ospo_gym.envs.long_range import LongRangeEnv

GAPS = (0, 1, 2, 3, 5)
M_VALUES = (16, 32, 64, 128)
W_VALUES = (4, 8)
STRUCTURES = ("windows", "random", "windows+complements", "owen-lexical", "owen-sentences", "owen-embedding")
UNION_SOURCES = {"owen-lexical": "lexical", "owen-sentences": "sentences", "owen-embedding": "embedding"}
LENGTH = 14
RESULTS = Path(__file__).parent / "results" / "long_range"


def completions(env: LongRangeEnv, rng: np.random.Generator, count: int) -> list[tuple[int, str, list[int]]]:
    """(prompt id, text, positions of the pair members): the intended answer, each filler swapped with
    probability 1/4 for a distractor or a word of no weight, a period after every fourth word."""
    out = []
    for _ in range(count):
        p = int(rng.integers(len(env.prompt_ids)))
        members = {int(w) for w in env.pairs[p].ravel()}
        used = {w // 2 for w in np.flatnonzero(env.weights[p] != 0)} | {w // 2 for w in members}
        distractors = np.flatnonzero(env.weights[p] < 0)
        # words of no weight from families the prompt does not use (a sibling would be a spurious lexical match)
        unused = np.array([w for w in range(len(env.vocabulary)) if w // 2 not in used])
        words = []
        for w in env.answers[p]:
            if w not in members and rng.random() < 0.25:
                w = int(rng.choice(distractors if len(distractors) and rng.random() < 0.5 else unused))
            words.append(env.vocabulary[w])
        text = " ".join(word + ("." if (i + 1) % 4 == 0 else "") for i, word in enumerate(words))
        out.append((p, text, [i for i, w in enumerate(env.answers[p]) if w in members]))
    return out


def evaluate(env: LongRangeEnv, texts, *, seeds: int) -> tuple[list[dict], dict[str, dict]]:
    """Accuracy rows (one per structure, M, w_max) and, per union source, how its unions relate to the pairs:
    the fraction of pairs whose two members share a union, and the mean number of other word pairs joined."""
    oracle = env.oracle
    rows: dict[tuple, list[tuple[float, float, float, int]]] = {}
    quality: dict[str, list[tuple[float, float]]] = {}
    for prompt_id, text, members in texts:
        spans = oracle.segment(text)
        n = len(spans)
        masks = np.arange(1 << n)
        every = [tuple(np.flatnonzero((m >> np.arange(n)) & 1).tolist()) for m in masks]
        table = oracle.values(prompt_id, text, spans, every)  # the oracle's value of every coalition, by bitmask
        exact = shapley_exact(lambda cs, t=table: np.array([t[sum(1 << i for i in c)] for c in cs]), n)
        unions = {name: segment_unions(text, spans, source) for name, source in UNION_SOURCES.items()}
        position = {w: i for i, w in enumerate(env.answers[prompt_id])}  # completions keep the answer's positions
        pairs = [(position[int(a)], position[int(b)]) for a, b in env.pairs[prompt_id]]
        for name, labels in unions.items():
            same = labels[:, None] == labels[None, :]
            joined = np.mean([same[a, b] for a, b in pairs])
            spurious = (np.triu(same, 1).sum() - sum(same[a, b] for a, b in pairs))
            quality.setdefault(name, []).append((float(joined), float(spurious)))
        for structure, m, w, seed in product(STRUCTURES, M_VALUES, W_VALUES, range(seeds)):
            base = "owen" if structure.startswith("owen") else structure
            labels = unions.get(structure)
            coalitions = sample_coalitions(n, w, m, rng=seed, coalition_structure=base, unions=labels)
            values = table[[sum(1 << i for i in c) for c in coalitions]]
            estimate = structured_credit(coalitions, values, n, base, unions=labels)
            rho, l1 = credit_accuracy(estimate, exact)
            pair_l1 = float(np.abs(estimate - exact)[members].sum() / np.abs(exact[members]).sum())
            rows.setdefault((structure, m, w), []).append((rho, l1, pair_l1, len(coalitions)))
    out = []
    for (structure, m, w), scores in sorted(rows.items()):
        arr = np.array(scores)
        out.append(
            {
                "structure": structure,
                "M": m,
                "w_max": w,
                "spearman": float(arr[:, 0].mean()),
                "spearman_std": float(arr[:, 0].std()),
                "l1": float(arr[:, 1].mean()),
                "pair_l1": float(arr[:, 2].mean()),
                "oracle_calls": float(arr[:, 3].mean()),
                "n": len(arr),
            }
        )
    union_quality = {
        name: {"pairs_joined": float(np.mean([q[0] for q in qs])), "other_pairs_joined": float(np.mean([q[1] for q in qs]))}
        for name, qs in quality.items()
    }
    return out, union_quality


def _table(title: str, columns: dict[str, list[dict]], m_of: dict[str, int], w: int) -> str:
    """A Markdown table, one row per structure: per column (its label → its rows, at budget ``m_of[label]``)
    Spearman / normalised L1 / pair-member L1 (oracle calls)."""
    lines = [
        f"### {title}: Spearman / normalised L1 / pair-member L1 (oracle calls)",
        "",
        "| structure | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for structure in STRUCTURES:
        cells = []
        for label, rows in columns.items():
            r = next(r for r in rows if (r["structure"], r["M"], r["w_max"]) == (structure, m_of[label], w))
            cells.append(f"{r['spearman']:.2f} / {r['l1']:.2f} / {r['pair_l1']:.2f} ({r['oracle_calls']:.0f})")
        lines.append(f"| {structure} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_by_gap(results: dict[int, list[dict]], m: int, w: int) -> str:
    columns = {f"k={g}": rows for g, rows in results.items()}
    return _table(f"Against the gap k, M={m}, w_max={w}", columns, dict.fromkeys(columns, m), w)


def table_by_budget(rows: list[dict], title: str, w: int) -> str:
    columns = {f"M={m}": rows for m in M_VALUES}
    return _table(f"{title}, w_max={w}, against the budget M", columns, {f"M={m}": m for m in M_VALUES}, w)


def union_table(quality: dict[str, dict[str, dict]]) -> str:
    """Per union source and env: fraction of the two pairs whose members share a union / other word pairs joined."""
    columns = list(quality)
    lines = [
        "### The a priori unions: pairs whose partners share a union / other word pairs joined (of 91)",
        "",
        "| unions | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name in UNION_SOURCES:
        cells = [f"{quality[c][name]['pairs_joined']:.2f} / {quality[c][name]['other_pairs_joined']:.1f}" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=8, help="completions per gap")
    parser.add_argument("--seeds", type=int, default=2, help="coalition-sampling seeds per completion")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = time.perf_counter()
    results: dict[int, list[dict]] = {}
    quality: dict[str, dict[str, dict]] = {}
    for gap in GAPS:
        env = LongRangeEnv(num_prompts=8, length=LENGTH, gap=gap, seed=gap)
        results[gap], quality[f"k={gap}"] = evaluate(
            env, completions(env, np.random.default_rng(gap), args.texts), seeds=args.seeds
        )
        print(f"gap {gap}: {time.perf_counter() - started:.0f} s", flush=True)
    control_env = LongRangeEnv(num_prompts=8, length=LENGTH, gap=5, seed=5, related=False)
    control, quality["k=5, unrelated"] = evaluate(
        control_env, completions(control_env, np.random.default_rng(5), args.texts), seeds=args.seeds
    )
    summary = {
        "command": "python benchmarks/long_range_accuracy.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"
        ),
        "seconds": round(time.perf_counter() - started, 1),
        "env": {"id": "ospo/LongRange-v0", "length": LENGTH, "num_synergy_pairs": 1, "num_and_pairs": 1, "num_prompts": 8},
        "by_gap": {str(g): rows for g, rows in results.items()},
        "control_gap5_unrelated": control,
        "union_quality": quality,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "long_range_accuracy.json").write_text(json.dumps(summary, indent=1))
    md = [
        f"Command: `{summary['command']}` ({summary['seconds']} s). Env: `ospo/LongRange-v0`, length {LENGTH}, one "
        "synergy pair and one AND-pair, partners k words apart; each cell is the mean over "
        f"{args.texts} completions x {args.seeds} sampling seeds.\n",
        table_by_gap(results, 64, 4),
        table_by_gap(results, 64, 8),
        table_by_budget(results[max(GAPS)], f"k={max(GAPS)}, partners related (shared stem)", 4),
        table_by_budget(control, f"k={max(GAPS)}, control: partners unrelated (related=False)", 4),
        union_table(quality),
    ]
    (args.out / "long_range_accuracy.md").write_text("\n".join(md))
    print(f"done in {summary['seconds']} s")


if __name__ == "__main__":
    main()
