"""Credit assignment for generative search (pure numpy): coalitions, segment credit, token advantages.

The pipeline OSPO (arXiv 2601.08403) runs for one completion::

    coalitions = sample_coalitions(n_segments, w_max=8, max_coalitions=96, rng=seed)
    values = oracle.values(prompt_id, text, spans, coalitions)      # env side
    credit = segment_credit(coalitions, values, n_segments)         # (n,); variant="owen"
    token_adv = ospo_token_advantages([spans], [credit], [offsets], advantages, redistribution="prop")
"""

from ospo_gym.credit.coalitions import (
    Coalition,
    contiguous_coalitions,
    noncontiguous_coalitions,
    sample_coalitions,
    sample_coalitions_batch,
)
from ospo_gym.credit.embedding import (
    get_segment_encoder,
    register_segment_encoder,
    similarity_unions,
)
from ospo_gym.credit.shapley import (
    CREDIT_VARIANTS,
    ValueFn,
    marginal_pairs,
    owen_estimate,
    segment_credit,
    segment_credit_batch,
    shapley_exact,
    shapley_weight,
)
from ospo_gym.credit.structures import (
    COALITION_STRUCTURES,
    UNION_SOURCES,
    lexical_unions,
    owen_coalitions,
    segment_unions,
    segment_unions_batch,
    sentence_unions,
    structured_credit,
)
from ospo_gym.credit.tokens import (
    CREDIT_PATHS,
    REDISTRIBUTIONS,
    average_ranks,
    clip_token_advantages,
    minmax_normalise,
    ospo_token_advantages,
    pad_rows,
    redistribute_prop,
    redistribute_rank,
    segment_to_tokens,
    segment_to_tokens_batch,
    token_weights,
)

__all__ = [
    "COALITION_STRUCTURES",
    "CREDIT_PATHS",
    "CREDIT_VARIANTS",
    "REDISTRIBUTIONS",
    "UNION_SOURCES",
    "Coalition",
    "ValueFn",
    "average_ranks",
    "clip_token_advantages",
    "contiguous_coalitions",
    "get_segment_encoder",
    "lexical_unions",
    "marginal_pairs",
    "minmax_normalise",
    "noncontiguous_coalitions",
    "ospo_token_advantages",
    "owen_coalitions",
    "owen_estimate",
    "pad_rows",
    "redistribute_prop",
    "redistribute_rank",
    "register_segment_encoder",
    "sample_coalitions",
    "sample_coalitions_batch",
    "segment_credit",
    "segment_credit_batch",
    "segment_to_tokens",
    "segment_to_tokens_batch",
    "segment_unions",
    "segment_unions_batch",
    "sentence_unions",
    "similarity_unions",
    "shapley_exact",
    "shapley_weight",
    "structured_credit",
    "token_weights",
]


def __getattr__(name: str):
    # the old name of CREDIT_VARIANTS works for one more version, with a warning
    if name == "ESTIMATORS":
        import warnings

        warnings.warn(
            "ospo_gym.credit.ESTIMATORS is deprecated and will be removed in the next version; use CREDIT_VARIANTS "
            "(the segment-credit variants; 'estimator' names the advantage estimators of the agents' registry)",
            DeprecationWarning,
            stacklevel=2,
        )
        return CREDIT_VARIANTS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
