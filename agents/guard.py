"""The non-finite guard of a training run: advantages, loss, gradient norm and weights are checked before anything
is applied, logged or saved, and a failed check becomes one :class:`TrainingDivergedError` saying what to change.

Every verdict is collective under torchrun (each rank gets the same answer), so that all ranks stop, skip or go on
together and run the same collectives.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from ospo_gym.agents.config import AgentConfig
    from ospo_gym.agents.distributed import World

FLOAT32_MAX = float(np.finfo(np.float32).max)


class TrainingDivergedError(RuntimeError):
    """Training met a non-finite loss, gradient norm, parameter or advantage and stopped before keeping it.

    The message names the (1-based) step, the quantity and what to change. Nothing of that step was logged or
    saved: periodic checkpoints written before it are intact, and none was pruned because of it. A loss,
    gradient or advantage is caught before the optimizer step (the weights in memory are still the previous
    step's); a parameter that turned non-finite in the step leaves the weights in memory unusable: resume from
    the last checkpoint rather than saving them.
    """


def check_advantages(advantages: np.ndarray, shape: tuple[int, ...], *, step: int, algo: str, world: World) -> None:
    """Raise unless the estimator's output has the batch's (B, T) ``shape`` and is finite in float32, the
    precision of the loss (1e39 passes a float64 check, then overflows to inf). Every rank stops if one rank's
    is bad; ``step`` is the 0-based step, ``algo`` the estimator's name (both for the message).

    Raises:
        ValueError: the shape is wrong.
        TrainingDivergedError: some advantages are not finite in float32 (here or on another rank).
    """
    shaped = advantages.shape == shape
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float32's range is inf: counted as bad
        bad = int(np.count_nonzero(~np.isfinite(advantages.astype(np.float32)))) if shaped else 0
    if not world.sum([float(not shaped or bad > 0)])[0]:  # how many ranks got bad advantages
        return
    if not shaped:
        raise ValueError(
            f"estimator {algo!r} returned shape {advantages.shape} (finite: "
            f"{bool(np.all(np.isfinite(advantages)))}); expected finite (B, T) = {shape}"
        )
    if bad == 0:
        raise TrainingDivergedError(
            f"training stopped at step {step + 1}: estimator {algo!r} returned bad advantages on another "
            "process; nothing of this step was applied or saved (see that process's message)"
        )
    finite = np.isfinite(advantages)
    largest = float(np.abs(advantages[finite]).max()) if finite.any() else float("nan")
    raise TrainingDivergedError(
        f"training stopped at step {step + 1}: estimator {algo!r} returned {bad} of {advantages.size} "
        f"advantages that are not finite in float32, the precision of the loss (NaN, inf or |A| > "
        f"{FLOAT32_MAX:.3g}; largest finite |A| in float64: {largest:.3g}); nothing of this step was "
        "applied or saved. The estimator must return finite (B, T) token advantages in float32's range"
    )


def nonfinite_update(loss: float, grad_norm: float) -> str | None:
    """What makes an update unsafe to apply (``None``: nothing), from the batch's loss and grad norm."""
    if not math.isfinite(loss):
        return f"the loss is {loss}"
    if not math.isfinite(grad_norm):
        return f"the gradient norm is {grad_norm}"
    return None


def nonfinite_parameter(
    model: torch.nn.Module, world: World, *, sharded: bool, trainable_only: bool
) -> str | None:
    """The name of the first parameter of ``model`` holding inf or NaN, else ``None``; the same answer on every
    rank.

    One fused pass, as for the gradient norm: the parameters' L2 norms are all finite only if every weight is
    (squares and sums carry inf and NaN through); only if they are not is each parameter checked exactly, as a
    norm also overflows on huge finite weights. ``sharded`` (FSDP2): each rank checks its own shards, and every
    rank gets the verdict.
    """
    named_all = [(n, p) for n, p in model.named_parameters() if p.requires_grad or not trainable_only]
    local = [_local(p) for _, p in named_all] if sharded else [p.detach() for _, p in named_all]
    bad = None
    with torch.no_grad():
        if local and not bool(torch.stack(torch._foreach_norm(local, 2)).sum().isfinite()):
            bad = next((n for (n, _), t in zip(named_all, local, strict=True) if not bool(torch.isfinite(t).all())), None)
    if sharded and world.sum([float(bad is not None)])[0]:  # every rank takes the same branch
        bad = next(name for name in world.gather(bad) if name is not None)
    return bad


def diverged(config: AgentConfig, problem: str, step: int, iteration: int, *, applied: bool) -> TrainingDivergedError:
    """The error that stops training in update ``iteration`` (0-based) of ``step`` (0-based), naming them,
    the ``problem`` and what to change; ``applied``: whether the optimizer step had already changed the weights."""
    where = f"step {step + 1}" + (
        f" (update {iteration + 1} of {config.num_iterations})" if config.num_iterations > 1 else ""
    )
    if applied:
        state = (
            "the weights in memory are unusable; nothing of this step was logged or saved "
            "(resume from the last checkpoint)"
        )
    else:
        state = "the update was not applied; nothing of this step was logged or saved"
    fixes = [f"lower learning_rate (now {config.learning_rate:g})"]
    if config.weight_decay:
        fixes.append(f"lower weight_decay (now {config.weight_decay:g})")
    if config.max_grad_norm is None:
        fixes.append("clip gradients with max_grad_norm=1.0")
    if not applied and config.on_nonfinite != "skip":
        fixes.append('set on_nonfinite="skip" to skip such updates')
    fix = "; ".join(fixes)
    return TrainingDivergedError(f"training diverged at {where}: {problem}; {state}. To recover: {fix}")


def _local(parameter: torch.Tensor) -> torch.Tensor:
    """This rank's values of a parameter (its shard under FSDP2, where parameters are DTensors)."""
    return (parameter.to_local() if hasattr(parameter, "to_local") else parameter).detach()
