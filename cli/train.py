"""``ospo-gym train`` and ``ospo-gym eval``: train one agent on one env, and score a checkpoint.

Their options are generated from dataclasses, each field documented once (:mod:`ospo_gym.cli.options`):
:class:`TrainOptions` and :class:`EvalOptions` here, and every field of :class:`ospo_gym.agents.AgentConfig` for
``train``. The same names are the keys of the YAML file given with ``--config``.

As a module this is the form ``torchrun`` runs (every option is ``ospo-gym train``'s)::

    python -m ospo_gym.cli.train --tiny --steps 50
    torchrun --standalone --nproc_per_node 2 -m ospo_gym.cli.train --tiny --steps 50 --prompts-per-step 2

data-parallel on one machine (gloo on CPUs, NCCL on GPUs; ``--prompts-per-step`` divisible by the process
count); ``--parallelism fsdp`` shards the model with FSDP2.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

from ospo_gym.agents import Agent, AgentConfig, TrainingDivergedError, distributed, list_estimators
from ospo_gym.agents.agent import check_env_algo
from ospo_gym.agents.checkpoint import AGENT_JSON, CheckpointError, find_checkpoint, run_folder_of
from ospo_gym.agents.logger import create_run_dir
from ospo_gym.agents.policy import quiet_transformers, resolve_device
from ospo_gym.agents.tiny_policy import build_env_policy
from ospo_gym.cli.options import (
    ENV_ARG,
    UsageError,
    add_config_option,
    add_dataclass_options,
    known_keys,
    load_yaml,
    resolve_options,
)
from ospo_gym.errors import one_line
from ospo_gym.output_files import check_output_folder
from ospo_gym.registration import ALL_ENV_IDS, ENV_IDS, MULTI_TURN_ENV_IDS


@dataclass
class TrainOptions:
    """What ``ospo-gym train`` trains, on what, for how long (the agent's knobs are :class:`AgentConfig`'s)."""

    env: str = ENV_IDS[0]
    """Environment id (see ``ospo-gym envs``)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict, metadata=ENV_ARG)
    """Env constructor argument, repeatable; VALUE is read as JSON when it parses (``3``, ``false``, ``null``), else
    as a string. In YAML: a mapping ``env_kwargs: {vocab_size: 24}``."""
    policy: str | None = None
    """Local path or hub name of a causal LM to train (or use --tiny)."""
    tiny: bool = False
    """Build a tiny random Qwen2 on the env's texts into ``<run folder>/tiny_policy`` and train it on the CPU; the
    agent's defaults become ``AgentConfig.tiny_cpu()`` (lr 2e-3, 8 new tokens, 2 prompts per step)."""
    tiny_warm_start: int = 0
    """With --tiny: supervised steps that teach the random model the env's language (random vocabulary words or
    phrases, whatever the prompt) before RL; 0: none."""
    steps: int = 100
    """Training steps (one batch of prompts_per_step × group_size completions each); with --resume, the step count
    to reach in total."""
    resume: str | None = None
    """Continue a run: its run folder (the newest intact checkpoint is used; damaged ones are skipped with a
    warning) or one checkpoint folder. The checkpoint's env, policy and config are used; --steps, --eval-samples
    and --progress-bar still apply."""
    eval_samples: int = 0
    """After training, also report the mean reward over every prompt with this many sampled completions each; 0: skip."""


@dataclass
class EvalOptions:
    """What ``ospo-gym eval`` scores."""

    checkpoint: str = field(default="", metadata={"positional": True})
    """Checkpoint folder written by ``train`` (``<run folder>/checkpoint``) or ``Agent.save``, or a run folder (its
    newest intact checkpoint)."""
    env: str | None = None
    """Environment id; default: the checkpoint's."""
    env_kwargs: dict[str, Any] = field(default_factory=dict, metadata=ENV_ARG)
    """Env constructor argument, repeatable, applied over the checkpoint's own env arguments (e.g. another
    retriever: ``--env-arg retriever=bm25-exhaustive``)."""
    samples: int = 8
    """Sampled completions per prompt."""
    deterministic: bool = False
    """One greedy completion per prompt instead of samples."""
    seed: int = 12345
    """Seeds the sampled completions."""


# -- checks (ospo-gym bench makes them too) -----------------------------------------------------------------------
def check_env_id(env_id: str) -> None:
    """Single-step and multi-turn ids alike (the agent plays a multi-turn env's episodes turn by turn)."""
    if env_id not in gym.registry:
        raise UsageError(f"unknown env {env_id!r}; known: {', '.join(ALL_ENV_IDS)}")



def make_single_env(env_id: str, env_kwargs: dict[str, Any]) -> Any:
    """``gym.make(env_id, **env_kwargs)``, with construction errors reported as one line."""
    check_env_id(env_id)
    try:
        return gym.make(env_id, **env_kwargs)
    except (TypeError, ValueError, OSError, LookupError) as err:
        raise UsageError(f"cannot build {env_id}: {one_line(err)}") from None


def check_algo(algo: str, env_id: str | None = None) -> None:
    """A registered estimator that can run on ``env_id`` (when given)."""
    if algo not in list_estimators():
        raise UsageError(f"unknown algo {algo!r}; known: {', '.join(list_estimators())}")
    if env_id is not None:
        check_env_algo(env_id, algo, multi_turn=env_id in MULTI_TURN_ENV_IDS)


def check_agent_config(config: Any) -> None:
    """What ``AgentConfig`` accepts but only fails when used — a device this machine lacks, the vLLM engine
    without vLLM — reported now, before any model, run folder or environment is built."""
    if config.device is not None:
        try:
            resolve_device(config.device)
        except ValueError as err:
            raise UsageError(f"--device {config.device}: {one_line(err)}") from None
    if config.rollout == "vllm" and importlib.util.find_spec("vllm") is None:  # found, not imported: no side effects
        from ospo_gym.agents.vllm_rollout import INSTALL_HINT

        raise UsageError(f"--rollout vllm: vLLM is not installed; {INSTALL_HINT}")


# -- train ---------------------------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    file_values = load_yaml(args.config, known_keys(TrainOptions, AgentConfig))
    opts = TrainOptions(**resolve_options(TrainOptions, args, file_values))
    agent_values = resolve_options(AgentConfig, args, file_values)
    if opts.steps < 0:
        raise UsageError(f"--steps must be >= 0, got {opts.steps}")
    if opts.eval_samples < 0 or opts.tiny_warm_start < 0:
        raise UsageError("--eval-samples and --tiny-warm-start must be >= 0")
    if opts.resume is not None:
        return _resume_training(opts, agent_values)
    if (opts.policy is None) == (not opts.tiny):
        raise UsageError("give exactly one of --policy PATH and --tiny")
    local = opts.policy is not None and (
        opts.policy.startswith((".", "/", "~")) or Path(opts.policy).exists()
    )
    if local and not Path(opts.policy).expanduser().is_dir():
        raise UsageError(
            f"--policy {opts.policy}: no such folder (a model saved with save_pretrained, or a hub name)"
        )
    config = (AgentConfig.tiny_cpu if opts.tiny else AgentConfig)(**agent_values)
    check_env_id(opts.env)
    check_algo(config.algo, opts.env)
    check_agent_config(config)
    check_output_folder(config.run_dir, what="--run-dir")
    env = make_single_env(opts.env, opts.env_kwargs)
    world = distributed.setup(config.device)  # under torchrun: one run folder, created by rank 0
    # a new folder of its own (suffixed if another run took the name this second); with --policy, Agent.learn
    # creates it, so that a policy which fails to load leaves no empty run folder behind
    run_dir = None
    if opts.tiny:
        run_dir = create_run_dir(config.run_dir, opts.env, config.algo, config.seed, world=world)
    quiet_transformers()
    if opts.tiny:
        policy: Any = run_dir / "tiny_policy"
        if world.is_main:  # built once; the other ranks load it
            build_env_policy(env, policy, seed=config.seed, warm_start=opts.tiny_warm_start)
        world.barrier()
    else:
        policy = opts.policy
    env.close()
    try:
        agent = Agent(opts.env, policy=policy, config=config, env_kwargs=opts.env_kwargs)
    except OSError as err:  # a policy path that is not a model, or a hub name neither cached nor downloadable
        raise UsageError(_policy_error(policy, err, hub_name=opts.policy is not None and not local)) from None
    if run_dir is not None:
        agent.run_dir = run_dir
    if not _learn(agent, opts.steps):
        return DIVERGED_EXIT
    return _finish(agent, opts)


def _policy_error(policy: Any, err: OSError, *, hub_name: bool) -> str:
    """One line for a policy that would not load: a local folder that is not a model, or a hub name."""
    if not hub_name:
        return f"cannot load policy {policy}: {one_line(err)}"
    reason = one_line(err).split(". ")[0].rstrip(".")  # transformers' first sentence; the rest is links and advice
    return (
        f"cannot load policy {policy!r}: not found locally and could not be downloaded from the Hugging Face Hub "
        f"({reason}); pass --policy a local folder holding the model (saved with save_pretrained), or check the "
        "hub name and the network"
    )


def _resume_training(opts: TrainOptions, agent_values: dict[str, Any]) -> int:
    """``train --resume``: a run folder, or a checkpoint inside one, continues that run folder; a checkpoint
    anywhere else continues in a fresh run folder under --run-dir (default ``runs``). Where it writes never
    comes from a file inside the checkpoint."""
    overrides = {k: v for k, v in agent_values.items() if k in ("progress_bar", "tensorboard")}
    quiet_transformers()
    checkpoint = find_checkpoint(opts.resume)  # a damaged or missing checkpoint is a CheckpointError: exit 2
    if run_folder_of(checkpoint) is None:
        overrides["run_dir"] = agent_values.get("run_dir", AgentConfig.run_dir)
    agent = Agent.load(checkpoint, verified=True, **overrides)
    if not _learn(agent, max(opts.steps - agent.num_steps, 0)):
        return DIVERGED_EXIT
    return _finish(agent, opts)


DIVERGED_EXIT = 1
"""Exit status of ``train`` when training diverged: a failed run, not a usage error (2)."""


def _learn(agent: Agent, steps: int) -> bool:
    """``agent.learn(steps)``; ``False`` if training diverged, reported in one line on stderr. The agent is
    then closed without a final checkpoint (its weights may be non-finite); periodic checkpoints stay as they
    are."""
    try:
        agent.learn(steps)
    except TrainingDivergedError as err:
        agent.close()
        if agent.world.is_main:  # every rank stops alike; one line for all of them
            print(f"ospo-gym: error: {one_line(err)}", file=sys.stderr)
        return False
    return True


def _finish(agent: Agent, opts: TrainOptions) -> int:
    """Write the final checkpoint, optionally evaluate, print the JSON summary."""
    run_dir, config = agent.run_dir, agent.config
    checkpoint = agent.save(run_dir / "checkpoint")
    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "checkpoint": str(checkpoint),
        "env": agent.env_id,
        "algo": config.algo,
        "steps": agent.num_steps,
        "last_train_reward": agent.history[-1]["reward/mean"] if agent.history else None,
    }
    if opts.eval_samples:
        summary["eval_reward_mean"] = agent.evaluate(opts.eval_samples)  # every rank: FSDP2 forwards are collective
    agent.close()
    if agent.world.is_main:
        summary["processes"] = agent.world.size
        print(json.dumps(summary))
    return 0


# -- eval ----------------------------------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    file_values = load_yaml(args.config, known_keys(EvalOptions))
    opts = EvalOptions(**resolve_options(EvalOptions, args, file_values))
    try:
        path = find_checkpoint(opts.checkpoint)
    except CheckpointError as err:
        raise UsageError(str(err)) from None
    if opts.samples < 1:
        raise UsageError(f"--samples must be >= 1, got {opts.samples}")
    if opts.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {opts.seed}")
    meta = json.loads((path / AGENT_JSON).read_text(encoding="utf-8"))
    env_id = opts.env or meta["env_id"]
    saved = meta.get("env_kwargs") or {}
    env_kwargs = {**(saved if env_id == meta["env_id"] else {}), **opts.env_kwargs}
    make_single_env(env_id, env_kwargs).close()  # reports a bad env or argument in one line
    quiet_transformers()
    agent = Agent.load(path, env=env_id, env_kwargs=env_kwargs, verified=True, progress_bar=False, tensorboard=False)
    reward = agent.evaluate(opts.samples, deterministic=opts.deterministic, seed=opts.seed)
    print(
        json.dumps(
            {
                "checkpoint": str(path),
                "env": env_id,
                "env_kwargs": env_kwargs,
                "step": agent.num_steps,
                "num_prompts": len(agent.envs.prompt_ids),
                "samples_per_prompt": 1 if opts.deterministic else opts.samples,
                "deterministic": opts.deterministic,
                "seed": opts.seed,
                "reward_mean": reward,
            }
        )
    )
    agent.close()
    return 0


# -- wiring --------------------------------------------------------------------------------------------------------
def add_train_options(parser: argparse.ArgumentParser) -> None:
    add_config_option(parser)
    add_dataclass_options(parser, TrainOptions, title="run")
    add_dataclass_options(parser, AgentConfig, title="agent (AgentConfig)")


def add_eval_options(parser: argparse.ArgumentParser) -> None:
    add_config_option(parser)
    add_dataclass_options(parser, EvalOptions, title="evaluation")


def main(argv: Sequence[str] | None = None) -> int:
    """``ospo-gym train`` with ``argv`` (default: the process's arguments), then the process group shut down:
    what ``torchrun -m ospo_gym.cli.train`` runs on every rank."""
    from ospo_gym.cli import main as cli_main

    code = cli_main(["train", *(sys.argv[1:] if argv is None else argv)])
    distributed.shutdown(synchronize=code == 0)  # on an error the other ranks may never reach the barrier
    return code


if __name__ == "__main__":
    sys.exit(main())
