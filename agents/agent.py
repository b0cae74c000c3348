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

Under ``torchrun`` the same loop runs data-parallel (see :mod:`ospo_gym.agents.distributed`): each rank samples,
scores and credits its share of the step's groups, gradients are averaged by DDP (or FSDP2 with
``parallelism="fsdp"``), losses are normalised by the whole batch's token count, and rank 0 logs and writes
checkpoints. With the same seed and global batch, N processes compute what one process computes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv
from tqdm.auto import tqdm

from ospo_gym.agents import distributed
from ospo_gym.agents import logger as M
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
from ospo_gym.agents.config import AgentConfig
from ospo_gym.agents.estimators import (
    LazyTokenOffsets,
    RolloutBatch,
    get_estimator,
    group_advantages,
    zero_variance_groups,
)
from ospo_gym.agents.generation import Rollout, batch_token_offsets, completion_logprobs, generate
from ospo_gym.agents.groups import GroupedEnv, env_name, make_env
from ospo_gym.agents.loss import loss_denominator, policy_loss
from ospo_gym.agents.policy import frozen_copy, is_lora, load_policy, resolve_policy

Callback = Callable[["Agent", dict[str, Any]], bool | None]
"""Called after every step with ``(agent, metrics)``; returning ``False`` stops :meth:`Agent.learn`."""


class TrainingDivergedError(RuntimeError):
    """Training met a non-finite loss, gradient norm, parameter or advantage and stopped before keeping it.

    The message names the (1-based) step, the quantity and what to change. Nothing of that step was logged or
    saved: periodic checkpoints written before it are intact, and none was pruned because of it. A loss,
    gradient or advantage is caught before the optimizer step (the weights in memory are still the previous
    step's); a parameter that turned non-finite in the step leaves the weights in memory unusable: resume from
    the last checkpoint rather than saving them.
    """


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
        device = distributed.device_for(self.world, config.device)
        self.model, self.tokenizer = resolve_policy(
            policy, device=device, lora_rank=config.lora_rank, lora_alpha=config.lora_alpha, seed=config.seed
        )
        self.device = next(self.model.parameters()).device
        # KL reference: a frozen copy of the initial policy; with LoRA, the base model (adapters disabled)
        self.reference = frozen_copy(self.model) if config.beta > 0 and not is_lora(self.model) else None
        # the module the loss runs through: DDP's wrapper, or the model itself (single process; FSDP2 shards in place)
        self.learner = distributed.parallelize(self.model, self.world, config.parallelism)
        self._sharded = self.world.active and config.parallelism == "fsdp"
        self._trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self._trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.rollout_engine = None  # config.rollout == "vllm": a VllmRollout, started on the first step
        self.num_steps = 0
        self.history: list[dict[str, Any]] = []
        self.run_dir: Path | None = None
        self._logger: M.RunLogger | None = None

    # -- SB3-like surface ---------------------------------------------------------------------------------
    @_scoped_threads
    def learn(self, total_steps: int, callback: Callback | None = None) -> Agent:
        """Run ``total_steps`` more training steps (the step counter continues after :meth:`load`).

        A step whose loss, gradient norm, advantages or new weights are not finite raises
        :class:`TrainingDivergedError` (``config.on_nonfinite="skip"`` skips updates with a non-finite loss or
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
                bar.set_postfix(reward=f"{metrics[M.REWARD_MEAN]:.3f}")
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
        """The policy's completion of one prompt text: greedy, or sampled when ``deterministic=False``."""
        rollout = generate(
            self.model,
            self.tokenizer,
            [prompt],
            max_new_tokens=self.config.max_new_tokens,
            temperature=self.config.temperature,
            top_p=self.config.top_p,
            do_sample=not deterministic,
            stop_early=not self._sharded,
        )
        return rollout.texts[0]

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
        completion with ``deterministic=True``). Seeded by ``seed``; the training streams are not touched.

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
        bad = self._nonfinite_parameter(trainable_only=False)  # every rank: the verdict is collective
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
        try:
            config = AgentConfig.from_dict({**saved, **config_overrides})
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
            message = " ".join(str(err).split())[:300]
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
        prompt_stream, sample_stream = np.random.SeedSequence([config.seed, step]).spawn(2)
        all_prompt_ids, all_groups = self._choose_prompts(np.random.default_rng(prompt_stream))
        rows = self.world.shard(len(all_prompt_ids))  # this rank's whole groups of the global batch
        prompt_ids, group_index = all_prompt_ids[rows], all_groups[rows] - all_groups[rows.start]
        observations = self.envs.start(prompt_ids)
        rollout = self._sample(observations, seed=int(sample_stream.generate_state(1)[0]), first_row=rows.start)
        rewards = self.envs.rewards(rollout.texts)
        all_rewards = np.concatenate(self.world.gather(rewards))
        generated = time.perf_counter()

        batch = self._batch(rollout, prompt_ids, group_index, rewards, step)
        if self.world.active:
            batch.first_row, batch.global_rewards, batch.global_group_index = rows.start, all_rewards, all_groups
        oracle = self.envs.oracle
        calls, values = oracle.num_calls, oracle.num_values
        advantages = np.asarray(self.estimator(batch, oracle, config), dtype=np.float64)
        self._check_advantages(advantages, batch.completion_mask.shape, step)
        credited = time.perf_counter()

        update = self._update(rollout, advantages, zero_variance_groups(rewards, group_index))
        self.num_steps += 1
        done = time.perf_counter()
        mask = batch.completion_mask
        # per-rank pieces gathered so that every rank reports the metrics of the whole batch
        pieces = self.world.gather((advantages[mask], _row_stds(advantages, mask), mask.sum(axis=1)))
        oracle_counts = self.world.sum([oracle.num_calls - calls, oracle.num_values - values])
        seconds = self.world.max([done - start, generated - start, credited - generated, done - credited])
        metrics = {
            **self._reward_metrics(all_rewards, all_groups),
            **update,
            **_credit_metrics(
                np.concatenate([p[0] for p in pieces]),
                np.concatenate([p[1] for p in pieces]),
                group_advantages(all_rewards, all_groups, config.scale_rewards),
            ),
            M.CREDIT_ORACLE_CALLS: int(oracle_counts[0]),
            M.CREDIT_ORACLE_VALUES: int(oracle_counts[1]),
            M.PERF_STEP_SECONDS: float(seconds[0]),
            M.PERF_GENERATE_SECONDS: float(seconds[1]),
            M.PERF_CREDIT_SECONDS: float(seconds[2]),
            M.PERF_UPDATE_SECONDS: float(seconds[3]),
            M.PERF_COMPLETION_TOKENS: float(np.concatenate([p[2] for p in pieces]).mean()),
        }
        self.history.append({M.STEP: self.num_steps, **metrics})
        return metrics

    def _check_advantages(self, advantages: np.ndarray, shape: tuple[int, ...], step: int) -> None:
        """Raise unless the estimator's output has the batch's (B, T) shape and is finite in float32, the
        precision of the loss (1e39 passes a float64 check, then overflows to inf). Every rank stops if one
        rank's is bad."""
        shaped = advantages.shape == shape
        with np.errstate(over="ignore", invalid="ignore"):  # beyond float32's range is inf: counted as bad
            bad = int(np.count_nonzero(~np.isfinite(advantages.astype(np.float32)))) if shaped else 0
        if not self.world.sum([float(not shaped or bad > 0)])[0]:  # how many ranks got bad advantages
            return
        algo = self.config.algo
        if not shaped:
            raise ValueError(
                f"estimator {algo!r} returned shape {advantages.shape} (finite: "
                f"{bool(np.all(np.isfinite(advantages)))}); expected finite (B, T) = {shape}"
            )
        if bad == 0:
            raise TrainingDivergedError(
                f"training stopped at step {step + 1}: estimator {algo!r} returned bad advantages on another "
                "process; nothing of this step was applied or saved (see that process's message)"
            )
        finite = np.isfinite(advantages)
        largest = float(np.abs(advantages[finite]).max()) if finite.any() else float("nan")
        raise TrainingDivergedError(
            f"training stopped at step {step + 1}: estimator {algo!r} returned {bad} of {advantages.size} "
            f"advantages that are not finite in float32, the precision of the loss (NaN, inf or |A| > "
            f"{_FLOAT32_MAX:.3g}; largest finite |A| in float64: {largest:.3g}); nothing of this step was "
            "applied or saved. The estimator must return finite (B, T) token advantages in float32's range"
        )

    def _sample(self, prompts: list[str], seed: int, first_row: int = 0) -> Rollout:
        """Completions of the step's prompts from the configured backend (``config.rollout``); row ``b`` is row
        ``first_row + b`` of the global batch, which keys its random draws."""
        config = self.config
        if config.rollout == "vllm":
            if self.rollout_engine is None:
                from ospo_gym.agents.vllm_rollout import VllmRollout

                self.rollout_engine = VllmRollout(self.model, self.tokenizer, config)
            return self.rollout_engine.generate(prompts, seed=seed, first_row=first_row)
        return generate(
            self.model,
            self.tokenizer,
            prompts,
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            top_p=config.top_p,
            seed=seed,
            first_row=first_row,
            stop_early=not self._sharded,  # FSDP2: every rank runs the same number of (collective) forwards
        )

    def _choose_prompts(self, rng: np.random.Generator) -> tuple[list[Any], np.ndarray]:
        ids = self.envs.prompt_ids
        count = self.config.prompts_per_step
        chosen = rng.choice(len(ids), size=count, replace=count > len(ids))
        group_index = np.repeat(np.arange(count), self.config.group_size)
        return [ids[int(chosen[g])] for g in group_index], group_index

    def _batch(
        self, rollout: Rollout, prompt_ids: list[Any], group_index: np.ndarray, rewards: np.ndarray, step: int
    ) -> RolloutBatch:
        mask = rollout.completion_mask.cpu().numpy()
        ids = rollout.completion_tokens.cpu().numpy()
        rows = [ids[b, : int(n)] for b, n in enumerate(mask.sum(axis=1))]
        offsets = LazyTokenOffsets(len(rows), functools.partial(batch_token_offsets, self.tokenizer, rows, rollout.texts))
        return RolloutBatch(prompt_ids, group_index, rewards, rollout.texts, offsets, mask, step)

    def _update(self, rollout: Rollout, advantages: np.ndarray, flat: np.ndarray) -> dict[str, Any]:
        """``num_iterations`` optimizer steps on the batch; returns loss metrics averaged over them.

        Rows of skipped (zero-variance) groups are left out of the forward pass. The loss is normalised by the
        denominator of the whole global batch and multiplied by the world size, which DDP / FSDP2's gradient
        averaging divides out again. With ``micro_batch_size`` the rows go through forward and backward in
        chunks of that many (gradients accumulate; one optimizer step per iteration); every rank runs the same
        number of chunks, and a chunk (or a rank) whose rows are all skipped runs one row with no tokens in the
        loss, so that every rank runs the same collectives.
        """
        config = self.config
        keep = ~flat if config.skip_zero_variance_groups else np.ones(len(flat), dtype=bool)
        kept = torch.as_tensor(keep, device=self.device)[:, None]
        rows = torch.as_tensor(np.flatnonzero(keep) if keep.any() else [0], device=self.device)
        mask = (rollout.completion_mask & kept).index_select(0, rows)
        local_tokens = float(mask.sum())  # padding chunks add none
        normaliser = float(self.world.sum(loss_denominator(mask, config.loss_aggregation, config.max_new_tokens)))
        if normaliser == 0:  # no completion of the whole batch is in the loss: every rank skips alike
            return {M.LOSS_POLICY: None}
        chunks = [(rows, False)] if config.micro_batch_size is None else self._micro_batches(keep)
        tensors = (rollout.prompt_tokens, rollout.prompt_mask, rollout.completion_tokens, rollout.completion_mask)
        all_advantages = torch.as_tensor(advantages, dtype=torch.float32, device=self.device)
        pieces: list[_Chunk] = []
        for chunk, padding in chunks:
            inputs = tuple(t.index_select(0, chunk) for t in tensors)
            old = ref = None
            with torch.no_grad():
                if config.num_iterations > 1:
                    old = completion_logprobs(self.learner, *inputs, temperature=config.temperature)
                if self.reference is not None:
                    ref = completion_logprobs(self.reference, *inputs, temperature=config.temperature)
                elif config.beta > 0:
                    with self.model.disable_adapter():
                        ref = completion_logprobs(self.learner, *inputs, temperature=config.temperature)
            sampler = rollout.logprobs.index_select(0, chunk) if self.rollout_engine is not None else None
            chunk_mask = (rollout.completion_mask & kept & (not padding)).index_select(0, chunk)
            pieces.append(_Chunk(inputs, chunk_mask, all_advantages.index_select(0, chunk), sampler, old, ref))
        self.model.train()
        totals: dict[str, float] = {}
        sampler_sums: dict[str, float] = {}
        skipped = 0
        for iteration in range(config.num_iterations):
            self.optimizer.zero_grad(set_to_none=True)
            local = [0.0] * (len(_TOKEN_FRACTIONS) + 2)  # loss, token-weighted fractions, tokens
            for index, piece in enumerate(pieces):
                tokens = float(piece.mask.sum())
                last = index == len(pieces) - 1
                # DDP all-reduces once, on the last chunk's backward; sums of chunk gradients are the batch's
                sync = contextlib.nullcontext() if last or not hasattr(self.learner, "no_sync") else self.learner.no_sync()
                with sync:
                    logprobs = completion_logprobs(self.learner, *piece.inputs, temperature=config.temperature)
                    if piece.old is None:  # one update per batch: the ratio is 1, at the current weights
                        piece.old = logprobs.detach()
                    if piece.sampler is not None:  # another engine sampled: truncated importance weights (TRL, verl)
                        from ospo_gym.agents.vllm_rollout import importance_weights

                        weights, metrics = importance_weights(piece.old, piece.sampler, piece.mask, config.vllm_is_cap)
                        for key, value in metrics.items():  # token means: weighted by the chunk's tokens
                            sampler_sums[key] = sampler_sums.get(key, 0.0) + value * tokens
                        # w > 0 scales the clipped surrogate; the first iteration's weights stay
                        piece.advantages, piece.sampler = piece.advantages * weights, None
                    loss, parts = policy_loss(
                        logprobs,
                        piece.old,
                        piece.advantages,
                        piece.mask,
                        epsilon=config.epsilon,
                        epsilon_high=config.epsilon_high,
                        beta=config.beta,
                        ref_logprobs=piece.ref,
                        aggregation=config.loss_aggregation,
                        max_tokens=config.max_new_tokens,
                        normaliser=normaliser,
                    )
                    (loss * self.world.size).backward()
                local[0] += float(loss.detach())
                for i, key in enumerate(_TOKEN_FRACTIONS):
                    local[1 + i] += parts[key] * tokens
                local[-1] += tokens
            limit = config.max_grad_norm if config.max_grad_norm is not None else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(self._trainable, limit)
            grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm  # FSDP2: a DTensor
            # this rank's share: the loss adds up over ranks, the token fractions are token-weighted means
            summed = self.world.sum(local)
            # decided before the step, on what every rank holds alike: the summed loss, the global grad norm
            problem = _nonfinite_update(float(summed[0]), float(grad_norm))
            if problem is None:
                self._optimizer_step(iteration)
                self._check_parameters(iteration)
            elif config.on_nonfinite == "skip":
                self.optimizer.zero_grad(set_to_none=True)
                skipped += 1
            else:
                raise self._diverged(problem, iteration, applied=False)
            step_parts = {"policy": summed[0], "grad_norm": float(grad_norm)}
            step_parts.update({k: summed[1 + i] / max(summed[-1], 1.0) for i, k in enumerate(_TOKEN_FRACTIONS)})
            for key, value in step_parts.items():
                totals[key] = totals.get(key, 0.0) + float(value) / config.num_iterations
        self.model.eval()
        synced = time.perf_counter()
        if self.rollout_engine is not None:
            self.rollout_engine.sync_weights(self.model)
        return {
            **{key: value / max(local_tokens, 1.0) for key, value in sampler_sums.items()},
            M.PERF_SYNC_SECONDS: time.perf_counter() - synced,
            M.LOSS_POLICY: totals["policy"],
            M.LOSS_KL: totals["kl"],
            M.LOSS_CLIP_FRACTION: totals["clip_fraction"],
            M.LOSS_CLIP_LOW_FRACTION: totals["clip_low_fraction"],
            M.LOSS_CLIP_HIGH_FRACTION: totals["clip_high_fraction"],
            M.LOSS_RATIO_MEAN: totals["ratio_mean"],
            M.LOSS_GRAD_NORM: totals["grad_norm"],
            M.LOSS_SKIPPED_UPDATES: skipped,
        }

    def _optimizer_step(self, iteration: int) -> None:
        """``optimizer.step()``; a step size or decay factor beyond float32 (learning_rate 1e39, or as large a
        learning_rate × weight_decay) makes torch refuse the scalar midway, some moments updated: stop."""
        try:
            self.optimizer.step()
        except RuntimeError as err:
            if "overflow" not in str(err):
                raise
            problem = f"the optimizer's step overflows float32 ({' '.join(str(err).split())})"
            raise self._diverged(problem, iteration, applied=True) from err

    def _check_parameters(self, iteration: int) -> None:
        """Raise :class:`TrainingDivergedError` if a trainable parameter is not finite after the update."""
        bad = self._nonfinite_parameter(trainable_only=True)
        if bad is not None:
            problem = f"parameter {bad!r} is not finite after the optimizer step"
            raise self._diverged(problem, iteration, applied=True)

    def _nonfinite_parameter(self, *, trainable_only: bool) -> str | None:
        """The name of the first parameter holding inf or NaN, else ``None``; the same answer on every rank.

        One fused pass, as for the gradient norm: the parameters' L2 norms are all finite only if every
        weight is (squares and sums carry inf and NaN through); only if they are not is each parameter
        checked exactly, as a norm also overflows on huge finite weights. FSDP2: each rank checks its own
        shards, and every rank gets the verdict.
        """
        named_all = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad or not trainable_only]
        local = [_local(p) for _, p in named_all] if self._sharded else [p.detach() for _, p in named_all]
        bad = None
        with torch.no_grad():
            if local and not bool(torch.stack(torch._foreach_norm(local, 2)).sum().isfinite()):
                bad = next((n for (n, _), t in zip(named_all, local, strict=True) if not bool(torch.isfinite(t).all())), None)
        if self._sharded and self.world.sum([float(bad is not None)])[0]:  # every rank takes the same branch
            bad = next(name for name in self.world.gather(bad) if name is not None)
        return bad

    def _diverged(self, problem: str, iteration: int, *, applied: bool) -> TrainingDivergedError:
        """The error that stops training at this step, naming it, the quantity and what to change; the model
        is put back in eval mode, as a finished update leaves it."""
        self.model.eval()
        config = self.config
        where = f"step {self.num_steps + 1}" + (
            f" (update {iteration + 1} of {config.num_iterations})" if config.num_iterations > 1 else ""
        )
        if applied:
            state = (
                "the weights in memory are unusable; nothing of this step was logged or saved "
                "(resume from the last checkpoint)"
            )
        else:
            state = "the update was not applied; nothing of this step was logged or saved"
        fixes = [f"lower learning_rate (now {config.learning_rate:g})"]
        if config.weight_decay:
            fixes.append(f"lower weight_decay (now {config.weight_decay:g})")
        if config.max_grad_norm is None:
            fixes.append("clip gradients with max_grad_norm=1.0")
        if not applied and config.on_nonfinite != "skip":
            fixes.append('set on_nonfinite="skip" to skip such updates')
        fix = "; ".join(fixes)
        return TrainingDivergedError(f"training diverged at {where}: {problem}; {state}. To recover: {fix}")

    def _micro_batches(self, keep: np.ndarray) -> list[tuple[torch.Tensor, bool]]:
        """The kept rows in chunks of ``micro_batch_size``, as ``(row indices, padding)``; ranks with fewer chunks
        than the busiest rank get padding chunks (one row, no tokens in the loss), so that all run the same
        number of forward / backward passes."""
        size = self.config.micro_batch_size
        kept_rows = np.flatnonzero(keep)
        chunks = [(torch.as_tensor(kept_rows[i : i + size], device=self.device), False) for i in range(0, len(kept_rows), size)]
        count = int(self.world.max([max(len(chunks), 1)])[0])
        padding = torch.zeros(1, dtype=torch.long, device=self.device)
        return chunks + [(padding, True)] * (count - len(chunks))

    def _reward_metrics(self, rewards: np.ndarray, group_index: np.ndarray) -> dict[str, float]:
        flat = zero_variance_groups(rewards, group_index)
        return {
            M.REWARD_MEAN: float(rewards.mean()),
            M.REWARD_STD: float(rewards.std()),
            M.REWARD_MAX: float(rewards.max()),
            M.REWARD_ZERO_VARIANCE_GROUPS: float(flat.mean()),
        }

    def _run_logger(self) -> M.RunLogger | None:
        """The metric writer of rank 0 (``None`` on other ranks); fixes the run folder on every rank."""
        if self.run_dir is None:  # a new run: a folder of its own, even if another started in the same second
            config = self.config
            self.run_dir = M.create_run_dir(
                config.run_dir, self.env_id, config.algo, config.seed, world=self.world
            )
        if not self.world.is_main:
            return None
        if self._logger is None:
            # a resumed run continues after its checkpoint: records of later steps (a crashed run's) are dropped
            self._logger = M.RunLogger(self.run_dir, tensorboard=self.config.tensorboard, resume_step=self.num_steps)
            config_path = self.run_dir / "config.json"
            if not config_path.exists():
                config_path.write_text(json.dumps(self.config.to_dict(), indent=1), encoding="utf-8")
        return self._logger

    def close(self) -> None:
        """Close the metric writers, the rollout engine (if any) and the env."""
        if self.rollout_engine is not None:
            self.rollout_engine.close()
            self.rollout_engine = None
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


@dataclasses.dataclass
class _Chunk:
    """One micro-batch of an update: model inputs, loss mask (R, T), token advantages (R, T), the sampler's
    log-probs (R, T; vLLM, until the first iteration has weighted the advantages), the log-probs before the update
    (set by the first iteration unless computed up front) and the reference's (KL)."""

    inputs: tuple[torch.Tensor, ...]
    mask: torch.Tensor
    advantages: torch.Tensor
    sampler: torch.Tensor | None
    old: torch.Tensor | None
    ref: torch.Tensor | None


_TOKEN_FRACTIONS = ("clip_fraction", "clip_low_fraction", "clip_high_fraction", "ratio_mean", "kl")
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _local(parameter: torch.Tensor) -> torch.Tensor:
    """This rank's values of a parameter (its shard under FSDP2, where parameters are DTensors)."""
    return (parameter.to_local() if hasattr(parameter, "to_local") else parameter).detach()


def _nonfinite_update(loss: float, grad_norm: float) -> str | None:
    """What makes an update unsafe to apply (``None``: nothing), from the batch's loss and grad norm."""
    if not math.isfinite(loss):
        return f"the loss is {loss}"
    if not math.isfinite(grad_norm):
        return f"the gradient norm is {grad_norm}"
    return None


def _row_stds(advantages: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(B,) std of each completion's token advantages over its valid tokens."""
    counts = np.maximum(mask.sum(axis=1), 1)
    row_mean = np.where(mask, advantages, 0.0).sum(axis=1) / counts
    return np.sqrt(np.where(mask, (advantages - row_mean[:, None]) ** 2, 0.0).sum(axis=1) / counts)


def _credit_metrics(valid: np.ndarray, row_stds: np.ndarray, sequence: np.ndarray) -> dict[str, float]:
    """Advantage statistics from the valid token advantages (N,), each completion's std (B,) and Â (B,)."""
    return {
        M.CREDIT_SEQUENCE_ADVANTAGE_ABS: float(np.abs(sequence).mean()),
        M.CREDIT_TOKEN_ADVANTAGE_MEAN: float(valid.mean()) if valid.size else 0.0,
        M.CREDIT_TOKEN_ADVANTAGE_STD: float(valid.std()) if valid.size else 0.0,
        M.CREDIT_TOKEN_ADVANTAGE_MIN: float(valid.min()) if valid.size else 0.0,
        M.CREDIT_TOKEN_ADVANTAGE_MAX: float(valid.max()) if valid.size else 0.0,
        M.CREDIT_WITHIN_SEQUENCE_STD: float(row_stds.mean()),
    }


def _json_ready(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
