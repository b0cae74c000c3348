"""Controls for OSPO's gain, as plain registered estimators (any user's would look the same).

* ``ospo_shuffled`` — OSPO-PROP's token advantages of each completion, permuted at random over its valid tokens:
  the same values, the same mean Â, wrong places. Tells Owen–Shapley *placement* apart from any reweighting.
* ``ospo_loo`` — leave-one-segment-out credit ``φ_i = v(N) − v(N ∖ {i})`` (n + 1 coalitions per completion),
  redistributed to tokens as OSPO-PROP does.
* ``grpo_lambda`` — GRPO-λ's eligibility-trace token credit (Parthasarathi et al. 2025, arXiv 2510.00194), λ = 0.99
  as in the released OSPO code's GRPO-λ baseline; :func:`make_grpo_lambda` builds other λ.

Shapes: ``B`` completions, ``T`` token positions; every estimator returns (B, T), 0 where the mask is False.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ospo_gym.agents.config import AgentConfig
from ospo_gym.agents.estimators import AdvantageEstimator, RolloutBatch, ospo_credit, register_estimator
from ospo_gym.oracle import CoalitionOracle

SHUFFLE_SALT = 0x5F1E
"""Mixed into the seed of the shuffle so that it draws independently of the coalition sampling."""
GRPO_LAMBDA = 0.99
"""λ of the registered ``grpo_lambda`` (the released code's ``grpo_lambda`` config; γ = 1 there too)."""


def shuffle_rows(values: np.ndarray, mask: np.ndarray, rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """Permute each row's valid entries among the row's valid positions, shape (B, T) -> (B, T).

    Row ``b`` is permuted with ``rngs[b]``; masked entries stay where they are (0 for token advantages)."""
    out = np.array(values, dtype=np.float64, copy=True)
    for b, rng in enumerate(rngs):
        where = np.flatnonzero(mask[b])
        out[b, where] = out[b, where[rng.permutation(len(where))]]
    return out


def ospo_shuffled(batch: RolloutBatch, oracle: CoalitionOracle, config: AgentConfig) -> np.ndarray:
    """OSPO-PROP with its credit in the wrong places: ``A'_{b,t} = A_{b,π_b(t)}``, π_b a seeded permutation of the
    valid tokens of completion ``b``.

    The permutation acts on *tokens*, not segments: segments hold different numbers of tokens, so permuting segment
    credits and redistributing again would change the token values and, in general, their mean. Permuting tokens
    keeps exactly each completion's multiset of token advantages (hence its mean Â, its spread and its norm) and
    destroys where they sit. The permutation is drawn from ``(config.seed, batch.step, SHUFFLE_SALT)`` per global row
    (``batch.first_row + b``), so data-parallel ranks draw what one process draws.
    """
    advantages = ospo_credit(batch, oracle, config, "prop")
    streams = np.random.SeedSequence([config.seed, batch.step, SHUFFLE_SALT]).spawn(
        batch.first_row + len(batch.texts)
    )
    rngs = [np.random.default_rng(s) for s in streams[batch.first_row :]]
    return shuffle_rows(advantages, batch.completion_mask, rngs)


class LeaveOneOut:
    """The :class:`~ospo_gym.agents.estimators.CoalitionPlan` of leave-one-segment-out credit."""

    def coalitions(self, n: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
        """``[N, N ∖ {0}, ..., N ∖ {n−1}]``: n + 1 coalitions (deterministic; ``rng`` is unused)."""
        everyone = tuple(range(n))
        return [everyone, *(everyone[:i] + everyone[i + 1 :] for i in range(n))]

    def credit(self, coalitions: Sequence[tuple[int, ...]], values: np.ndarray, n: int) -> np.ndarray:
        """``φ_i = v(N) − v(N ∖ {i})``, shape (n,), from the values of :meth:`coalitions`."""
        values = np.asarray(values, dtype=np.float64)
        return values[0] - values[1 : n + 1]


def ospo_loo(batch: RolloutBatch, oracle: CoalitionOracle, config: AgentConfig) -> np.ndarray:
    """Leave-one-segment-out credit ``φ_i = v(N) − v(N ∖ {i})`` redistributed as OSPO-PROP (token mean Â).

    For an additive game it equals the exact Shapley value; it ignores ``w_max`` and ``max_coalitions`` (n + 1
    coalitions per completion)."""
    return ospo_credit(batch, oracle, config, "prop", plan=LeaveOneOut())


def trace_weights(mask: np.ndarray, decay: float) -> np.ndarray:
    """Eligibility-trace weight of each valid token, shape (B, T): ``e_s = Σ_{t ≥ s} decay^(t−s)`` over the valid
    tokens ``t`` of the row from ``s`` on, i.e. ``(1 − decay^(T_b − k_s)) / (1 − decay)`` with ``k_s`` the index of
    ``s`` among the row's ``T_b`` valid tokens (``T_b − k_s`` for decay 1); 0 where the mask is False."""
    mask = np.asarray(mask, dtype=bool)
    remaining = mask.sum(axis=1, keepdims=True) - (np.cumsum(mask, axis=1) - 1)  # T_b − k_s on valid tokens
    if decay == 1.0:
        weights = remaining.astype(np.float64)
    else:
        weights = (1.0 - decay ** remaining.astype(np.float64)) / (1.0 - decay)
    return np.where(mask, weights, 0.0)


def make_grpo_lambda(lam: float, gamma: float = 1.0) -> AdvantageEstimator:
    """GRPO-λ's token credit with trace decay ``γλ``: ``A_{b,s} = Â_b · Σ_{t ≥ s} (γλ)^(t−s)``.

    GRPO-λ (arXiv 2510.00194; the released OSPO code's baseline) replaces the token ratio ``ρ_t`` by
    ``exp(Σ_{l ≤ t} (γλ)^l log ρ_{t−l})``, a trace of the log-ratios of the tokens up to ``t``, multiplied by Â. At the
    on-policy point (ρ = 1, the first update on a batch) the gradient of ``Σ_t Â ρ^λ_t`` is
    ``Σ_s Â e_s ∇ log π(a_s)`` with ``e_s`` the trace weights of :func:`trace_weights`: this estimator, so the
    shared loss and its per-token clipping give GRPO-λ's update there. Away from ρ = 1 the two clip differently
    (GRPO-λ clips the traced ratio). The credit is not mean-preserving: early tokens weigh up to
    ``(1 − (γλ)^T) / (1 − γλ)`` times Â (≈ T for λ near 1), later ones down to Â.
    """
    decay = float(lam) * float(gamma)
    if not 0.0 <= lam <= 1.0 or not 0.0 < gamma <= 1.0:
        raise ValueError(f"GRPO-λ needs lam in [0, 1] and gamma in (0, 1], got lam={lam}, gamma={gamma}")

    def grpo_lambda(batch: RolloutBatch, oracle: CoalitionOracle, config: AgentConfig) -> np.ndarray:
        advantages = batch.sequence_advantages(config.scale_rewards, ddof=config.std_ddof)
        return advantages[:, None] * trace_weights(batch.completion_mask, decay)

    grpo_lambda.__qualname__ = grpo_lambda.__name__ = f"grpo_lambda[{lam:g}]"
    grpo_lambda.__doc__ = make_grpo_lambda.__doc__
    return grpo_lambda


grpo_lambda = make_grpo_lambda(GRPO_LAMBDA)

register_estimator("ospo_shuffled", ospo_shuffled)
register_estimator("ospo_loo", ospo_loo)
register_estimator("grpo_lambda", grpo_lambda)
