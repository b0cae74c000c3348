"""ospo-gym envs as verifiers (PrimeIntellect) environments: a single-turn environment whose dataset is the env's
prompts and whose rubric scores completions with the env's own reward; for ``ospo/ConvSearch-v0`` a multi-turn one
(:mod:`ospo_gym.integrations.verifiers_conversation`) whose shopper answers every turn.

Needs ``pip install 'ospo-gym[verifiers]'`` (verifiers ``>=0.3.1,<0.4``, Python >= 3.11). This module is built on
verifiers' classic environment API — ``vf.SingleTurnEnv``, ``vf.Rubric`` and the ``load_environment`` entry point
that verifiers' loader and ``vf-eval`` import — which verifiers 0.4 removed for its ``vf.Taskset`` API; other versions
are refused with an ImportError rather than used silently::

    from ospo_gym.integrations.verifiers import load_environment

    vf_env = load_environment("ospo/SyntheticRetrieval-v0", env_kwargs={"num_products": 300, "num_queries": 20})
    vf_env.get_dataset()[0]   # {'prompt': [{'role': 'user', 'content': 'query: ...'}], 'info': {'prompt_id': 0}, ...}

This module is itself a verifiers environment module (it defines ``load_environment``), so verifiers' loader and
``vf-eval`` take it by its import name, the env's arguments as JSON::

    vf-eval ospo_gym.integrations.verifiers -a '{"env": "ospo/ESCI-v0", "env_kwargs": {"data_dir": "esci"}}' -m MODEL

The argument that picks the ospo-gym env is ``env``, not ``env_id``: verifiers' loader passes its own ``env_id``
(the module name) beside the environment's arguments.

Rewards: the rubric's one reward function, ``env_reward``, is a verifiers group reward function, so each group of
rollouts is scored with ONE ``env.unwrapped.rewards(prompt_ids, texts)`` call (one batched retrieval); the prompt id
of each rollout travels in its dataset row's ``info``. A completion's text is its last assistant message's (the
text in ``<answer>...</answer>`` is what a retrieval env retrieves with). verifiers' rubric logs a failing reward
function and scores it 0; this rubric raises instead, so a completion that is not text is one clear ValueError, not
a silent zero.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import VectorEnv

from ospo_gym.integrations.common import ospo_env

VERIFIERS_VERSIONS = ">=0.3.1,<0.4"
"""The verifiers releases this module is tested with (the ``verifiers`` extra pins the same range)."""

try:
    import verifiers as vf
except ImportError as err:
    raise ImportError(
        f"ospo_gym.integrations.verifiers needs verifiers (verifiers{VERIFIERS_VERSIONS}, Python >= 3.11); install "
        "it with: pip install 'ospo-gym[verifiers]'"
    ) from err

from packaging.specifiers import SpecifierSet  # noqa: E402 (a dependency of verifiers' datasets: checked above)

if not SpecifierSet(VERIFIERS_VERSIONS).contains(vf.__version__, prereleases=True):
    raise ImportError(
        f"ospo_gym.integrations.verifiers is tested with verifiers{VERIFIERS_VERSIONS} (it builds on "
        f"vf.SingleTurnEnv and vf.Rubric, which verifiers 0.4 removed) but verifiers {vf.__version__} is installed; "
        "install a tested one with: pip install 'ospo-gym[verifiers]'"
    )

from datasets import Dataset  # noqa: E402 (verifiers' dependency, imported once the version is known to fit)

__all__ = ["VERIFIERS_VERSIONS", "EnvRubric", "completion_text", "load_environment", "prompt_dataset"]

# The roles of the messages the policy wrote: chat ("assistant") and verifiers' completion-format ("text").
_POLICY_ROLES = ("assistant", "text")


def _field(message: Any, name: str) -> Any:
    """A field of a chat message: a dict's key or a verifiers message model's attribute (None when absent)."""
    if isinstance(message, Mapping):
        return message.get(name)
    return getattr(message, name, None)


def _is_message(item: Any) -> bool:
    return isinstance(_field(item, "role"), str)


def _not_text(completion: Any, index: int, why: str) -> ValueError:
    shown = repr(completion)
    return ValueError(
        f"completion {index} is not text ({why}): {type(completion).__name__} {shown[:80]}"
        f"{'...' if len(shown) > 80 else ''}; expected a string or chat messages ending with "
        "{'role': 'assistant', 'content': '<text>'}"
    )


def completion_text(completion: Any, index: int = 0) -> str:
    """The text of a verifiers completion: a string (completion format), or chat messages (dicts or verifiers'
    message models) whose last assistant message holds the text — a string, or text content parts, joined.

    An assistant message without content (``content=None``), or messages with no assistant message at all (a
    rollout that ended before the model answered), are the empty text: the env scores what the policy wrote.

    Raises:
        ValueError: anything else (a number, an image part, a list that is not messages), naming ``index``.
    """
    if isinstance(completion, str):
        return completion
    if not isinstance(completion, list | tuple) or not all(_is_message(m) for m in completion):
        raise _not_text(completion, index, "neither a string nor a list of chat messages")
    written = [m for m in completion if _field(m, "role") in _POLICY_ROLES]
    if not written:
        return ""
    content = _field(written[-1], "content")
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list | tuple):
        texts = [_field(part, "text") for part in content]
        kinds = [_field(part, "type") for part in content]
        if all(isinstance(t, str) and k in (None, "text") for t, k in zip(texts, kinds, strict=True)):
            return "".join(texts)
    raise _not_text(completion, index, "the last assistant message's content is not text")


def _prompt_id(info: Any, index: int) -> Hashable:
    """The env prompt id in a rollout's ``info`` (a dict, or the JSON text of one)."""
    if isinstance(info, str):
        try:
            info = json.loads(info)
        except json.JSONDecodeError:
            info = None
    if not isinstance(info, Mapping) or "prompt_id" not in info:
        raise ValueError(
            f"rollout {index} has no prompt_id in its info (got {info!r}); the env reward needs the env prompt id "
            "of every rollout: build the dataset with ospo_gym.integrations.verifiers.prompt_dataset(env) or give "
            "each row info={'prompt_id': <env prompt id>}"
        )
    return info["prompt_id"]


class EnvRubric(vf.Rubric):
    """A verifiers rubric whose reward is the ospo-gym env's: ``env_reward``, weight 1, one env call per group.

    Args:
        env: the single ospo-gym env (``ospo_gym.integrations.common.ospo_env``) whose ``rewards`` scores.
        parser: the rubric's verifiers parser (verifiers' default ``vf.Parser()``); the reward does not use it.
    """

    def __init__(self, env: Any, parser: Any = None) -> None:
        self.env = env
        super().__init__(funcs=[self.env_reward], weights=[1.0], parser=parser)

    def env_reward(self, completions: Sequence[Any], infos: Sequence[Any]) -> list[float]:
        """The env's reward of each completion for its row's prompt, in ONE ``env.rewards`` call.

        A verifiers group reward function (its arguments are the plural ones): ``completions`` (N,) and ``infos``
        (N,) of one group; returns (N,) floats in the env's range ([0, 1] for the ospo-gym envs).
        """
        if len(completions) != len(infos):
            raise ValueError(f"{len(completions)} completions but {len(infos)} infos; expected one info per completion")
        ids = [_prompt_id(info, i) for i, info in enumerate(infos)]
        policy = [self.policy_text(c, i) for i, c in enumerate(completions)]
        return [float(r) for r in np.asarray(self.score(ids, policy), dtype=np.float64)]

    def policy_text(self, completion: Any, index: int) -> Any:
        """What the env scores of one completion: its text (:func:`completion_text`)."""
        return completion_text(completion, index)

    def score(self, prompt_ids: list[Hashable], policy: list[Any]) -> np.ndarray:
        """(N,) env rewards of the completions' ``policy`` texts for their prompts, in ONE env call."""
        return self.env.rewards(prompt_ids, policy)

    def _check(self, states: Sequence[Any]) -> None:
        """Raise the reward's own ValueError before verifiers' rubric, which would log it and score 0, runs it."""
        for i, state in enumerate(states):
            _prompt_id(state.get("info"), i)
            self.policy_text(state.get("completion"), i)

    async def score_group(self, states: list[Any]) -> None:
        """verifiers' group scoring (rewards, metrics, the group-mean advantage), after checking every rollout."""
        self._check(states)
        await super().score_group(states)

    async def score_rollout(self, state: Any) -> None:
        """One rollout, scored as a group of one: verifiers' ``Rubric.score_rollout`` refuses group reward functions
        (``independent_scoring=True``). Its advantage is then 0, a group of one's (reward minus its own mean)."""
        await self.score_group([state])


def _info_column(ids: list[Hashable]) -> list[Any]:
    """``info`` of each row, ``{"prompt_id": id}``: as dicts when Arrow holds the ids exactly (all strings, or all
    integers within int64), else as JSON text (verifiers parses a string ``info`` when a rollout starts)."""
    plain = [p.item() if isinstance(p, np.generic) else p for p in ids]
    integers = all(isinstance(p, int) and not isinstance(p, bool) for p in plain)
    if (integers and -(2**63) <= min(plain) and max(plain) < 2**63) or all(isinstance(p, str) for p in plain):
        return [{"prompt_id": p} for p in plain]
    try:
        return [json.dumps({"prompt_id": p}) for p in plain]
    except TypeError as err:
        raise ValueError(
            f"prompt ids must be strings or integers (JSON values) to travel in a verifiers row's info: {err}"
        ) from None


def prompt_dataset(
    env: str | gym.Env | VectorEnv,
    *,
    prompt_ids: Sequence[Hashable] | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> Dataset:
    """A verifiers dataset of an ospo-gym env: one row per prompt, columns ``prompt`` (chat messages,
    ``[{"role": "user", "content": text}]``: verifiers is chat-first and its environment adds the system prompt)
    and ``info`` (``{"prompt_id": id}``, the env's id of the prompt, which the rubric hands to the env's reward).

    Args:
        env: an env id (``env_kwargs`` go to ``gym.make``), an env or its native vector env.
        prompt_ids: a subset (or an ordering, repeats allowed) of the env's prompt ids; ``None``: all of them.
    """
    base = ospo_env(env, env_kwargs)
    ids = list(base.prompt_ids if prompt_ids is None else prompt_ids)
    if not ids:
        raise ValueError(f"no prompts: {'prompt_ids is empty' if prompt_ids is not None else 'the env has none'}")
    prompts = [[{"role": "user", "content": base.prompt(p)}] for p in ids]  # an unknown id raises the env's error
    return Dataset.from_dict({"prompt": prompts, "info": _info_column(ids)})


def load_environment(
    env: str | gym.Env | VectorEnv = "ospo/SyntheticRetrieval-v0",
    env_kwargs: dict[str, Any] | None = None,
    *,
    system_prompt: str | None = None,
    prompt_ids: Sequence[Hashable] | None = None,
    **kwargs: Any,
) -> Any:
    """A ``vf.SingleTurnEnv`` of an ospo-gym env: its prompts as the dataset (:func:`prompt_dataset`) and an
    :class:`EnvRubric` that scores each completion with the env's reward; for a conversational env
    (``ospo/ConvSearch-v0``) a multi-turn
    :class:`~ospo_gym.integrations.verifiers_conversation.ConversationEnv` whose shopper answers every turn.

    Args:
        env: an ospo-gym env id (built with ``gym.make(env, **env_kwargs)``), an env or its native vector env.
        env_kwargs: ``gym.make`` keyword arguments when ``env`` is an id (e.g. ``{"split": "test"}``).
        system_prompt: a system message before each prompt (verifiers adds it).
        prompt_ids: the prompts to serve (a subset or an ordering of the env's ids); ``None``: all of them.
        **kwargs: other ``vf.SingleTurnEnv`` (``vf.MultiTurnEnv``) arguments (``eval_dataset``, ``sampling_args``, ``max_workers``, ...).

    Raises:
        ValueError: an unknown env id, an env that is not an ospo-gym generative-search env (no ``prompt_ids``,
            ``prompt``, ``rewards``), or no prompts.
    """
    for refused in ("dataset", "rubric"):
        if refused in kwargs:
            raise ValueError(
                f"load_environment builds the {refused} from the env; to change the prompts pass prompt_ids=..., "
                f"or build vf.SingleTurnEnv(dataset=prompt_dataset(env), rubric=EnvRubric(...)) yourself"
            )
    base = ospo_env(env, env_kwargs, needs=("prompt_ids", "prompt"))
    if not hasattr(base, "rewards") and callable(getattr(base, "replay_returns", None)):
        from ospo_gym.integrations.verifiers_conversation import ConversationEnv  # it imports this module

        return ConversationEnv(base, prompt_ids=prompt_ids, system_prompt=system_prompt, **kwargs)
    base = ospo_env(base)  # a single-turn env needs rewards: the standard error if it has none
    dataset = prompt_dataset(base, prompt_ids=prompt_ids)
    return vf.SingleTurnEnv(dataset=dataset, rubric=EnvRubric(base), system_prompt=system_prompt, **kwargs)
