"""The policy update of one batch: ``num_iterations`` optimizer steps of the clipped surrogate
(:func:`~ospo_gym.agents.loss.policy_loss`), each over the batch's micro-batches, each checked by the
non-finite guard (:mod:`ospo_gym.agents.guard`) before it is applied.

Rows of skipped (zero-variance) groups are left out of the forward pass. The loss is normalised by the
denominator of the whole global batch and multiplied by the world size, which DDP / FSDP2's gradient averaging
divides out again. With ``micro_batch_size`` the rows go through forward and backward in chunks of that many
(gradients accumulate; one optimizer step per iteration); every rank runs the same number of chunks, and a chunk
(or a rank) whose rows are all skipped runs one row with no tokens in the loss, so that every rank runs the same
collectives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ospo_gym.agents.generation import Rollout, completion_logprobs
from ospo_gym.agents.guard import diverged, nonfinite_parameter, nonfinite_update
from ospo_gym.agents.logger import (
    LOSS_CLIP_FRACTION,
    LOSS_CLIP_HIGH_FRACTION,
    LOSS_CLIP_LOW_FRACTION,
    LOSS_GRAD_NORM,
    LOSS_KL,
    LOSS_POLICY,
    LOSS_RATIO_MEAN,
    LOSS_SKIPPED_UPDATES,
    PERF_SYNC_SECONDS,
)
from ospo_gym.agents.loss import loss_denominator, policy_loss
from ospo_gym.errors import one_line

if TYPE_CHECKING:
    from ospo_gym.agents.config import AgentConfig
    from ospo_gym.agents.distributed import World
    from ospo_gym.agents.rollout import RolloutBackend

TOKEN_FRACTIONS = ("clip_fraction", "clip_low_fraction", "clip_high_fraction", "ratio_mean", "kl")
"""The parts of :func:`policy_loss` that are token means: averaged over ranks and chunks weighted by tokens."""


@dataclasses.dataclass
class Chunk:
    """One micro-batch of an update: model inputs, loss mask (R, T), token advantages (R, T), the sampler's
    log-probs (R, T; vLLM, until the first iteration has weighted the advantages), the log-probs before the update
    (set by the first iteration unless computed up front), the reference's (KL), and the first iteration's
    differentiable log-probs (R, T) when :meth:`PolicyUpdate.prepare` ran that forward pass ahead."""

    inputs: tuple[torch.Tensor, ...]
    mask: torch.Tensor
    advantages: torch.Tensor | None  # None until the batch's advantages are known (PolicyUpdate.prepare)
    sampler: torch.Tensor | None
    old: torch.Tensor | None
    ref: torch.Tensor | None
    ahead: torch.Tensor | None = None  # consumed (set back to None) by the first iteration's backward


@dataclasses.dataclass
class Prepared:
    """:meth:`PolicyUpdate.prepare`'s answer: the update's chunks ``(rows, padding)`` and their pieces without
    advantages."""

    chunks: list[tuple[torch.Tensor, bool]]
    pieces: list[Chunk]


class PolicyUpdate:
    """Updates ``model`` on a batch (:meth:`__call__`).

    Args:
        model: the policy (its parameters, train / eval mode, LoRA's ``disable_adapter``).
        learner: the module the loss runs through: DDP's wrapper, or the model itself (one process; FSDP2 shards
            in place).
        optimizer: the optimizer of the model's trainable parameters.
        config: the agent's config (loss, clipping, ``num_iterations``, ``micro_batch_size``, ``on_nonfinite``).
        world: the processes of the run.
        device: where the model's tensors live.
        sharded: the model is sharded by FSDP2.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        learner: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        config: AgentConfig,
        world: World,
        *,
        device: torch.device,
        sharded: bool,
    ) -> None:
        self.model, self.learner, self.optimizer = model, learner, optimizer
        self.config, self.world, self.device, self.sharded = config, world, device, sharded
        self.trainable = [p for p in model.parameters() if p.requires_grad]

    def __call__(
        self,
        rollout: Rollout,
        advantages: np.ndarray,
        flat: np.ndarray,
        *,
        reference: torch.nn.Module | None,
        rollouts: RolloutBackend,
        step: int,
        prepared: Prepared | None = None,
    ) -> dict[str, Any]:
        """``num_iterations`` optimizer steps on the batch, then the new weights go to the rollout engine (if
        any); returns the loss metrics averaged over the steps (``loss/policy`` is ``None`` when no completion
        of the whole batch is in the loss).

        Args:
            rollout: the batch's completions (B rows).
            advantages: (B, T) token advantages.
            flat: (B,) bool, the rows of zero-variance groups (left out with ``skip_zero_variance_groups``).
            reference: the frozen KL reference model, or ``None`` (no KL, or LoRA: the adapters are disabled).
            rollouts: the rollout backend that sampled the batch (importance weights, weight sync).
            step: the 0-based step, for the guard's message.
            prepared: :meth:`prepare`'s answer for this batch and ``flat`` (computed here when ``None``): the
                log-probs that do not need the advantages, computed before them while the credit runs.

        Raises:
            TrainingDivergedError: a loss or gradient norm is not finite (``on_nonfinite="stop"``), the
                optimizer's step overflows, or a weight is not finite after a step.
        """
        config = self.config
        keep = ~flat if config.skip_zero_variance_groups else np.ones(len(flat), dtype=bool)
        kept = torch.as_tensor(keep, device=self.device)[:, None]
        rows = torch.as_tensor(np.flatnonzero(keep) if keep.any() else [0], device=self.device)
        mask = (rollout.completion_mask & kept).index_select(0, rows)
        local_tokens = float(mask.sum())  # padding chunks add none
        normaliser = float(self.world.sum(loss_denominator(mask, config.loss_aggregation, config.max_new_tokens)))
        if normaliser == 0:  # no completion of the whole batch is in the loss: every rank skips alike
            return {LOSS_POLICY: None}
        if prepared is None:
            prepared = self.prepare(rollout, flat, reference=reference, rollouts=rollouts)
        all_advantages = torch.as_tensor(advantages, dtype=torch.float32, device=self.device)
        pieces = [
            dataclasses.replace(piece, advantages=all_advantages.index_select(0, chunk))
            for piece, (chunk, _) in zip(prepared.pieces, prepared.chunks, strict=True)
        ]
        self.model.train()
        totals: dict[str, float] = {}
        sampler_sums: dict[str, float] = {}
        skipped = 0
        for iteration in range(config.num_iterations):
            parts, applied = self._iteration(pieces, normaliser, sampler_sums, iteration=iteration, step=step)
            skipped += 0 if applied else 1
            for key, value in parts.items():
                totals[key] = totals.get(key, 0.0) + float(value) / config.num_iterations
        self.model.eval()
        synced = time.perf_counter()
        rollouts.sync_weights()
        return {
            **{key: value / max(local_tokens, 1.0) for key, value in sampler_sums.items()},
            PERF_SYNC_SECONDS: time.perf_counter() - synced,
            LOSS_POLICY: totals["policy"],
            LOSS_KL: totals["kl"],
            LOSS_CLIP_FRACTION: totals["clip_fraction"],
            LOSS_CLIP_LOW_FRACTION: totals["clip_low_fraction"],
            LOSS_CLIP_HIGH_FRACTION: totals["clip_high_fraction"],
            LOSS_RATIO_MEAN: totals["ratio_mean"],
            LOSS_GRAD_NORM: totals["grad_norm"],
            LOSS_SKIPPED_UPDATES: skipped,
        }

    def micro_batches(self, keep: np.ndarray) -> list[tuple[torch.Tensor, bool]]:
        """The kept rows in chunks of ``micro_batch_size``, as ``(row indices, padding)``; ranks with fewer chunks
        than the busiest rank get padding chunks (one row, no tokens in the loss), so that all run the same
        number of forward / backward passes."""
        size = self.config.micro_batch_size
        kept_rows = np.flatnonzero(keep)
        chunks = [(torch.as_tensor(kept_rows[i : i + size], device=self.device), False) for i in range(0, len(kept_rows), size)]
        count = int(self.world.max([max(len(chunks), 1)])[0])
        padding = torch.zeros(1, dtype=torch.long, device=self.device)
        return chunks + [(padding, True)] * (count - len(chunks))

    def prepare(
        self,
        rollout: Rollout,
        flat: np.ndarray,
        *,
        reference: torch.nn.Module | None,
        rollouts: RolloutBackend,
        forward_ahead: bool = False,
    ) -> Prepared:
        """What the update needs before the advantages: each chunk's inputs, loss mask and the log-probs that stay
        fixed during the update (no gradient). An agent computes it while the batch's credit runs on the CPU
        (:attr:`~ospo_gym.agents.config.AgentConfig.overlap_credit`); ``flat`` as for :meth:`__call__`.

        ``forward_ahead`` also runs the first iteration's forward pass of the first chunk (with gradients: the
        loss needs the advantages, the forward pass does not), so that with one iteration and no KL term there is
        still work to overlap. The same operations in the same order as :meth:`__call__` would run them (the
        weights do not change before that pass), so the update is the same bit for bit. One process only: DDP's
        gradient synchronisation is tied to the backward of the last chunk."""
        keep = ~flat if self.config.skip_zero_variance_groups else np.ones(len(flat), dtype=bool)
        kept = torch.as_tensor(keep, device=self.device)[:, None]
        rows = torch.as_tensor(np.flatnonzero(keep) if keep.any() else [0], device=self.device)
        chunks = [(rows, False)] if self.config.micro_batch_size is None else self.micro_batches(keep)
        pieces = self._pieces(rollout, kept, chunks, reference, off_policy=rollouts.off_policy)
        if forward_ahead and self.world.size == 1 and bool((rollout.completion_mask & kept).any()):  # else no loss
            self.model.train()  # as __call__ sets it before its first forward pass
            first = pieces[0]
            first.ahead = completion_logprobs(self.learner, *first.inputs, temperature=self.config.temperature)
        return Prepared(chunks, pieces)

    def _pieces(
        self,
        rollout: Rollout,
        kept: torch.Tensor,
        chunks: list[tuple[torch.Tensor, bool]],
        reference: torch.nn.Module | None,
        *,
        off_policy: bool,
    ) -> list[Chunk]:
        """Each chunk's inputs and loss mask, with the log-probs that stay fixed during the update: the current
        policy's when there are several iterations, the reference's when there is a KL term (advantages: None)."""
        config = self.config
        tensors = (rollout.prompt_tokens, rollout.prompt_mask, rollout.completion_tokens, rollout.completion_mask)
        pieces: list[Chunk] = []
        for chunk, padding in chunks:
            inputs = tuple(t.index_select(0, chunk) for t in tensors)
            old = ref = None
            with torch.no_grad():
                if config.num_iterations > 1:
                    old = completion_logprobs(self.learner, *inputs, temperature=config.temperature)
                if reference is not None:
                    ref = completion_logprobs(reference, *inputs, temperature=config.temperature)
                elif config.beta > 0:
                    with self.model.disable_adapter():
                        ref = completion_logprobs(self.learner, *inputs, temperature=config.temperature)
            sampler = rollout.logprobs.index_select(0, chunk) if off_policy else None
            chunk_mask = (rollout.completion_mask & kept & (not padding)).index_select(0, chunk)
            pieces.append(Chunk(inputs, chunk_mask, None, sampler, old, ref))
        return pieces

    def _iteration(
        self, pieces: list[Chunk], normaliser: float, sampler_sums: dict[str, float], *, iteration: int, step: int
    ) -> tuple[dict[str, float], bool]:
        """One optimizer step: forward / backward over every chunk, then the guard, then the step (or its skip).
        Returns the step's loss parts (the loss summed over ranks, the grad norm, the token fractions) and
        whether the step was applied. Adds the importance-weight metrics (token sums) to ``sampler_sums``."""
        config = self.config
        self.optimizer.zero_grad(set_to_none=True)
        local = [0.0] * (len(TOKEN_FRACTIONS) + 2)  # loss, token-weighted fractions, tokens
        for index, piece in enumerate(pieces):
            tokens = float(piece.mask.sum())
            loss, parts = self._backward(piece, normaliser, tokens, sampler_sums, last=index == len(pieces) - 1)
            local[0] += loss
            for i, key in enumerate(TOKEN_FRACTIONS):
                local[1 + i] += parts[key] * tokens
            local[-1] += tokens
        limit = config.max_grad_norm if config.max_grad_norm is not None else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, limit)
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm  # FSDP2: a DTensor
        # this rank's share: the loss adds up over ranks, the token fractions are token-weighted means
        summed = self.world.sum(local)
        # decided before the step, on what every rank holds alike: the summed loss, the global grad norm
        problem = nonfinite_update(float(summed[0]), float(grad_norm))
        applied = problem is None
        if applied:
            self._optimizer_step(iteration, step)
            self._check_parameters(iteration, step)
        elif config.on_nonfinite == "skip":
            self.optimizer.zero_grad(set_to_none=True)
        else:
            self.model.eval()  # as a finished update leaves it
            raise diverged(config, problem, step, iteration, applied=False)
        step_parts = {"policy": summed[0], "grad_norm": float(grad_norm)}
        step_parts.update({k: summed[1 + i] / max(summed[-1], 1.0) for i, k in enumerate(TOKEN_FRACTIONS)})
        return step_parts, applied

    def _backward(
        self, piece: Chunk, normaliser: float, tokens: float, sampler_sums: dict[str, float], *, last: bool
    ) -> tuple[float, dict[str, float]]:
        """Forward and backward of one chunk (gradients accumulate); returns its loss and the loss's parts."""
        config = self.config
        # DDP all-reduces once, on the last chunk's backward; sums of chunk gradients are the batch's
        sync = contextlib.nullcontext() if last or not hasattr(self.learner, "no_sync") else self.learner.no_sync()
        with sync:
            if piece.ahead is not None:  # run by prepare(forward_ahead=True) while the credit was computed
                logprobs, piece.ahead = piece.ahead, None
            else:
                logprobs = completion_logprobs(self.learner, *piece.inputs, temperature=config.temperature)
            if piece.old is None:  # one update per batch: the ratio is 1, at the current weights
                piece.old = logprobs.detach()
            if piece.sampler is not None:  # another engine sampled: truncated importance weights (TRL, verl)
                from ospo_gym.agents.vllm_rollout import importance_weights

                weights, metrics = importance_weights(piece.old, piece.sampler, piece.mask, config.vllm_is_cap)
                for key, value in metrics.items():  # token means: weighted by the chunk's tokens
                    sampler_sums[key] = sampler_sums.get(key, 0.0) + value * tokens
                # w > 0 scales the clipped surrogate; the first iteration's weights stay
                piece.advantages, piece.sampler = piece.advantages * weights, None
            loss, parts = policy_loss(
                logprobs,
                piece.old,
                piece.advantages,
                piece.mask,
                epsilon=config.epsilon,
                epsilon_high=config.epsilon_high,
                beta=config.beta,
                ref_logprobs=piece.ref,
                aggregation=config.loss_aggregation,
                max_tokens=config.max_new_tokens,
                normaliser=normaliser,
            )
            (loss * self.world.size).backward()
        return float(loss.detach()), parts

    def _optimizer_step(self, iteration: int, step: int) -> None:
        """``optimizer.step()``; a step size or decay factor beyond float32 (learning_rate 1e39, or as large a
        learning_rate × weight_decay) makes torch refuse the scalar midway, some moments updated: stop."""
        try:
            self.optimizer.step()
        except RuntimeError as err:
            if "overflow" not in str(err):
                raise
            problem = f"the optimizer's step overflows float32 ({one_line(err)})"
            self.model.eval()
            raise diverged(self.config, problem, step, iteration, applied=True) from err

    def _check_parameters(self, iteration: int, step: int) -> None:
        """Raise :class:`~ospo_gym.agents.guard.TrainingDivergedError` if a trainable parameter is not finite
        after the update."""
        bad = nonfinite_parameter(self.model, self.world, sharded=self.sharded, trainable_only=True)
        if bad is not None:
            problem = f"parameter {bad!r} is not finite after the optimizer step"
            self.model.eval()
            raise diverged(self.config, problem, step, iteration, applied=True)
