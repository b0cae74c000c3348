"""OSPO inside verl: a parquet prompt dataset and a reward manager from any ospo-gym env, per-token OSPO credit
computed on the whole generated batch, and ``register_adv_est`` estimators that hand it to verl's PPO loss.

verl pins ``transformers<5.11`` and ray, so it lives in its own virtualenv::

    python3.11 -m venv .venv-verl && . .venv-verl/bin/activate
    pip install torch==2.13.0 && pip install 'verl==0.9.1' 'transformers<5.11' cachetools uvicorn fastapi
    pip install -e /path/to/ospo-gym  # or: pip install ospo-gym (no extra: verl's pins decide transformers)

The data, then the trainer (``examples/verl/`` has the full launch script)::

    from ospo_gym.integrations.verl import prompt_dataset
    prompt_dataset("ospo/ESCI-v0", "esci/train.parquet", env_kwargs={"split": "train"})

    python -m verl.trainer.main_ppo data.train_files=esci/train.parquet ... \\
        algorithm.adv_estimator=ospo_prop \\
        reward.reward_manager.source=importlib reward.reward_manager.name=OSPORewardManager \\
        reward.reward_manager.module.path=pkg://ospo_gym.integrations.verl \\
        +actor_rollout_ref.rollout.agent.agent_loop_manager_class=ospo_gym.integrations.verl.OSPOAgentLoopManager \\
        trainer.use_v1=False +ospo.env_id=ospo/ESCI-v0 +ospo.env_kwargs.split=train +ospo.w_max=2

How the credit gets to the loss. A verl advantage estimator receives only ``token_level_rewards`` (B, T),
``response_mask``, ``index`` (the group uid) and the algorithm config — no texts, prompt ids or tokens (verl PR
#7473, which would pass ``non_tensor_batch``, is open). But a (B, T) tensor does survive from the reward to the
estimator: ``rm_scores`` -> ``token_level_scores`` -> ``token_level_rewards`` (``ray_trainer.fit``, when
``algorithm.use_kl_in_reward=False``). So OSPO travels as its dense token advantages:

1. verl's reward loop scores each response with :class:`OSPORewardManager` (the env's reward, streamed per
   sample as verl does; kept as ``reward_extra_info["ospo_reward"]``).
2. :class:`OSPOAgentLoopManager` (verl's ``AgentLoopManager`` plus one step) takes the whole generated batch,
   decodes the responses, reads each one's env prompt id from ``extra_info["prompt_id"]`` (written by
   :func:`prompt_dataset`) and its group from ``uid``, gets the token offsets from the tokenizer, and runs the
   ospo-gym estimator (``ospo_prop``, ``ospo_rank`` or ``ospo.algo``) with the env's oracle for v(S): ONE oracle
   call for the batch. The (B, T) token advantages replace ``rm_scores`` (:meth:`OSPOScorer.score`).
3. The verl estimators ``ospo_prop``, ``ospo_rank`` and ``ospo`` (registered when this module is imported, which
   ``reward.reward_manager.source=importlib`` and the manager class path do inside verl's trainer process) return
   them as ``(advantages, returns)`` after checking that this very batch (its uids) was scored by OSPO with the
   same algorithm — a missing manager is an error, not a silent scalar-reward run.

``algorithm.adv_estimator`` is the one switch: ``ospo_prop`` / ``ospo_rank`` run ospo-gym's estimator of that
name, ``ospo`` runs the one named by ``ospo.algo`` (any registered with ``ospo_gym.agents.register_estimator``,
``grpo`` included), and verl's own names (``grpo``, ...) train on the scalar env reward with no credit step.
Â is ospo-gym's ``(r − mean_group) / (std + 1e-4)`` with the unbiased std (verl's GRPO divides by ``std + 1e-6``;
``norm_adv_by_std_in_grpo=False`` gives ``scale_rewards="none"``, as verl's Dr.GRPO option does).

The credit step hooks the ``RayPPOTrainer`` loop (``trainer.use_v1=False``); verl 0.9's TransferQueue trainer
(``use_v1=True``, its default), whose workers stream rollouts into a queue, is refused with a clear error.
Internal verl APIs are used (``AgentLoopManager.generate_sequences``, the reward-manager base class, the
``rm_scores`` key), so untested verl versions are refused with an ImportError. Tested: verl 0.9.1 on the CPU
(the reward manager, the credit step and verl's ``compute_advantage`` dispatch on hand-built ``DataProto``); the
full Ray / FSDP / vLLM trainer has not been run by this project.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
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

VERL_VERSIONS = ">=0.9,<0.10"
"""The verl releases this module is tested with (0.9.1)."""

_INSTALL = (
    "install it in its own virtualenv (verl pins transformers<5.11 and ray): python3.11 -m venv .venv-verl && "
    ". .venv-verl/bin/activate && pip install torch==2.13.0 && pip install 'verl==0.9.1' 'transformers<5.11' "
    "cachetools uvicorn fastapi && pip install ospo-gym"
)

try:
    import verl
except ImportError as err:
    raise ImportError(f"ospo_gym.integrations.verl needs verl (verl{VERL_VERSIONS}); {_INSTALL}") from err

from packaging.specifiers import SpecifierSet  # noqa: E402 (a dependency of verl: checked above)

if not SpecifierSet(VERL_VERSIONS).contains(getattr(verl, "__version__", "0"), prereleases=True):
    raise ImportError(
        f"ospo_gym.integrations.verl is tested with verl{VERL_VERSIONS} (it extends verl's AgentLoopManager and "
        f"reward-manager internals, which change between releases) but verl {getattr(verl, '__version__', '?')} is "
        f"installed; {_INSTALL}"
    )

import torch  # noqa: E402 (verl's dependencies, imported once the version is known to fit)
from verl import DataProto  # noqa: E402
from verl.experimental.agent_loop import AgentLoopManager  # noqa: E402
from verl.experimental.reward_loop.reward_manager import register  # noqa: E402
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase  # noqa: E402
from verl.trainer.ppo.core_algos import register_adv_est  # noqa: E402
from verl.utils.ray_utils import auto_await  # noqa: E402

__all__ = ["OSPO_ESTIMATORS", "VERL_VERSIONS", "OSPOAgentLoopManager", "OSPORewardManager", "OSPOScorer",
           "OSPOVerlConfig", "compute_score", "prompt_dataset"]  # fmt: skip

OSPO_ESTIMATORS = ("ospo_prop", "ospo_rank", "ospo")
"""verl ``algorithm.adv_estimator`` names this module registers; the first two name ospo-gym's estimator
themselves, ``ospo`` runs the ospo-gym estimator named by ``ospo.algo``."""

REWARD_KEY = "ospo_reward"
"""``reward_extra_info`` / ``non_tensor_batch`` key of each response's scalar env reward."""

_MANAGER_HINT = (
    "set +actor_rollout_ref.rollout.agent.agent_loop_manager_class=ospo_gym.integrations.verl.OSPOAgentLoopManager "
    "and trainer.use_v1=False (it writes OSPO's token advantages into rm_scores)"
)


# -- config ------------------------------------------------------------------------------------------------------
@dataclass
class OSPOVerlConfig:
    """The ``ospo`` section of a verl config (``+ospo.<field>=...`` on the command line, or an ``ospo:`` block).

    Attributes:
        env_id: the ospo-gym env id (e.g. ``"ospo/ESCI-v0"``) that scores responses and values coalitions.
        env_kwargs: ``gym.make`` keyword arguments of the env (``split``, ``data_dir``, ``retriever``, ...).
        algo: the ospo-gym estimator run by ``algorithm.adv_estimator=ospo`` (any registered name); with
            ``ospo_prop`` / ``ospo_rank`` leave it ``None`` (or give the same name).
        w_max: widest coalition window, in segments.
        max_coalitions: M, coalitions evaluated per response (the empty and full ones included).
        contiguous: contiguous coalitions (OSPO); ``False``: the paper's non-contiguous ablation.
        credit_variant: variant of ``ospo_gym.credit.segment_credit``: ``"owen"``, ``"weighted"``, ``"released"``.
        clip_token_advantages: clip token advantages at ± value · std(Â) of the batch; ``None``: no clipping.
        std_ddof: delta degrees of freedom of Â's std: 1, the unbiased std (verl's); 0, the population std.
        segmentation: how the oracle cuts responses into players (``"phrase"``, ``"sentence"``, ``"word"``);
            ``None``: the env's.
        seed: seeds the coalition draws, with the training step and the row.
    """

    env_id: str = ""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    algo: str | None = None
    w_max: int = DEFAULT_W_MAX
    max_coalitions: int = DEFAULT_MAX_COALITIONS
    contiguous: bool = True
    credit_variant: str = "owen"
    clip_token_advantages: float | None = None
    std_ddof: int = 1
    segmentation: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.env_id, str) or not self.env_id:
            raise ValueError(
                "the verl config has no ospo.env_id; add +ospo.env_id=ospo/ESCI-v0 (the ospo-gym env that scores "
                "the responses; its gym.make arguments go in +ospo.env_kwargs.<name>=...)"
            )
        if not isinstance(self.env_kwargs, Mapping):
            raise ValueError(f"ospo.env_kwargs must be a mapping of gym.make arguments, got {self.env_kwargs!r}")
        self.env_kwargs = dict(self.env_kwargs)
        if self.segmentation is not None and self.segmentation not in SEGMENTATION_MODES:
            raise ValueError(
                f"ospo.segmentation must be one of {SEGMENTATION_MODES} or null (the env's), got {self.segmentation!r}"
            )

    @classmethod
    def from_verl(cls, config: Any) -> OSPOVerlConfig:
        """The ``ospo`` section of a verl (OmegaConf or plain) config; an unknown key is refused."""
        section = _plain(_get(config, "ospo", None))
        if section is None:
            section = {}
        if not isinstance(section, Mapping):
            raise ValueError(f"the verl config's ospo section must be a mapping, got {section!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ValueError(f"unknown ospo config keys {unknown}; known: {sorted(known)}")
        return cls(**section)

    def estimator_name(self, adv_estimator: str) -> str | None:
        """The ospo-gym estimator that verl's ``algorithm.adv_estimator`` asks for; ``None`` for verl's own
        estimators (no credit step: they train on the scalar env reward)."""
        if adv_estimator == "ospo":
            if self.algo is None:
                raise ValueError(
                    "algorithm.adv_estimator=ospo runs the ospo-gym estimator named by ospo.algo, which is not set; "
                    "add +ospo.algo=<name> (e.g. ospo_prop, ospo_rank, grpo, or one you registered with "
                    "ospo_gym.agents.register_estimator), or use algorithm.adv_estimator=ospo_prop"
                )
            return self.algo
        if adv_estimator in OSPO_ESTIMATORS:
            if self.algo not in (None, adv_estimator):
                raise ValueError(
                    f"algorithm.adv_estimator={adv_estimator} and ospo.algo={self.algo} disagree; set "
                    f"algorithm.adv_estimator=ospo to run {self.algo!r}, or drop ospo.algo"
                )
            return adv_estimator
        return None

    def agent_config(self, algo: str, group_size: int, prompts_per_step: int, scale_rewards: str) -> AgentConfig:
        """The :class:`~ospo_gym.agents.AgentConfig` the ospo-gym estimator receives."""
        return ospo_agent_config(
            self, algo=algo, group_size=group_size, prompts_per_step=prompts_per_step, scale_rewards=scale_rewards
        )


def _get(config: Any, path: str, default: Any) -> Any:
    """``config.a.b`` for ``path="a.b"`` on an OmegaConf config, a verl config dataclass or nested dicts;
    ``default`` when a key is absent or null."""
    node = config
    for key in path.split("."):
        node = node.get(key, None) if callable(getattr(node, "get", None)) else getattr(node, key, None)
        if node is None:
            return default
    return node


def _plain(value: Any) -> Any:
    """OmegaConf containers as plain Python (resolved); anything else as it is."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a verl dependency
        return value
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


# -- the dataset -------------------------------------------------------------------------------------------------
def prompt_dataset(
    env: str | gym.Env | VectorEnv,
    path: str | None = None,
    *,
    env_id: str | None = None,
    system_prompt: str | None = None,
    prompt_ids: Sequence[Hashable] | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> Any:
    """verl's RL dataset of an ospo-gym env, one row per prompt (a ``pandas.DataFrame``; written to the parquet
    file ``path`` when given, what ``data.train_files`` reads).

    Columns: ``data_source`` (the env id), ``prompt`` (chat messages: an optional system turn, then the env's
    prompt as the user turn; verl applies the policy's chat template), ``ability`` (``"generative_search"``),
    ``reward_model`` (``{"style": "rule", "ground_truth": ""}``: the env is the ground truth) and ``extra_info``
    (``{"prompt_id": <env prompt id>, "index": <row>}``; the prompt id is what the reward and the oracle need).

    Args:
        env: an env id (``env_kwargs`` go to ``gym.make``), an env or its native vector env.
        path: a parquet file to write (its folder must exist); ``None``: only return the frame.
        env_id: the ``data_source`` to write; ``None``: the id ``env`` was made with.
        system_prompt: a system turn before each prompt.
        prompt_ids: a subset (or an ordering, repeats allowed) of the env's prompt ids; ``None``: all of them.
    """
    import pandas as pd

    base = ospo_env(env, env_kwargs)
    source = env_id or (env if isinstance(env, str) else getattr(getattr(env, "spec", None), "id", None))
    if not source:
        raise ValueError("cannot tell this env's id (it was not made with gym.make); pass env_id='ospo/...'")
    ids = list(base.prompt_ids if prompt_ids is None else prompt_ids)
    if not ids:
        raise ValueError(f"no prompts: {'prompt_ids is empty' if prompt_ids is not None else 'the env has none'}")
    column = id_column(ids)
    if not isinstance(column, np.ndarray) and len({type(p) for p in column}) > 1:
        raise ValueError(
            f"prompt ids of mixed types ({sorted({type(p).__name__ for p in column})}) cannot share a parquet "
            "column; pass prompt_ids of one type"
        )
    system = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
    rows = [
        {
            "data_source": source,
            "prompt": [*system, {"role": "user", "content": base.prompt(p)}],  # an unknown id: the env's error
            "ability": "generative_search",
            "reward_model": {"style": "rule", "ground_truth": ""},
            "extra_info": {"prompt_id": column[i].item() if isinstance(column, np.ndarray) else column[i], "index": i},
        }
        for i, p in enumerate(ids)
    ]
    frame = pd.DataFrame(rows)
    if path is not None:
        frame.to_parquet(path)
    return frame


# -- scoring the batch -------------------------------------------------------------------------------------------
_SCORED: collections.deque[tuple[str, frozenset[str]]] = collections.deque(maxlen=16)
"""(verl estimator name, uids) of the last batches :meth:`OSPOScorer.score` wrote token advantages for, read by
the verl estimators to refuse a batch that did not get OSPO's credit (same process: verl's trainer)."""


def prompt_ids_of(data: DataProto) -> list[Hashable]:
    """Each row's env prompt id: ``non_tensor_batch["extra_info"][b]["prompt_id"]`` (:func:`prompt_dataset`) or a
    ``prompt_id`` column; a missing one is refused, naming the row."""
    extras = data.non_tensor_batch.get("extra_info")
    column = data.non_tensor_batch.get("prompt_id")
    ids = []
    for b in range(len(data)):
        if column is not None:
            ids.append(column[b])
            continue
        extra = extras[b] if extras is not None else None
        if not isinstance(extra, Mapping) or "prompt_id" not in extra:
            keys = sorted(extra) if isinstance(extra, Mapping) else None
            raise ValueError(
                f"row {b} of the batch has no env prompt id (extra_info keys: {keys}); OSPO's reward and oracle need "
                "it: build the dataset with ospo_gym.integrations.verl.prompt_dataset(env, path), which writes "
                "extra_info.prompt_id"
            )
        ids.append(extra["prompt_id"])
    return [p.item() if isinstance(p, np.generic) else p for p in ids]


def response_rows(data: DataProto) -> tuple[list[list[int]], np.ndarray]:
    """The responses' valid token ids (one list per row) and the (B, T) bool response mask.

    Raises:
        ValueError: the responses are not token ids, or a row's mask is not one run of tokens from the start
            (tool or environment turns inside the response: tokens the policy did not write).
    """
    responses = data.batch["responses"]
    if responses.dtype.is_floating_point or responses.dtype.is_complex or responses.dtype == torch.bool:
        raise ValueError(
            f"batch['responses'] holds {responses.dtype} values, not text token ids; OSPO credits text the policy "
            "generated: pass the rollout's integer token ids"
        )
    if "response_mask" in data.batch.keys():
        mask = data.batch["response_mask"]
    else:
        mask = data.batch["attention_mask"][:, -responses.shape[1] :]
    mask = mask.bool().cpu().numpy()
    lengths = mask.sum(axis=1)
    prefix = np.arange(mask.shape[1])[None, :] < lengths[:, None]
    broken = np.flatnonzero((mask != prefix).any(axis=1))
    if broken.size:
        raise ValueError(
            f"the response mask of row {int(broken[0])} has gaps (tool or environment tokens inside the response, "
            "which the policy did not write); OSPO credits single-turn text responses: use the single_turn_agent "
            "loop"
        )
    ids = responses.cpu().numpy()
    return [ids[b, : lengths[b]].tolist() for b in range(len(ids))], mask


def _group_index(data: DataProto) -> tuple[np.ndarray, list[str]]:
    uids = data.non_tensor_batch.get("uid")
    if uids is None:
        raise ValueError("the batch has no non_tensor_batch['uid'] (verl's group id of each response); OSPO needs it")
    uids = [str(u) for u in uids]
    _, groups = np.unique(np.asarray(uids, dtype=object), return_inverse=True)
    return groups.astype(np.int64), uids


class OSPOScorer:
    """Scores a generated verl batch with an ospo-gym env and turns it into OSPO's token advantages.

    Args:
        env: an ospo-gym env id / env / vector env (``env_kwargs`` for an id).
        tokenizer: the policy's tokenizer (decodes responses, gives token offsets).
        settings: the ``ospo`` config section.
        adv_estimator: verl's ``algorithm.adv_estimator``; one of :data:`OSPO_ESTIMATORS`.
        group_size: responses per prompt (verl's ``actor_rollout_ref.rollout.n``).
        prompts_per_step: prompts per batch (verl's ``data.train_batch_size``).
        scale_rewards: Â's scaling, ``"group"`` (verl's ``norm_adv_by_std_in_grpo=True``) or ``"none"``.
    """

    def __init__(
        self,
        env: Any,
        tokenizer: Any,
        settings: OSPOVerlConfig,
        adv_estimator: str,
        *,
        group_size: int,
        prompts_per_step: int = 1,
        scale_rewards: str = "group",
    ) -> None:
        algo = settings.estimator_name(adv_estimator)
        if algo is None:
            raise ValueError(
                f"algorithm.adv_estimator={adv_estimator} is verl's own estimator: there is no OSPO credit to compute; "
                f"use one of {list(OSPO_ESTIMATORS)}"
            )
        self.env = ospo_env(env, settings.env_kwargs if isinstance(env, str) else None)
        self.oracle = env_oracle(
            self.env, settings.segmentation, user="OSPO's verl credit step",
            without_oracle="for sequence-level GRPO without an oracle use algorithm.adv_estimator=grpo",
        )  # fmt: skip
        self.estimator = registered_estimator(algo, "in a module the verl trainer imports")
        self.tokenizer = tokenizer
        self._token_bytes = TokenBytes(tokenizer)
        self.adv_estimator = adv_estimator
        self.algo = algo
        self.agent_config = settings.agent_config(algo, group_size, prompts_per_step, scale_rewards)

    @classmethod
    def from_verl(cls, config: Any, tokenizer: Any) -> OSPOScorer | None:
        """The scorer a verl config asks for; ``None`` when ``algorithm.adv_estimator`` is verl's own."""
        adv_estimator = str(_get(config, "algorithm.adv_estimator", ""))
        if adv_estimator not in OSPO_ESTIMATORS:
            return None
        settings = OSPOVerlConfig.from_verl(config)
        scale = "group" if _get(config, "algorithm.norm_adv_by_std_in_grpo", True) else "none"
        return cls(
            _env_of(settings), tokenizer, settings, adv_estimator,
            group_size=int(_get(config, "actor_rollout_ref.rollout.n", 1)),
            prompts_per_step=int(_get(config, "data.train_batch_size", 1)), scale_rewards=scale,
        )  # fmt: skip

    def score(self, data: DataProto) -> DataProto:
        """OSPO's token advantages of a generated batch, as verl's reward output.

        Reads ``responses`` (B, T) and ``response_mask`` (or ``attention_mask``), ``uid`` and the env prompt ids
        (``extra_info.prompt_id``), and the rewards from ``non_tensor_batch["ospo_reward"]`` when verl's reward loop
        already scored the batch with :class:`OSPORewardManager` (else ONE ``env.rewards`` call for the batch).
        The coalition draws are seeded by ``(ospo.seed, meta_info["global_steps"], row)``.

        Returns:
            A DataProto of ``rm_scores`` (B, T) float32 — the estimator's token advantages, 0 outside the mask —
            and ``non_tensor_batch["ospo_reward"]`` (B,), with ``meta_info["reward_extra_keys"]``.
        """
        rows, mask = response_rows(data)
        prompt_ids = prompt_ids_of(data)
        groups, uids = _group_index(data)
        texts = self.tokenizer.batch_decode(rows, skip_special_tokens=True)
        known = data.non_tensor_batch.get(REWARD_KEY)
        if known is not None:
            rewards = np.asarray(known, dtype=np.float64)
        else:
            rewards = np.asarray(self.env.rewards(prompt_ids, texts), dtype=np.float64)
        compute = functools.partial(batch_token_offsets, self.tokenizer, rows, texts, token_bytes=self._token_bytes)
        offsets = LazyTokenOffsets(len(rows), compute)
        step = int(data.meta_info.get("global_steps", 0) or 0)
        batch = RolloutBatch(prompt_ids, groups, rewards, texts, offsets, mask, step)
        advantages = np.asarray(self.estimator(batch, self.oracle, self.agent_config), dtype=np.float64)
        check_advantages(advantages, mask.shape, self.algo)
        _SCORED.append((self.adv_estimator, frozenset(uids)))
        scores = torch.as_tensor(advantages, dtype=torch.float32, device=data.batch["responses"].device)
        return DataProto.from_dict(
            tensors={"rm_scores": scores},
            non_tensors={REWARD_KEY: rewards},
            meta_info={"reward_extra_keys": [REWARD_KEY]},
        )


# -- the reward manager and the rollout manager ------------------------------------------------------------------
@functools.cache
def _cached_env(env_id: str, env_kwargs_json: str) -> Any:
    return ospo_env(env_id, json.loads(env_kwargs_json))


def _env_of(settings: OSPOVerlConfig) -> Any:
    return _cached_env(settings.env_id, json.dumps(settings.env_kwargs, sort_keys=True))


@register("ospo")
class OSPORewardManager(RewardManagerBase):
    """verl reward manager: each response's reward is the ospo-gym env's (``ospo.env_id``) for its prompt id.

    verl's reward loop calls :meth:`run_single` per response while the rollout streams; the batch-level credit
    (:meth:`score_batch`, :class:`OSPOScorer`) runs once the whole batch exists. Use it with
    ``reward.reward_manager.source=importlib``, ``reward.reward_manager.name=OSPORewardManager`` and
    ``reward.reward_manager.module.path=pkg://ospo_gym.integrations.verl`` (or ``source=register``, ``name=ospo``
    once this module is imported).
    """

    def __init__(
        self,
        config: Any,
        tokenizer: Any,
        compute_score: Any = None,
        reward_router_address: str | None = None,
        reward_model_tokenizer: Any = None,
    ) -> None:
        super().__init__(config, tokenizer, compute_score)
        self.settings = OSPOVerlConfig.from_verl(config)
        self.env = _env_of(self.settings)
        self._scorer: OSPOScorer | None = None

    async def run_single(self, data: DataProto) -> dict[str, Any]:
        """The env reward of the (last) response in ``data``: ``{"reward_score", "reward_extra_info"}``."""
        item = data[-1:]
        rows, _ = response_rows(item)
        (prompt_id,) = prompt_ids_of(item)
        text = self.tokenizer.decode(rows[0], skip_special_tokens=True)
        # in this thread: verl's reward loop runs many run_single at once, and an env is not thread-safe
        reward = float(self.env.rewards([prompt_id], [text])[0])
        return {"reward_score": reward, "reward_extra_info": {REWARD_KEY: reward}}

    def score_batch(self, data: DataProto) -> DataProto:
        """OSPO's token advantages of a whole batch (see :meth:`OSPOScorer.score`)."""
        if self._scorer is None:
            self._scorer = OSPOScorer.from_verl(self.config, self.tokenizer)
        if self._scorer is None:
            raise ValueError(
                f"algorithm.adv_estimator={_get(self.config, 'algorithm.adv_estimator', None)} is not an OSPO "
                f"estimator; use one of {list(OSPO_ESTIMATORS)}"
            )
        return self._scorer.score(data)


class OSPOAgentLoopManager(AgentLoopManager):
    """verl's ``AgentLoopManager`` whose training batches leave with OSPO's token advantages in ``rm_scores``.

    Set ``+actor_rollout_ref.rollout.agent.agent_loop_manager_class=ospo_gym.integrations.verl.OSPOAgentLoopManager``.
    Validation batches and verl's own estimators keep the scalar env reward.
    """

    _ospo_scorer: OSPOScorer | None = None

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        if bool(_get(config, "trainer.use_v1", False)):
            raise ValueError(
                "OSPOAgentLoopManager hooks verl's RayPPOTrainer loop, but trainer.use_v1=True selects the TransferQueue "
                "trainer, whose rollouts stream into a queue the credit step does not see; set trainer.use_v1=False"
            )
        super().__init__(config, *args, **kwargs)

    @auto_await
    async def generate_sequences(self, prompts: DataProto) -> DataProto:
        output = await super().generate_sequences(prompts)
        return self.credit(prompts, output)

    def credit(self, prompts: DataProto, output: DataProto) -> DataProto:
        """``output`` with ``rm_scores`` replaced by OSPO's token advantages (training batches, OSPO estimators)."""
        if prompts.meta_info.get("validate", False):
            return output
        if self._ospo_scorer is None:
            if str(_get(self.config, "algorithm.adv_estimator", "")) not in OSPO_ESTIMATORS:
                return output
            self._ospo_scorer = OSPOScorer.from_verl(self.config, self._ospo_tokenizer())
        view = DataProto(
            batch=output.batch,
            non_tensor_batch={**prompts.non_tensor_batch, **output.non_tensor_batch},
            meta_info={"global_steps": prompts.meta_info.get("global_steps", 0)},
        )
        scored = self._ospo_scorer.score(view)
        output.batch["rm_scores"] = scored.batch["rm_scores"]
        output.non_tensor_batch[REWARD_KEY] = scored.non_tensor_batch[REWARD_KEY]
        keys = list(output.meta_info.get("reward_extra_keys", []))
        output.meta_info["reward_extra_keys"] = keys + [REWARD_KEY] * (REWARD_KEY not in keys)
        return output

    def _ospo_tokenizer(self) -> Any:
        from verl.utils import hf_tokenizer
        from verl.utils.fs import copy_to_local

        model = self.config.actor_rollout_ref.model
        return hf_tokenizer(copy_to_local(model.tokenizer_path or model.path), trust_remote_code=True)


# -- a plain reward function (verl's custom_reward_function) -----------------------------------------------------
def compute_score(
    data_source: str,
    solution_str: Any,
    ground_truth: Any = None,
    extra_info: Mapping[str, Any] | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    **verl_kwargs: Any,
) -> float:
    """verl's ``custom_reward_function`` of an ospo-gym env (sequence-level training with verl's own estimators):
    the env ``data_source``'s reward of ``solution_str`` for ``extra_info["prompt_id"]``. ``env_kwargs`` come from
    ``reward.custom_reward_function.reward_kwargs.env_kwargs``; ``verl_kwargs`` are what verl's reward managers
    add (``num_turns``, ``rollout_reward_scores``, ...) and are not used."""
    if not isinstance(solution_str, str):
        shown = repr(solution_str)
        raise ValueError(
            f"the response is not text: {type(solution_str).__name__} {shown[:80]}{'...' if len(shown) > 80 else ''}; "
            "compute_score needs the decoded response string (solution_str)"
        )
    if not isinstance(extra_info, Mapping) or "prompt_id" not in extra_info:
        raise ValueError(
            "extra_info has no 'prompt_id'; build the dataset with ospo_gym.integrations.verl.prompt_dataset(env, "
            "path), which writes extra_info.prompt_id"
        )
    env = _cached_env(data_source, json.dumps(dict(env_kwargs or {}), sort_keys=True))
    return float(env.rewards([extra_info["prompt_id"]], [solution_str])[0])


# -- the verl estimators -----------------------------------------------------------------------------------------
def _scored_advantages(
    name: str, token_level_rewards: torch.Tensor, response_mask: torch.Tensor, index: Any, config: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(advantages, returns)``, both (B, T): the token advantages :class:`OSPOScorer` wrote into ``rm_scores``,
    which verl hands over as ``token_level_rewards``, masked."""
    if config is not None and bool(_get(config, "use_kl_in_reward", False)):
        raise ValueError(
            f"algorithm.adv_estimator={name} with algorithm.use_kl_in_reward=True would subtract a KL penalty from "
            "OSPO's token advantages; set algorithm.use_kl_in_reward=False and use the KL loss "
            "(actor_rollout_ref.actor.use_kl_loss=True) instead"
        )
    if index is None:
        raise ValueError(f"the {name} estimator needs verl's uid index of the batch, which was not passed")
    uids = {str(u) for u in index}
    # a union: verl may train on groups of several rollouts (dynamic sampling); uids are fresh uuid4s per step
    if not uids <= frozenset().union(*(scored for done, scored in _SCORED if done == name)):
        other = [done for done, scored in _SCORED if uids <= scored]
        reason = f"they were scored for algorithm.adv_estimator={other[-1]}" if other else _MANAGER_HINT
        raise ValueError(
            f"the token_level_rewards of this batch are not OSPO's {name} token advantages ({reason}); with "
            f"algorithm.adv_estimator={name} the rollout must go through OSPOAgentLoopManager, or call "
            "OSPORewardManager.score_batch(batch) and put its rm_scores in the batch"
        )
    advantages = token_level_rewards * response_mask
    return advantages, advantages


def _register_scored_estimator(name: str, function_name: str, doc: str) -> Any:
    """Register ``name`` as a verl advantage estimator that hands over :func:`_scored_advantages` of ``name``;
    returns the function, named ``function_name`` (verl calls it with keyword arguments: ``index`` is the batch's
    uid array)."""

    def compute(
        token_level_rewards: torch.Tensor,
        response_mask: torch.Tensor,
        config: Any = None,
        index: np.ndarray | None = None,
        reward_baselines: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return _scored_advantages(name, token_level_rewards, response_mask, index, config)

    compute.__name__ = compute.__qualname__ = function_name
    compute.__doc__ = doc
    return register_adv_est(name)(compute)


compute_ospo_prop_advantage = _register_scored_estimator(
    "ospo_prop",
    "compute_ospo_prop_advantage",
    """OSPO-PROP (arXiv 2601.08403) in verl: ``(advantages, returns)`` (B, T), ospo-gym's ``ospo_prop`` token
    advantages computed on the batch by :class:`OSPOScorer` (``A_t = T · Â · φ̃_t / Σ φ̃``).""",
)
compute_ospo_rank_advantage = _register_scored_estimator(
    "ospo_rank",
    "compute_ospo_rank_advantage",
    """OSPO-RANK in verl: ``(advantages, returns)`` (B, T), ospo-gym's ``ospo_rank`` token advantages (shares by
    rank of segment credit) computed on the batch by :class:`OSPOScorer`.""",
)
compute_ospo_registry_advantage = _register_scored_estimator(
    "ospo",
    "compute_ospo_registry_advantage",
    """Any ospo-gym registered estimator (``ospo.algo``) in verl: ``(advantages, returns)`` (B, T), its token
    advantages computed on the batch by :class:`OSPOScorer`.""",
)
