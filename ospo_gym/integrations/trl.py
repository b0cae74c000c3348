"""OSPO inside TRL: a prompt dataset and a reward function from any ospo-gym env, and a ``trl.GRPOTrainer`` whose
token advantages come from ospo-gym's estimator registry through the env's coalition-value oracle.

Needs ``pip install 'ospo-gym[trl]'`` (TRL ``>=1.16,<1.17``: :class:`OSPOTrainer` overrides two private methods of
``GRPOTrainer``, so untested TRL versions are refused with an ImportError rather than trained on silently)::

    import gymnasium as gym
    import ospo_gym  # registers the env ids
    from ospo_gym.integrations.trl import OSPOConfig, OSPOTrainer

    env = gym.make("ospo/SyntheticRetrieval-v0", num_products=300, num_queries=20)
    config = OSPOConfig(
        output_dir="ospo-trl", algo="ospo_prop", num_generations=8, per_device_train_batch_size=32,
        max_completion_length=32, learning_rate=1e-6, max_steps=100, report_to="none",
    )  # on a CPU add use_cpu=True, bf16=False
    trainer = OSPOTrainer("Qwen/Qwen2.5-0.5B-Instruct", env=env, args=config)  # prompts and reward from env
    trainer.train()

A plain ``trl.GRPOTrainer`` takes the same env through ``train_dataset=prompt_dataset(env, tokenizer)`` and
``reward_funcs=reward_function(env)``.

How the advantages get in. TRL 1.16 has no advantage hook (the one proposed in TRL PR #7298,
``_transform_advantages(advantages)``, sees only the (N,) sequence advantages of the whole batch, not the texts
and tokens that token credit needs). So :class:`OSPOTrainer` overrides ``_calculate_rewards`` only to keep what
TRL computed there (this process's inputs and completion token ids, every process's rewards, gathered), and
``_generate_and_score_completions`` only to replace the ``advantages`` it returns, (B,), by the estimator's
(B, T), which TRL's ``_compute_loss`` takes as they are. Generation (transformers or vLLM), importance sampling,
the loss types, ``num_iterations``, ``steps_per_generation``, gradient accumulation and accelerate / DeepSpeed
processes are TRL's own, unchanged. Evaluation keeps TRL's sequence advantages (its loss is only logged).

Several processes: each credits its own rows; the rewards are TRL's gathered ones, so GRPO's group statistics
(and the batch std of ``scale_rewards="batch"`` and of ``clip_token_advantages``) are those of the whole batch,
and coalitions are drawn from streams keyed by global row, as in ospo-gym's own data-parallel loop: N processes
compute the advantages one process computes.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv

from ospo_gym.agents.config import AgentConfig
from ospo_gym.agents.estimators import LazyTokenOffsets, RolloutBatch
from ospo_gym.agents.generation import TokenBytes, batch_token_offsets
from ospo_gym.credit.defaults import DEFAULT_MAX_COALITIONS, DEFAULT_W_MAX
from ospo_gym.integrations.common import (
    check_advantages,
    env_oracle,
    id_column,
    ospo_agent_config,
    ospo_env,
    registered_estimator,
)
from ospo_gym.segment import SEGMENTATION_MODES

TRL_VERSIONS = ">=1.16,<1.17"
"""The TRL releases this module is tested with (the ``trl`` extra pins the same range)."""

try:
    import trl
except ImportError as err:
    raise ImportError(
        f"ospo_gym.integrations.trl needs TRL (trl{TRL_VERSIONS}); install it with: pip install 'ospo-gym[trl]'"
    ) from err

from packaging.specifiers import SpecifierSet  # noqa: E402 (a dependency of trl: checked above)

if not SpecifierSet(TRL_VERSIONS).contains(trl.__version__, prereleases=True):
    raise ImportError(
        f"ospo_gym.integrations.trl is tested with trl{TRL_VERSIONS} (OSPOTrainer overrides GRPOTrainer internals "
        f"that change between releases) but trl {trl.__version__} is installed; install a tested one with: "
        "pip install 'ospo-gym[trl]'"
    )

from datasets import Dataset  # noqa: E402 (trl's dependencies, imported once the version is known to fit)
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

__all__ = ["TRL_VERSIONS", "EnvReward", "OSPOConfig", "OSPOTrainer", "completion_text", "ospo_env", "prompt_dataset",
           "reward_function"]  # fmt: skip

# -- the dataset -----------------------------------------------------------------------------------------------
def prompt_dataset(
    env: str | gym.Env | VectorEnv,
    tokenizer: Any = None,
    *,
    conversational: bool | None = None,
    system_prompt: str | None = None,
    prompt_ids: Sequence[Hashable] | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> Dataset:
    """A TRL prompt dataset of an ospo-gym env: one row per prompt, columns ``prompt`` and ``prompt_id``.

    ``prompt`` is conversational (``[{"role": "user", "content": text}]``, after a system turn when
    ``system_prompt`` is given; TRL applies the chat template) when the policy's tokenizer has a chat template, and
    the plain prompt text otherwise, as ospo-gym's own loop prompts the policy. ``prompt_id`` is the env's id of the
    prompt, which TRL hands to reward functions and :class:`OSPOTrainer` hands to the oracle.

    Args:
        env: an env id (``env_kwargs`` go to ``gym.make``), an env or its native vector env.
        tokenizer: the policy's tokenizer or processor, or a model name / path to load its tokenizer from;
            ``None`` with ``conversational=None`` gives plain text.
        conversational: force conversational (``True``) or plain (``False``) prompts; ``None``: decided by the
            tokenizer's chat template.
        system_prompt: a system turn before each prompt (conversational prompts only).
        prompt_ids: a subset (or an ordering, repeats allowed) of the env's prompt ids; ``None``: all of them.
    """
    base = ospo_env(env, env_kwargs)
    if conversational is None:
        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        conversational = bool(getattr(tokenizer, "chat_template", None))
    if system_prompt is not None and not conversational:
        raise ValueError(
            "system_prompt needs conversational prompts (a tokenizer with a chat template, or conversational=True); "
            "for plain-text prompts put the instruction in the prompt itself (the env's prompt_template, where it has one)"
        )
    ids = list(base.prompt_ids if prompt_ids is None else prompt_ids)
    if not ids:
        raise ValueError(f"no prompts: {'prompt_ids is empty' if prompt_ids is not None else 'the env has none'}")
    texts = [base.prompt(p) for p in ids]  # an unknown id raises the env's own error
    if conversational:
        system = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
        prompts: list[Any] = [[*system, {"role": "user", "content": text}] for text in texts]
    else:
        prompts = texts
    return Dataset.from_dict({"prompt": prompts, "prompt_id": id_column(ids)})


# -- the reward ------------------------------------------------------------------------------------------------
def completion_text(completion: Any, index: int = 0) -> str:
    """The text of a TRL completion: a string, or chat messages whose last one holds the text (TRL's
    conversational completions, ``[{"role": "assistant", "content": "..."}]``; text content blocks are joined).

    Raises:
        ValueError: anything else, naming the completion's ``index`` in its batch.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list | tuple) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list) and all(isinstance(b, dict) and isinstance(b.get("text"), str) for b in content):
            return "".join(block["text"] for block in content)
    shown = repr(completion)
    raise ValueError(
        f"completion {index} is not text: {type(completion).__name__} {shown[:80]}{'...' if len(shown) > 80 else ''}; "
        "expected a string or chat messages ending with {'role': 'assistant', 'content': '<text>'}"
    )


class EnvReward:
    """A TRL reward function of an ospo-gym env: ``(prompts, completions, prompt_id, **kwargs) -> list[float]``.

    Scores the whole batch with ONE ``env.unwrapped.rewards(prompt_ids, texts)`` call (the env's reward of each
    completion for its prompt; text in ``<answer>…</answer>`` is what a retrieval env retrieves with).
    ``prompt_id`` is the dataset column of that name (TRL passes every dataset column to reward functions).
    """

    def __init__(self, env: Any, name: str = "env_reward") -> None:
        self.env = env
        self.__name__ = name  # TRL logs rewards/<__name__>/mean

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        prompt_id: Sequence[Hashable] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        if prompt_id is None:
            raise ValueError(
                "the env reward needs each completion's prompt id, and the dataset has no 'prompt_id' column; "
                "build the dataset with ospo_gym.integrations.trl.prompt_dataset(env) or add a 'prompt_id' column "
                "of env prompt ids"
            )
        texts = [completion_text(c, i) for i, c in enumerate(completions)]
        return [float(r) for r in self.env.rewards(list(prompt_id), texts)]


def reward_function(env: str | gym.Env | VectorEnv, *, env_kwargs: dict[str, Any] | None = None) -> EnvReward:
    """The TRL reward function of an env id, env or vector env (see :class:`EnvReward`)."""
    return EnvReward(ospo_env(env, env_kwargs))


# -- the trainer -----------------------------------------------------------------------------------------------
def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class OSPOConfig(GRPOConfig):
    """``trl.GRPOConfig`` plus OSPO's knobs; the token advantages come from the estimator named ``algo``.

    The sequence advantage the estimators start from is ospo-gym's GRPO one, ``Â = (r − mean_group) / (std + 1e-4)``
    with ``scale_rewards`` ("group", "batch", "none") and the unbiased std, as in TRL (``std_ddof=0`` gives the
    population std); zero-variance groups get exactly 0. So ``algo="grpo"`` gives TRL's own GRPO advantages and is
    the control arm with the same Â as the OSPO arms. Rewards are
    the reward functions' weighted sum (``reward_weights``), as TRL's default ``multi_objective_aggregation``.
    The estimator receives an :class:`~ospo_gym.agents.AgentConfig` (see :meth:`agent_config`) with these knobs,
    ``group_size = num_generations`` and ``seed``.
    """

    algo: str = field(
        default="ospo_prop",
        metadata=_help(
            "Advantage estimator in ospo-gym's registry: 'ospo_prop' (token shares proportional to segment "
            "credit), 'ospo_rank' (by rank of credit), 'grpo' (no credit: Â on every token), or one registered "
            "with ospo_gym.agents.register_estimator. The redistribution is the algorithm's."
        ),
    )
    w_max: int = field(default=DEFAULT_W_MAX, metadata=_help("Widest coalition window, in segments."))
    max_coalitions: int = field(
        default=DEFAULT_MAX_COALITIONS,
        metadata=_help("M: coalitions evaluated per completion (the empty and full ones included)."),
    )
    contiguous: bool = field(
        default=True, metadata=_help("Contiguous coalitions (OSPO); False: the paper's non-contiguous ablation.")
    )
    credit_variant: str = field(
        default="owen",
        metadata=_help("Variant of ospo_gym.credit.segment_credit: 'owen', 'weighted', 'released'."),
    )
    clip_token_advantages: float | None = field(
        default=None,
        metadata=_help("Clip token advantages at ± value · std(Â) of the whole batch (e.g. 2.0); None: no clipping."),
    )
    std_ddof: int = field(
        default=1,
        metadata=_help("Delta degrees of freedom of Â's std: 1, the unbiased std (TRL's); 0, the population std."),
    )
    segmentation: str | None = field(
        default=None,
        metadata=_help("How the oracle cuts completions into players: 'phrase', 'sentence', 'word'; None: the env's."),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.remove_unused_columns:
            raise ValueError(
                "remove_unused_columns=True drops the dataset's prompt_id column, which OSPOTrainer hands to the "
                "env's oracle and reward; leave it False (GRPOConfig's default)"
            )
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                f"multi_objective_aggregation={self.multi_objective_aggregation!r} is not supported: the estimator "
                "turns the weighted sum of the rewards into advantages itself; use 'sum_then_normalize'"
            )
        if self.segmentation is not None and self.segmentation not in SEGMENTATION_MODES:
            raise ValueError(
                f"segmentation must be one of {SEGMENTATION_MODES} or None (the env's), got {self.segmentation!r}"
            )
        registered_estimator(self.algo, "before building OSPOConfig")
        self.agent_config()  # the knobs' own checks (w_max >= 1, max_coalitions >= 2, ...)

    def agent_config(self) -> AgentConfig:
        """The :class:`~ospo_gym.agents.AgentConfig` the estimator receives: ``algo``, the OSPO knobs,
        ``group_size = num_generations``, ``prompts_per_step`` (groups per generation batch), ``scale_rewards``,
        ``max_new_tokens = max_completion_length`` and ``seed``; its other fields keep their defaults."""
        optional = {} if self.max_completion_length is None else {"max_new_tokens": self.max_completion_length}
        return ospo_agent_config(
            self,
            algo=self.algo,
            group_size=self.num_generations,
            prompts_per_step=self.generation_batch_size // self.num_generations,
            scale_rewards=self.scale_rewards,
            **optional,
        )


@dataclass
class _Scored:
    """What ``_calculate_rewards`` saw of one generation batch: this process's inputs and completion token ids,
    and every process's rewards, (N_global, num_reward_funcs)."""

    inputs: list[dict[str, Any]]
    completion_ids: list[list[int]]
    rewards_per_func: torch.Tensor


class OSPOTrainer(GRPOTrainer):
    """``trl.GRPOTrainer`` with token advantages from ospo-gym's estimator ``args.algo`` (OSPO-PROP by default),
    computed through the env's coalition-value oracle.

    Args:
        model, reward_funcs, args, train_dataset, eval_dataset, processing_class: as for ``GRPOTrainer``; ``args``
            must be an :class:`OSPOConfig`. ``reward_funcs`` defaults to :func:`reward_function` of ``env``, and
            ``train_dataset`` to :func:`prompt_dataset` of ``env`` (conversational when the tokenizer has a chat
            template); a dataset of your own needs a ``prompt_id`` column of env prompt ids.
        env: the ospo-gym env (id, env or vector env) whose oracle values coalitions of each completion's segments.
        env_kwargs: ``gym.make`` keyword arguments when ``env`` is an id.
        **kwargs: the other ``GRPOTrainer`` arguments (callbacks, optimizers, peft_config, rollout_func, ...).
            ``tools`` and ``environment_factory`` are refused: their tokens are not the policy's own text.
    """

    def __init__(
        self,
        model: Any,
        reward_funcs: Any = None,
        args: OSPOConfig | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        *,
        env: str | gym.Env | VectorEnv,
        env_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if args is None:
            name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "model")
            args = OSPOConfig(f"{str(name).rstrip('/').split('/')[-1]}-OSPO")
        if not isinstance(args, OSPOConfig):
            raise ValueError(
                f"OSPOTrainer needs args=OSPOConfig(...) (a GRPOConfig with OSPO's knobs), got {type(args).__name__}; "
                "OSPOConfig takes every GRPOConfig argument"
            )
        for refused in ("tools", "environment_factory"):
            if kwargs.get(refused):  # None or empty: no tools
                raise ValueError(
                    f"OSPOTrainer does not support {refused}=: tool calls and environment turns put tokens into the "
                    "completion that the policy did not write, and the oracle credits the policy's own text; use "
                    "trl.GRPOTrainer for tool use"
                )
        base = ospo_env(env, env_kwargs)
        self.env = base
        self.oracle = env_oracle(
            base, args.segmentation, user="OSPOTrainer",
            without_oracle="for sequence-level GRPO without an oracle use trl.GRPOTrainer with reward_function(env)",
        )
        self.estimator = registered_estimator(args.algo, "before building OSPOConfig")
        self.estimator_config = args.agent_config()
        self._scored: _Scored | None = None
        self._token_bytes: TokenBytes | None = None  # of the processing class, made at the first credit step
        if train_dataset is None:
            if processing_class is None:
                processing_class = _load_processor(model, args)
            train_dataset = prompt_dataset(base, processing_class)
        else:
            columns = getattr(train_dataset, "column_names", None)
            if isinstance(columns, list) and "prompt_id" not in columns:
                raise ValueError(
                    f"train_dataset has columns {columns} but no 'prompt_id', which OSPOTrainer needs to ask the env's "
                    "oracle about each completion; build it with ospo_gym.integrations.trl.prompt_dataset(env) or "
                    "add a 'prompt_id' column of env prompt ids"
                )
        if reward_funcs is None:
            reward_funcs = reward_function(base)
        super().__init__(model, reward_funcs, args, train_dataset, eval_dataset, processing_class, **kwargs)

    def _calculate_rewards(
        self, inputs: list[dict[str, Any]], prompts: list[Any], completions: list[Any], completion_ids_list: list[Any]
    ) -> torch.Tensor:
        """TRL's rewards, gathered over processes; keeps what the token advantages need."""
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._scored = _Scored(inputs, [list(ids) for ids in completion_ids_list], rewards_per_func)
        return rewards_per_func

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """TRL's generation batch, with ``advantages`` (B,) replaced by the estimator's token advantages (B, T)."""
        output = super()._generate_and_score_completions(inputs)
        scored, self._scored = self._scored, None
        if not self.model.training:  # evaluation: TRL's sequence advantages, no oracle calls
            return output
        if "tool_mask" in output:
            raise ValueError(
                "the rollout returned an env_mask (tokens the policy did not write); OSPOTrainer credits completions "
                "that are the policy's own text only: drop env_mask from rollout_func or use trl.GRPOTrainer"
            )
        completion_ids = output["completion_ids"]
        advantages = self._token_advantages(scored, completion_ids.shape[1])
        output["advantages"] = torch.as_tensor(advantages, dtype=torch.float32, device=completion_ids.device)
        return output

    def _token_advantages(self, scored: _Scored, width: int) -> np.ndarray:
        """(B, width) token advantages of this process's B completions, from the registered estimator."""
        started = time.perf_counter()
        rows = scored.completion_ids
        size = len(rows)
        per_func = scored.rewards_per_func
        unscored = torch.isnan(per_func).all(dim=1)
        if bool(unscored.any()):
            raise ValueError(
                f"{int(unscored.sum())} completions got no reward (every reward function returned None); OSPO "
                "needs a reward for every completion to form its group baseline: let a reward function return a "
                "number for each (e.g. the env reward of reward_function(env))"
            )
        weights = self.reward_weights.to(per_func.device)
        all_rewards = (per_func * weights.unsqueeze(0)).nansum(dim=1).double().cpu().numpy()
        first = self.accelerator.process_index * size  # TRL's process slice of the gathered batch
        groups = (first + np.arange(size)) // self.num_generations
        missing = next((i for i, row in enumerate(scored.inputs) if "prompt_id" not in row), None)
        if missing is not None:
            raise ValueError(
                f"input {missing} of the batch has no 'prompt_id' (its keys: {sorted(scored.inputs[missing])}); "
                "OSPOTrainer needs the env prompt id of every prompt: build the dataset with prompt_dataset(env)"
            )
        prompt_ids = [row["prompt_id"] for row in scored.inputs]
        lengths = np.asarray([len(row) for row in rows])
        mask = np.arange(width)[None, :] < lengths[:, None]
        texts = self._tokenizer.batch_decode(rows, skip_special_tokens=True)
        if self._token_bytes is None:
            self._token_bytes = TokenBytes(self._tokenizer)
        compute = functools.partial(batch_token_offsets, self._tokenizer, rows, texts, token_bytes=self._token_bytes)
        offsets = LazyTokenOffsets(size, compute)
        batch = RolloutBatch(
            prompt_ids, groups - groups[0], all_rewards[first : first + size], texts, offsets, mask, self._credit_step()
        )
        if self.accelerator.num_processes > 1:  # group statistics over the whole batch, draws keyed by global row
            batch.first_row = first
            batch.global_rewards = all_rewards
            batch.global_group_index = np.arange(len(all_rewards)) // self.num_generations
        advantages = np.asarray(self.estimator(batch, self.oracle, self.estimator_config), dtype=np.float64)
        check_advantages(advantages, mask.shape, self.args.algo)
        self._metrics["train"]["credit/seconds"].append(time.perf_counter() - started)
        return advantages

    def _credit_step(self) -> int:
        """The step number that seeds the estimator's draws: the optimizer step, times the generations per
        optimizer step, plus this generation's place in it (several generations happen per optimizer step when
        gradient accumulation spans more than ``steps_per_generation × num_iterations`` micro-batches). It
        depends only on the optimizer step at a step boundary, so a resumed run draws what the first one drew."""
        generate_every = self.args.steps_per_generation * self.num_iterations
        per_step = max(1, self.args.gradient_accumulation_steps // generate_every)
        within = (self._step % self.args.gradient_accumulation_steps) // generate_every
        return self.state.global_step * per_step + within


def _load_processor(model: Any, args: OSPOConfig) -> Any:
    """The policy's processor, loaded as GRPOTrainer loads it (needed before it does: the default dataset is
    conversational when it has a chat template)."""
    from transformers import AutoProcessor

    name = model if isinstance(model, str) else model.config._name_or_path
    return AutoProcessor.from_pretrained(
        name, truncation_side="left", padding_side="left", trust_remote_code=args.trust_remote_code
    )
