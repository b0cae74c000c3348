"""How well does each multi-turn estimator's per-turn credit rank the turns of an episode, against exact turn credit?

On ``ospo/ConvSearch-v0`` with ``exact_credit=True`` it plays episodes with a seeded scripted shopper-facing policy
(no language model: questions about a random attribute, generic questions, searches with what the shopper said,
searches with distractor words, random searches; groups of G episodes per prompt), computes the exact Shapley
value of every turn by replaying all ``2**T`` turn coalitions through the env's turn oracle, and compares the
per-turn credit of:

* ``ospo_turn``: the two-level Owen credit summed per turn (every subset of the other turns is pooled up to 7 turns,
  so at this size its turn sums are exact by construction: a check, not a finding);
* ``ospo_turn (sampled outer)``: the same with outer sets sampled (∅, all, one random subset per size), the
  regime of long episodes;
* ``turn_grpo``: the MT-GRPO-style per-turn advantage ``Â_turn + λ Â_outcome`` (last turn ``Â_outcome``);
* ``turn reward``: the turn's own step reward;
* ``trajectory_grpo``: ``Â`` on every turn (constant: no ranking, Spearman counted 0, top-1 at chance).

Metrics per episode (episodes with at least two turns whose exact credit is not constant): Spearman rank
correlation with the exact turn Shapley values (0 when an estimate is constant), and top-1 agreement (the share
of the estimate's top-credited turns that have the largest exact credit). Within turns, the segment credit of
``ospo_turn`` is compared with the exact two-level Owen values (episodes of at most 12 segments).

    python benchmarks/conv_credit_accuracy.py     # writes benchmarks/results/conv_credit_accuracy.{json,md}
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from scipy.stats import spearmanr

import ospo_gym  # noqa: F401  (registers the env ids)
from ospo_gym.agents import AgentConfig, MultiTurnRolloutBatch
from ospo_gym.agents.estimators import group_advantages
from ospo_gym.agents.turn_estimators import ospo_turn_credit, turn_grpo_advantages
from ospo_gym.credit.owen import two_level_coalitions, two_level_credit, union_sums

RESULTS = Path(__file__).parent / "results"
SETTINGS = {
    "shaped": {"reveal_reward": 0.1, "turn_cost": 0.02, "shopper_noise": 0.2},
    "ndcg only": {"reveal_reward": 0.0, "turn_cost": 0.0, "shopper_noise": 0.2},
}
METHODS = ("ospo_turn", "ospo_turn (sampled outer)", "turn_grpo", "turn reward", "trajectory_grpo")
MAX_EXACT_SEGMENTS = 12
_SAID = re.compile(r"(?:is|are|by|of) ([\w-]+)\.")


def word_offsets(text: str) -> np.ndarray:
    """The benchmark's tokens: one per word (leading space included) and an EOS with an empty span."""
    spans = [(m.start(), m.end()) for m in re.finditer(r"\s*\S+", text)]
    return np.asarray(spans + [(len(text), len(text))], dtype=np.int64).reshape(-1, 2)


def scripted_turn(env, transcript: str, rng: np.random.Generator, words: np.ndarray) -> str:
    """One turn of the scripted policy: it reads the attribute values the shopper said in ``transcript``."""
    ptype = transcript.splitlines()[0].removeprefix("shopper: I'm looking for ").rstrip(".")
    said = _SAID.findall(transcript)
    roll = rng.random()
    if roll < 0.25:
        return f"ask: which {rng.choice(env.task.attributes)}?"
    if roll < 0.35:
        return "anything else?"
    if roll < 0.7:
        return " ".join([*said, ptype])
    if roll < 0.9:
        return " ".join([*said, str(rng.choice(words)), ptype])
    return " ".join(rng.choice(words, size=2))


def play_group(env, prompt_id: int, size: int, rng: np.random.Generator, words: np.ndarray):
    """``size`` episodes of one prompt: (turns, step rewards, return) each."""
    out = []
    for _ in range(size):
        transcript, _ = env.reset(options={"prompt_id": prompt_id})
        rewards = []
        while True:
            transcript, reward, terminated, _, info = env.step(scripted_turn(env, transcript, rng, words))
            rewards.append(reward)
            if terminated:
                break
        out.append((info["turns"], np.array(rewards), info["return"]))
    return out


def spearman(estimate: np.ndarray, exact: np.ndarray) -> float:
    # rounded first: equal credit computed along different float paths must tie, as it does exactly
    estimate, exact = np.round(estimate, 9), np.round(exact, 9)
    if np.ptp(estimate) == 0:
        return 0.0
    return float(spearmanr(estimate, exact).statistic)


def top1(estimate: np.ndarray, exact: np.ndarray) -> float:
    estimate, exact = np.round(estimate, 9), np.round(exact, 9)
    return float(np.mean(exact[estimate == estimate.max()] == exact.max()))


def run_setting(name: str, args: argparse.Namespace) -> dict:
    env = gym.make(
        "ospo/ConvSearch-v0", exact_credit=True, max_turns=args.turns, num_targets=args.prompts, seed=args.seed, **SETTINGS[name]
    ).unwrapped
    words = np.array(sorted({w for text in env.task.texts[:300] for w in text.lower().split() if w.isalpha()}))
    rng = np.random.default_rng(args.seed)
    episodes, groups = [], []
    for g, prompt_id in enumerate(env.prompt_ids):
        for episode in play_group(env, prompt_id, args.group_size, rng, words):
            episodes.append((prompt_id, *episode))
            groups.append(g)
    batch = MultiTurnRolloutBatch.from_turns(
        [e[0] for e in episodes], groups, [e[3] for e in episodes], [e[1] for e in episodes],
        [[word_offsets(t) for t in e[1]] for e in episodes], turn_rewards=[e[2] for e in episodes],
    )
    config = AgentConfig()
    start = time.perf_counter()
    before = env.oracle.num_replayed
    spans, credit = ospo_turn_credit(batch, env.oracle, config)
    seconds = time.perf_counter() - start
    replays = (env.oracle.num_replayed - before) / len(episodes)
    sampled = []
    before = env.oracle.num_replayed
    for b in range(len(episodes)):  # the sampled-outer variant, one oracle call per episode (a benchmark, not a hot path)
        sizes = [len(s) for s in spans[b]]
        pool = two_level_coalitions(sizes, config.w_max, config.max_coalitions, rng=b, max_enumerated_outer=0, outer_per_size=1)
        values = env.oracle.values(batch.prompt_ids[b], batch.turns(b), spans[b], pool)
        sampled.append(union_sums(two_level_credit(pool, values, sizes), sizes))
    sampled_replays = (env.oracle.num_replayed - before) / len(episodes)
    turn_adv = turn_grpo_advantages(batch, config.scale_rewards, ddof=config.std_ddof)
    outcome = group_advantages(batch.rewards, batch.group_index)
    scores = {m: {"spearman": [], "top1": []} for m in METHODS}
    segment_scores, uniform_scores, skipped = [], [], 0
    for b, (prompt_id, turns, steps, _) in enumerate(episodes):
        if len(turns) < 2:
            continue
        exact = env.ground_truth_turn_credit(prompt_id, turns)
        if np.ptp(exact) <= 1e-12:
            continue
        sizes = [len(s) for s in spans[b]]
        first_token = np.cumsum([0, *(len(word_offsets(t)) for t in turns)])[:-1]
        estimates = {
            "ospo_turn": union_sums(credit[b], sizes),
            "ospo_turn (sampled outer)": sampled[b],
            "turn_grpo": turn_adv[b, first_token],
            "turn reward": steps,
            "trajectory_grpo": np.full(len(turns), outcome[b]),
        }
        for method, estimate in estimates.items():
            scores[method]["spearman"].append(spearman(estimate, exact))
            scores[method]["top1"].append(top1(estimate, exact))
        if 2 <= sum(sizes) <= MAX_EXACT_SEGMENTS:
            owen = env.ground_truth_credit(prompt_id, turns)
            if np.ptp(owen) > 1e-12:
                segment_scores.append(spearman(credit[b], owen))
                uniform_scores.append(spearman(np.repeat(turn_adv[b, first_token], sizes), owen))
        else:
            skipped += 1
    summary = {
        method: {
            "spearman": float(np.mean(v["spearman"])),
            "top1": float(np.mean(v["top1"])),
            "episodes": len(v["spearman"]),
        }
        for method, v in scores.items()
    }
    return {
        "env": {"max_turns": args.turns, "prompts": args.prompts, "group_size": args.group_size, **SETTINGS[name]},
        "episodes": len(episodes),
        "mean_turns": float(np.mean([len(e[1]) for e in episodes])),
        "turn_credit": summary,
        "segment_credit_vs_exact_owen": {
            "ospo_turn": float(np.mean(segment_scores)) if segment_scores else None,
            "turn_grpo (uniform within a turn)": float(np.mean(uniform_scores)) if uniform_scores else None,
            "episodes": len(segment_scores),
            "skipped_over_12_segments": skipped,
        },
        "oracle": {
            "replays_per_episode": replays,
            "replays_per_episode_sampled_outer": sampled_replays,
            "ospo_turn_credit_seconds": seconds,
        },
    }


def markdown(results: dict, command: str) -> str:
    lines = [
        "# Multi-turn credit accuracy (ospo/ConvSearch-v0, exact_credit=True)",
        "",
        f"`{command}`: per-turn credit against exact turn Shapley values (all 2**T turn coalitions replayed).",
        "",
        "| setting | method | Spearman | top-1 | episodes |",
        "|---|---|---|---|---|",
    ]
    for name, result in results.items():
        for method, row in result["turn_credit"].items():
            lines.append(f"| {name} | {method} | {row['spearman']:.3f} | {row['top1']:.3f} | {row['episodes']} |")
    lines += ["", "| setting | segment credit vs exact Owen: ospo_turn | turn_grpo (uniform in a turn) | episodes | replays / episode (sampled outer) |", "|---|---|---|---|---|"]
    for name, result in results.items():
        seg, oracle = result["segment_credit_vs_exact_owen"], result["oracle"]
        fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
        lines.append(
            f"| {name} | {fmt(seg['ospo_turn'])} | {fmt(seg['turn_grpo (uniform within a turn)'])} | {seg['episodes']} | "
            f"{oracle['replays_per_episode']:.0f} ({oracle['replays_per_episode_sampled_outer']:.0f}) |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    command = "python benchmarks/conv_credit_accuracy.py" + (
        "" if (args.turns, args.prompts, args.group_size, args.seed) == (5, 24, 4, 0)
        else f" --turns {args.turns} --prompts {args.prompts} --group-size {args.group_size} --seed {args.seed}"
    )
    results = {name: run_setting(name, args) for name in SETTINGS}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "conv_credit_accuracy.json").write_text(json.dumps({"command": command, "results": results}, indent=1))
    (args.out / "conv_credit_accuracy.md").write_text(markdown(results, command))
    print(markdown(results, command))


if __name__ == "__main__":
    main()
