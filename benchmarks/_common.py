"""Helpers the benchmark scripts share: credit accuracy against exact values, an oracle batch of a synthetic env, a timing summary, the TRL settings the
TRL comparisons match (and ospo-gym's agent config matched to them), and writing a JSON report.

The scripts run as ``python benchmarks/<name>.py``, so this folder is on ``sys.path`` and they import this module
as ``_common``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def credit_accuracy(estimate: np.ndarray, exact: np.ndarray) -> tuple[float, float]:
    """Spearman and normalised L1 of an (n,) credit estimate against the (n,) exact values, both NaN-free (a
    constant vector counts as rank correlation 0, two constant vectors as 1)."""
    from scipy.stats import spearmanr  # here: the timing scripts that import this module need no scipy

    if np.ptp(exact) == 0 or np.ptp(estimate) == 0:
        rho = 1.0 if np.ptp(exact) == np.ptp(estimate) == 0 else 0.0
    else:
        rho = float(spearmanr(estimate, exact).statistic)
    l1 = float(np.abs(estimate - exact).sum() / max(np.abs(exact).sum(), 1e-12))
    return rho, l1


def make_batch(env: Any, rng: np.random.Generator, batch: int, words: int) -> tuple[list, list[str]]:
    """``batch`` prompt ids (drawn with ``rng``) and completions of ``words`` words: the prompt's query words
    followed by random catalog words (``env`` is an unwrapped env with ``vocabulary`` and ``judged.queries``)."""
    vocab = np.array(env.vocabulary)
    prompt_ids, texts = [], []
    for _ in range(batch):
        pid = env.prompt_ids[int(rng.integers(len(env.prompt_ids)))]
        query = env.judged.queries[pid].split()
        extra = list(rng.choice(vocab, size=max(words - len(query), 0)))
        prompt_ids.append(pid)
        texts.append(" ".join((query + extra)[:words]))
    return prompt_ids, texts


def summary(seconds: list[float]) -> dict[str, float]:
    """Min and median of per-step seconds (rounded to 0.1 ms) and how many steps they are of."""
    return {"min": round(min(seconds), 4), "median": round(float(np.median(seconds)), 4), "n": len(seconds)}


def trl_grpo_settings(
    output_dir: str, group: int, prompts: int, tokens: int, args: argparse.Namespace, **extra: Any
) -> dict[str, Any]:
    """``GRPOConfig`` keyword arguments of the TRL arms: ``prompts`` groups of ``group`` completions of at most
    ``tokens`` tokens per step, sampled at temperature 1 / top-p 1, constant-lr AdamW, no KL, one iteration,
    group-scaled rewards, ``args.warmup + args.steps`` steps on the CPU in float32, nothing logged or saved;
    ``extra`` adds or overrides settings."""
    settings = dict(
        output_dir=output_dir,
        per_device_train_batch_size=group * prompts,
        num_generations=group,
        max_completion_length=tokens,
        temperature=1.0,
        top_p=1.0,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        optim="adamw_torch",
        max_grad_norm=1.0,
        beta=0.0,
        num_iterations=1,
        scale_rewards="group",
        gradient_checkpointing=False,
        max_steps=args.warmup + args.steps,
        use_cpu=True,
        bf16=False,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=args.seed,
        dataloader_num_workers=0,
    )
    settings.update(extra)
    return settings


def trl_matched_agent_config(
    algo: str, group: int, prompts: int, tokens: int, args: argparse.Namespace, run_dir: str, **extra: Any
) -> Any:
    """The :class:`~ospo_gym.agents.AgentConfig` of ospo-gym's own agent in a TRL comparison, with the TRL arms'
    update (see :func:`trl_grpo_settings`): ``args.lr``, no KL, one iteration, the token-mean loss, gradient norm
    clipped at 1, ``args.threads`` torch threads on the CPU, ``args.seed``, nothing logged to TensorBoard or a
    progress bar; ``extra`` adds other fields."""
    # the agents package imports torch: the oracle benchmarks that use this module do not need it
    from ospo_gym.agents import AgentConfig

    return AgentConfig(
        algo=algo,
        group_size=group,
        prompts_per_step=prompts,
        max_new_tokens=tokens,
        learning_rate=args.lr,
        beta=0.0,
        num_iterations=1,
        loss_aggregation="token_mean",
        max_grad_norm=1.0,
        torch_threads=args.threads,
        device="cpu",
        run_dir=run_dir,
        tensorboard=False,
        progress_bar=False,
        seed=args.seed,
        **extra,
    )


def write_report(report: dict[str, Any], out: Path) -> None:
    """Write ``report`` to ``out`` as indented JSON (making its folder) and say so."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")
