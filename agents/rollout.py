"""The rollout backend of a training step (``config.rollout``): the KV-cache loop over the learner itself
(:func:`~ospo_gym.agents.generation.generate`) or a vLLM engine (:class:`~ospo_gym.agents.vllm_rollout.VllmRollout`),
started on the first step and given the new weights after every update."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from ospo_gym.agents.generation import Rollout, generate

if TYPE_CHECKING:
    from ospo_gym.agents.config import AgentConfig
    from ospo_gym.agents.vllm_rollout import VllmRollout


class RolloutBackend:
    """Samples the completions of a step's prompts with the backend ``config.rollout`` names.

    Args:
        model: the policy (not a DDP wrapper: sampling needs no gradient sync).
        tokenizer: its tokenizer.
        config: the agent's config (sampler settings, ``rollout``, the vLLM knobs).
        sharded: the model is sharded by FSDP2; every rank then runs the same number of (collective) forwards.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, config: AgentConfig, *, sharded: bool) -> None:
        self.model, self.tokenizer, self.config, self.sharded = model, tokenizer, config, sharded
        self.engine: VllmRollout | None = None
        """The vLLM engine (``rollout="vllm"``), started by the first :meth:`sample`; ``None`` until then."""

    @property
    def off_policy(self) -> bool:
        """Whether another engine than the learner samples: the loss then importance-weights its tokens with the
        sampler's log-probs (``Rollout.logprobs``)."""
        return self.engine is not None

    def sample(self, prompts: Sequence[str], seed: int, first_row: int = 0) -> Rollout:
        """One completion per prompt; row ``b`` is row ``first_row + b`` of the global batch, which keys its
        random draws."""
        return self._sample(prompts, seed, first_row=first_row)

    def sample_formatted(self, prompts: Sequence[str], seed: int, row_ids: Sequence[int]) -> Rollout:
        """One generation per prompt already rendered through the chat template (a turn of a multi-turn
        conversation); row ``b``'s draws are keyed by ``row_ids[b]``, its episode's global row."""
        return self._sample(prompts, seed, row_ids=row_ids, formatted=True)

    def _sample(self, prompts: Sequence[str], seed: int, **rows: Any) -> Rollout:
        """The engine's or the learner's generation; ``rows`` say how rows key their draws (and the formatting)."""
        config = self.config
        if config.rollout == "vllm":
            return self._engine().generate(prompts, seed=seed, **rows)
        return generate(
            self.model,
            self.tokenizer,
            prompts,
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            top_p=config.top_p,
            seed=seed,
            stop_early=not self.sharded,  # FSDP2: every rank runs the same number of (collective) forwards
            **rows,
        )

    def _engine(self) -> VllmRollout:
        """The vLLM engine, started on first use."""
        if self.engine is None:
            from ospo_gym.agents.vllm_rollout import VllmRollout

            self.engine = VllmRollout(self.model, self.tokenizer, self.config)
        return self.engine

    def sync_weights(self) -> None:
        """Load the model's updated weights into the engine, if one samples (the loop over the learner itself
        needs nothing)."""
        if self.engine is not None:
            self.engine.sync_weights(self.model)

    def close(self) -> None:
        """Shut the engine down (it holds accelerator memory until then)."""
        if self.engine is not None:
            self.engine.close()
            self.engine = None
