"""Advantage estimators of multi-turn episodes (``ospo/ConvSearch-v0``): trajectory GRPO, turn-level GRPO
(MT-GRPO-style) and ``ospo_turn``, two-level Owen credit with turns as unions and segments as players.

How a multi-turn episode enters an estimator — a :class:`MultiTurnRolloutBatch`, one row per episode:

* ``texts[b]`` is the policy's turns joined by :data:`TURN_SEPARATOR` (``"\\n"``); the env's replies are not in it;
* ``turn_spans[b]`` (K_b, 2) is the character span of each turn in ``texts[b]``;
* the row's tokens (``completion_mask``, ``token_offsets``) are the policy's own tokens of every turn, in order,
  each with its character span in ``texts[b]`` (the tokens of turn k inside ``turn_spans[b][k]``); the loss sees
  only these tokens, so the shopper's tokens never get an advantage;
* ``rewards[b]`` is the episode's return; ``turn_rewards[b]`` (K_b,) the reward of each turn (the env's step
  rewards), read by turn-level GRPO only.

:meth:`MultiTurnRolloutBatch.from_turns` builds one from per-turn texts and per-turn token offsets. The estimators
have the registry's one signature ``(batch, oracle, config) -> (B, T)``; ``ospo_turn`` needs the env's
:class:`~ospo_gym.turn_oracle.TurnOracle` (``env.unwrapped.oracle``).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from ospo_gym.agents.config import AgentConfig
from ospo_gym.agents.estimators import RolloutBatch, group_advantages, grpo, register_estimator
from ospo_gym.credit import ospo_token_advantages
from ospo_gym.credit.owen import two_level_coalitions, two_level_credit
from ospo_gym.turn_oracle import TurnOracle

TURN_SEPARATOR = "\n"
MULTI_TURN_ESTIMATORS = ("trajectory_grpo", "turn_grpo", "ospo_turn")
"""The estimators registered here; they need a :class:`MultiTurnRolloutBatch` (a multi-turn env)."""
TURN_OUTCOME_WEIGHT = 1.0
"""λ of turn-level GRPO: a non-final turn's tokens get ``Â_turn + λ · Â_outcome`` (MT-GRPO uses 1)."""


@dataclass
class MultiTurnRolloutBatch(RolloutBatch):
    """A :class:`~ospo_gym.agents.RolloutBatch` of multi-turn episodes (the module doc gives the layout).

    Attributes (besides the parent's):
        turn_spans: B arrays (K_b, 2) int64, each turn's character span in ``texts[b]``, ordered and disjoint.
        turn_rewards: B arrays (K_b,) float, each turn's reward; ``None`` when not recorded.
    """

    turn_spans: Sequence[np.ndarray] = ()
    turn_rewards: Sequence[np.ndarray] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        size = len(self.rewards)
        self.turn_spans = [np.asarray(s, dtype=np.int64).reshape(-1, 2) for s in self.turn_spans]
        if len(self.turn_spans) != size:
            raise ValueError(f"turn_spans needs one (K_b, 2) array per episode ({size}), got {len(self.turn_spans)}")
        for b, spans in enumerate(self.turn_spans):
            ends = np.concatenate([[0], spans[:, 1]])
            if np.any(spans[:, 0] < ends[:-1]) or np.any(spans[:, 1] < spans[:, 0]) or (len(spans) and spans[-1, 1] > len(self.texts[b])):
                raise ValueError(f"turn_spans[{b}] = {spans.tolist()} are not ordered, disjoint spans inside texts[{b}]")
        if self.turn_rewards is not None:
            self.turn_rewards = [np.asarray(r, dtype=np.float64).reshape(-1) for r in self.turn_rewards]
            if len(self.turn_rewards) != size or any(len(r) != len(s) for r, s in zip(self.turn_rewards, self.turn_spans, strict=True)):
                raise ValueError("turn_rewards needs one (K_b,) array per episode, one reward per turn")

    def turns(self, b: int) -> list[str]:
        """The policy's turn texts of episode ``b``."""
        return [self.texts[b][s:e] for s, e in self.turn_spans[b].tolist()]

    def token_turns(self, b: int) -> np.ndarray:
        """(T_b,) int64: the turn of each valid token of episode ``b`` (by where the token starts)."""
        starts = np.asarray(self.token_offsets[b], dtype=np.int64).reshape(-1, 2)[:, 0]
        return np.clip(np.searchsorted(self.turn_spans[b][:, 1], starts, side="left"), 0, max(len(self.turn_spans[b]) - 1, 0))

    @classmethod
    def from_turns(
        cls,
        prompt_ids: Sequence[Hashable],
        group_index: Sequence[int],
        rewards: Sequence[float],
        turns: Sequence[Sequence[str]],
        turn_token_offsets: Sequence[Sequence[np.ndarray]],
        *,
        turn_rewards: Sequence[Sequence[float]] | None = None,
        step: int = 0,
    ) -> MultiTurnRolloutBatch:
        """Join each episode's turns and their tokens into one row.

        Args:
            turns: B lists of the policy's turn texts.
            turn_token_offsets: B lists (one per turn) of (T_bk, 2) token character spans within the turn's own text.
        """
        texts, spans, offsets = [], [], []
        for b, (episode, episode_offsets) in enumerate(zip(turns, turn_token_offsets, strict=True)):
            if len(episode_offsets) != len(episode):
                raise ValueError(f"episode {b} has {len(episode)} turns but token offsets for {len(episode_offsets)}")
            starts = np.cumsum([0, *(len(t) + len(TURN_SEPARATOR) for t in episode)])[:-1]
            texts.append(TURN_SEPARATOR.join(episode))
            spans.append(np.stack([starts, starts + np.array([len(t) for t in episode])], axis=1) if episode else np.zeros((0, 2)))
            shifted = [np.asarray(o, dtype=np.int64).reshape(-1, 2) + s for o, s in zip(episode_offsets, starts, strict=True)]
            offsets.append(np.concatenate(shifted) if shifted else np.zeros((0, 2), dtype=np.int64))
        width = max((len(o) for o in offsets), default=0)
        mask = np.arange(width)[None, :] < np.array([len(o) for o in offsets])[:, None]
        return cls(
            list(prompt_ids), np.asarray(group_index), np.asarray(rewards), texts, offsets, mask, step,
            turn_spans=spans, turn_rewards=turn_rewards,
        )


def _require_multi_turn(batch: RolloutBatch, name: str) -> MultiTurnRolloutBatch:
    if not isinstance(batch, MultiTurnRolloutBatch):
        raise ValueError(
            f"{name} needs a MultiTurnRolloutBatch (turn boundaries of each episode), got {type(batch).__name__}; "
            "build one with MultiTurnRolloutBatch.from_turns"
        )
    return batch


def trajectory_grpo(batch: RolloutBatch, oracle: object, config: AgentConfig) -> np.ndarray:
    """Trajectory GRPO: ``A_t = Â`` of the episode's return on every policy token of every turn (B, T); the
    baseline of multi-turn trainers that see the episode as one bandit arm. The oracle is not used."""
    return grpo(_require_multi_turn(batch, "trajectory_grpo"), oracle, config)


def turn_grpo_advantages(
    batch: MultiTurnRolloutBatch, scale: str = "group", *, ddof: int = 1, outcome_weight: float = TURN_OUTCOME_WEIGHT
) -> np.ndarray:
    """Turn-level GRPO in the manner of MT-GRPO (Zeng et al. 2025, arXiv 2505.11821), generalised from two turns
    to K: a token of turn ``k`` gets ``Â_turn[k] + λ · Â_outcome`` unless ``k`` is the episode's last turn, which
    gets ``Â_outcome``. ``Â_outcome`` is GRPO's advantage of the return; ``Â_turn[k]`` that of turn ``k``'s reward
    among the episodes of the group that have a turn ``k``. Shape (B, T), 0 on padding; not mean-preserving.
    """
    if batch.turn_rewards is None:
        raise ValueError("turn-level GRPO needs batch.turn_rewards (each turn's reward, e.g. the env's step rewards)")
    outcome = batch.sequence_advantages(scale, ddof=ddof)
    counts = np.array([len(r) for r in batch.turn_rewards], dtype=np.int64)
    width = int(counts.max(initial=1))
    rows = np.repeat(np.arange(len(counts)), counts)
    position = np.concatenate([np.arange(c) for c in counts]) if len(counts) else np.zeros(0, dtype=np.int64)
    flat = np.concatenate(batch.turn_rewards) if len(counts) else np.zeros(0)
    turn_adv = group_advantages(flat, batch.group_index[rows] * width + position, scale, ddof=ddof) if len(flat) else flat
    out = np.zeros(batch.completion_mask.shape)
    starts = np.cumsum(counts) - counts
    for b in range(len(counts)):  # B episodes; each row is one vectorised gather over its tokens
        k = batch.token_turns(b)
        per_turn = turn_adv[starts[b] : starts[b] + counts[b]] + outcome_weight * outcome[b]
        if counts[b]:
            per_turn[-1] = outcome[b]
        valid = np.flatnonzero(batch.completion_mask[b])
        out[b, valid] = per_turn[k] if counts[b] else outcome[b]
    return out


def turn_grpo(batch: RolloutBatch, oracle: object, config: AgentConfig) -> np.ndarray:
    """Turn-level GRPO (:func:`turn_grpo_advantages` with λ = :data:`TURN_OUTCOME_WEIGHT`)."""
    return turn_grpo_advantages(_require_multi_turn(batch, "turn_grpo"), config.scale_rewards, ddof=config.std_ddof)


def ospo_turn_credit(
    batch: MultiTurnRolloutBatch,
    oracle: TurnOracle,
    config: AgentConfig,
    rows: Sequence[int] | None = None,
    *,
    all_inner: bool = False,
) -> tuple[list[list[list[tuple[int, int]]]], list[np.ndarray]]:
    """Two-level Owen credit of the segments of episodes ``rows`` (default: all), with ONE oracle call.

    Per episode: segments of each turn (``oracle.segment_turns``), coalitions
    :func:`~ospo_gym.credit.owen.two_level_coalitions` (every subset of the other turns up to 6 of them; inner
    windows ``config.w_max`` / ``config.max_coalitions``, or every subset with ``all_inner``; seeded by
    ``(config.seed, batch.step, global row)``), credit :func:`~ospo_gym.credit.owen.two_level_credit`.

    Returns:
        spans: per episode, per turn, its segment spans (in the turn's own text); credit: per episode (P_b,) flat
        segment credit in turn order (zeros for episodes not in ``rows``).
    """
    rows = range(len(batch.texts)) if rows is None else rows
    spans = [oracle.segment_turns(batch.turns(b)) for b in range(len(batch.texts))]
    streams = np.random.SeedSequence([config.seed, batch.step]).spawn(batch.first_row + len(batch.texts))[batch.first_row :]
    asked = [b for b in rows if sum(len(s) for s in spans[b]) >= 1]
    coalitions = {
        b: two_level_coalitions(
            [len(s) for s in spans[b]], config.w_max, config.max_coalitions, rng=np.random.default_rng(streams[b]), all_inner=all_inner
        )
        for b in asked
    }
    credit = [np.zeros(sum(len(s) for s in episode)) for episode in spans]
    if asked:
        values = oracle.values_batch(
            [batch.prompt_ids[b] for b in asked], [batch.turns(b) for b in asked], [spans[b] for b in asked], [coalitions[b] for b in asked]
        )
        for b, value in zip(asked, values, strict=True):
            credit[b] = two_level_credit(coalitions[b], value, [len(s) for s in spans[b]])
    return spans, credit


def ospo_turn(batch: RolloutBatch, oracle: object, config: AgentConfig) -> np.ndarray:
    """``ospo_turn``: two-level Owen credit (turns as unions, segments as players; :func:`ospo_turn_credit`)
    redistributed over the tokens of every turn with OSPO-PROP, ``A_t = T_b · Â · φ̃_t / Σ φ̃`` (B, T): the token
    mean of each episode stays its GRPO advantage ``Â``. Episodes with ``Â = 0`` are not sent to the oracle; an
    episode whose credit does not vary gets ``Â`` on every token. Reads ``config.scale_rewards``, ``std_ddof``,
    ``w_max``, ``max_coalitions`` and ``seed``; the single-turn options ``credit_variant``, ``credit_path``,
    ``contiguous`` and ``clip_token_advantages`` do not apply here."""
    batch = _require_multi_turn(batch, "ospo_turn")
    if not isinstance(oracle, TurnOracle):
        raise ValueError(
            f"ospo_turn needs a multi-turn env's TurnOracle (env.unwrapped.oracle of ospo/ConvSearch-v0), got "
            f"{type(oracle).__name__}"
        )
    advantages = batch.sequence_advantages(config.scale_rewards, ddof=config.std_ddof)
    spans, credit = ospo_turn_credit(batch, oracle, config, [b for b in range(len(advantages)) if advantages[b] != 0.0])
    flat_spans = [
        [(int(start + s), int(start + e)) for (start, _), turn_spans in zip(batch.turn_spans[b].tolist(), spans[b], strict=True) for s, e in turn_spans]
        for b in range(len(spans))
    ]
    return ospo_token_advantages(
        flat_spans, credit, batch.token_offsets, advantages, redistribution="prop", mask=batch.completion_mask
    )


register_estimator("trajectory_grpo", trajectory_grpo)
register_estimator("turn_grpo", turn_grpo)
register_estimator("ospo_turn", ospo_turn)
