"""Long-range task: words that interact with partners ``gap`` words away in the intended answer."""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from ospo_gym.credit.shapley import MAX_EXACT_PLAYERS
from ospo_gym.envs.base import MAX_TABLE_CELLS, GenerativeSearchEnv, GenerativeSearchVectorEnv
from ospo_gym.knobs import check_knob
from ospo_gym.vocab import pseudo_words

MAX_WORDS = 4096
MAX_PROMPTS = 100_000
MAX_SYNERGY = 1000.0
WORDS_WHY = "words come in families of two sharing a stem, drawn from 8,100 two-syllable stems"

_WORD = re.compile(r"[^\W_]+")
_ENDINGS = tuple(pseudo_words(90, np.random.default_rng(0), syllables=(1, 1)))  # every one-syllable ending


class LongRangeEnv(GenerativeSearchEnv):
    """A synthetic task whose interacting words sit ``gap`` words apart in the intended answer.

    ## Description
    The vocabulary is ``num_words`` pseudo-words in families of two that share a stem (``"tavoki"``,
    ``"tavoru"``). Each prompt lists an intended answer of ``length`` words: ``num_synergy_pairs`` synergy pairs
    and ``num_and_pairs`` AND-pairs, each written as ``a``, then ``gap`` filler words, then its partner ``b``
    (the blocks in a random order, the fillers left over at the end), and ``num_distractors`` words to avoid.
    Fillers and synergy members weigh U[0.2, 1]; a synergy pair adds ``synergy`` × U[0.5, 1] when both members
    are written; an AND-pair's members weigh 0 and earn ``synergy`` × U[0.5, 1] only together. With
    ``related=True`` a pair's members are the two words of one family (lexically similar); with ``False`` they
    come from two families, and no two words of the prompt share a stem either way otherwise.

    The interaction does not depend on the order or distance in the text, only on which words are written:
    the game is a sum of weights plus pair bonuses, so its exact Shapley value gives each member of a pair its
    weight plus half the bonus. What ``gap`` changes is how far apart partners sit in the answer, hence whether
    contiguous coalition windows (OSPO) ever hold both: a window narrower than ``gap + 2`` never does.

    ## Action Space
    ``UnicodeText``. The retrieval text is read as lowercased words; each known word counts once, unknown words
    are ignored.

    ## Observation Space
    ``UnicodeText``: ``"write: w1 w2 ... | avoid: d1 d2 ..."``.

    ## Rewards
    ``score = Σ_w weight_w + Σ_(a,b) bonus_ab`` over distinct written words and pairs with both members written;
    ``r = (score − L) / (H − L)`` with ``L`` the sum of the distractor weights and ``H`` the sum of the positive
    weights and bonuses, so ``r`` is in [0, 1] and the intended answer earns 1. :meth:`ground_truth_credit` gives
    exact Shapley values by enumerating every coalition of segments through the oracle.

    ## Starting State
    A prompt drawn uniformly with the env's ``np_random``, or ``reset(options={"prompt_id": i})``.

    ## Episode End
    After one step (terminated).

    ## Arguments
    * ``num_words=64``: vocabulary size, even (families of two), at most 4096, and ``num_prompts * num_words`` at
      most ``2**25`` (the weights are a float64 table); it must hold a family for every word of a prompt.
    * ``num_prompts=16`` (at most 100,000), ``length=12``: words in the intended answer, in [2, 20] (exact
      Shapley values enumerate ``2**length`` coalitions).
    * ``gap=4``: filler words between the members of each pair, in [0, 18], with
      ``(num_synergy_pairs + num_and_pairs) * (gap + 2) <= length``.
    * ``num_synergy_pairs=1``, ``num_and_pairs=1``: each in [0, 10]; ``num_distractors=2``, in [0, 64];
      ``synergy=1.0``: the bonus scale, in [0, 1000]; ``related=True``: partners share a stem.
    * ``seed=0``; ``segmentation="word"`` and the base-class arguments.

    ## Version History
    * v0: initial version.

    >>> import gymnasium as gym, ospo_gym
    >>> env = gym.make("ospo/LongRange-v0", num_prompts=2)
    >>> obs, info = env.reset(seed=0, options={"prompt_id": 1})
    >>> answer = obs.split("write: ")[1].split(" |")[0]
    >>> round(env.step(answer)[1], 12)
    1.0
    """

    default_segmentation = "word"

    def __init__(
        self,
        num_words: int = 64,
        num_prompts: int = 16,
        length: int = 12,
        gap: int = 4,
        num_synergy_pairs: int = 1,
        num_and_pairs: int = 1,
        num_distractors: int = 2,
        synergy: float = 1.0,
        related: bool = True,
        seed: int = 0,
        **base_kwargs: Any,
    ) -> None:
        check_knob("num_words", num_words, 2, MAX_WORDS, WORDS_WHY)
        if num_words % 2:
            raise ValueError(f"num_words must be even (the words come in families of two sharing a stem), got {num_words}")
        check_knob("num_prompts", num_prompts, 1, MAX_PROMPTS, "every prompt is generated at construction")
        check_knob("length", length, 2, MAX_EXACT_PLAYERS, "exact Shapley values enumerate 2**length coalitions")
        check_knob("gap", gap, 0, MAX_EXACT_PLAYERS - 2, "filler words between the two members of a pair")
        check_knob("num_synergy_pairs", num_synergy_pairs, 0, 10, "each pair takes gap + 2 words of the answer")
        check_knob("num_and_pairs", num_and_pairs, 0, 10, "each pair takes gap + 2 words of the answer")
        check_knob("num_distractors", num_distractors, 0, 64, "words the prompt asks to avoid")
        if not isinstance(related, (bool, np.bool_)):
            raise ValueError(f"related must be a bool (whether partners share a stem), got {related!r}")
        if not 0 <= synergy <= MAX_SYNERGY:
            raise ValueError(f"synergy must be in [0, {MAX_SYNERGY}] (the bonus scale; words weigh at most 1), got {synergy}")
        pairs = num_synergy_pairs + num_and_pairs
        if pairs * (gap + 2) > length:
            raise ValueError(
                f"(num_synergy_pairs + num_and_pairs) * (gap + 2) must be at most length: {pairs} pairs of gap {gap} "
                f"take {pairs * (gap + 2)} words but the answer has {length}; raise length or lower gap or the pairs"
            )
        families = (length - 2 * pairs) + num_distractors + (pairs if related else 2 * pairs)
        if num_words // 2 < families:
            raise ValueError(
                f"num_words ({num_words}) must hold {families} families of two words (one per filler and distractor, "
                f"{'one' if related else 'two'} per pair); raise num_words to at least {2 * families}"
            )
        if num_prompts * num_words > MAX_TABLE_CELLS:
            raise ValueError(
                f"num_prompts * num_words must be at most {MAX_TABLE_CELLS} (the weights are a float64 (num_prompts, "
                f"num_words) table in memory), got {num_prompts} * {num_words}; lower either"
            )
        super().__init__(**base_kwargs)
        self.gap, self.length, self.related = gap, length, bool(related)
        rng = np.random.default_rng(seed)
        self.vocabulary: tuple[str, ...] = _family_words(num_words // 2, rng)
        self._word_index = {w: i for i, w in enumerate(self.vocabulary)}
        self.weights = np.zeros((num_prompts, num_words))  # (prompts, words)
        self.pairs = np.zeros((num_prompts, pairs, 2), dtype=np.int64)  # word ids of each pair's members
        self.bonus = np.zeros((num_prompts, pairs))  # paid when both members are written
        self.is_and_pair = np.arange(pairs) >= num_synergy_pairs  # (pairs,): the AND-pairs come after the synergy ones
        self.answers: list[list[int]] = []  # the intended answer of each prompt, word ids in order
        fillers_count = length - 2 * pairs
        for p in range(num_prompts):
            fams = rng.permutation(num_words // 2)[:families]
            side = rng.integers(0, 2, size=families)  # which word of a family a single word uses
            cursor = 0
            for j in range(pairs):
                if related:
                    a, b = 2 * fams[cursor], 2 * fams[cursor] + 1
                    cursor += 1
                else:
                    a, b = 2 * fams[cursor] + side[cursor], 2 * fams[cursor + 1] + side[cursor + 1]
                    cursor += 2
                self.pairs[p, j] = (a, b)
                self.bonus[p, j] = synergy * rng.uniform(0.5, 1.0)
                if not self.is_and_pair[j]:
                    self.weights[p, [a, b]] = rng.uniform(0.2, 1.0, 2)
            fillers = 2 * fams[cursor : cursor + fillers_count] + side[cursor : cursor + fillers_count]
            cursor += fillers_count
            distractors = 2 * fams[cursor:] + side[cursor:]
            self.weights[p, fillers] = rng.uniform(0.2, 1.0, fillers_count)
            self.weights[p, distractors] = rng.uniform(-1.0, -0.3, num_distractors)
            answer: list[int] = []
            spare = [int(f) for f in fillers]
            for j in rng.permutation(pairs):
                a, b = self.pairs[p, j]
                answer += [int(a), *spare[:gap], int(b)]
                spare = spare[gap:]
            answer += spare
            self.answers.append(answer)
            listed = " ".join(self.vocabulary[i] for i in answer)
            avoided = " ".join(self.vocabulary[i] for i in distractors)
            self._prompts[p] = f"write: {listed} | avoid: {avoided}"
        self._low = np.minimum(self.weights, 0).sum(axis=1)
        self._high = np.maximum(self.weights, 0).sum(axis=1) + self.bonus.sum(axis=1)

    def _word_ids(self, text: str) -> list[int]:
        return [self._word_index[w] for w in _WORD.findall(text.lower()) if w in self._word_index]

    def score_texts(self, prompt_ids: Sequence[Hashable], texts: Sequence[str]) -> np.ndarray:
        rows = np.asarray(prompt_ids, dtype=np.int64)
        present = np.zeros((len(texts), len(self.vocabulary)), dtype=bool)
        for i, text in enumerate(texts):  # parsing is per text; the scoring below is vectorised
            present[i, self._word_ids(text)] = True
        pairs = self.pairs[rows]  # (N, pairs, 2)
        both = np.take_along_axis(present, pairs[:, :, 0], axis=1) & np.take_along_axis(present, pairs[:, :, 1], axis=1)
        total = np.einsum("nv,nv->n", present, self.weights[rows]) + np.einsum("np,np->n", both, self.bonus[rows])
        return np.clip((total - self._low[rows]) / (self._high[rows] - self._low[rows]), 0.0, 1.0)


def _family_words(families: int, rng: np.random.Generator) -> tuple[str, ...]:
    """``2 * families`` distinct words, ``stem + ending`` with two endings per stem (word ``2f`` and ``2f + 1``)."""
    stems = pseudo_words(families, rng, syllables=(2, 2))
    words: list[str] = []
    seen: set[str] = set()
    for stem in stems:
        for _ in range(1000):  # a stem + ending can rarely spell another family's word; draw again then
            first, second = (stem + _ENDINGS[int(i)] for i in rng.choice(len(_ENDINGS), size=2, replace=False))
            if first not in seen and second not in seen:
                break
        else:  # pragma: no cover - 8,100 stems and 90 endings leave room for every allowed size
            raise ValueError(f"could not draw two new words for stem {stem!r}; lower num_words")
        seen.update((first, second))
        words += [first, second]
    return tuple(words)


class LongRangeVectorEnv(GenerativeSearchVectorEnv):
    """Native vector version of :class:`LongRangeEnv` (one batched reward call per step)."""

    env_class = LongRangeEnv
