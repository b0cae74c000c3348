"""Scripted policies on ``ospo/ConvSearch-v0`` with its defaults (2000 products, 100 targets, 4 turns, k=10): how
often each finds the hidden target, and its mean return. They bound what a learnt policy should reach: searching
the product type alone, asking first and then searching with what the shopper said, and a query made of the
target's true attributes (an upper bound no policy can know).

    python benchmarks/conv_search_baselines.py    # writes benchmarks/results/conv_search_baselines.json
"""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np

import ospo_gym  # noqa: F401  (registers the env ids)

RESULTS = Path(__file__).parent / "results"


def product_type(env, prompt_id: int) -> str:
    return env.task.openings[prompt_id].removeprefix("I'm looking for ").rstrip(".")


def true_attributes(env, prompt_id: int) -> str:
    target = env.task.targets[prompt_id]
    return " ".join(env.task.vocab[a][env.task.product_values[a][target]] for a in env.task.attributes)


POLICIES = {
    "search the type every turn": lambda env, p, t, said: product_type(env, p),
    "search the type, then the type and what was said": lambda env, p, t, said: " ".join([*said, product_type(env, p)]),
    "ask brand, colour, material, then search all": lambda env, p, t, said: (
        ["ask: brand?", "ask: colour?", "ask: material?"][t] if t < 3 else " ".join([*said, product_type(env, p)])
    ),
    "the true attributes and the type (upper bound)": lambda env, p, t, said: f"{true_attributes(env, p)} {product_type(env, p)}",
}


def run(env, policy) -> dict:
    found, returns, turns = [], [], []
    for prompt_id in env.prompt_ids:
        env.reset(options={"prompt_id": prompt_id})
        said: list[str] = []
        for t in range(env.rules.max_turns):
            _, _, terminated, _, info = env.step(policy(env, prompt_id, t, said))
            beliefs = env.shopper.beliefs[prompt_id]
            said += [env.task.vocab[a][beliefs[env.task.attributes.index(a)]] for a in info["revealed"]]
            if terminated:
                break
        found.append(info["found"])
        returns.append(info["return"])
        turns.append(info["turn"])
    return {"found": float(np.mean(found)), "mean_return": float(np.mean(returns)), "mean_turns": float(np.mean(turns))}


def main() -> None:
    env = gym.make("ospo/ConvSearch-v0").unwrapped
    results = {name: run(env, policy) for name, policy in POLICIES.items()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "conv_search_baselines.json").write_text(
        json.dumps({"command": "python benchmarks/conv_search_baselines.py", "results": results}, indent=1)
    )
    for name, row in results.items():
        print(f"| {name} | {row['found']:.2f} | {row['mean_return']:.3f} | {row['mean_turns']:.2f} |")


if __name__ == "__main__":
    main()
