"""Advantage estimators: a registry of functions from a rollout batch to per-token advantages.

Every estimator has the one signature :data:`AdvantageEstimator`; adding an algorithm is registering a function::

    @register_estimator("my_algo")
    def my_algo(batch: RolloutBatch, oracle: CoalitionOracle, config: AgentConfig) -> np.ndarray:
        ...  # (B, T) token advantages, 0 where batch.completion_mask is False

Shapes: ``B`` completions (``prompts_per_step`` groups of ``group_size``), ``T`` completion token positions.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ospo_gym.agents.config import AgentConfig
from ospo_gym.credit import (
    clip_token_advantages,
    ospo_token_advantages,
    sample_coalitions,
    sample_coalitions_batch,
    segment_credit_batch,
)
from ospo_gym.credit.structures import segment_unions_batch, structured_credit
from ospo_gym.oracle import CoalitionOracle

STD_EPS = 1e-4


class LazyTokenOffsets(Sequence[np.ndarray]):
    """Token offsets of a batch, computed by ``compute()`` on first access (GRPO never reads them, and re-encoding
    the completions costs a few percent of a small model's step); ``len`` is known without computing them."""

    def __init__(self, count: int, compute: Callable[[], Sequence[np.ndarray]]) -> None:
        self._count = count
        self._compute: Callable[[], Sequence[np.ndarray]] | None = compute
        self._offsets: Sequence[np.ndarray] | None = None

    def _all(self) -> Sequence[np.ndarray]:
        if self._offsets is None:
            self._offsets, self._compute = self._compute(), None
        return self._offsets

    def __getitem__(self, index: Any) -> Any:
        return self._all()[index]

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self._all())

    def __len__(self) -> int:
        return self._count


@dataclass
class RolloutBatch:
    """What an estimator sees of one training step (numpy and Python only; no torch).

    Attributes:
        prompt_ids: (B,) env prompt ids, the oracle's first argument.
        group_index: (B,) int, the group (0..num_groups-1) of each completion; groups share a prompt.
        rewards: (B,) float, the env's reward of each completion.
        texts: (B,) completion texts (decoded without special tokens).
        token_offsets: B arrays (T_b, 2): character span of each valid token in its text; T_b = mask row sum.
        completion_mask: (B, T) bool, True for the generated tokens up to and including EOS.
        step: the training step, which seeds anything random an estimator does.
        first_row: global index of this batch's first completion; a data-parallel rank holds rows
            ``first_row ... first_row + B − 1`` of the step's global batch (0 in a single process). Random draws
            are keyed by global row, so a rank computes what one process computes for those rows.
        global_rewards, global_group_index: (B_global,) rewards and groups of the whole step's batch when it is
            split over ranks (``None``: this batch is the whole batch), for the batch-level statistics
            (``scale_rewards="batch"``, the std that clips token advantages).
    """

    prompt_ids: Sequence[Hashable]
    group_index: np.ndarray
    rewards: np.ndarray
    texts: Sequence[str]
    token_offsets: Sequence[np.ndarray]
    completion_mask: np.ndarray
    step: int = 0
    first_row: int = 0
    global_rewards: np.ndarray | None = None
    global_group_index: np.ndarray | None = None

    def sequence_advantages(self, scale: str, *, ddof: int = 1, whole_batch: bool = False) -> np.ndarray:
        """GRPO's Â of this batch's completions, shape (B,), computed over the whole step's batch; with
        ``whole_batch=True`` the (B_global,) Â of every completion of the step. ``ddof`` as in
        :func:`group_advantages`."""
        if self.global_rewards is None:
            return group_advantages(self.rewards, self.group_index, scale, ddof=ddof)
        every = group_advantages(self.global_rewards, self.global_group_index, scale, ddof=ddof)
        return every if whole_batch else every[self.first_row : self.first_row + len(self.rewards)]

    def __post_init__(self) -> None:
        self.group_index = np.asarray(self.group_index, dtype=np.int64)
        self.rewards = np.asarray(self.rewards, dtype=np.float64)
        self.completion_mask = np.asarray(self.completion_mask, dtype=bool)
        size = len(self.rewards)
        if not len(self.prompt_ids) == len(self.group_index) == len(self.texts) == len(self.token_offsets) == size:
            raise ValueError("prompt_ids, group_index, rewards, texts and token_offsets need one entry per completion")
        if self.completion_mask.ndim != 2 or self.completion_mask.shape[0] != size:
            raise ValueError(f"completion_mask must have shape (B={size}, T), got {self.completion_mask.shape}")
        if isinstance(self.token_offsets, LazyTokenOffsets):
            return  # computed from the completion tokens themselves: one span per valid token by construction
        counts = self.completion_mask.sum(axis=1)
        for b, offsets in enumerate(self.token_offsets):
            if len(offsets) != counts[b]:
                raise ValueError(f"completion {b} has {counts[b]} valid tokens but {len(offsets)} token offsets")


class AdvantageEstimator(Protocol):
    """``(batch, oracle, config) -> (B, T)`` token advantages, 0 where ``batch.completion_mask`` is False."""

    def __call__(self, batch: RolloutBatch, oracle: CoalitionOracle, config: AgentConfig) -> np.ndarray: ...


_REGISTRY: dict[str, AdvantageEstimator] = {}


def register_estimator(
    name: str, fn: AdvantageEstimator | None = None
) -> AdvantageEstimator | Callable[[AdvantageEstimator], AdvantageEstimator]:
    """Register ``fn`` under ``name``; use as ``register_estimator(name, fn)`` or as a decorator.

    Registering the same function again is a no-op; a different function under a taken name raises ValueError.
    """

    def add(function: AdvantageEstimator) -> AdvantageEstimator:
        if not callable(function):
            raise ValueError(f"an estimator must be callable, got {type(function).__name__}")
        known = _REGISTRY.get(name)
        if known is not None and known is not function:
            raise ValueError(
                f"an estimator named {name!r} is already registered ({getattr(known, '__qualname__', known)}); "
                "pick another name"
            )
        _REGISTRY[name] = function
        return function

    if not isinstance(name, str) or not name:
        raise ValueError(f"an estimator name must be a non-empty string, got {name!r}")
    return add if fn is None else add(fn)


def get_estimator(name: str) -> AdvantageEstimator:
    """The estimator registered under ``name``; an unknown name raises ValueError listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown advantage estimator {name!r}; known: {sorted(_REGISTRY)}") from None


def list_estimators() -> list[str]:
    """Registered names, sorted."""
    return sorted(_REGISTRY)


def group_advantages(
    rewards: np.ndarray, group_index: np.ndarray, scale: str = "group", *, ddof: int = 1
) -> np.ndarray:
    """GRPO's sequence advantage ``Â = (r − mean_group) / (std + 1e-4)``, shape (B,).

    Args:
        rewards: (B,) float; group_index: (B,) int group ids in ``0..num_groups-1``.
        scale: ``"group"`` (std of the group), ``"batch"`` (std of all B rewards) or ``"none"`` (no division).
            A group of equal rewards (a group of one too) gets exactly Â = 0.
        ddof: the std's delta degrees of freedom: 1 (default) is the unbiased std of ``torch.std``, TRL, verl
            and the released OSPO code; 0 the population std (earlier ospo-gym), √(G/(G−1)) times smaller.
    """
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 (population std) or 1 (unbiased std), got {ddof!r}")
    rewards = np.asarray(rewards, dtype=np.float64)
    group_index = np.asarray(group_index, dtype=np.int64)
    count = np.bincount(group_index)
    safe = np.maximum(count, 1)
    mean = np.bincount(group_index, weights=rewards) / safe
    centred = np.where(zero_variance_groups(rewards, group_index), 0.0, rewards - mean[group_index])
    if scale == "none":
        return centred
    if scale == "batch":
        return centred / (rewards.std(ddof=ddof if rewards.size > ddof else 0) + STD_EPS)
    if scale == "group":
        # a group of one has centred 0, so any positive divisor gives its Â = 0
        std = np.sqrt(np.bincount(group_index, weights=centred**2) / np.maximum(count - ddof, 1))
        return centred / (std[group_index] + STD_EPS)
    raise ValueError(f"unknown reward scaling {scale!r}; expected 'group', 'batch' or 'none'")


def zero_variance_groups(rewards: np.ndarray, group_index: np.ndarray) -> np.ndarray:
    """(B,) bool: the completion's group has all-equal rewards (its Â is 0 whatever the scaling)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    group_index = np.asarray(group_index, dtype=np.int64)
    high = np.full(group_index.max(initial=-1) + 1, -np.inf)
    low = np.full_like(high, np.inf)
    np.maximum.at(high, group_index, rewards)
    np.minimum.at(low, group_index, rewards)
    return (high - low)[group_index] <= 0


def grpo(batch: RolloutBatch, oracle: CoalitionOracle, config: AgentConfig) -> np.ndarray:
    """GRPO (Shao et al. 2024, arXiv 2402.03300): ``A_t = Â`` on every valid token. The oracle is not used."""
    advantages = batch.sequence_advantages(config.scale_rewards, ddof=config.std_ddof)
    return np.where(batch.completion_mask, advantages[:, None], 0.0)


class CoalitionPlan(Protocol):
    """Which coalitions a completion of ``n`` segments asks the oracle for, and how their values become segment
    credit: the hook of :func:`ospo_credit` for credit rules other than OSPO's (e.g. leave-one-out)."""

    def coalitions(self, n: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
        """The K coalitions to evaluate (sorted index tuples)."""
        ...

    def credit(self, coalitions: Sequence[tuple[int, ...]], values: np.ndarray, n: int) -> np.ndarray:
        """(n,) segment credit from the (K,) values of ``coalitions``."""
        ...


def ospo_credit(
    batch: RolloutBatch,
    oracle: CoalitionOracle,
    config: AgentConfig,
    redistribution: str,
    *,
    plan: CoalitionPlan | None = None,
) -> np.ndarray:
    """OSPO (arXiv 2601.08403): redistribute Â over tokens by Owen–Shapley credit of the completion's segments.

    Per completion: segments ``oracle.segment(text)`` (each distinct text once), coalitions ``sample_coalitions``
    (seeded by ``(config.seed, batch.step, b)``, drawn for the whole batch by ``sample_coalitions_batch``), values
    from ONE ``oracle.values_batch`` call for the whole batch, credit ``segment_credit_batch`` (variant
    ``config.credit_variant``; or the structure ``config.coalition_structure``, see :mod:`ospo_gym.credit.structures`),
    then ``A_t = T · Â · φ̃_t / Σ φ̃`` (PROP) or the rank-based split (RANK): the token mean stays Â (``config.credit_path="released"``: the released code's
    split, which needs the rewards and does not keep the mean). Completions with Â = 0 are not segmented, and
    those with fewer than two segments are not sent to the oracle: their credit cannot change their advantages.
    ``plan`` replaces the coalition sampling and ``segment_credit`` by another rule (:class:`CoalitionPlan`).
    """
    advantages = batch.sequence_advantages(config.scale_rewards, ddof=config.std_ddof)
    spans = _segment_distinct(oracle, batch.texts, advantages)
    streams = np.random.SeedSequence([config.seed, batch.step]).spawn(batch.first_row + len(batch.texts))[batch.first_row :]
    asked = [b for b, s in enumerate(spans) if len(s) >= 2 and advantages[b] != 0.0]
    structure = config.effective_coalition_structure
    structured = plan is None and structure in ("windows+complements", "owen")
    unions: dict[int, np.ndarray] = {}
    if structure == "owen" and plan is None:  # one union builder call per batch (one encoder call for "embedding")
        encoder = config.owen_encoder if config.owen_unions == "embedding" else None
        labels = segment_unions_batch([batch.texts[b] for b in asked], [spans[b] for b in asked], config.owen_unions, encoder=encoder)
        unions = dict(zip(asked, labels, strict=True))
    if plan is not None:
        sampled = [plan.coalitions(len(spans[b]), np.random.default_rng(streams[b])) for b in asked]
    elif structured:  # the structures beyond the paper's, one completion at a time (see ospo_gym.credit.structures)
        sampled = [
            sample_coalitions(
                len(spans[b]),
                config.w_max,
                config.max_coalitions,
                rng=np.random.default_rng(streams[b]),
                cover_singletons=config.credit_path == "default",
                coalition_structure=structure,
                unions=unions.get(b),
            )
            for b in asked
        ]
    else:  # windows or random subsets: the batched sampler, bit-identical to the per-completion one
        sampled = sample_coalitions_batch(
            [len(spans[b]) for b in asked],
            config.w_max,
            config.max_coalitions,
            seeds=[streams[b] for b in asked],
            contiguous=structure != "random",  # "random" is contiguous=False, the paper's ablation
            cover_singletons=config.credit_path == "default",  # the released code samples over budget uniformly
        )
    coalitions = dict(zip(asked, sampled, strict=True))
    credit = [np.zeros(len(s)) for s in spans]
    if asked:
        values = oracle.values_batch(
            [batch.prompt_ids[b] for b in asked],
            [batch.texts[b] for b in asked],
            [spans[b] for b in asked],
            [coalitions[b] for b in asked],
        )
        if plan is None and not structured:  # one pass per distinct coalition list (see segment_credit_batch)
            sizes = [len(spans[b]) for b in asked]
            estimates = segment_credit_batch(sampled, values, sizes, variant=config.credit_variant)
            for b, estimate in zip(asked, estimates, strict=True):
                credit[b] = estimate
        for b, value in zip(asked, values, strict=True):
            if plan is not None:
                credit[b] = plan.credit(coalitions[b], value, len(spans[b]))
            elif structured:
                credit[b] = structured_credit(
                    coalitions[b], value, len(spans[b]), structure, unions=unions.get(b), variant=config.credit_variant
                )
    token_advantages = ospo_token_advantages(
        spans,
        credit,
        batch.token_offsets,
        advantages,
        redistribution=redistribution,
        mask=batch.completion_mask,
        rewards=batch.rewards,
        credit_path=config.credit_path,
    )
    if config.clip_token_advantages is not None:
        every = batch.sequence_advantages(config.scale_rewards, ddof=config.std_ddof, whole_batch=True)
        token_advantages = clip_token_advantages(token_advantages, every, config.clip_token_advantages)
    return token_advantages


def _segment_distinct(oracle: CoalitionOracle, texts: Sequence[str], advantages: np.ndarray) -> list[list]:
    """``oracle.segment`` of each completion with Â ≠ 0 (``[]`` for the others), each distinct text segmented once
    (a group often repeats a completion; rows of one text share its span list, which nothing mutates)."""
    done: dict[str, list] = {}
    spans: list[list] = []
    for text, advantage in zip(texts, advantages, strict=True):
        if advantage == 0.0:
            spans.append([])
            continue
        cut = done.get(text)
        if cut is None:
            cut = done[text] = oracle.segment(text)
        spans.append(cut)
    return spans


def ospo_prop(batch: RolloutBatch, oracle: CoalitionOracle, config: AgentConfig) -> np.ndarray:
    """OSPO-PROP: token shares proportional to min–max normalised segment credit (see :func:`ospo_credit`)."""
    return ospo_credit(batch, oracle, config, "prop")


def ospo_rank(batch: RolloutBatch, oracle: CoalitionOracle, config: AgentConfig) -> np.ndarray:
    """OSPO-RANK: token shares proportional to the rank of their credit (see :func:`ospo_credit`)."""
    return ospo_credit(batch, oracle, config, "rank")


register_estimator("grpo", grpo)
register_estimator("ospo_prop", ospo_prop)
register_estimator("ospo_rank", ospo_rank)
