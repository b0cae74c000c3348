"""Rollouts: masks up to EOS, seeded sampling, sampler log-probs equal the training forward, token offsets."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from test_agents_support import load_tiny, tiny_policy_path

torch = pytest.importorskip("torch")

from ospo_gym.agents.generation import (  # noqa: E402
    TokenBytes,
    _byte_level_alphabet,
    _decoded_prefixes,
    _sample,
    batch_token_offsets,
    completion_logprobs,
    completion_mask,
    format_prompts,
    generate,
    token_offsets,
)


@pytest.fixture(scope="module")
def tiny_loaded(tmp_path_factory):
    return load_tiny(tiny_policy_path(tmp_path_factory))


PROMPTS = ["want: a b avoid: c", "want:", "avoid: something longer here"]


def test_completion_mask_stops_after_the_first_eos():
    ids = torch.tensor([[5, 0, 7, 0], [5, 6, 7, 8], [0, 1, 1, 1]])
    mask = completion_mask(ids, [0])
    assert mask.tolist() == [[True, True, False, False], [True, True, True, True], [True, False, False, False]]


def test_seeded_sampling_repeats_and_leaves_the_global_rng_alone(tiny_loaded):
    model, tokenizer = tiny_loaded
    state = torch.get_rng_state()
    first = generate(model, tokenizer, PROMPTS, max_new_tokens=6, seed=3)
    second = generate(model, tokenizer, PROMPTS, max_new_tokens=6, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first.completion_tokens, second.completion_tokens) and first.texts == second.texts
    other = generate(model, tokenizer, PROMPTS, max_new_tokens=6, seed=4)
    assert not torch.equal(first.completion_tokens, other.completion_tokens)


def test_a_row_samples_the_same_whatever_the_rest_of_the_batch(tiny_loaded):
    """Data-parallel ranks sample slices of the global batch: rows must not depend on their neighbours."""
    model, tokenizer = tiny_loaded
    prompts = PROMPTS * 2
    whole = generate(model, tokenizer, prompts, max_new_tokens=6, seed=11)
    tail = generate(model, tokenizer, prompts[4:], max_new_tokens=6, seed=11, first_row=4)
    assert whole.texts[4:] == tail.texts
    shifted = generate(model, tokenizer, prompts[4:], max_new_tokens=6, seed=11, first_row=0)
    assert shifted.texts != tail.texts or not torch.equal(shifted.completion_tokens, tail.completion_tokens)


@pytest.mark.parametrize("top_p", [1.0, 0.7])
def test_inverse_cdf_sampling_follows_the_distribution(top_p):
    """Empirical frequencies of 40k draws match softmax (with the nucleus cut); a token of mass 0 never appears."""
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, float("-inf")])
    probs = torch.softmax(logits, dim=0)
    if top_p < 1.0:
        probs = torch.where(torch.arange(5) < 2, probs, 0.0)  # the top one holds 0.64 < 0.7, the top two 0.88
        probs = probs / probs.sum()
    draws = 40_000
    uniform = torch.rand(draws, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    tokens, logprob = _sample(logits.expand(draws, 5), 1.0, top_p, uniform)
    freq = torch.bincount(tokens, minlength=5).double() / draws
    assert torch.all((freq - probs.double()).abs() < 4 * torch.sqrt(probs * (1 - probs) / draws) + 1e-12)
    assert int((tokens == 4).sum()) == 0
    torch.testing.assert_close(logprob.exp(), probs[tokens].float(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_logprobs_equal_the_training_forward(tiny_loaded, temperature):
    model, tokenizer = tiny_loaded
    model = copy.deepcopy(model)  # a model whose generation config asks for other processors: they are ignored
    model.generation_config.update(top_k=5, min_p=0.2, repetition_penalty=1.5, do_sample=False)
    rollout = generate(model, tokenizer, PROMPTS * 2, max_new_tokens=8, temperature=temperature, seed=0,
                       return_logprobs=True)  # fmt: skip
    with torch.no_grad():
        logp = completion_logprobs(model, rollout.prompt_tokens, rollout.prompt_mask, rollout.completion_tokens,
                                   rollout.completion_mask, temperature)  # fmt: skip
    mask = rollout.completion_mask
    torch.testing.assert_close(logp[mask], rollout.logprobs[mask], atol=1e-4, rtol=0)


def test_texts_and_offsets_agree(tiny_loaded):
    model, tokenizer = tiny_loaded
    rollout = generate(model, tokenizer, PROMPTS * 3, max_new_tokens=10, seed=1)
    for row, n, text in zip(rollout.completion_tokens, rollout.completion_mask.sum(1), rollout.texts, strict=True):
        ids = row[: int(n)].tolist()
        assert text == tokenizer.decode(ids, skip_special_tokens=True)
        offsets = token_offsets(tokenizer, ids, text)
        assert offsets.shape == (len(ids), 2)
        assert np.all(np.diff(offsets[:, 0]) >= 0) and np.all(offsets[:, 1] >= offsets[:, 0])
        assert offsets[:, 1].max(initial=0) <= len(text)


def test_offsets_of_a_non_canonical_tokenisation(tiny_loaded):
    _, tokenizer = tiny_loaded
    text = " want avoid"
    canonical = tokenizer(text, add_special_tokens=False)["input_ids"]
    spelled = [tokenizer.convert_tokens_to_ids(ch) for ch in tokenizer.convert_ids_to_tokens(canonical)[0]]
    ids = spelled + canonical[1:] + [tokenizer.eos_token_id]  # the first word spelled letter by letter
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    offsets = token_offsets(tokenizer, ids, text)
    assert offsets[: len(spelled)].tolist() == [[i, i + 1] for i in range(len(spelled))]
    assert offsets[-1].tolist() == [len(text), len(text)]  # EOS: an empty span at the end


def _random_rows(tokenizer, count: int, seed: int) -> list[list[int]]:
    """Rows of random non-special ids: most split multi-byte characters across tokens, as an untrained policy does."""
    rng = np.random.default_rng(seed)
    special = set(tokenizer.all_special_ids)
    ids = np.array([i for i in range(len(tokenizer)) if i not in special])
    return [rng.choice(ids, size=int(rng.integers(1, 24))).tolist() for _ in range(count)]


def test_token_bytes_decode_every_prefix_as_the_tokenizer_does(tiny_loaded):
    """The byte table and the U+FFFD rule give the backend's own prefix decodings (a wrong alphabet, a token's raw
    string instead of its bytes, or another replacement rule for split characters would each differ)."""
    _, tokenizer = tiny_loaded
    table = TokenBytes(tokenizer)
    assert table.usable
    rows = _random_rows(tokenizer, 300, seed=0)
    texts = [tokenizer.backend_tokenizer.decode(row, skip_special_tokens=False) for row in rows]
    assert sum(not text.isascii() for text in texts) > 100  # the hard case is exercised
    assert [table.prefix_lengths(row, text) for row, text in zip(rows, texts, strict=True)] == _decoded_prefixes(tokenizer, rows, texts)
    assert table.prefix_lengths(rows[0], texts[0] + "x") is None  # a text that is not the row's decoding


def test_token_bytes_count_the_characters_of_valid_utf8_prefixes(tiny_loaded):
    """Rows whose bytes are valid UTF-8 but whose tokens cut characters (single-byte tokens of 2-, 3- and 4-byte
    characters, mixed with the encoder's own tokens): each prefix's length is its decoding's, one U+FFFD for a cut
    character (counting every byte, or only the whole characters, would differ)."""
    _, tokenizer = tiny_loaded
    table = TokenBytes(tokenizer)
    byte_token = {byte: tokenizer.convert_tokens_to_ids(char) for char, byte in _byte_level_alphabet().items()}
    rng = np.random.default_rng(5)
    words = ["café", "naïve", "€5", "中文", "😀", "Ω", "a", " ", "résumé", "𐍈"]
    texts = ["".join(rng.choice(words, size=int(rng.integers(1, 6)))) for _ in range(60)]
    rows = []
    for text in texts:
        encoded = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids
        split = [byte_token[b] for b in text.encode()]
        rows.append(encoded if rng.random() < 0.3 else split)
    assert all(tokenizer.backend_tokenizer.decode(row, skip_special_tokens=False) == t for row, t in zip(rows, texts, strict=True))
    assert [table.prefix_lengths(row, text) for row, text in zip(rows, texts, strict=True)] == _decoded_prefixes(tokenizer, rows, texts)


def test_byte_offsets_equal_the_decoded_prefix_offsets(tiny_loaded):
    _, tokenizer = tiny_loaded
    rows = _random_rows(tokenizer, 100, seed=1)
    rows = [row + [tokenizer.eos_token_id] for row in rows]
    texts = tokenizer.batch_decode(rows, skip_special_tokens=True)
    fast = batch_token_offsets(tokenizer, rows, texts, token_bytes=TokenBytes(tokenizer))
    unusable = TokenBytes(tokenizer)
    unusable.usable = False  # every prefix through the tokenizer's decode
    slow = batch_token_offsets(tokenizer, rows, texts, token_bytes=unusable)
    assert all(np.array_equal(a, b) for a, b in zip(fast, slow, strict=True))


def _ascii_texts(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    pieces = ["want", "avoid", "red", "Shoes", "x", "42", "3.5", ",", "!", "'s", " ", "  ", "\n", "\t", "-", "(a)", "zq"]
    return ["".join(rng.choice(pieces, size=int(rng.integers(1, 14)))) for _ in range(count)]


def test_ascii_offsets_from_bytes_are_the_encoders_on_canonical_rows(tiny_loaded):
    """A canonical row of an ASCII text skips the encoding: its offsets must be the encoder's own, token for token
    (spaces, newlines, digits and punctuation included)."""
    _, tokenizer = tiny_loaded
    table = TokenBytes(tokenizer)
    assert table.usable and table.ascii_offsets_exact  # NFC normaliser, template post-processor
    texts = _ascii_texts(300, seed=2)
    encodings = [tokenizer.backend_tokenizer.encode(t, add_special_tokens=False) for t in texts]
    rows = [e.ids for e in encodings]
    assert [tokenizer.backend_tokenizer.decode(r) for r in rows] == texts
    got = batch_token_offsets(tokenizer, rows, texts, token_bytes=table)
    for spans, encoding in zip(got, encodings, strict=True):
        assert spans.tolist() == [list(o) for o in encoding.offsets]


def test_ascii_offsets_from_bytes_are_off_where_the_encoder_moves_offsets(tiny_loaded):
    """A post-processor that trims the spaces off offsets, or a normaliser that may change ASCII, keeps the encoder:
    the canonical rows still get the encoder's (here trimmed) offsets."""
    from tokenizers import normalizers, processors

    _, tokenizer = tiny_loaded
    trimming = copy.deepcopy(tokenizer)
    trimming.backend_tokenizer.post_processor = processors.ByteLevel(trim_offsets=True)
    assert not TokenBytes(trimming).ascii_offsets_exact
    texts = [t for t in _ascii_texts(200, seed=3) if " " in t.strip()]
    encodings = [trimming.backend_tokenizer.encode(t, add_special_tokens=False) for t in texts]
    rows = [e.ids for e in encodings]
    got = batch_token_offsets(trimming, rows, texts, token_bytes=TokenBytes(trimming))
    trimmed = 0
    for spans, encoding in zip(got, encodings, strict=True):
        assert spans.tolist() == [list(o) for o in encoding.offsets]
        trimmed += spans[1:, 0].tolist() != spans[:-1, 1].tolist()  # some token starts after the previous one ends
    assert trimmed > 10
    lowering = copy.deepcopy(tokenizer)
    lowering.backend_tokenizer.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    assert not TokenBytes(lowering).ascii_offsets_exact


def test_token_bytes_is_off_for_decoders_that_are_not_byte_level(tiny_loaded):
    _, tokenizer = tiny_loaded
    other = copy.deepcopy(tokenizer)
    from tokenizers import decoders

    other.backend_tokenizer.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Strip(" ", 1, 0)])
    assert not TokenBytes(other).usable
    assert not TokenBytes(object()).usable  # a slow tokenizer: no backend


def test_greedy_decoding_is_deterministic(tiny_loaded):
    model, tokenizer = tiny_loaded
    a = generate(model, tokenizer, PROMPTS, max_new_tokens=5, do_sample=False)
    b = generate(model, tokenizer, PROMPTS, max_new_tokens=5, do_sample=False)
    assert a.texts == b.texts


def test_chat_template_is_applied_when_present(tiny_loaded):
    _, tokenizer = tiny_loaded
    assert format_prompts(tokenizer, ["hi"]) == ["hi"]
    chatty = copy.deepcopy(tokenizer)
    chatty.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    assert format_prompts(chatty, ["hi"]) == ["<user>hi<assistant>"]


def test_top_p_renormalises_the_sampler_over_the_nucleus(tiny_loaded):
    model, tokenizer = tiny_loaded
    rollout = generate(model, tokenizer, PROMPTS, max_new_tokens=6, top_p=0.5, seed=0, return_logprobs=True)
    with torch.no_grad():
        logp = completion_logprobs(model, rollout.prompt_tokens, rollout.prompt_mask, rollout.completion_tokens,
                                   rollout.completion_mask)  # fmt: skip
    mask = rollout.completion_mask
    assert torch.all(rollout.logprobs[mask] >= logp[mask] - 1e-5)
    assert torch.any(rollout.logprobs[mask] > logp[mask] + 1e-3)


def test_rollout_tensors_can_enter_the_training_graph(tiny_loaded):
    """The decode loop runs in inference mode; what it returns must be ordinary tensors, or the loss's backward
    fails ("inference tensors cannot be saved for backward"), and the model is left in the mode it was in."""
    model, tokenizer = tiny_loaded
    model.train()
    rollout = generate(model, tokenizer, PROMPTS, max_new_tokens=5, seed=2, return_logprobs=True)
    assert model.training
    tensors = [rollout.prompt_tokens, rollout.prompt_mask, rollout.completion_tokens, rollout.completion_mask]
    assert not any(t.is_inference() for t in [*tensors, rollout.logprobs])
    logp = completion_logprobs(model, *tensors)
    logp[rollout.completion_mask].sum().backward()
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters())
    model.zero_grad(set_to_none=True)
    model.eval()
