"""The clipped surrogate loss shared by every algorithm (PPO/GRPO style), with optional KL and three aggregations."""

from __future__ import annotations

import torch

AGGREGATIONS = ("token_mean", "sequence_mean", "constant")


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    beta: float = 0.0,
    ref_logprobs: torch.Tensor | None = None,
    aggregation: str = "token_mean",
    max_tokens: int | None = None,
    normaliser: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate ``−min(ρ A, clip(ρ, 1−ε, 1+ε_high) A) + β KL`` per token, aggregated over the batch.

    ``ρ = exp(logp − old_logp)``; ``KL = exp(ref − logp) − (ref − logp) − 1`` (the k3 estimator, ≥ 0).

    Args:
        logprobs: (B, T) current policy log-probs (differentiable).
        old_logprobs: (B, T) log-probs of the policy that sampled (detached).
        advantages: (B, T) token advantages.
        mask: (B, T) bool, the tokens that count.
        epsilon, epsilon_high: clip range; ``epsilon_high=None`` means ``epsilon``.
        beta: KL coefficient; needs ``ref_logprobs`` (B, T) when > 0.
        aggregation: ``"token_mean"`` Σ loss / Σ mask (DAPO); ``"sequence_mean"`` mean over sequences of each
            sequence's token mean (GRPO); ``"constant"`` Σ loss / (B · max_tokens) (Dr. GRPO).
        max_tokens: the constant normaliser's T (the sampler's ``max_new_tokens``); default ``T``.
        normaliser: divide the aggregation's numerator by this instead of its own denominator (see
            :func:`loss_denominator`): a data-parallel rank passes the denominator summed over all ranks, so that
            the ranks' losses add up to the loss of the whole batch.

    Returns:
        ``(loss, metrics)``: a scalar tensor, and floats ``clip_fraction`` (tokens whose clipped term is active),
        ``clip_low_fraction``, ``clip_high_fraction``, ``ratio_mean``, ``kl`` (token mean, 0 if ``beta == 0``).
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown loss aggregation {aggregation!r}; expected one of {AGGREGATIONS}")
    if beta > 0 and ref_logprobs is None:
        raise ValueError("beta > 0 needs ref_logprobs (the frozen reference policy's log-probs)")
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    mask = mask.to(logprobs.dtype)
    advantages = advantages.to(logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs)
    clipped = torch.clamp(ratio, 1.0 - epsilon, 1.0 + epsilon_high)
    per_token = -torch.minimum(ratio * advantages, clipped * advantages)
    kl = torch.zeros_like(logprobs)
    if beta > 0:
        delta = ref_logprobs - logprobs
        kl = torch.exp(delta) - delta - 1.0
        per_token = per_token + beta * kl

    numerator = _numerator(per_token, mask, aggregation)
    denominator = loss_denominator(mask, aggregation, max_tokens) if normaliser is None else normaliser
    loss = numerator / max(float(denominator), 1.0)
    with torch.no_grad():
        count = mask.sum().clamp(min=1.0)
        low = ((ratio < 1.0 - epsilon) & (advantages < 0)).to(mask.dtype)
        high = ((ratio > 1.0 + epsilon_high) & (advantages > 0)).to(mask.dtype)
        metrics = {
            "clip_fraction": float(((low + high) * mask).sum() / count),
            "clip_low_fraction": float((low * mask).sum() / count),
            "clip_high_fraction": float((high * mask).sum() / count),
            "ratio_mean": float((ratio * mask).sum() / count),
            "kl": float((kl * mask).sum() / count),
        }
    return loss, metrics


def loss_denominator(mask: torch.Tensor, aggregation: str, max_tokens: int | None = None) -> float:
    """What an aggregation divides by, for a (B, T) mask: the number of tokens (``token_mean``), of sequences
    with at least one token (``sequence_mean``), or ``B' · max_tokens`` with B' the sequences with a token
    (``constant``; rows dropped from the loss have no tokens)."""
    if aggregation == "token_mean":
        return float(mask.sum())
    rows = float((mask.sum(dim=1) > 0).sum())
    if aggregation == "sequence_mean":
        return rows
    return rows * (max_tokens if max_tokens is not None else mask.shape[1])


def _numerator(per_token: torch.Tensor, mask: torch.Tensor, aggregation: str) -> torch.Tensor:
    masked = per_token * mask
    if aggregation == "sequence_mean":  # the sum of each sequence's token mean
        return (masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)).sum()
    return masked.sum()
