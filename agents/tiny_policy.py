"""A tiny Qwen2 policy for an env, built on this machine: ``ospo-gym train --tiny`` and the benchmark use it.

:func:`build_env_policy` trains the BPE tokenizer of :func:`ospo_gym.agents.policy.build_tiny_qwen2` on the env's
own texts (its prompts and its vocabulary) and, optionally, *warm-starts* the random model: a few supervised steps on
completions made of random words (or, where the env has them, random phrases) of the env's vocabulary, whatever
the prompt. That is the tiny model's "pre-training": it learns to write the task's language, not the task — which
phrase helps which prompt is left to RL. Tasks whose reward needs multi-token units (``ospo/Interaction-v0``'s
two-word phrases) give a random 100k-parameter model no reward signal at all without it.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np

from ospo_gym.agents.policy import build_tiny_qwen2


def env_texts(env: Any) -> list[str]:
    """What the tokenizer learns its merges from: every prompt and, when the env has one, its vocabulary."""
    base = env.unwrapped
    texts = [base.prompt(p) for p in base.prompt_ids]
    vocabulary = getattr(base, "vocabulary", None)
    if vocabulary:
        texts += [" ".join(vocabulary)] * 3
    return texts


def language_pieces(env: Any) -> tuple[list[str], str]:
    """The units a warm-start completion is made of, and their separator: phrases joined by ``","`` when the env
    has ``phrases`` (pairs of words), else single words of its ``vocabulary`` (or, without one, of its prompts)
    joined by nothing (each piece has its leading space)."""
    base = env.unwrapped
    phrases = getattr(base, "phrases", None)
    if phrases:
        return [" " + " ".join(p) for p in phrases], ","
    vocabulary = getattr(base, "vocabulary", None)
    if not vocabulary:  # e.g. ESCI: the words of the prompts
        vocabulary = sorted(
            {w for p in base.prompt_ids for w in re.findall(r"[^\W_]+", base.prompt(p).lower())}
        )
    if not vocabulary:
        raise ValueError(f"{type(base).__name__} gives no words to warm-start on (use warm_start=0)")
    return [" " + w for w in vocabulary], ""


def build_env_policy(
    env: Any,
    directory: str | Path,
    *,
    seed: int = 0,
    warm_start: int = 0,
    warm_start_batch: int = 32,
    warm_start_lr: float = 3e-3,
    pieces_per_text: tuple[int, int] = (1, 4),
) -> Path:
    """Build the tiny Qwen2 for ``env`` in ``directory`` (weights seeded by ``seed``), warm-started for
    ``warm_start`` steps (0: the random model as built). Returns ``directory``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = build_tiny_qwen2(env_texts(env), directory, seed=seed)
    if warm_start > 0:
        _warm_start(path, env, warm_start, warm_start_batch, warm_start_lr, pieces_per_text, seed)
    return path


def _warm_start(
    path: Path, env: Any, steps: int, batch: int, lr: float, pieces_per_text: tuple[int, int], seed: int
) -> None:
    """Teacher-forced next-token loss on ``prompt + random pieces + EOS`` (loss on the completion only)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path))
    pieces, separator = language_pieces(env)

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    # the Qwen2 pre-tokeniser splits at spaces and punctuation, so concatenated piece tokens = the text's tokens
    piece_tokens = [encode(p) for p in pieces]
    separator_tokens = encode(separator) if separator else []
    base = env.unwrapped
    prompt_ids: list[Hashable] = list(base.prompt_ids)
    prompts = [encode(base.prompt(p)) for p in prompt_ids]
    low, high = pieces_per_text[0], min(pieces_per_text[1], len(pieces))
    rng = np.random.default_rng([seed, 7919])
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.train()
        for _ in range(steps):
            rows, labels = [], []
            for _ in range(batch):
                prompt = prompts[int(rng.integers(len(prompts)))]
                chosen = rng.choice(len(pieces), size=int(rng.integers(low, high + 1)), replace=False)
                completion: list[int] = []
                for j, index in enumerate(chosen):
                    completion += (separator_tokens if j else []) + piece_tokens[int(index)]
                completion.append(eos)
                rows.append(prompt + completion)
                labels.append([-100] * len(prompt) + completion)
            width = max(map(len, rows))
            # left padding, as in rollouts
            input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
            target = torch.tensor([[-100] * (width - len(t)) + t for t in labels])
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
            positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # as the rollouts and the loss compute them
            loss = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, labels=target).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    model.save_pretrained(str(path), safe_serialization=True)
