"""``ospo/ConvSearch-v0`` as a verl agent loop: one episode per sample, one generation per policy turn.

verl (0.9.x) runs multi-turn rollouts in agent loops: each sample's ``agent_name`` column picks a registered
``AgentLoopBase`` subclass, whose ``run`` talks to the rollout server and returns the token stream with a response
mask (1 on the policy's tokens, 0 on what the environment added) and, optionally, the sample's reward. This
module's :class:`ConvSearchAgentLoop` (registered as ``"ospo_conv_search"``) plays the ospo-gym conversation:

1. the prompt (the shopper's opening, from :func:`conv_search_dataset`) is rendered by verl's Continuous Token
   builder with the policy's chat template;
2. each turn the server generates one assistant message; its text is played in the env (a question or a search,
   ``env.play``), and the shopper's reply is appended as a ``user`` message — its tokens are masked out of the loss;
3. the episode ends by the env's rule (the target in the top k, or ``max_turns``) or when the response budget
   (``rollout.response_length``) is spent; ``reward_score`` is then the return of the turns played
   (:func:`~ospo_gym.integrations.conversation_tools.played_return`), so no reward manager is needed.

Run it with the agent-loop config that ships with the example (``examples/verl/conv_search_agent_loop.yaml``)::

    python -m verl.trainer.main_ppo ... data.train_files=conv.parquet \\
        actor_rollout_ref.rollout.mode=async \\
        actor_rollout_ref.rollout.agent.agent_loop_config_path=examples/verl/conv_search_agent_loop.yaml \\
        +ospo.env_id=ospo/ConvSearch-v0 +ospo.env_kwargs.max_turns=4

Credit: verl's estimators see the sample's scalar reward (``algorithm.adv_estimator=grpo`` gives trajectory GRPO);
ospo-gym's turn-level estimators (``ospo_turn``, ``turn_grpo``) run in ospo-gym's own multi-turn loop. The turns'
texts travel in ``extra_fields["ospo_turns"]`` for analysis. Tested on the CPU with a scripted server in place of
vLLM (``tests/integrations/test_integrations_verl_conversation.py``, in the verl CI stage); the full trainer has not been run.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Hashable, Sequence
from typing import Any
from uuid import uuid4

from ospo_gym.envs.base import truncate_action
from ospo_gym.envs.conv_search import ConvSearchEnv
from ospo_gym.envs.shopper import Conversation
from ospo_gym.integrations.conversation_tools import conv_search_env, opening_rows, played_return
from ospo_gym.integrations.verl import OSPOVerlConfig  # checks the verl version on import

# isort: split
from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput, register

__all__ = ["AGENT_NAME", "ConvSearchAgentLoop", "conv_search_dataset"]

AGENT_NAME = "ospo_conv_search"
"""The ``agent_name`` of ConvSearch samples (the dataset column verl dispatches on)."""


@functools.cache
def _cached_conv_env(env_id: str, env_kwargs_json: str) -> ConvSearchEnv:
    return conv_search_env(env_id, json.loads(env_kwargs_json), user=f"the {AGENT_NAME} agent loop (ospo.env_id)")


def _conv_env(config: Any) -> ConvSearchEnv:
    """The worker's ConvSearch env of the config's ``ospo`` section, built once per process and settings."""
    settings = OSPOVerlConfig.from_verl(config)
    if not settings.env_id:
        raise ValueError("the ConvSearch agent loop needs the env: add +ospo.env_id=ospo/ConvSearch-v0 to the verl config")
    return _cached_conv_env(settings.env_id, json.dumps(settings.env_kwargs, sort_keys=True))


@register(AGENT_NAME)
class ConvSearchAgentLoop(AgentLoopBase):
    """verl agent loop of one ``ospo/ConvSearch-v0`` episode per sample (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.env = _conv_env(self.config)
        self.response_length = int(self.rollout_config.response_length)

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        """Play the sample's episode; ``kwargs`` are its dataset fields (``raw_prompt``, ``extra_info``)."""
        info = kwargs.get("extra_info") or {}
        if "prompt_id" not in info:
            raise ValueError(
                "the sample's extra_info has no prompt_id; build the dataset with "
                "ospo_gym.integrations.verl_conversation.conv_search_dataset"
            )
        prompt_id = int(info["prompt_id"])
        self.env.prompt(prompt_id)  # an unknown id is the env's error
        conv = Conversation(prompt_id)
        messages = list(kwargs["raw_prompt"])
        runtime = await self.ct_build_initial_tokens(messages)
        mask: list[int] = []
        logprobs: list[float] | None = None
        turns: list[str] = []
        while not conv.done and len(mask) < self.response_length:
            output = await self.server_manager.generate(
                request_id=uuid4().hex, prompt_ids=runtime, sampling_params=sampling_params
            )
            if logprobs is None and output.log_probs:
                logprobs = []
            merged, mask, logprobs = await self.ct_merge_assistant_token(
                runtime, output.token_ids, mask, logprobs, assistant_logprobs=output.log_probs or None
            )
            runtime = merged.token_ids
            text = truncate_action(
                self.tokenizer.decode(output.token_ids, skip_special_tokens=True), self.env.max_turn_chars
            )
            turns.append(text)
            reply = self.env.play([conv], [text])[0]
            before = [*messages, {"role": "assistant", "content": text}]
            messages = [*before, {"role": "user", "content": reply}]
            if conv.done or len(mask) >= self.response_length:
                break  # the last reply ends the episode: nothing more is generated after it
            merged, mask, logprobs = await self.ct_merge_context_msg(before, messages, runtime, mask, logprobs)
            runtime = merged.token_ids
        prompt_ids = runtime[: len(runtime) - len(mask)]
        response_ids = runtime[len(runtime) - len(mask) :]
        cut = self.response_length
        return AgentLoopOutput(
            prompt_ids=prompt_ids,
            response_ids=response_ids[:cut],
            response_mask=mask[:cut],
            response_logprobs=logprobs[:cut] if logprobs else None,
            reward_score=played_return(self.env, conv),
            num_turns=1 + 2 * len(turns),  # the opening, then each turn and its reply
            metrics={},
            extra_fields={"ospo_turns": turns, "ospo_found": conv.found, "turn_scores": [], "tool_rewards": []},
        )


def conv_search_dataset(
    env: Any, path: str | None = None, *, prompt_ids: Sequence[Hashable] | None = None, env_kwargs: dict | None = None
) -> Any:
    """verl's RL dataset of a ConvSearch env (a ``pandas.DataFrame``, written as parquet to ``path`` when given):
    ``prompt`` is the shopper's opening as the user turn, ``agent_name`` is ``"ospo_conv_search"`` (verl's
    dispatch to :class:`ConvSearchAgentLoop`), ``extra_info`` holds ``{"prompt_id": id, "index": row}``; the other
    columns are those of :func:`ospo_gym.integrations.verl.prompt_dataset`."""
    import pandas as pd

    ids, prompts = opening_rows(conv_search_env(env, env_kwargs, user="conv_search_dataset"), prompt_ids)
    rows = [
        {
            "data_source": "ospo/ConvSearch-v0",
            "prompt": prompt,
            "ability": "conversational_search",
            "reward_model": {"style": "rule", "ground_truth": ""},
            "agent_name": AGENT_NAME,
            "extra_info": {"prompt_id": int(p), "index": i},
        }
        for i, (p, prompt) in enumerate(zip(ids, prompts, strict=True))
    ]
    frame = pd.DataFrame(rows)
    if path is not None:
        frame.to_parquet(path)
    return frame
