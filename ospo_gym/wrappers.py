"""Reward noise for any ospo-gym env, applied alike to the reward and to every coalition value ``v(S)``.

Three kinds (:data:`NOISE_KINDS`), each seeded and keyed on *what is scored*, never on call order:

* ``"gaussian"`` (every env): ``r̃ = clip(r + level · ε, 0, 1)`` with ``ε ~ N(0, 1)`` drawn from a hash of
  ``(seed, prompt_id, text)``. The clip keeps the env contract (rewards in [0, 1]); it biases rewards near 0 and 1
  inwards.
* ``"label_flip"`` (retrieval envs): before NDCG, each judged label of a prompt's pool is, with probability
  ``level``, replaced by another value of the env's relevance scale (drawn uniformly among the others; binary
  relevance: 0 ↔ 1). The flips are drawn once per ``(seed, prompt_id)``: a noisy judge, the same for every text.
  Both the DCG and the ideal DCG use the flipped labels.
* ``"score"`` (retrieval envs, ``pool="judged"``): the retriever's scores of the retrieved pool documents get
  ``level · s_max · ε_d`` added, ``s_max`` the largest retrieved score of that query and ``ε_d ~ N(0, 1)`` drawn from
  a hash of ``(seed, prompt_id, text)`` per pool document. It reorders what the query retrieves; it does not
  retrieve other documents (the retrieved set is the noise-free one).

The ``text`` of a key is the text's segments (the env's segmentation) joined by single spaces, so a completion and
the oracle's full coalition ``N`` of it (its segments joined by spaces) get the same noise: ``v(N)`` equals the
noisy reward of the completion whenever it does without noise. ``level=0`` is the identity, bit for bit.

Two ways in, one implementation (:class:`NoisyScorer`):

* ``gym.make(id, reward_noise={"kind": "gaussian", "level": 0.1, "seed": 0})`` — also for
  ``gym.make_vec(..., vectorization_mode="vector_entry_point")`` and the agents / bench (env kwargs);
* ``NoisyReward(env, kind="gaussian", level=0.1, seed=0)`` — a ``gymnasium.Wrapper`` for an env already built.

``ground_truth_credit`` stays that of the noise-free game (the credit the noisy training is measured against).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from ospo_gym.oracle import CoalitionOracle
from ospo_gym.segment import segment_action

NOISE_KINDS = ("gaussian", "label_flip", "score")
"""Every kind of reward noise; an env lists those it supports in its ``noise_kinds``."""
MAX_LEVEL = 10.0

__all__ = ["NOISE_KINDS", "NoisyReward", "NoisyScorer", "RewardNoise", "key_normals"]


@dataclass(frozen=True)
class RewardNoise:
    """One reward-noise setting.

    Attributes:
        kind: one of :data:`NOISE_KINDS`.
        level: ``"gaussian"``: the std of the noise added to the reward (in reward units, [0, 10]);
            ``"label_flip"``: the probability that a judged label is flipped ([0, 1]); ``"score"``: the std of the
            score noise relative to the query's largest retrieved score ([0, 10]). 0 is the identity.
        seed: a non-negative int; different seeds draw independent noise.
    """

    kind: str = "gaussian"
    level: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in NOISE_KINDS:
            raise ValueError(f"unknown reward noise kind {self.kind!r}; expected one of {NOISE_KINDS}")
        if (
            isinstance(self.level, bool)
            or not isinstance(self.level, int | float)
            or not np.isfinite(self.level)
        ):
            raise ValueError(f"reward noise level must be a finite number, got {self.level!r}")
        top = 1.0 if self.kind == "label_flip" else MAX_LEVEL
        if not 0.0 <= self.level <= top:
            raise ValueError(
                f"reward noise level for {self.kind!r} must lie in [0, {top:g}], got {self.level}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer) or self.seed < 0:
            raise ValueError(f"reward noise seed must be a non-negative int, got {self.seed!r}")

    @classmethod
    def from_spec(cls, spec: RewardNoise | Mapping[str, Any] | None) -> RewardNoise | None:
        """``None``, a :class:`RewardNoise`, or a mapping with keys ``kind``, ``level``, ``seed`` (the env kwarg)."""
        if spec is None or isinstance(spec, RewardNoise):
            return spec
        if not isinstance(spec, Mapping):
            raise ValueError(
                f"reward_noise must be None or a dict like {{'kind': 'gaussian', 'level': 0.1, 'seed': 0}}, "
                f"got {type(spec).__name__}"
            )
        unknown = set(spec) - {"kind", "level", "seed"}
        if unknown:
            raise ValueError(
                f"unknown reward_noise keys {sorted(unknown)}; allowed: ['kind', 'level', 'seed']"
            )
        return cls(**dict(spec))


def key_normals(seed: int, tag: str, prompt_id: Hashable, text: str, count: int) -> np.ndarray:
    """``count`` standard normals that depend only on ``(seed, tag, prompt_id, text)``, shape (count,).

    The key is hashed with BLAKE2b (stable across processes and Python versions, unlike ``hash``) and seeds a
    ``np.random.Generator``."""
    digest = hashlib.blake2b(repr((int(seed), tag, prompt_id, text)).encode("utf-8"), digest_size=16).digest()
    return np.random.default_rng(int.from_bytes(digest, "little")).standard_normal(count)


class NoisyScorer:
    """The noisy version of an env's ``score_texts``: ``(prompt_ids, texts) -> (N,)`` rewards in [0, 1].

    Args:
        env: the unwrapped ospo-gym env (its ``score_texts``, its segmentation and, for the retrieval kinds, its
            ``score_with``, ``judged`` and ``pool``).
        noise: the setting; its kind must be in ``env.noise_kinds``.
    """

    def __init__(self, env: Any, noise: RewardNoise) -> None:
        supported = tuple(getattr(env, "noise_kinds", ("gaussian",)))
        if noise.kind not in supported:
            raise ValueError(
                f"{type(env).__name__} does not support reward noise {noise.kind!r}; it supports {list(supported)} "
                "(label flips and score noise need a retrieval env: judged labels and retriever scores)"
            )
        if noise.kind == "score" and getattr(env, "pool", "judged") != "judged":
            raise ValueError(
                "score noise acts on the pooled ranking and needs pool='judged'; use label_flip or gaussian"
            )
        self.env = env
        self.noise = noise
        self._flipped: dict[Hashable, np.ndarray] = {}

    def __call__(self, prompt_ids: Sequence[Hashable], texts: Sequence[str]) -> np.ndarray:
        env, noise = self.env, self.noise
        if noise.kind == "gaussian":
            clean = np.asarray(env.score_texts(prompt_ids, texts), dtype=np.float64)
            if noise.level == 0.0:
                return clean
            eps = np.array(
                [
                    key_normals(noise.seed, "gaussian", p, self.key_text(t), 1)[0]
                    for p, t in zip(prompt_ids, texts, strict=True)
                ]
            )
            return np.clip(clean + noise.level * eps, 0.0, 1.0)
        if noise.kind == "label_flip":
            gains = {p: self.flipped_gains(p) for p in dict.fromkeys(prompt_ids)}
            return np.asarray(env.score_with(prompt_ids, texts, gains=gains), dtype=np.float64)
        return np.asarray(
            env.score_with(prompt_ids, texts, perturb=self._score_perturbation(prompt_ids, texts)),
            dtype=np.float64,
        )

    def key_text(self, text: str) -> str:
        """The text a key uses: its segments joined by single spaces (a completion and its full coalition agree)."""
        spans = segment_action(text, self.env.segmentation, backend=self.env.segmentation_backend)
        return " ".join(text[start:end] for start, end in spans)

    def flipped_gains(self, prompt_id: Hashable) -> np.ndarray:
        """The prompt's judged gains after the label flips, shape (P,) (cached; drawn from ``(seed, prompt_id)``)."""
        if prompt_id not in self._flipped:
            clean = np.asarray(self.env.judged.gains[prompt_id], dtype=np.float64)
            self._flipped[prompt_id] = flip_labels(
                clean, self.relevance_scale(), self.noise.level, self.noise.seed, prompt_id
            )
        return self._flipped[prompt_id]

    def relevance_scale(self) -> np.ndarray:
        """The env's label values: its ``relevance_scale`` if it has one, else every gain that occurs, and 0."""
        scale = getattr(self.env, "relevance_scale", None)
        if scale is None:
            scale = np.unique(
                np.concatenate(
                    [[0.0], *(np.asarray(g, dtype=np.float64) for g in self.env.judged.gains.values())]
                )
            )
        return np.unique(np.asarray(scale, dtype=np.float64))

    def _score_perturbation(
        self, prompt_ids: Sequence[Hashable], texts: Sequence[str]
    ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        noise = self.noise
        keys = [(p, self.key_text(t)) for p, t in zip(prompt_ids, texts, strict=True)]

        def perturb(pool_scores: np.ndarray, retrieved: np.ndarray) -> np.ndarray:
            """(Q, P) pool scores plus the keyed noise on the retrieved entries."""
            if noise.level == 0.0:
                return pool_scores
            out = np.asarray(pool_scores, dtype=np.float64).copy()
            for row, (prompt_id, text) in enumerate(keys):
                hit = retrieved[row]
                if not hit.any():
                    continue
                scale = noise.level * float(np.max(out[row][hit]))
                eps = key_normals(noise.seed, "score", prompt_id, text, out.shape[1])
                out[row] = np.where(hit, out[row] + scale * eps, out[row])
            return out

        return perturb


def flip_labels(
    gains: np.ndarray, scale: np.ndarray, level: float, seed: int, prompt_id: Hashable
) -> np.ndarray:
    """Each of the (P,) ``gains`` replaced with probability ``level`` by another value of ``scale`` (uniformly among
    the others), drawn from ``(seed, prompt_id)``; shape (P,). ``level=0`` returns ``gains`` unchanged."""
    gains = np.asarray(gains, dtype=np.float64)
    if level == 0.0 or len(scale) < 2 or gains.size == 0:
        return gains
    digest = hashlib.blake2b(
        repr((int(seed), "label_flip", prompt_id)).encode("utf-8"), digest_size=16
    ).digest()
    rng = np.random.default_rng(int.from_bytes(digest, "little"))
    flip = rng.random(gains.size) < level
    # the index of each gain on the scale, then a uniform draw among the len(scale) - 1 other values
    position = np.abs(gains[:, None] - scale[None, :]).argmin(axis=1)
    other = rng.integers(len(scale) - 1, size=gains.size)
    other = other + (other >= position)
    return np.where(flip, scale[other], gains)


class NoisyReward(gym.Wrapper):
    """Seeded reward noise for an ospo-gym env already built (see the module docstring for the kinds).

    ``step`` returns the noisy reward (the clean one in ``info["clean_reward"]``); :attr:`oracle` and
    :meth:`rewards` are noisy in the same way, so an agent handed this wrapper trains on the noisy game;
    :meth:`ground_truth_credit` is that of the noise-free game. Raises ``ValueError`` for a kind the env does not
    support (the message lists those it does), and for an env already built with ``reward_noise``. For the native
    vector env pass ``reward_noise=`` to ``gym.make_vec`` instead (the same implementation).

    >>> import gymnasium as gym, ospo_gym
    >>> from ospo_gym.wrappers import NoisyReward
    >>> env = NoisyReward(gym.make("ospo/AdditiveKeywords-v0", num_prompts=2), kind="gaussian", level=0.1, seed=0)
    >>> obs, info = env.reset(seed=0)
    >>> _, reward, *_ = env.step("some text")
    >>> spans = env.oracle.segment("some text")
    >>> bool(env.oracle.values(info["prompt_id"], "some text", spans, [(0, 1)])[0] == reward)
    True
    """

    def __init__(self, env: gym.Env, kind: str = "gaussian", level: float = 0.0, seed: int = 0) -> None:
        super().__init__(env)
        base = env.unwrapped
        if not all(hasattr(base, name) for name in ("score_texts", "oracle", "prompt_ids", "rewards")):
            raise ValueError(
                f"{type(base).__name__} is not an ospo-gym generative-search env; build one with gym.make('ospo/...')"
            )
        if getattr(base, "reward_noise", None) is not None:
            raise ValueError(
                "this env was built with reward_noise already; build it without, or drop the wrapper"
            )
        self.noise = RewardNoise(kind, level, seed)
        self.scorer = NoisyScorer(base, self.noise)
        self.oracle = CoalitionOracle(
            self.scorer, segmentation=base.segmentation, segmentation_backend=base.segmentation_backend
        )

    @property
    def prompt_ids(self) -> list[Hashable]:
        return self.env.unwrapped.prompt_ids

    def prompt(self, prompt_id: Hashable) -> str:
        return self.env.unwrapped.prompt(prompt_id)

    def rewards(self, prompt_ids: Sequence[Hashable], actions: Sequence[str]) -> np.ndarray:
        """Noisy rewards of whole actions, shape (N,) (the env's ``rewards`` with the noisy scorer)."""
        return self.env.unwrapped.rewards(prompt_ids, actions, scorer=self.scorer)

    def ground_truth_credit(self, prompt_id: Hashable, text: str) -> np.ndarray:
        """Exact Shapley values of the noise-free game (see the env's ``ground_truth_credit``)."""
        return self.env.unwrapped.ground_truth_credit(prompt_id, text)

    def step(self, action: str) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, clean, terminated, truncated, info = self.env.step(action)
        info = dict(info, clean_reward=clean)
        reward = float(self.rewards([info["prompt_id"]], [action])[0])
        return obs, reward, terminated, truncated, info
