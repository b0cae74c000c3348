"""Credit assignment for generative search (pure numpy): coalitions, Shapley/Owen values, token advantages.

The pipeline OSPO (arXiv 2601.08403) runs for one completion::

    coalitions = sample_coalitions(n_segments, w_max=8, max_coalitions=96, rng=seed)
    values = oracle.values(prompt_id, text, spans, coalitions)      # env side
    credit = owen_estimate(coalitions, values, n_segments)          # (n,)
    token_adv = ospo_token_advantages([spans], [credit], [offsets], advantages, redistribution="prop")
"""

from ospo_gym.credit.coalitions import (
    Coalition,
    contiguous_coalitions,
    noncontiguous_coalitions,
    sample_coalitions,
)
from ospo_gym.credit.shapley import (
    ESTIMATORS,
    ValueFn,
    marginal_pairs,
    owen_estimate,
    shapley_exact,
    shapley_weight,
)
from ospo_gym.credit.tokens import (
    REDISTRIBUTIONS,
    average_ranks,
    clip_token_advantages,
    minmax_normalise,
    ospo_token_advantages,
    pad_rows,
    redistribute_prop,
    redistribute_rank,
    segment_to_tokens,
    token_weights,
)

__all__ = [
    "ESTIMATORS",
    "REDISTRIBUTIONS",
    "Coalition",
    "ValueFn",
    "average_ranks",
    "clip_token_advantages",
    "contiguous_coalitions",
    "marginal_pairs",
    "minmax_normalise",
    "noncontiguous_coalitions",
    "ospo_token_advantages",
    "owen_estimate",
    "pad_rows",
    "redistribute_prop",
    "redistribute_rank",
    "sample_coalitions",
    "segment_to_tokens",
    "shapley_exact",
    "shapley_weight",
    "token_weights",
]
