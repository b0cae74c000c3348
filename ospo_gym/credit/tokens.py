"""From segment credit to per-token advantages (OSPO-PROP and OSPO-RANK).

Shapes: ``B`` sequences in a batch, ``T`` token positions (right-padded), ``P`` segments of one sequence.
Both redistributions keep the token mean of every sequence equal to its sequence advantage ``Â``:
``Σ_t mask_t A_t = T_valid · Â``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ospo_gym.runs import offsets_in_runs

Span = tuple[int, int]
REDISTRIBUTIONS = ("prop", "rank")
RANK_ORDERS = ("ascending", "released")
CREDIT_PATHS = ("default", "released")
"""The token steps of :func:`ospo_token_advantages` (``credit_path=``, ``AgentConfig.credit_path``)."""
RELEASED_EPS = 1e-4


def token_weights(spans: Sequence[Span], offsets: np.ndarray) -> np.ndarray:
    """Share of each token that falls in each segment, by character overlap.

    Args:
        spans: P segment spans ``(start, end)`` in the completion's characters.
        offsets: (T, 2) the tokenizer's character offsets of each token (``return_offsets_mapping``).

    Returns:
        W: (P, T); each token's column sums to 1 if it overlaps any segment, else 0.
    """
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    if len(spans) == 0 or len(offsets) == 0:
        return np.zeros((len(spans), len(offsets)))
    span_arr = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    lo = np.maximum(span_arr[:, None, 0], offsets[None, :, 0])
    hi = np.minimum(span_arr[:, None, 1], offsets[None, :, 1])
    length = np.maximum(offsets[:, 1] - offsets[:, 0], 0)
    overlap = np.clip(hi - lo, 0, None) / np.maximum(length, 1)[None, :]
    overlap[:, length == 0] = 0.0
    total = overlap.sum(axis=0, keepdims=True)
    return np.divide(overlap, total, out=np.zeros_like(overlap), where=total > 0)


def segment_to_tokens(spans: Sequence[Span], credit: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Token credit ``W.T @ credit``, shape (T,); tokens in no segment get 0."""
    credit = np.asarray(credit, dtype=np.float64)
    if credit.shape != (len(spans),):
        raise ValueError(f"credit has shape {credit.shape}, expected ({len(spans)},) — one value per span")
    return token_weights(spans, offsets).T @ credit


def segment_to_tokens_batch(
    spans: Sequence[Sequence[Span]], credit: Sequence[np.ndarray], offsets: Sequence[np.ndarray], width: int
) -> np.ndarray:
    """:func:`segment_to_tokens` of every row of a batch, right-padded: (B, width) float64, 0 past row b's T_b.

    Bit-identical to the row-by-row product. A token inside one segment gets that segment's credit exactly (its
    weight column is one 1.0), found for the whole batch by one ``searchsorted`` over the concatenated spans;
    only a row with a token overlapping two segments, whose weights are fractions, goes through the row's own
    ``W.T @ credit``.

    Args:
        spans: B lists of P_b spans (ordered and disjoint for the fast path); credit: B arrays (P_b,); offsets: B
            arrays (T_b, 2), T_b <= width.
    """
    out = np.zeros((len(spans), width))
    tokens = [np.asarray(o, dtype=np.int64).reshape(-1, 2) for o in offsets]
    counts = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=len(tokens))
    span_counts = np.fromiter((len(s) for s in spans), dtype=np.int64, count=len(spans))
    if not counts.sum() or not span_counts.sum():
        return out
    tok = np.concatenate(tokens)
    seg = np.asarray([pair for row in spans for pair in row], dtype=np.int64).reshape(-1, 2)
    values = np.concatenate([np.asarray(c, dtype=np.float64).reshape(-1) for c in credit])
    if len(values) != len(seg):
        raise ValueError("credit needs one value per span in every row")
    tok_row = np.repeat(np.arange(len(spans)), counts)
    seg_row = np.repeat(np.arange(len(spans)), span_counts)
    # rows laid end to end: position x of row b becomes b * stride + x, so all spans form one sorted list
    stride = int(max(tok.max(), seg.max())) + 1
    start, end = tok[:, 0] + tok_row * stride, tok[:, 1] + tok_row * stride
    seg_start, seg_end = seg[:, 0] + seg_row * stride, seg[:, 1] + seg_row * stride
    first = np.searchsorted(seg_end, start, side="right")  # the first span ending after the token starts
    padded_start = np.append(seg_start, np.iinfo(np.int64).max)
    hits = (end > start) & (padded_start[first] < end)  # a character of the token lies in span `first`
    second = np.append(padded_start, np.iinfo(np.int64).max)[first + 1] < end
    shared = np.zeros(len(spans), dtype=bool)
    shared[tok_row[hits & second]] = True  # a token in two segments: fractional weights
    # spans out of order, overlapping or empty (the oracle's never are): the row's own product
    follows = np.ones(len(seg), dtype=bool)
    follows[1:] = (seg_start[1:] >= seg_end[:-1]) | (seg_row[1:] != seg_row[:-1])
    shared[seg_row[~follows | (seg[:, 1] <= seg[:, 0])]] = True
    single = hits & ~second & ~shared[tok_row]
    column = offsets_in_runs(counts)
    out[tok_row[single], column[single]] = values[first[single]] + 0.0  # BLAS's sum starts from +0.0 too
    for b in np.flatnonzero(shared):
        out[b, : counts[b]] = segment_to_tokens(spans[b], credit[b], tokens[b])
    return out


def minmax_normalise(token_credit: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-sequence min–max scaling of valid tokens into [0, 1]; a constant sequence becomes 0.5 (as released).

    Args: token_credit (B, T); mask (B, T) bool. Returns (B, T), 0 where masked.
    """
    credit = np.asarray(token_credit, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if credit.shape[-1] == 0:
        return credit.copy()
    low = np.where(mask, credit, np.inf).min(axis=1, keepdims=True)
    high = np.where(mask, credit, -np.inf).max(axis=1, keepdims=True)
    span = high - low
    varies = np.isfinite(span) & (span > 0)
    scaled = np.where(varies, (credit - np.where(varies, low, 0.0)) / np.where(varies, span, 1.0), 0.5)
    return np.where(mask, scaled, 0.0)


def _valid_counts(mask: np.ndarray) -> np.ndarray:
    return mask.sum(axis=1).astype(np.float64)


def redistribute_prop(
    credit: np.ndarray,
    mask: np.ndarray,
    advantages: np.ndarray,
    *,
    rewards: np.ndarray | None = None,
    released: bool = False,
) -> np.ndarray:
    """OSPO-PROP: ``A_t = T · Â · φ̃_t / Σ_t φ̃_t``.

    Args:
        credit: (B, T) non-negative token credit φ̃ (e.g. from :func:`minmax_normalise`).
        mask: (B, T) valid completion tokens.
        advantages: (B,) sequence advantages Â.
        rewards: (B,) sequence rewards; only used with ``released=True``.
        released: reproduce the released code, which first rescales credit to sum to the *reward*
            (``φ · r / Σφ``, clamped at 1e-4) and then to proportions: a completion with reward 0 then gets
            token advantage 0 although its Â is negative. The default skips that step.

    Returns:
        (B, T) token advantages, 0 where masked; if a sequence's credit sums to 0 it gets Â on every token.
    """
    credit = np.where(mask, np.asarray(credit, dtype=np.float64), 0.0)
    mask = np.asarray(mask, dtype=bool)
    advantages = np.asarray(advantages, dtype=np.float64)
    count = _valid_counts(mask)[:, None]
    if released:
        if rewards is None:
            raise ValueError("released=True reproduces reward-scaled credit and needs rewards (B,)")
        eps = 1e-4
        scaled = credit * (np.asarray(rewards, dtype=np.float64)[:, None] / np.maximum(credit.sum(1, keepdims=True), eps))
        props = scaled / np.maximum(scaled.sum(1, keepdims=True), eps)
        return np.where(mask, advantages[:, None] * props * count, 0.0)
    total = credit.sum(axis=1, keepdims=True)
    uniform = np.where(mask, 1.0, 0.0) / np.maximum(count, 1.0)
    props = np.where(total > 0, credit / np.where(total > 0, total, 1.0), uniform)
    return np.where(mask, advantages[:, None] * props * count, 0.0)


def average_ranks(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """1-based ranks of each row's valid entries, ascending (smallest value → 1), ties get their mean rank.

    Args: values (B, T); mask (B, T). Returns (B, T) float, 0 where masked.
    """
    values = np.where(mask, np.asarray(values, dtype=np.float64), np.inf)  # masked sort last, rank nothing
    ordered = np.sort(values, axis=1)
    ranks = np.empty_like(values)
    for row in range(values.shape[0]):  # a batch of rows; each row is one vectorised searchsorted
        below = np.searchsorted(ordered[row], values[row], side="left")
        upto = np.searchsorted(ordered[row], values[row], side="right")
        ranks[row] = (below + upto + 1) / 2.0
    return np.where(mask, ranks, 0.0)


def redistribute_rank(
    credit: np.ndarray,
    mask: np.ndarray,
    advantages: np.ndarray,
    *,
    order: str = "ascending",
    rewards: np.ndarray | None = None,
) -> np.ndarray:
    """OSPO-RANK: ``A_t = T · Â · rank_t / Σ_t rank_t``, the highest-credit token getting the largest share.

    Args:
        credit: (B, T) token credit; mask: (B, T); advantages: (B,).
        order: ``"ascending"`` (default) ranks 1..T from lowest to highest credit, ties averaged.
            ``"released"`` reproduces the released code: rank 0 goes to the *highest* value (so that token gets
            no advantage), 1 to the next, and so on over the whole padded row (padding counts as 0 and takes
            ranks too, then gets masked out).
        rewards: (B,) sequence rewards, only read with ``order="released"``: the released code ranks the
            reward-scaled credit ``φ̃ · r / Σ φ̃`` (Σ clamped at 1e-4), not φ̃ itself. A zero reward makes every
            value 0, so the ranks follow token position; a negative reward reverses the order; padding ties
            with zero-credit tokens. ``None`` ranks φ̃ as it is (the order of any positive reward).
            Ties are broken by position (a stable sort); the released ``torch.argsort`` is unstable beyond 16
            elements on CPU, and that arbitrary order is not reproduced.

    Returns:
        (B, T) token advantages, 0 where masked; the token mean of each sequence is Â.
    """
    if order not in RANK_ORDERS:
        raise ValueError(f"unknown rank order {order!r}; expected one of {RANK_ORDERS}")
    mask = np.asarray(mask, dtype=bool)
    advantages = np.asarray(advantages, dtype=np.float64)
    count = _valid_counts(mask)[:, None]
    if order == "released":
        padded = np.where(mask, np.asarray(credit, dtype=np.float64), 0.0)
        if rewards is None:
            descending = np.argsort(-padded, axis=1, kind="stable")
        else:
            scale = np.asarray(rewards, dtype=np.float64)[:, None] / np.maximum(padded.sum(1, keepdims=True), RELEASED_EPS)
            # + 0.0 turns -0.0 (zero credit times a negative reward) into 0.0, so such tokens tie with padding
            descending = np.argsort(-(padded * scale) + 0.0, axis=1, kind="stable")
        ranks = np.argsort(descending, axis=1).astype(np.float64) * mask
        props = ranks / np.maximum(ranks.sum(axis=1, keepdims=True), RELEASED_EPS)
        return np.where(mask, advantages[:, None] * props * count, 0.0)
    ranks = average_ranks(credit, mask)
    props = ranks / np.maximum(ranks.sum(axis=1, keepdims=True), 1.0)
    return np.where(mask, advantages[:, None] * props * count, 0.0)


def clip_token_advantages(token_advantages: np.ndarray, advantages: np.ndarray, multiple: float = 2.0) -> np.ndarray:
    """Clip token advantages to ``± multiple · std(Â)`` over the batch (released option; breaks mean-preservation).

    The std is the unbiased one of the sequence advantages (B,); with fewer than two sequences or a zero std
    nothing is clipped (the released code would clip everything to 0 there).
    """
    advantages = np.asarray(advantages, dtype=np.float64)
    if advantages.size < 2:
        return token_advantages
    bound = multiple * advantages.std(ddof=1)
    if not np.isfinite(bound) or bound <= 0:
        return token_advantages
    return np.clip(token_advantages, -bound, bound)


def pad_rows(rows: Sequence[np.ndarray], width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad 1-D arrays into (B, T) values and a (B, T) bool mask."""
    width = max((len(r) for r in rows), default=0) if width is None else width
    values = np.zeros((len(rows), width))
    mask = np.zeros((len(rows), width), dtype=bool)
    for i, row in enumerate(rows):
        values[i, : len(row)] = row[:width]
        mask[i, : min(len(row), width)] = True
    return values, mask


def _informative(credit: np.ndarray) -> bool:
    """Does segment credit say anything beyond GRPO's uniform advantage? Needs two segments that differ."""
    credit = np.asarray(credit, dtype=np.float64)
    return credit.size >= 2 and bool(np.all(np.isfinite(credit))) and float(np.ptp(credit)) > 1e-12


def ospo_token_advantages(
    spans: Sequence[Sequence[Span]],
    segment_credit: Sequence[np.ndarray],
    offsets: Sequence[np.ndarray],
    advantages: np.ndarray,
    *,
    redistribution: str = "prop",
    mask: np.ndarray | None = None,
    rank_order: str = "ascending",
    rewards: np.ndarray | None = None,
    released: bool = False,
    credit_path: str = "default",
) -> np.ndarray:
    """The whole credit-to-token step for a batch of completions.

    Args:
        spans: per sequence, its P_b segment spans (characters of the completion).
        segment_credit: per sequence, (P_b,) segment credit.
        offsets: per sequence, (T_b, 2) token character offsets of the completion.
        advantages: (B,) sequence advantages Â.
        redistribution: ``"prop"`` (OSPO-PROP) or ``"rank"`` (OSPO-RANK).
        mask: (B, T) valid tokens; default: the first T_b tokens of each row.
        rank_order, rewards, released: see :func:`redistribute_rank` and :func:`redistribute_prop`.
        credit_path: one of :data:`CREDIT_PATHS`. ``"default"`` is described below. ``"released"`` reproduces
            the released code's whole token step and needs ``rewards`` (B,); it overrides ``rank_order`` and
            ``released``. A sequence with at most one segment gets uniform credit; otherwise token credit is
            ``W.T @ credit`` min–max scaled over the sequence's tokens, with no tie fallback, so when every
            segment ties the tokens inside segments get 1 and those outside 0 (swapped for a negative tied
            credit), and 0.5 everywhere when no token lies outside. PROP then rescales by the reward
            (:func:`redistribute_prop` ``released=True``: zero reward, zero advantage) and RANK ranks the
            reward-scaled credit over the padded row (:func:`redistribute_rank` ``order="released"``).

    Returns:
        (B, T) token advantages with T = max T_b (or mask's width). A sequence with fewer than two segments,
        or whose segments all have the same credit, gets Â on every token (GRPO's uniform advantage). (The
        released code instead gives the tokens outside the segments nothing when all segments tie: see
        ``credit_path="released"``.)
    """
    if redistribution not in REDISTRIBUTIONS:
        raise ValueError(f"unknown redistribution {redistribution!r}; expected one of {REDISTRIBUTIONS}")
    if credit_path not in CREDIT_PATHS:
        raise ValueError(f"unknown credit path {credit_path!r}; expected one of {CREDIT_PATHS}")
    if not len(spans) == len(segment_credit) == len(offsets) == len(advantages):
        raise ValueError("spans, segment_credit, offsets and advantages need one entry per sequence")
    if credit_path == "released":
        return _released_token_advantages(spans, segment_credit, offsets, advantages, redistribution, mask, rewards)
    offsets = [np.asarray(o, dtype=np.int64).reshape(-1, 2) for o in offsets]
    width = mask.shape[1] if mask is not None else max((len(o) for o in offsets), default=0)
    offsets = [o[:width] for o in offsets]  # a row longer than the mask is cut to it
    counts = np.fromiter((len(o) for o in offsets), dtype=np.int64, count=len(offsets))
    informative = [b for b, c in enumerate(segment_credit) if _informative(c)]
    credit = np.zeros((len(spans), width))
    credit[informative] = segment_to_tokens_batch(
        [spans[b] for b in informative], [segment_credit[b] for b in informative], [offsets[b] for b in informative], width
    )
    mask = np.arange(width)[None, :] < counts[:, None] if mask is None else np.asarray(mask, dtype=bool)
    normalised = minmax_normalise(credit, mask)
    if redistribution == "prop":
        return redistribute_prop(normalised, mask, advantages, rewards=rewards, released=released)
    return redistribute_rank(normalised, mask, advantages, order=rank_order)


def _released_token_advantages(
    spans: Sequence[Sequence[Span]],
    segment_credit: Sequence[np.ndarray],
    offsets: Sequence[np.ndarray],
    advantages: np.ndarray,
    redistribution: str,
    mask: np.ndarray | None,
    rewards: np.ndarray | None,
) -> np.ndarray:
    """``credit_path="released"`` of :func:`ospo_token_advantages` (its docstring says what is reproduced)."""
    if rewards is None:
        raise ValueError(
            "credit_path='released' needs rewards (B,): the released code scales token credit by each "
            "completion's reward before PROP and RANK"
        )
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.shape != (len(spans),):
        raise ValueError(f"rewards has shape {rewards.shape}, expected ({len(spans)},) — one per sequence")
    raw = [segment_to_tokens(s, c, o) for s, c, o in zip(spans, segment_credit, offsets, strict=True)]
    width = mask.shape[1] if mask is not None else None
    credit, default_mask = pad_rows(raw, width)
    mask = default_mask if mask is None else np.asarray(mask, dtype=bool)
    normalised = minmax_normalise(credit, mask)
    # the released code skips min–max for a text of at most one phrase and gives each token 1 / T
    single = np.array([len(s) <= 1 for s in spans], dtype=bool)
    uniform = mask / np.maximum(_valid_counts(mask), 1.0)[:, None]
    normalised = np.where(single[:, None], uniform, normalised)
    if redistribution == "prop":
        return redistribute_prop(normalised, mask, advantages, rewards=rewards, released=True)
    return redistribute_rank(normalised, mask, advantages, order="released", rewards=rewards)
