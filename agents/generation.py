"""Rollouts (a KV-cache sampling loop over any Hugging Face causal LM) and the log-probabilities the loss needs.

Shapes: ``B`` prompts (one row per completion), ``P`` prompt tokens (left-padded), ``T`` completion tokens
(right-padded after EOS).
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class Rollout:
    """Sampled completions and what the loss needs to score them again.

    Attributes:
        prompt_tokens: (B, P) left-padded prompt tokens; prompt_mask: (B, P) their attention mask.
        completion_tokens: (B, T) generated tokens; completion_mask: (B, T) bool, True up to and including EOS.
        texts: B completions decoded without special tokens.
        logprobs: (B, T) log-probabilities under the sampler (temperature, top-p), 0 where masked; ``None`` unless
            asked for.
    """

    prompt_tokens: torch.Tensor
    prompt_mask: torch.Tensor
    completion_tokens: torch.Tensor
    completion_mask: torch.Tensor
    texts: list[str]
    logprobs: torch.Tensor | None = None


def format_prompts(tokenizer: Any, prompts: Sequence[str]) -> list[str]:
    """Apply the tokenizer's chat template (one user turn, generation prompt) when it has one."""
    if getattr(tokenizer, "chat_template", None):
        return [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in prompts
        ]
    return list(prompts)


def encode_prompts(
    tokenizer: Any, prompts: Sequence[str], device: torch.device, *, formatted: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``(input_ids, attention_mask)``, both (B, P), with the chat template applied if any (unless
    ``formatted``: the prompts went through it already, as multi-turn conversations do).

    Each distinct prompt is encoded once (a GRPO batch repeats every prompt G times).
    """
    tokens, mask, index = _encode_distinct(tokenizer, prompts, device, formatted)
    return tokens.index_select(0, index), mask.index_select(0, index)


def _encode_distinct(
    tokenizer: Any, prompts: Sequence[str], device: torch.device, formatted: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded tokens and mask (D, P) of the D distinct prompts, and the (B,) row of each prompt among them.
    ``formatted``: the prompts already went through the chat template (multi-turn conversations)."""
    templated = bool(getattr(tokenizer, "chat_template", None))
    distinct = list(dict.fromkeys(prompts))
    encoded = tokenizer(
        distinct if formatted else format_prompts(tokenizer, distinct),
        return_tensors="pt",
        padding=True,
        padding_side="left",
        add_special_tokens=not templated,  # a chat template already holds its special tokens
    )
    rows = {prompt: row for row, prompt in enumerate(distinct)}
    index = torch.as_tensor([rows[p] for p in prompts], dtype=torch.long, device=device)
    return encoded["input_ids"].to(device), encoded["attention_mask"].to(device), index


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token that ends a completion: the tokenizer's EOS and the model's generation-config EOS ids."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is not None:
        ids.update([configured] if isinstance(configured, int) else configured)
    if not ids:
        raise ValueError("neither the tokenizer nor the model's generation config defines an EOS token")
    return sorted(ids)


def completion_mask(completion_tokens: torch.Tensor, eos_ids: Sequence[int]) -> torch.Tensor:
    """(B, T) bool: True for tokens up to and including the first EOS of each row (all tokens if none)."""
    is_eos = torch.isin(completion_tokens, torch.as_tensor(list(eos_ids), device=completion_tokens.device)).long()
    return (is_eos.cumsum(dim=1) - is_eos) == 0


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    do_sample: bool = True,
    seed: int | None = None,
    first_row: int = 0,
    return_logprobs: bool = False,
    stop_early: bool = True,
    formatted: bool = False,
    row_ids: Sequence[int] | None = None,
) -> Rollout:
    """Sample one completion per prompt (batched, left padding) with a KV-cache decode loop over ``model``.

    Sampling uses exactly ``temperature`` and ``top_p`` (as ``model.generate`` with top-k, min-p, typical-p,
    repetition penalties and n-gram blocking off; the model's generation config is not read), and stops when every
    row has emitted an EOS token (unless ``stop_early=False``: FSDP2 ranks must all run the same number of
    forwards) or after ``max_new_tokens``. ``seed`` fixes the sample without touching the global
    RNG state. ``do_sample=False`` decodes greedily. The loop calls the model's own forward (any Hugging Face
    causal LM, LoRA included); it skips ``generate``'s per-token machinery, which dominates on small models, and
    yields the sampler's log-probabilities at no extra cost. Each distinct prompt is prefilled once and its KV
    cache copied to the rows that share it; without left padding no attention mask is built.

    Sampling is inverse-CDF with one uniform number per row and token, drawn on the CPU from a stream of its own
    keyed by ``(seed, first_row + b)``. So row ``b``'s completion does not depend on the other rows of the batch,
    on the device, or on how a batch is split: a rank of a data-parallel run that samples rows ``first_row ...``
    of the global batch draws exactly what a single process sampling the whole batch draws for those rows.

    ``row_ids`` (B,) replaces the keys ``first_row + b``: a multi-turn rollout samples the conversations still
    going, which are not consecutive rows, and keys each by its episode's global row.

    ``formatted=True``: the prompts are already chat-formatted (a multi-turn conversation rendered with the
    tokenizer's chat template) and are encoded as they are; by default each prompt is one user turn.
    """
    device = next(model.parameters()).device
    distinct_tokens, distinct_mask, index = _encode_distinct(tokenizer, prompts, device, formatted)
    prompt_tokens, prompt_mask = distinct_tokens.index_select(0, index), distinct_mask.index_select(0, index)
    padded = not bool(distinct_mask.all())
    eos = torch.as_tensor(eos_token_ids(model, tokenizer), device=device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else int(eos[0])
    rows = prompt_tokens.shape[0]
    uniforms = row_uniforms(rows, max_new_tokens, seed, first_row, row_ids).to(device) if do_sample else None
    was_training = model.training
    model.eval()
    # inference mode skips autograd's version counters and views (a few % of a small model's decode); the tensors
    # it makes stay inside: the outputs below are built from them outside it, so the loss can use them. Not under
    # FSDP2, which keeps its all-gathered parameters for the training forward that follows.
    sharded = hasattr(next(model.parameters()), "full_tensor")
    try:
        with contextlib.nullcontext() if sharded else torch.inference_mode():
            columns, scores = _decode(
                model, distinct_tokens, distinct_mask, index, prompt_mask, padded, eos, pad, uniforms,
                max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, stop_early=stop_early,
            )  # fmt: skip
    finally:
        model.train(was_training)
    completion_tokens = torch.stack(columns, dim=1)
    mask = completion_mask(completion_tokens, eos.tolist())
    texts = tokenizer.batch_decode(
        [row[: int(n)].tolist() for row, n in zip(completion_tokens, mask.sum(dim=1), strict=True)],
        skip_special_tokens=True,
    )
    logprobs = None
    if return_logprobs:
        logprobs = torch.where(mask, torch.stack(scores, dim=1), torch.zeros((), device=device))
    return Rollout(prompt_tokens, prompt_mask, completion_tokens, mask, texts, logprobs)


def _decode(
    model: Any,
    distinct_tokens: torch.Tensor,
    distinct_mask: torch.Tensor,
    index: torch.Tensor,
    prompt_mask: torch.Tensor,
    padded: bool,
    eos: torch.Tensor,
    pad: int,
    uniforms: torch.Tensor | None,
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    stop_early: bool,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The KV-cache loop of ``generate``: tokens (B,) and their log-probabilities (B,), one pair per step."""
    device = distinct_tokens.device
    cache_keyword = _cache_keyword(model)
    positions = (distinct_mask.cumsum(dim=1) - 1).clamp(min=0)
    output = model(
        input_ids=distinct_tokens,
        attention_mask=distinct_mask if padded else None,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
    )
    logits = output.logits[:, -1, :].index_select(0, index)
    cache = output.cache if hasattr(output, "cache") else output.past_key_values
    cache.reorder_cache(index)  # (D, ...) -> (B, ...): row b gets the cache of its prompt
    attention = torch.cat([prompt_mask, prompt_mask.new_ones(prompt_mask.shape[0], max_new_tokens)], dim=1)
    position = positions.index_select(0, index)[:, -1:]
    finished = torch.zeros(prompt_mask.shape[0], dtype=torch.bool, device=device)
    columns: list[torch.Tensor] = []
    scores: list[torch.Tensor] = []
    for step in range(max_new_tokens):
        token, logprob = _sample(logits, temperature, top_p, None if uniforms is None else uniforms[:, step])
        token = torch.where(finished, torch.full_like(token, pad), token)
        columns.append(token)
        scores.append(logprob)
        finished = finished | torch.isin(token, eos)
        if step + 1 == max_new_tokens or (stop_early and bool(finished.all())):
            break
        position = position + 1
        output = model(
            input_ids=token[:, None],
            attention_mask=attention[:, : prompt_mask.shape[1] + step + 1] if padded else None,
            position_ids=position,
            use_cache=True,
            **{cache_keyword: cache},
        )
        logits = output.logits[:, -1, :]
    return columns, scores


def row_uniforms(
    rows: int, length: int, seed: int | None, first_row: int = 0, row_ids: Sequence[int] | None = None
) -> torch.Tensor:
    """(rows, length) float64 uniforms in [0, 1) on the CPU; row ``b`` comes from the stream ``(seed, first_row + b)``,
    or ``(seed, row_ids[b])`` when ``row_ids`` (rows,) is given.

    ``seed=None`` draws from torch's global generator instead (not batch-split invariant).
    """
    if seed is None:
        return torch.rand((rows, length), dtype=torch.float64)
    keys = range(first_row, first_row + rows) if row_ids is None else [int(r) for r in row_ids]
    if len(keys) != rows:
        raise ValueError(f"row_ids has {len(keys)} entries for {rows} rows; give one key per prompt")
    states = [np.random.SeedSequence([seed, key]).generate_state(2, np.uint32) for key in keys]
    generator = torch.Generator()
    out = torch.empty((rows, length), dtype=torch.float64)
    for b, state in enumerate(states):  # one small draw per row, once per call (not per token)
        generator.manual_seed(int(state[0]) << 32 | int(state[1]))
        out[b] = torch.rand(length, dtype=torch.float64, generator=generator)
    return out


def _sample(
    logits: torch.Tensor, temperature: float, top_p: float, uniform: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next tokens (B,) and their log-probabilities (B,) under the sampling distribution (greedy: the raw one).

    ``uniform``: (B,) numbers in [0, 1), one per row, for inverse-CDF sampling; ``None`` decodes greedily.
    """
    logits = logits.float()
    if uniform is not None:
        logits = logits / temperature
        if top_p < 1.0:
            logits = _top_p(logits, top_p)
    logprobs = torch.log_softmax(logits, dim=-1)
    if uniform is not None:  # the first token whose cumulative mass exceeds u: drawn with probability p_i
        cdf = logprobs.exp().double().cumsum(dim=-1)
        target = (uniform.to(cdf.dtype) * cdf[:, -1])[:, None]
        token = torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)
    else:
        token = logits.argmax(dim=-1)
    return token, logprobs.gather(-1, token[:, None]).squeeze(-1)


def _top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filter as transformers' ``TopPLogitsWarper``: keep the smallest set of tokens with mass >= top_p."""
    ordered, order = logits.sort(dim=-1)
    drop_sorted = ordered.softmax(dim=-1).cumsum(dim=-1) <= 1.0 - top_p
    drop_sorted[:, -1] = False  # always keep the most likely token
    return logits.masked_fill(drop_sorted.scatter(1, order, drop_sorted), float("-inf"))


def _cache_keyword(model: Any) -> str:
    """The forward keyword of the KV cache: ``cache`` (transformers >= 5.2x) or ``past_key_values`` (earlier)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def completion_logprobs(
    model: Any,
    prompt_tokens: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_tokens: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-token log-probabilities (B, T) of ``completion_tokens`` after the prompts, logits divided by ``temperature``.

    Position ids follow the attention mask (as in generation), so left padding does not shift positions.
    Differentiable; masked positions hold arbitrary finite values.
    """
    input_ids = torch.cat([prompt_tokens, completion_tokens], dim=1)
    attention = torch.cat([prompt_mask, completion_mask.to(prompt_mask.dtype)], dim=1)
    positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
    width = completion_tokens.shape[1]
    logits = model(
        input_ids=input_ids, attention_mask=attention, position_ids=positions, logits_to_keep=width + 1, use_cache=False
    ).logits[:, :-1, :]
    logits = logits.float() / temperature
    chosen = logits.gather(-1, completion_tokens.unsqueeze(-1)).squeeze(-1)
    return chosen - torch.logsumexp(logits, dim=-1)


def token_offsets(tokenizer: Any, token_ids: Sequence[int], text: str) -> np.ndarray:
    """Character span (T, 2) of each generated token in ``text`` (its decoding without special tokens).

    Uses the tokenizer's offset mapping on ``text`` when re-encoding gives back the same tokens; otherwise (a
    non-canonical tokenisation was sampled) it decodes growing prefixes. Special tokens get an empty span at the
    position where they occur.
    """
    return batch_token_offsets(tokenizer, [token_ids], [text])[0]


def batch_token_offsets(
    tokenizer: Any, rows: Sequence[Sequence[int]], texts: Sequence[str], *, token_bytes: TokenBytes | None = None
) -> list[np.ndarray]:
    """:func:`token_offsets` of many completions: one batched encode, and one batched prefix decode for the rows
    whose sampled tokens are not the canonical tokenisation of their text (most rows of an untrained policy).

    ``token_bytes``: a :class:`TokenBytes` of ``tokenizer`` kept across calls (a caller that maps every step's
    batch keeps one, so each token id is looked up once); by default a fresh one.
    """
    if not rows:
        return []
    special = set(tokenizer.all_special_ids)
    rows = [[int(t) for t in row] for row in rows]
    plains = [[t for t in row if t not in special] for row in rows]
    if token_bytes is None:
        token_bytes = TokenBytes(tokenizer)
    # Rows whose offsets need no encoding of their text: a row whose bytes are not valid UTF-8 is no text's
    # encoding (the prefix offsets, as for any non-canonical row), and on an ASCII text the bytes' offsets are the
    # encoder's own where the tokenizer keeps them (TokenBytes.ascii_offsets_exact). The others are encoded, and
    # those whose tokens differ from the encoding's get the prefix offsets.
    prefix_spans: dict[int, np.ndarray] = {}
    lengths_of: dict[int, list[int]] = {}
    if token_bytes.usable:
        for b, text in enumerate(texts):
            found = token_bytes.lengths_and_validity(plains[b], text)
            if found is not None:
                lengths_of[b] = found[0]
                if not found[1] or (token_bytes.ascii_offsets_exact and text.isascii()):
                    prefix_spans[b] = _spans_of_lengths(found[0], len(text))
    rest = [b for b in range(len(rows)) if b not in prefix_spans]
    encoded = _encode_with_offsets(tokenizer, [texts[b] for b in rest]) if rest else {"input_ids": [], "offset_mapping": []}
    offsets_of = dict(zip(rest, encoded["offset_mapping"], strict=True))
    odd = [b for b, ids in zip(rest, encoded["input_ids"], strict=True) if ids != plains[b]]
    undecoded = [b for b in odd if b not in lengths_of]  # not byte-level, or not decodable from the token bytes
    decoded = _decoded_prefixes(tokenizer, [plains[b] for b in undecoded], [texts[b] for b in undecoded])
    lengths_of.update(zip(undecoded, decoded, strict=True))
    prefix_spans.update((b, _spans_of_lengths(lengths_of[b], len(texts[b]))) for b in odd)
    out = []
    for b, row in enumerate(rows):
        spans = prefix_spans[b] if b in prefix_spans else offsets_of[b]
        if len(spans) == len(row):  # no special token in the row: its spans as they are
            out.append(np.asarray(spans, dtype=np.int64).reshape(-1, 2))
            continue
        spans = iter(spans)
        pairs = []
        end = 0
        for token in row:
            start, end = (end, end) if token in special else next(spans)
            pairs.append((start, end))
        out.append(np.asarray(pairs, dtype=np.int64).reshape(-1, 2))
    return out


def _byte_level_alphabet() -> dict[str, int]:
    """The byte-level BPE alphabet (GPT-2's), character -> byte: the printable Latin-1 bytes stand for
    themselves, the other bytes, in byte order, for the code points from 256 up."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    alphabet = {chr(b): b for b in printable}
    others = [b for b in range(256) if chr(b) not in alphabet]
    alphabet.update({chr(256 + n): b for n, b in enumerate(others)})
    return alphabet


class TokenBytes:
    """The bytes each token id of a byte-level BPE tokenizer (GPT-2, Qwen2, Llama 3) decodes to, looked up once
    per id: a prefix of a sampled row then decodes with ``bytes.decode`` instead of a tokenizer call per prefix.

    ``usable`` is False for any other decoder (SentencePiece, WordPiece, a ``Sequence`` of decoders), whose
    prefixes are decoded by the tokenizer. ``ascii_offsets_exact``: on an ASCII text, a row that decodes to it has
    as token offsets exactly what the tokenizer's own encoding would give (no normaliser but Unicode normal forms,
    which leave ASCII alone; no post-processor that trims offsets), so the offsets need no encoding of the text.
    Like the Rust decoder, a token whose characters are not all in the byte alphabet (an added token) stands for its
    own UTF-8 bytes, and invalid UTF-8 becomes U+FFFD.
    """

    def __init__(self, tokenizer: Any) -> None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        decoder = getattr(backend, "decoder", None)
        self.usable = decoder is not None and type(decoder).__name__ == "ByteLevel"
        self.ascii_offsets_exact = self.usable and _offsets_follow_bytes(backend)
        self._backend = backend
        self._alphabet = _byte_level_alphabet() if self.usable else {}
        self._bytes: dict[int, bytes] = {}
        self._starts: dict[int, int] = {}  # bytes of the token that start a UTF-8 character (not 0b10xxxxxx)

    def __getitem__(self, token: int) -> bytes:
        known = self._bytes.get(token)
        if known is None:
            piece = self._backend.id_to_token(token)
            if piece is None:
                raise KeyError(f"token id {token} is not in the tokenizer's vocabulary")
            alphabet = self._alphabet
            known = bytes(alphabet[c] for c in piece) if all(c in alphabet for c in piece) else piece.encode()
            self._bytes[token] = known
            self._starts[token] = sum(byte & 0xC0 != 0x80 for byte in known)
        return known

    def prefix_lengths(self, row: Sequence[int], text: str) -> list[int] | None:
        """(T,) characters in the decoding of each prefix ``row[:k]``, k = 1..T; ``None`` unless decoding the whole
        row gives back ``text`` (the rows and texts of a batch decoded elsewhere must match)."""
        found = self.lengths_and_validity(row, text)
        return None if found is None else found[0]

    def lengths_and_validity(self, row: Sequence[int], text: str) -> tuple[list[int], bool] | None:
        """:meth:`prefix_lengths`, and whether the row's bytes are valid UTF-8 (if not, the row is the encoding of
        no text: an encoding's bytes are always its normalised text's UTF-8)."""
        pieces = list(map(self._bytes.get, row))  # ids seen before: one C-level lookup each
        if None in pieces:
            try:
                pieces = [self[t] for t in row]
            except KeyError:  # an id outside the vocabulary: the tokenizer's own decode says what it makes of it
                return None
        whole = b"".join(pieces)
        if whole.isascii():  # one character per byte: the lengths are the byte counts
            return (list(itertools.accumulate(map(len, pieces))), True) if whole.decode("ascii") == text else None
        try:
            valid = whole.decode("utf-8") == text
        except UnicodeDecodeError:
            valid = False
            if whole.decode("utf-8", "replace") != text:
                return None
        else:
            if not valid:
                return None
            # a prefix of valid UTF-8 decodes to its whole characters and one U+FFFD for a character it cuts: as
            # many characters as it has bytes that start one
            return list(itertools.accumulate(map(self._starts.__getitem__, row))), True
        return [len(whole[:end].decode("utf-8", "replace")) for end in itertools.accumulate(map(len, pieces))], valid


# Normalisers that leave every ASCII character as it is (one character per byte, no character added or removed),
# and post-processors that leave the offsets of a text's own tokens as they are.
_ASCII_IDENTITY_NORMALIZERS = {"NFC", "NFD", "NFKC", "NFKD"}
_OFFSET_KEEPING_PROCESSORS = {"TemplateProcessing", "BertProcessing"}


def _offsets_follow_bytes(backend: Any) -> bool:
    """Whether a byte-level tokenizer's encoding of an ASCII text gives each token the characters of its bytes,
    token after token: the offsets :meth:`TokenBytes.prefix_lengths` makes (read from the tokenizer's JSON)."""
    try:
        config = json.loads(backend.to_str())
    except (AttributeError, TypeError, ValueError):
        return False

    def parts(node: dict | None, key: str) -> list[dict]:
        if node is None:
            return []
        return [p for child in node[key] for p in parts(child, key)] if node.get("type") == "Sequence" else [node]

    normalizers = parts(config.get("normalizer"), "normalizers")
    processors = parts(config.get("post_processor"), "processors")
    return all(n.get("type") in _ASCII_IDENTITY_NORMALIZERS for n in normalizers) and all(
        p.get("type") in _OFFSET_KEEPING_PROCESSORS or (p.get("type") == "ByteLevel" and not p.get("trim_offsets", True))
        for p in processors
    )


def _spans_of_lengths(lengths: Sequence[int], length: int) -> np.ndarray:
    """(T, 2) offsets from the lengths of decoded prefixes, kept monotone and inside ``[0, length]``."""
    # each token ends where its prefix's decoding ends, never before the previous token nor past the text
    ends = np.minimum(np.maximum.accumulate(np.asarray(lengths, dtype=np.int64)), length)
    return np.stack([np.concatenate([[0], ends[:-1]]), ends], axis=1) if len(ends) else np.zeros((0, 2), np.int64)


def _encode_with_offsets(tokenizer: Any, texts: list[str]) -> dict[str, list]:
    """``tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)``'s ids and offsets. A fast
    tokenizer's backend without padding or truncation set gives the same encodings text by text; asked one text at
    a time it does not hand a batch of a few short texts to its thread pool, whose hand-off costs more than the
    encoding on a busy CPU."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.padding is not None or backend.truncation is not None:
        return tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    encodings = [backend.encode(text, add_special_tokens=False) for text in texts]
    return {"input_ids": [e.ids for e in encodings], "offset_mapping": [e.offsets for e in encodings]}


def _decoded_prefixes(tokenizer: Any, rows: list[list[int]], texts: list[str]) -> list[list[int]]:
    """(T_b,) characters in the tokenizer's decoding of each prefix of each row (one backend pass when the
    backend gives back the texts themselves, else ``tokenizer.decode`` prefix by prefix)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    prefixes = [row[:k] for row in rows for k in range(1, len(row) + 1)]
    decoded: list[str] | None = None
    if backend is not None and prefixes:
        # one call: the longest prefix of each row is the row itself, whose decoding must give back its text
        decoded = [backend.decode(prefix, skip_special_tokens=False) for prefix in prefixes]  # no thread pool
        whole = iter(np.cumsum([len(row) for row in rows]) - 1)
        if [decoded[next(whole)] if row else backend.decode([], skip_special_tokens=False) for row in rows] != list(texts):
            decoded = None
    if decoded is None:
        decoded = [tokenizer.decode(prefix) for prefix in prefixes]
    lengths = iter(len(d) for d in decoded)
    return [[next(lengths) for _ in row] for row in rows]
