"""Interaction task: attribute phrases whose value depends on their neighbours."""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from ospo_gym.envs.base import MAX_TABLE_CELLS, GenerativeSearchEnv, GenerativeSearchVectorEnv
from ospo_gym.knobs import check_knob
from ospo_gym.vocab import pseudo_words

MAX_PHRASES = 4096
MAX_PROMPTS = 100_000
MAX_SYNERGY = 1000.0
PHRASES_WHY = "each prompt holds a float64 (num_phrases, num_phrases) table of synergy bonuses"

_WORD = re.compile(r"[^\W_]+")


class InteractionEnv(GenerativeSearchEnv):
    """A synthetic task with synergy between adjacent phrases and distractors that hurt.

    ## Description
    The vocabulary is ``num_phrases`` two-word attribute phrases (``"<modifier> <noun>"`` pseudo-words). Each
    prompt has ``num_targets`` target phrases with weights in [0.2, 1], ``num_distractors`` distractor phrases with
    weights in [-1, -0.3], and ``num_synergies`` ordered synergy pairs ``(p, q)`` of targets: writing ``q``
    *immediately* after ``p`` (no word between them) earns a bonus of ``synergy`` × U[0.5, 1]. The prompt lists
    the targets (synergy pairs next to each other, in order) and the distractors.

    Because synergy needs adjacency, the value of a phrase depends on its neighbours: the game is not additive,
    contiguous coalitions keep true neighbours together while non-contiguous ones create false adjacencies, and
    PROP (magnitudes) and RANK (order only) credit the synergy tokens differently.

    ## Action Space
    ``UnicodeText``. The retrieval text is read as lowercased words; phrases are recognised left to right as
    consecutive word pairs, each phrase counting once; unknown words are ignored but break adjacency.

    ## Observation Space
    ``UnicodeText``: ``"describe: a b, c d, ... | avoid: e f, ..."``.

    ## Rewards
    ``score = Σ_p w_p + Σ_(p,q) bonus_pq`` over distinct recognised phrases and realised synergy pairs;
    ``r = (score − L) / (H − L)`` with ``L`` the sum of the distractor weights and ``H`` the sum of target weights
    and bonuses, so ``r`` is in [0, 1]. :meth:`ground_truth_credit` gives exact Shapley values by enumeration.

    ## Starting State
    A prompt drawn uniformly with the env's ``np_random``, or ``reset(options={"prompt_id": i})``.

    ## Episode End
    After one step (terminated).

    ## Arguments
    * ``num_phrases=40``: size of the phrase vocabulary, at most 4096, and ``num_prompts * num_phrases**2`` at
      most ``2**25`` (each prompt holds a float64 table of synergy bonuses between phrases).
    * ``num_prompts=16`` (at most 100,000), ``num_targets=4``, ``num_distractors=3`` (together at most
      ``num_phrases``), ``num_synergies=2`` (at most ``num_targets // 2``), ``synergy=0.8``: the bonus scale,
      in [0, 1000].
    * ``seed=0``; ``segmentation="phrase"`` and the base-class arguments.

    ## Version History
    * v0: initial version.

    >>> import gymnasium as gym, ospo_gym
    >>> env = gym.make("ospo/Interaction-v0", num_prompts=2)
    >>> obs, info = env.reset(seed=0, options={"prompt_id": 1})
    >>> targets = obs.split("describe: ")[1].split(" |")[0]
    >>> env.step(targets)[1]
    1.0
    """

    default_segmentation = "phrase"

    def __init__(
        self,
        num_phrases: int = 40,
        num_prompts: int = 16,
        num_targets: int = 4,
        num_distractors: int = 3,
        num_synergies: int = 2,
        synergy: float = 0.8,
        seed: int = 0,
        **base_kwargs: Any,
    ) -> None:
        check_knob("num_phrases", num_phrases, 1, MAX_PHRASES, PHRASES_WHY)
        check_knob("num_prompts", num_prompts, 1, MAX_PROMPTS, "every prompt is generated at construction")
        check_knob("num_targets", num_targets, 1, num_phrases, "targets are drawn from the phrases")
        check_knob("num_distractors", num_distractors, 0, num_phrases, "distractors are drawn from the phrases")
        if num_phrases < num_targets + num_distractors:
            raise ValueError(
                f"num_phrases ({num_phrases}) must be at least num_targets + num_distractors "
                f"({num_targets + num_distractors})"
            )
        if num_prompts * num_phrases**2 > MAX_TABLE_CELLS:
            raise ValueError(
                f"num_prompts * num_phrases**2 must be at most {MAX_TABLE_CELLS} (the synergy bonuses are a float64 "
                f"(num_prompts, num_phrases, num_phrases) table in memory), got {num_prompts} * {num_phrases}**2; "
                "lower either"
            )
        check_knob("num_synergies", num_synergies, 0, num_targets // 2, "pairs of distinct targets, num_targets // 2")
        if not 0 <= synergy <= MAX_SYNERGY:
            raise ValueError(
                f"synergy must be in [0, {MAX_SYNERGY}] (the bonus scale; targets weigh at most 1), got {synergy}"
            )
        super().__init__(**base_kwargs)
        rng = np.random.default_rng(seed)
        words = pseudo_words(2 * num_phrases, rng)
        self.phrases: tuple[tuple[str, str], ...] = tuple(zip(words[::2], words[1::2], strict=True))
        self.vocabulary: tuple[str, ...] = tuple(words)
        self._phrase_index = {p: i for i, p in enumerate(self.phrases)}
        self.weights = np.zeros((num_prompts, num_phrases))  # (prompts, phrases)
        self.bonus = np.zeros((num_prompts, num_phrases, num_phrases))  # bonus[p, a, b]: a directly before b
        for p in range(num_prompts):
            order = rng.permutation(num_phrases)
            targets, distractors = order[:num_targets], order[num_targets : num_targets + num_distractors]
            self.weights[p, targets] = rng.uniform(0.2, 1.0, num_targets)
            self.weights[p, distractors] = rng.uniform(-1.0, -0.3, num_distractors)
            for k in range(num_synergies):  # consecutive targets in the listing form the synergy pairs
                self.bonus[p, targets[2 * k], targets[2 * k + 1]] = synergy * rng.uniform(0.5, 1.0)
            listed = ", ".join(" ".join(self.phrases[i]) for i in targets)
            avoided = ", ".join(" ".join(self.phrases[i]) for i in rng.permutation(distractors))
            self._prompts[p] = f"describe: {listed} | avoid: {avoided}"
        self._low = np.minimum(self.weights, 0).sum(axis=1)
        self._high = np.maximum(self.weights, 0).sum(axis=1) + self.bonus.sum(axis=(1, 2))

    def parse(self, text: str) -> list[int]:
        """Recognised phrase ids in order, with ``-1`` for each unknown word (which breaks adjacency)."""
        words = _WORD.findall(text.lower())
        out: list[int] = []
        i = 0
        while i < len(words):
            phrase = self._phrase_index.get((words[i], words[i + 1])) if i + 1 < len(words) else None
            if phrase is None:
                out.append(-1)
                i += 1
            else:
                out.append(phrase)
                i += 2
        return out

    def score_texts(self, prompt_ids: Sequence[Hashable], texts: Sequence[str]) -> np.ndarray:
        scores = np.empty(len(texts))
        for n, (prompt_id, text) in enumerate(zip(prompt_ids, texts, strict=True)):
            sequence = np.asarray(self.parse(text), dtype=np.int64)
            present = np.unique(sequence[sequence >= 0])
            pairs = np.stack([sequence[:-1], sequence[1:]], axis=1) if len(sequence) > 1 else np.zeros((0, 2), int)
            pairs = np.unique(pairs[(pairs >= 0).all(axis=1)], axis=0)
            total = self.weights[prompt_id, present].sum() + self.bonus[prompt_id, pairs[:, 0], pairs[:, 1]].sum()
            scores[n] = (total - self._low[prompt_id]) / (self._high[prompt_id] - self._low[prompt_id])
        return np.clip(scores, 0.0, 1.0)


class InteractionVectorEnv(GenerativeSearchVectorEnv):
    """Native vector version of :class:`InteractionEnv`."""

    env_class = InteractionEnv
