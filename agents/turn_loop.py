"""A minimal multi-turn rollout and policy update for ``ospo/ConvSearch-v0`` (issue 19 item 4, first cut).

What it does: for a batch of conversations, each turn renders the conversation so far — the shopper's messages as
``user`` turns, the policy's as ``assistant`` turns — with the tokenizer's chat template (plain ``shopper:`` /
``you:`` lines for a tokenizer without one), generates one turn per live conversation in one batched call, and
plays all of them in the env with one retriever call. The result is a
:class:`~ospo_gym.agents.turn_estimators.MultiTurnRolloutBatch` (what the multi-turn estimators read) and the
sampled turns (what the loss scores again). :func:`turn_update` applies one clipped-surrogate step whose loss
covers only the policy's own tokens: each turn's tokens are scored after that turn's own prompt.

What it does not do (left): the :class:`~ospo_gym.agents.Agent` surface (``learn``, checkpoints and resume,
metrics files), torchrun / FSDP, vLLM rollouts, the TRL / verl integrations, a KL term, several updates per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ospo_gym.agents.config import AgentConfig
from ospo_gym.agents.generation import Rollout, batch_token_offsets, completion_logprobs, generate
from ospo_gym.agents.loss import policy_loss
from ospo_gym.agents.turn_estimators import MultiTurnRolloutBatch
from ospo_gym.envs.conv_search import ConvSearchEnv
from ospo_gym.envs.shopper import Conversation

__all__ = ["TurnSamples", "conversation_prompt", "rollout_conversations", "turn_update"]


def conversation_prompt(tokenizer: Any, messages: Sequence[dict[str, str]]) -> str:
    """The prompt of the next policy turn: the chat template with a generation prompt, or ``shopper:`` / ``you:``
    lines ending in ``"you:"`` when the tokenizer has no template."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    names = {"user": "shopper", "assistant": "you"}
    return "\n".join(f"{names[m['role']]}: {m['content']}" for m in messages) + "\nyou:"


@dataclass
class TurnSamples:
    """The sampled turns of a rollout, one :class:`~ospo_gym.agents.generation.Rollout` per turn index.

    Attributes:
        rollouts: per turn index t, the generations of the conversations still going at t.
        episodes: per turn index t, (R_t,) the episode (batch row) of each generation.
    """

    rollouts: list[Rollout]
    episodes: list[np.ndarray]


def rollout_conversations(
    model: Any,
    tokenizer: Any,
    env: ConvSearchEnv,
    prompt_ids: Sequence[int],
    group_index: Sequence[int],
    config: AgentConfig,
    *,
    step: int = 0,
) -> tuple[MultiTurnRolloutBatch, TurnSamples]:
    """Play one conversation per prompt id (G copies of a prompt make a group) to its end.

    Sampling is seeded by ``(config.seed, step, turn)`` and each row's draws by its episode, so a rollout is
    reproducible. Each generated turn is cut to ``env.max_turn_chars`` characters, as ``env.step`` does.

    Returns:
        The batch (texts: the policy's turns joined by ``"\\n"``; rewards: the returns; turn_rewards: the step
        rewards) and the sampled turns.
    """
    prompt_ids = [int(p) for p in prompt_ids]
    for prompt_id in prompt_ids:
        env._check_prompt_id(prompt_id)
    convs = [Conversation(p) for p in prompt_ids]
    messages = [[{"role": "user", "content": env.task.openings[p]}] for p in prompt_ids]
    turns: list[list[str]] = [[] for _ in prompt_ids]
    turn_tokens: list[list[np.ndarray]] = [[] for _ in prompt_ids]
    turn_rewards: list[list[float]] = [[] for _ in prompt_ids]
    rollouts, episodes = [], []
    for t in range(env.rules.max_turns):
        live = np.array([b for b, c in enumerate(convs) if not c.done], dtype=np.int64)
        if not len(live):
            break
        seed = int(np.random.SeedSequence([config.seed, step, t]).generate_state(1)[0])
        rollout = generate(
            model, tokenizer, [conversation_prompt(tokenizer, messages[b]) for b in live],
            max_new_tokens=config.max_new_tokens, temperature=config.temperature, top_p=config.top_p, seed=seed,
            return_logprobs=True, formatted=True,
        )  # fmt: skip
        texts = [text[: env.max_turn_chars] for text in rollout.texts]
        rows = [r[: int(n)].tolist() for r, n in zip(rollout.completion_tokens, rollout.completion_mask.sum(dim=1), strict=True)]
        offsets = batch_token_offsets(tokenizer, rows, rollout.texts)
        before = [convs[b].total for b in live]
        replies = env.play([convs[b] for b in live], texts)
        for j, b in enumerate(live):
            turns[b].append(texts[j])
            # a token past the cut keeps its span clipped to the kept text, so it stays inside its turn
            turn_tokens[b].append(np.minimum(offsets[j], len(texts[j])))
            turn_rewards[b].append(convs[b].total - before[j])
            messages[b] += [{"role": "assistant", "content": texts[j]}, {"role": "user", "content": replies[j]}]
        rollouts.append(rollout)
        episodes.append(live)
    batch = MultiTurnRolloutBatch.from_turns(
        prompt_ids, group_index, [c.total for c in convs], turns, turn_tokens, turn_rewards=turn_rewards, step=step
    )
    return batch, TurnSamples(rollouts, episodes)


def turn_update(
    model: Any,
    optimizer: torch.optim.Optimizer,
    batch: MultiTurnRolloutBatch,
    samples: TurnSamples,
    advantages: np.ndarray,
    config: AgentConfig,
) -> dict[str, float]:
    """One clipped-surrogate step over every sampled turn, ``token_mean`` over all the policy's tokens.

    ``advantages`` (B, T) are an estimator's token advantages of the rollout's batch: row b's valid tokens are
    episode b's turns' tokens in order, and are handed back to the turn that generated them.

    Returns:
        ``{"loss": ..., "grad_norm": ..., "tokens": ...}``.
    """
    advantages = np.asarray(advantages, dtype=np.float64)
    counts_per_episode = np.zeros(len(batch.rewards), dtype=np.int64)
    for rollout, live in zip(samples.rollouts, samples.episodes, strict=True):
        np.add.at(counts_per_episode, live, rollout.completion_mask.sum(dim=1).cpu().numpy())
    if advantages.shape != batch.completion_mask.shape or not np.array_equal(counts_per_episode, batch.completion_mask.sum(axis=1)):
        raise ValueError(
            f"advantages of shape {advantages.shape} and the rollout's turns do not match the batch "
            f"{batch.completion_mask.shape}; pass the estimator's output for this rollout's batch"
        )
    device = next(model.parameters()).device
    used = np.zeros(len(advantages), dtype=np.int64)  # tokens of each episode handed out so far
    total = sum(int(r.completion_mask.sum()) for r in samples.rollouts)
    optimizer.zero_grad(set_to_none=True)
    loss_value = 0.0
    for rollout, live in zip(samples.rollouts, samples.episodes, strict=True):
        counts = rollout.completion_mask.sum(dim=1).cpu().numpy()
        turn_adv = np.zeros(tuple(rollout.completion_mask.shape))
        for j, b in enumerate(live):
            turn_adv[j, : counts[j]] = advantages[b, used[b] : used[b] + counts[j]]
            used[b] += counts[j]
        logprobs = completion_logprobs(
            model, rollout.prompt_tokens, rollout.prompt_mask, rollout.completion_tokens, rollout.completion_mask,
            config.temperature,
        )  # fmt: skip
        loss, _ = policy_loss(
            logprobs, rollout.logprobs, torch.as_tensor(turn_adv, device=device), rollout.completion_mask,
            epsilon=config.epsilon, epsilon_high=config.epsilon_high, normaliser=float(total),
        )  # fmt: skip
        loss.backward()  # turns of different lengths: their losses add up to the token mean over all of them
        loss_value += float(loss.detach())
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm or float("inf"))
    if not (np.isfinite(loss_value) and torch.isfinite(grad_norm)):
        optimizer.zero_grad(set_to_none=True)
        raise FloatingPointError(f"non-finite loss {loss_value} or gradient norm {float(grad_norm)}; no step taken")
    optimizer.step()
    return {"loss": loss_value, "grad_norm": float(grad_norm), "tokens": float(total)}
