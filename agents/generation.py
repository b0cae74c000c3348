"""Rollouts with ``model.generate`` and the log-probabilities the loss needs.

Shapes: ``B`` prompts (one row per completion), ``P`` prompt tokens (left-padded), ``T`` completion tokens
(right-padded after EOS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class Rollout:
    """Sampled completions and what the loss needs to score them again.

    Attributes:
        prompt_tokens: (B, P) left-padded prompt tokens; prompt_mask: (B, P) their attention mask.
        completion_tokens: (B, T) generated tokens; completion_mask: (B, T) bool, True up to and including EOS.
        texts: B completions decoded without special tokens.
        logprobs: (B, T) log-probabilities under the sampler (temperature, top-p), 0 where masked; ``None`` unless
            asked for.
    """

    prompt_tokens: torch.Tensor
    prompt_mask: torch.Tensor
    completion_tokens: torch.Tensor
    completion_mask: torch.Tensor
    texts: list[str]
    logprobs: torch.Tensor | None = None


def format_prompts(tokenizer: Any, prompts: Sequence[str]) -> list[str]:
    """Apply the tokenizer's chat template (one user turn, generation prompt) when it has one."""
    if getattr(tokenizer, "chat_template", None):
        return [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in prompts
        ]
    return list(prompts)


def encode_prompts(tokenizer: Any, prompts: Sequence[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``(input_ids, attention_mask)``, both (B, P), with the chat template applied if any."""
    templated = bool(getattr(tokenizer, "chat_template", None))
    encoded = tokenizer(
        format_prompts(tokenizer, prompts),
        return_tensors="pt",
        padding=True,
        padding_side="left",
        add_special_tokens=not templated,  # a chat template already holds its special tokens
    )
    return encoded["input_ids"].to(device), encoded["attention_mask"].to(device)


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token that ends a completion: the tokenizer's EOS and the model's generation-config EOS ids."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is not None:
        ids.update([configured] if isinstance(configured, int) else configured)
    if not ids:
        raise ValueError("neither the tokenizer nor the model's generation config defines an EOS token")
    return sorted(ids)


def completion_mask(completion_tokens: torch.Tensor, eos_ids: Sequence[int]) -> torch.Tensor:
    """(B, T) bool: True for tokens up to and including the first EOS of each row (all tokens if none)."""
    is_eos = torch.isin(completion_tokens, torch.as_tensor(list(eos_ids), device=completion_tokens.device)).long()
    return (is_eos.cumsum(dim=1) - is_eos) == 0


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    do_sample: bool = True,
    seed: int | None = None,
    return_logprobs: bool = False,
) -> Rollout:
    """Sample one completion per prompt with ``model.generate`` (batched, left padding).

    Sampling uses exactly ``temperature`` and ``top_p``: top-k, min-p, typical-p, repetition penalties and
    n-gram blocking that the model's generation config may set are switched off. ``seed`` fixes the sample without touching the global RNG state.
    ``do_sample=False`` decodes greedily.
    """
    device = next(model.parameters()).device
    prompt_tokens, prompt_mask = encode_prompts(tokenizer, prompts, device)
    eos_ids = eos_token_ids(model, tokenizer)
    options: dict[str, Any] = dict(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        eos_token_id=eos_ids,
        pad_token_id=tokenizer.pad_token_id,
        top_k=0,  # neutral values override the model's generation-config defaults (None would not)
        min_p=0.0,
        typical_p=1.0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        return_dict_in_generate=True,
        output_scores=return_logprobs,
    )
    if do_sample:
        options.update(temperature=temperature, top_p=top_p)
    else:
        options.update(temperature=None, top_p=None, top_k=None, min_p=None, typical_p=None)
    devices = [device] if device.type == "cuda" else []
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        output = model.generate(input_ids=prompt_tokens, attention_mask=prompt_mask, **options)
    model.train(was_training)
    completion_tokens = output.sequences[:, prompt_tokens.shape[1] :]
    mask = completion_mask(completion_tokens, eos_ids)
    texts = [
        tokenizer.decode(row[: int(n)].tolist(), skip_special_tokens=True)
        for row, n in zip(completion_tokens, mask.sum(dim=1), strict=True)
    ]
    logprobs = None
    if return_logprobs:
        scores = torch.stack(output.scores, dim=1).float()  # (B, T, V) after temperature and top-p
        logprobs = torch.log_softmax(scores, dim=-1).gather(-1, completion_tokens.unsqueeze(-1)).squeeze(-1)
        logprobs = torch.where(mask, logprobs, torch.zeros_like(logprobs))
    return Rollout(prompt_tokens, prompt_mask, completion_tokens, mask, texts, logprobs)


def completion_logprobs(
    model: Any,
    prompt_tokens: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_tokens: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-token log-probabilities (B, T) of ``completion_tokens`` after the prompts, logits divided by ``temperature``.

    Position ids follow the attention mask (as in generation), so left padding does not shift positions.
    Differentiable; masked positions hold arbitrary finite values.
    """
    input_ids = torch.cat([prompt_tokens, completion_tokens], dim=1)
    attention = torch.cat([prompt_mask, completion_mask.to(prompt_mask.dtype)], dim=1)
    positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
    width = completion_tokens.shape[1]
    logits = model(
        input_ids=input_ids, attention_mask=attention, position_ids=positions, logits_to_keep=width + 1, use_cache=False
    ).logits[:, :-1, :]
    logits = logits.float() / temperature
    chosen = logits.gather(-1, completion_tokens.unsqueeze(-1)).squeeze(-1)
    return chosen - torch.logsumexp(logits, dim=-1)


def token_offsets(tokenizer: Any, token_ids: Sequence[int], text: str) -> np.ndarray:
    """Character span (T, 2) of each generated token in ``text`` (its decoding without special tokens).

    Uses the tokenizer's offset mapping on ``text`` when re-encoding gives back the same tokens; otherwise (a
    non-canonical tokenisation was sampled) it decodes growing prefixes. Special tokens get an empty span at the
    position where they occur.
    """
    token_ids = [int(t) for t in token_ids]
    special = set(tokenizer.all_special_ids)
    plain = [t for t in token_ids if t not in special]
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if encoded["input_ids"] == plain:
        spans = iter(encoded["offset_mapping"])
    else:
        spans = iter(_prefix_offsets(tokenizer, plain, len(text)))
    out = np.zeros((len(token_ids), 2), dtype=np.int64)
    end = 0
    for i, token in enumerate(token_ids):
        start, end = (end, end) if token in special else next(spans)
        out[i] = (start, end)
    return out


def _prefix_offsets(tokenizer: Any, token_ids: list[int], length: int) -> list[tuple[int, int]]:
    """Offsets from the lengths of decoded prefixes, kept monotone and inside ``[0, length]``."""
    spans, previous = [], 0
    for k in range(1, len(token_ids) + 1):
        end = min(max(len(tokenizer.decode(token_ids[:k])), previous), length)
        spans.append((previous, end))
        previous = end
    return spans
