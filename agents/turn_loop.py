"""Multi-turn rollouts for the agent loop (issue 19 item 4): conversations on ``ospo/ConvSearch-v0`` played to their
end, one generation per turn, and their turns laid out as the rows of one update.

How a step of :class:`~ospo_gym.agents.Agent` runs on a multi-turn env:

1. :func:`play_conversations` renders each live conversation — the shopper's messages as ``user`` turns, the
   policy's as ``assistant`` turns — with the tokenizer's chat template (plain ``shopper:`` / ``you:`` lines for a
   tokenizer without one, :func:`conversation_prompt`), samples one turn per live conversation in one batched
   call, and plays them all in the env with one retriever call (``env.play``). It returns a
   :class:`~ospo_gym.agents.turn_estimators.MultiTurnRolloutBatch` (one row per episode: what the multi-turn
   estimators read) and the :class:`TurnSamples` (one row per generated turn: what the loss scores again).
2. The estimator's (B, T) advantages over each episode's own tokens are handed back to the turns that generated
   them (:meth:`TurnSamples.spread`), and :meth:`TurnSamples.flatten` stacks every turn's prompt and generation
   into one :class:`~ospo_gym.agents.generation.Rollout` of R = Σ_b K_b rows: the update
   (:class:`~ospo_gym.agents.update.PolicyUpdate`) then runs unchanged — micro-batches, ``num_iterations``, the KL
   term, the non-finite guard, data-parallel normalisation. Each turn's tokens are scored after that turn's own
   prompt, so the loss covers the policy's own tokens only: the shopper's messages are prompt, never completion.

Aggregations over the R turn rows: ``token_mean`` is the mean over every policy token of the batch (as for
single-turn envs); ``sequence_mean`` averages the turns' token means (a turn is a sequence); ``constant`` divides
by R · ``max_new_tokens``.

Randomness: turn ``t`` of step ``k`` samples with the seed ``(seed_k, t)``, and each row's draws are keyed by its
episode's global row in the step's batch, so a rollout does not depend on which episodes are still going, or on
how the batch is split over processes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ospo_gym.agents.generation import Rollout, batch_token_offsets
from ospo_gym.agents.turn_estimators import MultiTurnRolloutBatch
from ospo_gym.envs.conv_search import POLICY, SHOPPER
from ospo_gym.envs.shopper import Conversation

__all__ = ["TurnSampler", "TurnSamples", "conversation_prompt", "play_conversations", "transcript_messages", "turn_seed"]

TurnSampler = Callable[[list[str], int, np.ndarray], Rollout]
"""``(prompts, turn, rows) -> Rollout``: one generation per chat-formatted prompt of turn ``turn`` (0-based);
``rows`` (R,) are the global episode rows of the prompts, which key each row's random draws. The Rollout's
``logprobs`` are the sampler's (needed by the vLLM backend's importance weights; may be ``None`` otherwise)."""


def conversation_prompt(tokenizer: Any, messages: Sequence[dict[str, str]]) -> str:
    """The prompt of the next policy turn: the chat template with a generation prompt, or ``shopper:`` / ``you:``
    lines ending in ``"you:"`` when the tokenizer has no template."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    names = {"user": "shopper", "assistant": "you"}
    return "\n".join(f"{names[m['role']]}: {m['content']}" for m in messages) + "\nyou:"


def transcript_messages(transcript: str) -> list[dict[str, str]]:
    """The chat messages of a ConvSearch observation (``"shopper: ..."`` / ``"you: ..."`` lines): the shopper's as
    ``user``, the policy's as ``assistant``. A line that starts with neither continues the message before it
    (a turn with a line break); text before the first marked line is one ``user`` message.

    >>> transcript_messages("shopper: I'm looking for a mat.\\nyou: ask: colour?\\nshopper: The colour is red.")
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'role': 'user', 'content': "I'm looking for a mat."}, {'role': 'assistant', 'content': 'ask: colour?'},
     {'role': 'user', 'content': 'The colour is red.'}]
    """
    messages: list[dict[str, str]] = []
    for line in transcript.split("\n"):
        for prefix, role in ((SHOPPER, "user"), (POLICY, "assistant")):
            if line.startswith(prefix):
                messages.append({"role": role, "content": line[len(prefix) :]})
                break
        else:
            if messages:
                messages[-1]["content"] += "\n" + line
            elif line:
                messages.append({"role": "user", "content": line})
    return messages


def turn_seed(seed: int, turn: int) -> int:
    """The sampling seed of turn ``turn`` of a step whose seed is ``seed``."""
    return int(np.random.SeedSequence([seed, turn]).generate_state(1)[0])


@dataclass
class TurnSamples:
    """The sampled turns of a rollout, one :class:`~ospo_gym.agents.generation.Rollout` per turn index.

    Attributes:
        rollouts: per turn index t, the generations (R_t rows) of the conversations still going at t.
        episodes: per turn index t, (R_t,) int64, the episode (batch row) of each generation.
    """

    rollouts: list[Rollout]
    episodes: list[np.ndarray]

    @property
    def row_episodes(self) -> np.ndarray:
        """(R,) the episode of each row of :meth:`flatten` (turn 0's rows first, then turn 1's, ...)."""
        return np.concatenate(self.episodes) if self.episodes else np.zeros(0, dtype=np.int64)

    def flatten(self, pad_id: int) -> Rollout:
        """Every turn's prompt and generation as one Rollout of R = Σ_t R_t rows: prompts left-padded to the
        longest (mask 0; positions follow the mask, so padding does not shift them), generations right-padded
        to the longest (mask False); ``logprobs`` stacked alike when every turn has them."""
        if not self.rollouts:
            raise ValueError("no turn was sampled; a rollout has at least one turn per episode")
        width_p = max(r.prompt_tokens.shape[1] for r in self.rollouts)
        width_t = max(r.completion_tokens.shape[1] for r in self.rollouts)

        def pad(tensor: torch.Tensor, width: int, value: float | bool, left: bool) -> torch.Tensor:
            extra = width - tensor.shape[1]
            if not extra:
                return tensor
            filler = torch.full((tensor.shape[0], extra), value, dtype=tensor.dtype, device=tensor.device)
            return torch.cat([filler, tensor] if left else [tensor, filler], dim=1)

        rollouts = self.rollouts
        logprobs = None
        if all(r.logprobs is not None for r in rollouts):
            logprobs = torch.cat([pad(r.logprobs, width_t, 0.0, False) for r in rollouts])
        return Rollout(
            torch.cat([pad(r.prompt_tokens, width_p, pad_id, True) for r in rollouts]),
            torch.cat([pad(r.prompt_mask, width_p, 0, True) for r in rollouts]),
            torch.cat([pad(r.completion_tokens, width_t, pad_id, False) for r in rollouts]),
            torch.cat([pad(r.completion_mask, width_t, False, False) for r in rollouts]),
            [text for r in rollouts for text in r.texts],
            logprobs,
        )

    def spread(self, advantages: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The (R, T') token advantages of :meth:`flatten`'s rows from an estimator's (B, T) ``advantages`` over the
        episodes' tokens (``mask`` (B, T): row b's valid tokens are its turns' tokens in order).

        Raises:
            ValueError: ``advantages`` or ``mask`` do not fit this rollout's turns.
        """
        advantages = np.asarray(advantages, dtype=np.float64)
        counts = [r.completion_mask.sum(dim=1).cpu().numpy().astype(np.int64) for r in self.rollouts]
        per_episode = np.zeros(len(mask), dtype=np.int64)
        for live, count in zip(self.episodes, counts, strict=True):
            np.add.at(per_episode, live, count)
        if advantages.shape != mask.shape or not np.array_equal(per_episode, mask.sum(axis=1)):
            raise ValueError(
                f"advantages of shape {advantages.shape} and the rollout's turns do not match the batch "
                f"{mask.shape}; pass the estimator's output for this rollout's batch"
            )
        width = max(r.completion_tokens.shape[1] for r in self.rollouts)
        out = np.zeros((sum(len(live) for live in self.episodes), width))
        # valid tokens of each episode in order: turn t's tokens of episode b start after its earlier turns'
        flat_values = [advantages[b, mask[b]] for b in range(len(mask))]
        used = np.zeros(len(mask), dtype=np.int64)
        row = 0
        for live, count in zip(self.episodes, counts, strict=True):
            for j, b in enumerate(live):
                out[row, : count[j]] = flat_values[b][used[b] : used[b] + count[j]]
                used[b] += count[j]
                row += 1
        return out


def play_conversations(
    env: Any,
    sample: TurnSampler,
    tokenizer: Any,
    prompt_ids: Sequence[int],
    group_index: Sequence[int],
    *,
    step: int = 0,
    first_row: int = 0,
) -> tuple[MultiTurnRolloutBatch, TurnSamples]:
    """Play one conversation per prompt id (G copies of a prompt make a group) to its end.

    Args:
        env: the multi-turn env (``env.unwrapped`` of ``ospo/ConvSearch-v0``): its ``play``, ``rules.max_turns``,
            ``opening`` and ``max_turn_chars``.
        sample: the sampler (:data:`TurnSampler`), e.g. the agent's rollout backend.
        tokenizer: the policy's tokenizer (the chat template, and the token offsets of each turn).
        prompt_ids: (B,) the episodes' prompts; group_index: (B,) their groups.
        step: the training step, stored in the batch (it seeds the estimators' draws).
        first_row: the global row of episode 0 (a data-parallel rank's share of the step's batch).

    Each generated turn is cut to ``env.max_turn_chars`` characters, as ``env.step`` does; a token past the cut
    keeps its span clipped to the kept text.

    Returns:
        The batch (texts: the policy's turns joined by ``"\\n"``; rewards: the returns; turn_rewards: the step
        rewards) and the sampled turns.
    """
    prompt_ids = [int(p) for p in prompt_ids]
    messages = [[{"role": "user", "content": env.opening(p)}] for p in prompt_ids]  # an unknown id: the env's error
    convs = [Conversation(p) for p in prompt_ids]
    turns: list[list[str]] = [[] for _ in prompt_ids]
    turn_tokens: list[list[np.ndarray]] = [[] for _ in prompt_ids]
    turn_rewards: list[list[float]] = [[] for _ in prompt_ids]
    rollouts, episodes = [], []
    for t in range(env.rules.max_turns):
        live = np.array([b for b, c in enumerate(convs) if not c.done], dtype=np.int64)
        if not len(live):
            break
        rollout = sample([conversation_prompt(tokenizer, messages[b]) for b in live], t, live + first_row)
        texts = [text[: env.max_turn_chars] for text in rollout.texts]
        lengths = rollout.completion_mask.sum(dim=1).cpu().tolist()
        rows = [r[: int(n)].tolist() for r, n in zip(rollout.completion_tokens.cpu(), lengths, strict=True)]
        offsets = batch_token_offsets(tokenizer, rows, rollout.texts)
        before = [convs[b].total for b in live]
        replies = env.play([convs[b] for b in live], texts)
        for j, b in enumerate(live):
            turns[b].append(texts[j])
            turn_tokens[b].append(np.minimum(offsets[j], len(texts[j])))
            turn_rewards[b].append(convs[b].total - before[j])
            messages[b] += [{"role": "assistant", "content": texts[j]}, {"role": "user", "content": replies[j]}]
        rollouts.append(rollout)
        episodes.append(live)
    batch = MultiTurnRolloutBatch.from_turns(
        prompt_ids, group_index, [c.total for c in convs], turns, turn_tokens, turn_rewards=turn_rewards, step=step
    )
    return batch, TurnSamples(rollouts, episodes)
