"""``ospo/ConvSearch-v0`` as tool calls: one episode per :class:`ConvSearchTools` instance, for trainers whose
multi-turn rollouts are tool-calling loops — TRL's ``GRPOTrainer(environment_factory=...)`` protocol.

TRL builds one instance per rollout with the factory, calls ``reset(**row)`` with the dataset row, exposes every
public method but ``reset`` / ``get_reward`` to the model as a tool (its signature and docstring are the schema),
appends each tool's return value as a ``tool`` message (masked out of the loss), and scores the rollout with
``get_reward()``::

    from trl import GRPOConfig, GRPOTrainer
    from ospo_gym.integrations.conversation_tools import conv_search_dataset, conv_search_tools

    factory = conv_search_tools("ospo/ConvSearch-v0", env_kwargs={"max_turns": 4})
    trainer = GRPOTrainer(model=..., args=GRPOConfig(...), train_dataset=conv_search_dataset(factory),
                          environment_factory=factory)   # no reward_funcs: the episode's return is the reward

Each ``ask`` / ``search`` call is one turn of the episode, exactly as ``env.step("ask: ...")`` /
``env.step(query)`` would play it, with the same shopper replies. The episode ends by the env's rule (the target
in the top k, or ``max_turns`` turns); later calls answer that the conversation is over and change nothing. A
rollout whose model stops calling tools earlier ends there, as if the shopper left: its reward is then what the
env pays at an episode's end — the NDCG@k of the last search (0 without one) plus the shaping so far — so the
reward is always the return of the turns played.

Credit: this path trains with the trainer's own sequence-level advantage (TRL's GRPO); ospo-gym's turn-level
estimators (``ospo_turn``, ``turn_grpo``) need the per-turn token offsets that ospo-gym's own multi-turn loop keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from ospo_gym.envs.base import truncate_action
from ospo_gym.envs.conv_search import ConvSearchEnv
from ospo_gym.envs.shopper import Conversation
from ospo_gym.integrations.common import id_column, ospo_env

__all__ = [
    "ENDED_REPLY", "ConvSearchTools", "conv_search_dataset", "conv_search_env", "conv_search_tools", "opening_rows",
    "played_return",
]  # fmt: skip

ENDED_REPLY = "The conversation is over."
"""A tool's answer after the episode ended (the turn is not played)."""


def played_return(env: ConvSearchEnv, conv: Conversation) -> float:
    """The return of a conversation's turns: the episode's, or — when the policy stopped before the episode ended
    — what the env pays at an end (NDCG@k of the last search, 0 without one) on top of the shaping so far."""
    if conv.done or conv.ranking is None:
        return float(conv.total)
    ending = env.task.ndcg(np.array([conv.prompt_id]), conv.ranking[None, :], env.rules.k)[0]
    return float(conv.total + ending)


class ConvSearchTools:
    """One conversation with the simulated shopper of a :class:`~ospo_gym.envs.conv_search.ConvSearchEnv`.

    Args:
        env: the single ConvSearch env (``env.unwrapped``); instances may share it (it holds no episode state).
    """

    def __init__(self, env: ConvSearchEnv) -> None:
        self.env = env
        self.conversation: Conversation | None = None
        self.turns: list[str] = []

    def reset(self, prompt_id: Hashable = None, **row: Any) -> None:
        """Start the episode of the row's hidden target (``prompt_id``, the dataset column); the row's prompt
        already holds the shopper's opening, so nothing is appended to it."""
        if prompt_id is None:
            raise ValueError(
                "the dataset row has no prompt_id; build the dataset with conv_search_dataset(factory), whose rows "
                "carry the env prompt id of each target"
            )
        if isinstance(prompt_id, np.integer):
            prompt_id = int(prompt_id)
        self.env.prompt(prompt_id)  # an unknown id is the env's error
        self.conversation = Conversation(int(prompt_id))
        self.turns = []

    def ask(self, question: str) -> str:
        """Ask the shopper a clarifying question about the product they want (for example its colour or brand).

        Args:
            question: The question to ask, e.g. "what colour should it be?".

        Returns:
            The shopper's answer.
        """
        text = question.strip()
        return self._play(text if text.lower().startswith("ask:") else f"ask: {text}")

    def search(self, query: str) -> str:
        """Search the product catalog; the shopper looks at the top results and says whether the product is there.

        Args:
            query: The search query, e.g. "red leather running shoes".

        Returns:
            The shopper's reaction to the results.
        """
        # a query that reads as a question ("ask: ..." or "...?") would be played as one: keep it a search
        text = query.strip().removeprefix("ask:").rstrip("?").strip() or query
        return self._play(text)

    def get_reward(self) -> float:
        """The return of the turns played (:func:`played_return`)."""
        return played_return(self.env, self._conversation())

    def _conversation(self) -> Conversation:
        if self.conversation is None:
            raise RuntimeError("ConvSearchTools.reset(prompt_id=...) must start an episode before any tool call")
        return self.conversation

    def _play(self, text: str) -> str:
        conv = self._conversation()
        if conv.done:
            return ENDED_REPLY
        text = truncate_action(text, self.env.max_turn_chars)
        self.turns.append(text)
        return self.env.play([conv], [text])[0]


def conv_search_env(env: str | gym.Env, env_kwargs: dict[str, Any] | None = None, *, user: str) -> ConvSearchEnv:
    """The single ConvSearch env behind ``env`` (an id built with ``env_kwargs``, an env or its vector env), or
    one clear ValueError naming ``user`` (who needs it) when it is another kind of env."""
    base = ospo_env(env, env_kwargs, needs=("prompt_ids", "prompt"))
    if not isinstance(base, ConvSearchEnv):
        raise ValueError(f"{user} needs an ospo/ConvSearch-v0 env, got {type(base).__name__}")
    return base


def opening_rows(env: ConvSearchEnv, prompt_ids: Sequence[Hashable] | None = None) -> tuple[list[Hashable], list[list[dict]]]:
    """The targets to serve (``prompt_ids``, a subset or ordering, or all of ``env.prompt_ids``) and each one's
    conversation so far: the shopper's opening as the ``user`` message. The dataset rows of every adapter."""
    ids = list(env.prompt_ids if prompt_ids is None else prompt_ids)
    if not ids:
        raise ValueError(f"no prompts: {'prompt_ids is empty' if prompt_ids is not None else 'the env has none'}")
    return ids, [[{"role": "user", "content": env.opening(p)}] for p in ids]  # an unknown id: the env's error


def conv_search_tools(
    env: str | gym.Env = "ospo/ConvSearch-v0", env_kwargs: dict[str, Any] | None = None
) -> Callable[[], ConvSearchTools]:
    """A factory of :class:`ConvSearchTools` over ONE env (built here from an id and ``env_kwargs``, or given),
    for ``GRPOTrainer(environment_factory=...)``; ``factory.env`` is that env."""
    base = conv_search_env(env, env_kwargs, user="conv_search_tools")

    def factory() -> ConvSearchTools:
        return ConvSearchTools(base)

    factory.env = base  # type: ignore[attr-defined]
    return factory


def conv_search_dataset(factory: Callable[[], ConvSearchTools], prompt_ids: Sequence[Hashable] | None = None) -> Any:
    """A conversational ``datasets.Dataset``: ``prompt`` is the shopper's opening as a ``user`` message,
    ``prompt_id`` the target's env id (which ``reset`` reads); ``prompt_ids``: a subset or ordering, or all."""
    from datasets import Dataset  # TRL's dependency; this module itself needs none

    ids, prompts = opening_rows(factory.env, prompt_ids)  # type: ignore[attr-defined]
    return Dataset.from_dict({"prompt": prompts, "prompt_id": id_column(ids)})
