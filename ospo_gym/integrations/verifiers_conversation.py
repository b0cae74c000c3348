"""``ospo/ConvSearch-v0`` as a verifiers multi-turn environment: the simulated shopper answers every policy turn.

:func:`ospo_gym.integrations.verifiers.load_environment` returns a :class:`ConversationEnv` (a ``vf.MultiTurnEnv``)
for a conversational env and a single-turn environment for the others, so the same entry point and ``vf-eval``
call serve both::

    from ospo_gym.integrations.verifiers import load_environment

    vf_env = load_environment("ospo/ConvSearch-v0", env_kwargs={"max_turns": 4, "num_products": 500})
    vf_env.get_dataset()[0]["prompt"]   # [{'role': 'user', 'content': "I'm looking for ..."}]

A rollout is one episode: the row's prompt is the shopper's opening (the ``user`` message); each model message is
one policy turn — a clarifying question or a search — played in the ospo-gym env, whose shopper reply comes back
as the next ``user`` message. The episode ends by the env's own rule (the target in the top k, or ``max_turns``
turns), so the env, not verifiers, decides the number of turns; the last shopper reply ends the completion.

Reward: the episode's return (NDCG@k of the last search, plus any shaping and turn costs the env was built with),
computed for a whole group in ONE batched replay of its sessions (``env.replay_returns``: one retriever call per
turn index), from the policy turns in each completion. Replaying the policy turns reproduces the episode exactly,
so the reward is the return of what the rollout played, even for a rollout that verifiers stopped early.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from ospo_gym.envs.base import truncate_action
from ospo_gym.envs.shopper import Conversation
from ospo_gym.integrations.conversation_tools import opening_rows
from ospo_gym.integrations.verifiers import (
    _POLICY_ROLES,
    Dataset,
    EnvRubric,
    _field,
    _info_column,
    _prompt_id,
    completion_text,
    vf,
)

__all__ = ["ConversationEnv", "ConversationRubric", "conversation_dataset", "policy_turns"]


def policy_turns(completion: Any, index: int = 0) -> list[str]:
    """The policy's turns in a multi-turn verifiers completion, in order: the text of every assistant message.

    Raises:
        ValueError: the completion is not chat messages, or an assistant message is not text (naming ``index``).
    """
    if isinstance(completion, str):  # completion format: the whole text is one turn
        return [completion]
    completion_text(completion, index)  # one clear error for anything that is not chat messages
    return [completion_text([m], index) for m in completion if _field(m, "role") in _POLICY_ROLES]


def conversation_dataset(env: Any, prompt_ids: Sequence[Hashable] | None = None) -> Dataset:
    """One row per hidden target: ``prompt`` is the shopper's opening as a ``user`` message (without the
    ``"shopper: "`` prefix of the Gymnasium observation), ``info`` is ``{"prompt_id": id}``.

    Args:
        env: the single ConvSearch env (``env.unwrapped``).
        prompt_ids: a subset or ordering of ``env.prompt_ids``; ``None``: all of them.
    """
    ids, prompts = opening_rows(env, prompt_ids)
    return Dataset.from_dict({"prompt": prompts, "info": _info_column(ids)})


class ConversationRubric(EnvRubric):
    """The rubric of a :class:`ConversationEnv`: ``env_reward`` is each rollout's episode return, one batched
    replay per group."""

    def policy_text(self, completion: Any, index: int) -> list[str]:
        """The policy's turns of one completion (:func:`policy_turns`)."""
        return policy_turns(completion, index)

    def score(self, prompt_ids: list[Hashable], policy: list[list[str]]) -> np.ndarray:
        """(N,) episode returns: each completion's turns replayed from the shopper's opening."""
        return self.env.replay_returns(prompt_ids, [[(t, t) for t in turns] for turns in policy])


class ConversationEnv(vf.MultiTurnEnv):
    """A verifiers multi-turn environment of an ``ospo/ConvSearch-v0`` env (see the module docstring).

    Args:
        env: the single ConvSearch env (``env.unwrapped``); its ``max_turns`` bounds every rollout.
        prompt_ids: the targets to serve; ``None``: all of them.
        system_prompt: a system message before each opening (verifiers adds it).
        **kwargs: other ``vf.MultiTurnEnv`` arguments (``eval_dataset``, ``sampling_args``, ``timeout_seconds``,
            ...) except ``dataset``, ``rubric`` and ``max_turns``, which come from the env.
    """

    def __init__(
        self,
        env: Any,
        *,
        prompt_ids: Sequence[Hashable] | None = None,
        system_prompt: str | None = None,
        **kwargs: Any,
    ) -> None:
        for refused in ("dataset", "rubric", "max_turns"):
            if refused in kwargs:
                raise ValueError(
                    f"ConversationEnv takes its {refused} from the ospo-gym env; "
                    + ("build the env with max_turns=... instead" if refused == "max_turns" else "pass prompt_ids=...")
                )
        self.conv_env = env
        # The env ends every episode itself (found, or its max_turns), after playing the last turn; verifiers'
        # own turn limit would stop before that turn is played, so it stays off.
        super().__init__(
            dataset=conversation_dataset(env, prompt_ids),
            rubric=ConversationRubric(env),
            system_prompt=system_prompt,
            max_turns=-1,
            **kwargs,
        )

    async def setup_state(self, state: Any) -> Any:
        """A fresh ospo-gym conversation for the row's target (an unknown id is the env's error)."""
        prompt_id = _prompt_id(state.get("info"), 0)
        self.conv_env.prompt(prompt_id)
        state["conversation"] = Conversation(int(prompt_id))
        return state

    async def env_response(self, messages: Any, state: Any, **kwargs: Any) -> list[Any]:
        """Play the model's last message as one turn; the shopper's reply, final when the episode ended."""
        text = truncate_action(completion_text(list(messages)[-1:]), self.conv_env.max_turn_chars)
        conversation = state["conversation"]
        reply = [vf.UserMessage(content=self.conv_env.play([conversation], [text])[0])]
        if conversation.done:
            state["final_env_response"] = reply
        return reply
