"""Additive keywords: the reward is an affine map of the summed hidden weights of the keywords written."""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from ospo_gym.envs.base import (
    MAX_TABLE_CELLS,
    GenerativeSearchEnv,
    GenerativeSearchVectorEnv,
    truncate_action,
)
from ospo_gym.joined_texts import JoinedTexts
from ospo_gym.knobs import check_knob
from ospo_gym.vocab import pseudo_words

MAX_VOCAB = 100_000
MAX_PROMPTS = 100_000
VOCAB_WHY = (
    "pseudo-words are drawn until that many distinct ones are found, which slows down towards the 737,100 "
    "that exist"
)

_WORD = re.compile(r"[^\W_]+")
_CHUNK_MEMO_SIZE = 1 << 16  # distinct space-separated chunks whose keywords are remembered (cleared when full)


class AdditiveKeywordsEnv(GenerativeSearchEnv):
    """A synthetic task whose exact Shapley values are known in closed form.

    ## Description
    Each prompt hides a weight for every keyword of a pseudo-word vocabulary: ``num_positive`` keywords help
    (weights in [0.3, 1]), ``num_negative`` hurt (weights in [-1, -0.3]), the rest are neutral (0). The prompt
    lists the helpful keywords after ``want:`` and the harmful ones after ``avoid:`` (each listed word is
    replaced by a random neutral one with probability ``hint_noise``). The agent writes text; every distinct
    keyword in it counts once.

    ## Action Space
    ``UnicodeText``: any string. Its retrieval text (``<answer>…</answer>`` if present, else the text without
    ``<think>…</think>``) is read as words (lowercased runs of letters and digits).

    ## Observation Space
    ``UnicodeText``: the prompt, e.g. ``"want: tavo kire ... avoid: bodu ..."``.

    ## Rewards
    ``r = (Σ_k w_k − L) / (H − L)`` over the distinct keywords ``k`` present, with ``L`` the sum of the negative
    weights and ``H`` the sum of the positive ones, so ``r`` is exactly in [0, 1]; the empty text scores
    ``−L / (H − L)``. With word segmentation the game over segments is additive, and the Shapley value of a
    segment is ``Σ_k w_k / (H − L) / m_k`` over the keywords it contains, ``m_k`` being how many segments
    contain keyword ``k`` (a repeated keyword shares its weight): :meth:`ground_truth_credit`.

    ## Starting State
    A prompt drawn uniformly with the env's ``np_random``, or ``reset(options={"prompt_id": i})``.

    ## Episode End
    After one step (terminated).

    ## Arguments
    * ``vocab_size=32``: number of keywords, at most 100,000 (pseudo-words are drawn until that many distinct
      ones are found; 737,100 exist).
    * ``num_prompts=16``: number of prompts, ids ``0..num_prompts-1``, at most 100,000, and
      ``num_prompts * vocab_size`` at most ``2**25`` (the hidden weights are one float64 table).
    * ``num_positive=4``, ``num_negative=4``: helpful and harmful keywords per prompt (together at most
      ``vocab_size``).
    * ``shared_weights=False``: every prompt uses the same hidden weights (a context-free task).
    * ``hint_noise=0.0``: probability that a listed keyword is a neutral one instead.
    * ``seed=0``: generates the vocabulary, the weights and the prompts.
    * ``segmentation="word"``, ``segmentation_backend``, ``max_action_chars``, ``render_mode``: see the base class.

    ## Version History
    * v0: initial version.

    >>> import gymnasium as gym, ospo_gym
    >>> env = gym.make("ospo/AdditiveKeywords-v0", vocab_size=12, num_prompts=2)
    >>> obs, info = env.reset(seed=0)
    >>> wanted = obs.split("want: ")[1].split(" avoid:")[0]
    >>> _, reward, terminated, truncated, info = env.step(wanted)
    >>> reward, terminated
    (1.0, True)
    """

    default_segmentation = "word"

    def __init__(
        self,
        vocab_size: int = 32,
        num_prompts: int = 16,
        num_positive: int = 4,
        num_negative: int = 4,
        shared_weights: bool = False,
        hint_noise: float = 0.0,
        seed: int = 0,
        **base_kwargs: Any,
    ) -> None:
        check_knob("vocab_size", vocab_size, 1, MAX_VOCAB, VOCAB_WHY)
        check_knob("num_prompts", num_prompts, 1, MAX_PROMPTS, "every prompt is generated at construction")
        check_knob("num_positive", num_positive, 1, vocab_size, "helpful keywords are drawn from the vocabulary")
        check_knob("num_negative", num_negative, 0, vocab_size, "harmful keywords are drawn from the vocabulary")
        if vocab_size < num_positive + num_negative:
            raise ValueError(
                f"vocab_size ({vocab_size}) must be at least num_positive + num_negative "
                f"({num_positive + num_negative}); raise vocab_size or lower the counts"
            )
        if num_prompts * vocab_size > MAX_TABLE_CELLS:
            raise ValueError(
                f"num_prompts * vocab_size must be at most {MAX_TABLE_CELLS} (the hidden weights are a float64 "
                f"(num_prompts, vocab_size) table in memory), got {num_prompts} * {vocab_size}; lower either"
            )
        if not 0.0 <= hint_noise <= 1.0:
            raise ValueError(f"hint_noise is a probability, got {hint_noise}")
        super().__init__(**base_kwargs)
        rng = np.random.default_rng(seed)
        self.vocabulary: tuple[str, ...] = tuple(pseudo_words(vocab_size, rng))
        self._word_index = {w: i for i, w in enumerate(self.vocabulary)}
        self._chunk_keywords: dict[str, list[int]] = {}  # see _text_keywords
        self.weights = np.zeros((num_prompts, vocab_size))  # (prompts, vocab) hidden weights
        shared = None
        for p in range(num_prompts):
            if shared is None or not shared_weights:
                order = rng.permutation(vocab_size)
                row = np.zeros(vocab_size)
                row[order[:num_positive]] = rng.uniform(0.3, 1.0, num_positive)
                row[order[num_positive : num_positive + num_negative]] = rng.uniform(-1.0, -0.3, num_negative)
                shared = row
            self.weights[p] = shared
        self._low = np.minimum(self.weights, 0).sum(axis=1)
        self._high = np.maximum(self.weights, 0).sum(axis=1)
        for p in range(num_prompts):
            self._prompts[p] = self._prompt_text(self.weights[p], hint_noise, rng)
        # the oracle's coalition texts come as segment pieces where they reach this class's score_texts unchanged
        self.oracle.joined_texts = self.reward_noise is None and type(self).score_texts is AdditiveKeywordsEnv.score_texts

    def _prompt_text(self, weights: np.ndarray, hint_noise: float, rng: np.random.Generator) -> str:
        neutral = np.flatnonzero(weights == 0)

        def listed(indices: np.ndarray) -> str:
            indices = rng.permutation(indices)
            if len(neutral):
                noisy = rng.random(len(indices)) < hint_noise
                indices[noisy] = rng.choice(neutral, size=int(noisy.sum()))
            return " ".join(self.vocabulary[i] for i in indices)

        return f"want: {listed(np.flatnonzero(weights > 0))} avoid: {listed(np.flatnonzero(weights < 0))}"

    def _keywords(self, text: str) -> list[int]:
        return [self._word_index[w] for w in _WORD.findall(text.lower()) if w in self._word_index]

    def _text_keywords(self, text: str) -> list[int]:
        """:meth:`_keywords` of ``text``, one space-separated chunk at a time, each chunk's remembered (coalition
        texts are the same words in many combinations). The same list: a word never spans an ASCII space, and
        ``str.lower`` looks past a space for no character (final sigma's context stops at it)."""
        memo = self._chunk_keywords
        if len(memo) > _CHUNK_MEMO_SIZE:
            memo.clear()
        out: list[int] = []
        for chunk in text.split(" "):
            known = memo.get(chunk)
            if known is None:
                known = memo[chunk] = self._keywords(chunk)
            out.extend(known)
        return out

    def score_texts(self, prompt_ids: Sequence[Hashable], texts: Sequence[str]) -> np.ndarray:
        rows = np.asarray(prompt_ids, dtype=np.int64)
        if isinstance(texts, JoinedTexts):  # a text's keywords are its pieces' (no keyword spans a space)
            in_piece = self._presence(texts.pieces)
            members = sp.csr_matrix(
                (np.ones(len(texts.indices)), texts.indices, texts.indptr), shape=(len(texts), len(texts.pieces))
            )
            present = (np.asarray(members @ in_piece) > 0).astype(np.float64)
        else:
            present = self._presence(texts)
        total = np.einsum("nv,nv->n", present, self.weights[rows])
        return (total - self._low[rows]) / (self._high[rows] - self._low[rows])

    def _presence(self, texts: Sequence[str]) -> np.ndarray:
        """``(N, vocab)`` 1.0 where a text holds the keyword, else 0.0 (parsing is per text, the rest vectorised)."""
        present = np.zeros((len(texts), len(self.vocabulary)))
        keywords = [self._text_keywords(text) for text in texts]
        owner = np.repeat(np.arange(len(texts)), [len(k) for k in keywords])
        present[owner, np.fromiter((i for k in keywords for i in k), dtype=np.int64, count=len(owner))] = 1.0
        return present

    def ground_truth_credit(self, prompt_id: Hashable, text: str) -> np.ndarray:
        """Exact Shapley values of the segments of ``text``, in closed form (see Rewards), shape (n,)."""
        self._check_prompt_id(prompt_id)
        text = truncate_action(text, self.max_action_chars)
        spans = self.oracle.segment(text)
        incidence = np.zeros((len(spans), len(self.vocabulary)))  # segment j contains keyword k
        for j, (start, end) in enumerate(spans):
            incidence[j, self._keywords(text[start:end])] = 1.0
        holders = incidence.sum(axis=0)
        share = np.divide(self.weights[prompt_id], holders, out=np.zeros(len(self.vocabulary)), where=holders > 0)
        return incidence @ share / (self._high[prompt_id] - self._low[prompt_id])


class AdditiveKeywordsVectorEnv(GenerativeSearchVectorEnv):
    """Native vector version of :class:`AdditiveKeywordsEnv` (one batched reward call per step)."""

    env_class = AdditiveKeywordsEnv
