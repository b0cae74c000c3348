"""The agent: one training loop for every advantage estimator, with an SB3-like surface::

    agent = Agent("ospo/AdditiveKeywords-v0", algo="ospo_prop", policy=path, config=AgentConfig.tiny_cpu())
    agent.learn(100)
    agent.predict(agent.envs.prompt(0))
    agent.save("ckpt")
    agent = Agent.load("ckpt")

Randomness: step ``k`` draws its prompts, its sampling seed and its coalitions from streams derived from
``(config.seed, k)`` alone, so a run resumed from a checkpoint at step ``k`` repeats exactly what the
uninterrupted run did from step ``k`` on (given the saved weights and optimizer state), whatever else consumed
random numbers in between (``predict``, user code). Global RNG states are saved and restored too.

The loop reads top to bottom in :meth:`Agent.train_step`: prompts, sample (:mod:`~ospo_gym.agents.rollout`),
rewards, batch, advantages (:mod:`~ospo_gym.agents.estimators`, checked by :mod:`~ospo_gym.agents.guard`), update
(:mod:`~ospo_gym.agents.update`), metrics (:mod:`~ospo_gym.agents.step_metrics`).

On a multi-turn env (``ospo/ConvSearch-v0``, an env whose oracle is a :class:`~ospo_gym.turn_oracle.TurnOracle`)
the same loop plays each episode to its end, one generation per turn, with the conversation in the prompt
through the chat template (:mod:`~ospo_gym.agents.turn_loop`); the estimator (``trajectory_grpo``, ``turn_grpo``,
``ospo_turn``, or any registered one) credits each episode's own tokens, and the update scores every turn after its
own prompt, so only the policy's tokens are in the loss. Checkpoints, resume and the non-finite guard are the same.

Under ``torchrun`` the same loop runs data-parallel (see :mod:`ospo_gym.agents.distributed`): each rank samples,
scores and credits its share of the step's groups, gradients are averaged by DDP (or FSDP2 with
``parallelism="fsdp"``), losses are normalised by the whole batch's token count, and rank 0 logs and writes
checkpoints. With the same seed and global batch, N processes compute what one process computes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv
from tqdm.auto import tqdm

from ospo_gym.agents import distributed
from ospo_gym.agents.checkpoint import (
    POLICY_DIR,
    REFERENCE_DIR,
    find_checkpoint,
    periodic_path,
    prune_checkpoints,
    read_checkpoint,
    restore_rng,
    save_checkpoint,
)
from ospo_gym.agents.config import AgentConfig, renamed_fields
from ospo_gym.agents.estimators import LazyTokenOffsets, RolloutBatch, get_estimator, zero_variance_groups
from ospo_gym.agents.generation import Rollout, TokenBytes, batch_token_offsets, generate
from ospo_gym.agents.groups import GroupedEnv, env_name, make_env
from ospo_gym.agents.guard import check_advantages, nonfinite_parameter
from ospo_gym.agents.logger import REWARD_MEAN, REWARD_TURNS_MEAN, STEP, RunLogger, create_run_dir
from ospo_gym.agents.policy import frozen_copy, is_lora, load_policy, resolve_policy
from ospo_gym.agents.rollout import RolloutBackend
from ospo_gym.agents.step_metrics import StepClock, step_metrics
from ospo_gym.agents.turn_estimators import MULTI_TURN_ESTIMATORS
from ospo_gym.agents.turn_loop import (
    TurnSamples,
    conversation_prompt,
    play_conversations,
    transcript_messages,
    turn_seed,
)
from ospo_gym.agents.update import PolicyUpdate
from ospo_gym.errors import one_line
from ospo_gym.turn_oracle import TurnOracle

Callback = Callable[["Agent", dict[str, Any]], bool | None]
"""Called after every step with ``(agent, metrics)``; returning ``False`` stops :meth:`Agent.learn`."""


def _scoped_threads(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run an Agent method with ``torch.set_num_threads(config.torch_threads)``, restoring the count afterwards."""

    @functools.wraps(method)
    def wrapper(self: Agent, *args: Any, **kwargs: Any) -> Any:
        wanted, previous = self.config.torch_threads, torch.get_num_threads()
        if wanted is None or wanted == previous:
            return method(self, *args, **kwargs)
        torch.set_num_threads(wanted)
        try:
            return method(self, *args, **kwargs)
        finally:
            torch.set_num_threads(previous)

    return wrapper


class Agent:
    """GRPO / OSPO-PROP / OSPO-RANK (or any registered estimator) on an ospo-gym environment.

    Args:
        env: an env id (built with ``gym.make_vec(id, num_envs=B, vectorization_mode="vector_entry_point",
            **env_kwargs)``), or an ospo-gym env / native vector env with ``num_envs == B``.
        algo: estimator name; overrides ``config.algo`` when given.
        policy: a local path or hub name of a causal LM, a ``(model, tokenizer)`` pair, or a model (its tokenizer
            is loaded from ``model.name_or_path``).
        config: :class:`AgentConfig`.
        env_kwargs: keyword arguments of the env when ``env`` is an id.
    """

    def __init__(
        self,
        env: str | gym.Env | VectorEnv,
        algo: str | None = None,
        policy: Any = None,
        config: AgentConfig | None = None,
        *,
        env_kwargs: dict[str, Any] | None = None,
    ) -> None:
        config = config if config is not None else AgentConfig()
        if algo is not None and algo != config.algo:
            config = dataclasses.replace(config, algo=algo)
        self.config = config
        self.estimator = get_estimator(config.algo)
        self.world = distributed.setup(config.device)
        if config.prompts_per_step % self.world.size:
            raise ValueError(
                f"prompts_per_step ({config.prompts_per_step}) must be divisible by the number of processes "
                f"({self.world.size}): every rank trains on whole groups; use a multiple of {self.world.size}"
            )
        if self.world.active and config.parallelism == "fsdp" and config.rollout == "vllm":
            raise ValueError(
                "rollout='vllm' needs the full weights on every rank to sync its engine; use parallelism='ddp' "
                "with vllm (one engine per rank), or rollout='hf' with parallelism='fsdp'"
            )
        self.local_batch_size = config.batch_size // self.world.size
        self.env_id = env_name(env)
        self.env_kwargs = dict(env_kwargs or {})
        self.envs = GroupedEnv(make_env(env, env_kwargs, self.local_batch_size), self.local_batch_size, config.seed)
        self.multi_turn = isinstance(self.envs.oracle, TurnOracle)
        """Episodes of several turns (one generation per turn; :mod:`~ospo_gym.agents.turn_loop`)."""
        check_env_algo(self.env_id, config.algo, multi_turn=self.multi_turn)
        if self.multi_turn:
            _check_multi_turn(config, self.world)
        device = distributed.device_for(self.world, config.device)
        self.model, self.tokenizer = resolve_policy(
            policy, device=device, lora_rank=config.lora_rank, lora_alpha=config.lora_alpha, seed=config.seed
        )
        self.device = next(self.model.parameters()).device
        self._token_bytes = TokenBytes(self.tokenizer)  # each token id's bytes, looked up once for all steps' offsets
        # KL reference: a frozen copy of the initial policy; with LoRA, the base model (adapters disabled)
        self.reference = frozen_copy(self.model) if config.beta > 0 and not is_lora(self.model) else None
        # the module the loss runs through: DDP's wrapper, or the model itself (single process; FSDP2 shards in place)
        self.learner = distributed.parallelize(self.model, self.world, config.parallelism)
        self._sharded = self.world.active and config.parallelism == "fsdp"
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.rollouts = RolloutBackend(self.model, self.tokenizer, config, sharded=self._sharded)
        self.policy_update = PolicyUpdate(
            self.model, self.learner, self.optimizer, config, self.world, device=self.device, sharded=self._sharded
        )
        self.num_steps = 0
        self.history: list[dict[str, Any]] = []
        self.run_dir: Path | None = None
        self._logger: RunLogger | None = None
        self._credit_thread: ThreadPoolExecutor | None = None  # config.overlap_credit's worker, made on first use

    @property
    def rollout_engine(self) -> Any:
        """The vLLM engine that samples (``config.rollout="vllm"``), started by the first step; else ``None``."""
        return self.rollouts.engine

    # -- SB3-like surface ---------------------------------------------------------------------------------
    @_scoped_threads
    def learn(self, total_steps: int, callback: Callback | None = None) -> Agent:
        """Run ``total_steps`` more training steps (the step counter continues after :meth:`load`).

        A step whose loss, gradient norm, advantages or new weights are not finite raises
        :class:`~ospo_gym.agents.TrainingDivergedError` (``config.on_nonfinite="skip"`` skips updates with a non-finite loss or
        gradient instead); the failed step is neither logged nor saved, and no checkpoint is pruned after it.
        """
        if total_steps < 0:
            raise ValueError(f"total_steps must be >= 0, got {total_steps}")
        logger = self._run_logger()  # None on ranks other than 0
        show = self.config.progress_bar and self.world.is_main
        bar = tqdm(total=total_steps, disable=not show, desc=f"{self.config.algo}")
        try:
            for _ in range(total_steps):
                metrics = self.train_step()
                if logger is not None:
                    logger.log(self.num_steps, metrics)
                bar.update(1)
                bar.set_postfix(reward=f"{metrics[REWARD_MEAN]:.3f}")
                if self.config.save_every and self.num_steps % self.config.save_every == 0:
                    self.save(periodic_path(self.run_dir, self.num_steps))
                    if self.world.is_main:
                        prune_checkpoints(self.run_dir, self.config.keep_checkpoints)
                if callback is not None and callback(self, metrics) is False:
                    break
        finally:
            bar.close()
        return self

    @_scoped_threads
    def predict(self, prompt: str, deterministic: bool = True) -> str:
        """The policy's completion of one prompt text: greedy, or sampled when ``deterministic=False``.

        On a multi-turn env ``prompt`` is an observation (the conversation so far, ``"shopper: ..."`` /
        ``"you: ..."`` lines), rendered through the chat template as in training; the answer is the next turn.
        """
        if self.multi_turn:
            prompts = [conversation_prompt(self.tokenizer, transcript_messages(prompt))]
        else:
            prompts = [prompt]
        rollout = generate(
            self.model,
            self.tokenizer,
            prompts,
            max_new_tokens=self.config.max_new_tokens,
            temperature=self.config.temperature,
            top_p=self.config.top_p,
            do_sample=not deterministic,
            stop_early=not self._sharded,
            formatted=self.multi_turn,
        )
        return rollout.texts[0][: self.envs.base.max_turn_chars] if self.multi_turn else rollout.texts[0]

    @_scoped_threads
    def evaluate(
        self,
        samples_per_prompt: int = 8,
        *,
        deterministic: bool = False,
        seed: int = 12345,
        env: str | gym.Env | VectorEnv | None = None,
        env_kwargs: dict[str, Any] | None = None,
    ) -> float:
        """Mean reward over every prompt of an env, ``samples_per_prompt`` sampled completions each (or one greedy
        completion with ``deterministic=True``). Seeded by ``seed``; the training streams are not touched. On a
        multi-turn env: the mean return of as many conversations played to their end.

        ``env`` is the training env by default; else an env id (built with ``env_kwargs`` for this call, then
        closed) or an ospo-gym env / vector env (reset with the agent's seed, left open), e.g. the same retrieval
        task scored by another retriever. The completions depend on ``seed`` and the prompts alone, so two envs
        with the same prompts are scored on the same completions.
        """
        if env is None:
            if env_kwargs:
                raise ValueError("env_kwargs only apply with env=<an env id>; the training env is already built")
            return self._mean_reward(self.envs, samples_per_prompt, deterministic, seed)
        built = gym.make(env, **(env_kwargs or {})) if isinstance(env, str) else make_env(env, env_kwargs, 0)
        try:
            scorer = GroupedEnv(built, getattr(built, "num_envs", 1), self.config.seed)
            return self._mean_reward(scorer, samples_per_prompt, deterministic, seed)
        finally:
            if isinstance(env, str):
                built.close()

    def _mean_reward(self, envs: GroupedEnv, samples_per_prompt: int, deterministic: bool, seed: int) -> float:
        ids = envs.prompt_ids
        copies = 1 if deterministic else samples_per_prompt
        prompt_ids = [p for p in ids for _ in range(copies)]
        if isinstance(envs.oracle, TurnOracle):
            config = self.config

            def sample(prompts: list[str], turn: int, rows: np.ndarray) -> Rollout:
                return generate(
                    self.model, self.tokenizer, prompts, max_new_tokens=config.max_new_tokens,
                    temperature=config.temperature, top_p=config.top_p, do_sample=not deterministic,
                    seed=turn_seed(seed, turn), row_ids=rows, stop_early=not self._sharded, formatted=True,
                )  # fmt: skip

            batch, _ = play_conversations(envs.base, sample, self.tokenizer, prompt_ids, np.zeros(len(prompt_ids)))
            return float(batch.rewards.mean())
        rollout = generate(
            self.model,
            self.tokenizer,
            [envs.prompt(p) for p in prompt_ids],
            max_new_tokens=self.config.max_new_tokens,
            temperature=self.config.temperature,
            top_p=self.config.top_p,
            do_sample=not deterministic,
            seed=seed,
            stop_early=not self._sharded,
        )
        return float(envs.score(prompt_ids, rollout.texts).mean())

    def save(self, path: str | Path) -> Path:
        """Write a resumable checkpoint folder atomically (see :mod:`ospo_gym.agents.checkpoint`).

        Data-parallel: call it on every rank (FSDP2 gathers the full weights); rank 0 writes, the others wait.
        Raises ``ValueError`` (and writes nothing) when a parameter holds inf or NaN.
        """
        # every rank: the verdict is collective
        bad = nonfinite_parameter(self.model, self.world, sharded=self._sharded, trainable_only=False)
        if bad is not None:
            raise ValueError(
                f"refusing to save {path}: parameter {bad!r} holds inf or NaN, and a checkpoint never keeps "
                "non-finite weights; load an earlier checkpoint of the run instead"
            )
        model_state, optimizer_state = distributed.full_state_dicts(self.model, self.optimizer, sharded=self._sharded)
        path = Path(path)
        if not self.world.is_main:
            self.world.barrier()
            return path
        meta = {
            "config": self.config.to_dict(),
            "step": self.num_steps,
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs if _json_ready(self.env_kwargs) else None,
            "run_dir": str(self.run_dir) if self.run_dir is not None else None,
        }
        save_checkpoint(
            path,
            model=self.model,
            tokenizer=self.tokenizer,
            optimizer_state=optimizer_state,
            meta=meta,
            reference=self.reference,
            model_state=model_state,
        )
        self.world.barrier()
        return path

    @classmethod
    def load(
        cls,
        path: str | Path,
        env: str | gym.Env | VectorEnv | None = None,
        *,
        env_kwargs: dict[str, Any] | None = None,
        verified: bool = False,
        **config_overrides: Any,
    ) -> Agent:
        """Rebuild an agent from :meth:`save`'s folder, or from a run folder's newest intact checkpoint (damaged
        ones are skipped with a warning); ``.learn`` then continues the run.

        Where the resumed run writes (metrics, periodic and final checkpoints) follows from ``path`` alone,
        never from a file inside the checkpoint: a run folder, or a checkpoint lying in one
        (``<run>/checkpoints/step-N`` or ``<run>/checkpoint``), continues that run folder (``agent.run_dir``); a
        checkpoint anywhere else has no run folder (``agent.run_dir is None``), so ``.learn`` starts a fresh one
        under the default parent ``runs/`` (not the saved ``config.run_dir``), as a new agent does (pass
        ``run_dir=...`` to choose that parent, or set ``agent.run_dir`` before ``.learn``).

        Continuing a run folder, ``.learn`` drops the metrics.jsonl records of steps after the checkpoint
        (those of a crashed run) before appending. Resuming from an older checkpoint than the run's newest
        starts a new branch: when ``.learn`` starts, the run's checkpoints of later steps and their metrics
        records are moved (on rank 0) to ``<run>/abandoned/after-step-<step>__<time>/``, so that the run
        folder holds one timeline and nothing is deleted (loading alone, e.g. to evaluate, moves nothing).

        ``env`` defaults to the saved env id and kwargs; pass the env when it was built by hand. Config overrides
        (e.g. ``progress_bar=False``, ``device="cpu"``) apply on top of the saved config. ``verified=True``:
        ``path`` is a checkpoint folder that :func:`~ospo_gym.agents.checkpoint.find_checkpoint` just returned, so
        its files are not hashed again (seconds per GB).

        Raises:
            CheckpointError: the checkpoint is missing, damaged or malformed (its manifest, agent.json,
                trainer_state.pt, or policy files that do not load), naming the file.
        """
        from ospo_gym.agents.checkpoint import AGENT_JSON, TRAINER_STATE, CheckpointError, run_folder_of
        from ospo_gym.agents.policy import PolicyLoadError

        given = Path(path)
        path = given if verified else find_checkpoint(given)  # verifies the manifest
        meta, state = read_checkpoint(path, verified=True)  # checks agent.json's fields, trainer_state's layout
        saved = dict(meta["config"])
        if run_folder_of(path) is None and "run_dir" not in config_overrides:
            # a standalone checkpoint's fresh run folder goes under the default parent, not under a parent
            # that its agent.json names (that would be a file deciding where we write)
            saved["run_dir"] = AgentConfig.run_dir
        # a checkpoint from before std_ddof existed trained with the population std: resume it with that
        saved.setdefault("std_ddof", 0)
        try:
            # an old checkpoint's field names first, so that an override under the new name wins over them
            config = AgentConfig.from_dict({**renamed_fields(AgentConfig, saved), **config_overrides})
        except (TypeError, ValueError) as err:
            try:  # whose fault: the saved config's, or the overrides'?
                AgentConfig.from_dict(meta["config"])
            except (TypeError, ValueError):
                raise CheckpointError(f"{path / AGENT_JSON} holds a config that is not valid: {err}") from err
            raise
        if env is None:
            if meta["env_kwargs"] is None:
                raise ValueError(f"the env of {path} had kwargs that are not JSON; pass env=... to Agent.load")
            env, env_kwargs = meta["env_id"], meta["env_kwargs"]
        try:
            agent = cls(env, policy=path / POLICY_DIR, config=config, env_kwargs=env_kwargs)
            if agent.reference is not None and (path / REFERENCE_DIR).is_dir():
                agent.reference = frozen_copy(load_policy(path / REFERENCE_DIR, device=agent.device)[0])
        except PolicyLoadError as err:
            raise CheckpointError(f"cannot load the checkpoint's policy: {err}; use another checkpoint") from err
        try:
            distributed.load_optimizer_state(
                agent.model, agent.optimizer, state["optimizer"], sharded=agent._sharded
            )
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as err:
            message = one_line(str(err))[:300]
            raise CheckpointError(
                f"{path / TRAINER_STATE} holds an optimizer state that does not fit the policy "
                f"({type(err).__name__}: {message}); the checkpoint is damaged or mixed from two runs"
            ) from err
        agent.num_steps = meta["step"]
        agent.run_dir = run_folder_of(path)  # where the checkpoint lies, never what it says
        restore_rng(state["rng"], meta["rng"])
        return agent

    # -- one step -----------------------------------------------------------------------------------------
    @_scoped_threads
    def train_step(self) -> dict[str, Any]:
        """Sample a batch, score it, compute advantages, update the policy; returns the step's metrics."""
        config, step = self.config, self.num_steps
        start = time.perf_counter()
        # prompts: G copies of each chosen prompt; this rank takes its whole groups of the global batch
        prompt_stream, sample_stream = np.random.SeedSequence([config.seed, step]).spawn(2)
        all_prompt_ids, all_groups = self._choose_prompts(np.random.default_rng(prompt_stream))
        rows = self.world.shard(len(all_prompt_ids))
        prompt_ids, group_index = all_prompt_ids[rows], all_groups[rows] - all_groups[rows.start]

        # sample, then score: every rank holds the whole batch's rewards (the group statistics need them)
        seed = int(sample_stream.generate_state(1)[0])
        turns: TurnSamples | None = None
        if self.multi_turn:  # conversations played to their end; the batch holds each episode's own tokens
            batch, turns = self._play(prompt_ids, group_index, seed, rows.start, step)
            rollout, rewards = turns.flatten(self._pad_id), batch.rewards
        else:
            rollout = self.rollouts.sample(self.envs.start(prompt_ids), seed=seed, first_row=rows.start)
            rewards = self.envs.rewards(rollout.texts)
            batch = self._batch(rollout, prompt_ids, group_index, rewards, step)
        all_rewards = np.concatenate(self.world.gather(rewards))
        generated = time.perf_counter()

        # token advantages from the estimator (OSPO's credit asks the env's oracle)
        if self.world.active:
            batch.first_row, batch.global_rewards, batch.global_group_index = rows.start, all_rewards, all_groups
        oracle = self.envs.oracle
        calls, values = oracle.num_calls, oracle.num_values
        flat = zero_variance_groups(rewards, group_index)
        prepared = None
        try:
            if config.overlap_credit and not self.world.active and turns is None:  # multi-turn rows are turns: sequential
                # the credit on a worker thread (numpy and Python: the CPU) while the log-probs that do not need the
                # advantages run here (the GPU); the estimator draws from its own seeded generators only
                if self._credit_thread is None:
                    self._credit_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ospo-credit")
                credit = self._credit_thread.submit(self.estimator, batch, oracle, config)
                try:
                    prepared = self.policy_update.prepare(
                        rollout, flat, reference=self.reference, rollouts=self.rollouts, forward_ahead=True
                    )
                finally:
                    raw = credit.result()  # the estimator's error, if any, comes first
            else:
                raw = self.estimator(batch, oracle, config)
            advantages = np.asarray(raw, dtype=np.float64)
            check_advantages(advantages, batch.completion_mask.shape, step=step, algo=config.algo, world=self.world)
        except BaseException:
            self.model.eval()  # a forward pass ahead sets train mode; a failed step leaves eval, as sequentially
            raise
        credited = time.perf_counter()

        # the clipped-surrogate update (multi-turn: one row per turn, each scored after its own prompt)
        row_advantages = advantages
        if turns is not None:
            row_advantages, flat = turns.spread(advantages, batch.completion_mask), flat[turns.row_episodes]
        update = self.policy_update(
            rollout, row_advantages, flat, reference=self.reference, rollouts=self.rollouts, step=step, prepared=prepared
        )
        self.num_steps += 1
        done = time.perf_counter()

        metrics = step_metrics(
            self.world,
            rewards=all_rewards,
            group_index=all_groups,
            update=update,
            advantages=advantages,
            mask=batch.completion_mask,
            oracle_counts=(oracle.num_calls - calls, oracle.num_values - values),
            clock=StepClock(start, generated, credited, done),
            scale_rewards=config.scale_rewards,
            std_ddof=config.std_ddof,
        )
        if turns is not None:
            counts = self.world.gather(np.array([len(s) for s in batch.turn_spans], dtype=np.float64))
            metrics[REWARD_TURNS_MEAN] = float(np.concatenate(counts).mean())
        self.history.append({STEP: self.num_steps, **metrics})
        return metrics

    @property
    def _pad_id(self) -> int:
        tokenizer = self.tokenizer
        return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)

    def _play(
        self, prompt_ids: list[Any], group_index: np.ndarray, seed: int, first_row: int, step: int
    ) -> tuple[RolloutBatch, TurnSamples]:
        """This rank's conversations of the step, sampled by the rollout backend turn by turn."""

        def sample(prompts: list[str], turn: int, rows: np.ndarray) -> Rollout:
            return self.rollouts.sample_formatted(prompts, seed=turn_seed(seed, turn), row_ids=rows)

        return play_conversations(
            self.envs.base, sample, self.tokenizer, prompt_ids, group_index, step=step, first_row=first_row
        )

    def _choose_prompts(self, rng: np.random.Generator) -> tuple[list[Any], np.ndarray]:
        """The step's global batch: ``prompts_per_step`` prompts drawn by ``rng``, each repeated ``group_size``
        times, and each row's group."""
        ids = self.envs.prompt_ids
        count = self.config.prompts_per_step
        chosen = rng.choice(len(ids), size=count, replace=count > len(ids))
        group_index = np.repeat(np.arange(count), self.config.group_size)
        return [ids[int(chosen[g])] for g in group_index], group_index

    def _batch(
        self, rollout: Rollout, prompt_ids: list[Any], group_index: np.ndarray, rewards: np.ndarray, step: int
    ) -> RolloutBatch:
        """What an estimator reads; the token offsets of the completions are computed only if it reads them."""
        mask = rollout.completion_mask.cpu().numpy()
        ids = rollout.completion_tokens.cpu().numpy()
        rows = [ids[b, : int(n)] for b, n in enumerate(mask.sum(axis=1))]
        compute = functools.partial(batch_token_offsets, self.tokenizer, rows, rollout.texts, token_bytes=self._token_bytes)
        offsets = LazyTokenOffsets(len(rows), compute)
        return RolloutBatch(prompt_ids, group_index, rewards, rollout.texts, offsets, mask, step)

    def _run_logger(self) -> RunLogger | None:
        """The metric writer of rank 0 (``None`` on other ranks); fixes the run folder on every rank."""
        if self.run_dir is None:  # a new run: a folder of its own, even if another started in the same second
            config = self.config
            self.run_dir = create_run_dir(
                config.run_dir, self.env_id, config.algo, config.seed, world=self.world
            )
        if not self.world.is_main:
            return None
        if self._logger is None:
            # a resumed run continues after its checkpoint: records of later steps (a crashed run's) are dropped
            self._logger = RunLogger(self.run_dir, tensorboard=self.config.tensorboard, resume_step=self.num_steps)
            config_path = self.run_dir / "config.json"
            if not config_path.exists():
                config_path.write_text(json.dumps(self.config.to_dict(), indent=1), encoding="utf-8")
        return self._logger

    def close(self) -> None:
        """Close the metric writers, the rollout engine (if any), the credit thread (if any) and the env."""
        self.rollouts.close()
        if self._credit_thread is not None:
            self._credit_thread.shutdown(wait=True)
            self._credit_thread = None
        if self._logger is not None:
            self._logger.close()
            self._logger = None
        self.envs.env.close()

    def __enter__(self) -> Agent:
        """``with Agent(...) as agent:`` closes it on the way out (as Gymnasium envs do), errors included: a vLLM
        engine holds memory until then."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


SINGLE_STEP_CREDIT = ("ospo_prop", "ospo_rank", "ospo_shuffled", "ospo_loo")
"""Built-in estimators that ask a single-step env's coalition oracle."""


def check_env_algo(env_id: str, algo: str, *, multi_turn: bool) -> None:
    """Raise ``ValueError`` for a built-in estimator that cannot run on this kind of env (``multi_turn``: the env's
    episodes have several turns), before any model is built; a user estimator is not checked."""
    if multi_turn and algo in SINGLE_STEP_CREDIT:
        raise ValueError(
            f"algo {algo!r} credits single-step completions; {env_id} is a multi-turn env: use one of "
            f"{', '.join(MULTI_TURN_ESTIMATORS)} (or grpo, which is trajectory_grpo there)"
        )
    if not multi_turn and algo in MULTI_TURN_ESTIMATORS:
        raise ValueError(
            f"algo {algo!r} needs a multi-turn env (ospo/ConvSearch-v0); {env_id} is a single-step env: use grpo, "
            f"{', '.join(SINGLE_STEP_CREDIT[:2])} or another single-step estimator"
        )


def _check_multi_turn(config: AgentConfig, world: distributed.World) -> None:
    """Refuse what the multi-turn loop does not do (yet), before any model is built."""
    if world.active and config.parallelism == "fsdp":
        raise ValueError(
            "parallelism='fsdp' is not supported on multi-turn envs: FSDP2 ranks must run the same number of "
            "forwards, and conversations end after different numbers of turns; use parallelism='ddp'"
        )


def _json_ready(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
