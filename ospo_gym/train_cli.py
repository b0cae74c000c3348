"""The agent commands of ``ospo-gym``: ``train``, ``eval`` and ``bench``.

Their options are generated from dataclasses, each field documented once: :class:`TrainOptions`,
:class:`EvalOptions`, :class:`BenchOptions` here, and every field of :class:`ospo_gym.agents.AgentConfig`
(``learning_rate`` becomes ``--learning-rate``, booleans get ``--x/--no-x``, ``None`` is typed ``none``). The same
names are the keys of the YAML file given with ``--config``; flags typed on the command line win over the file.

``ospo_gym.agents`` (torch) is imported only when one of these commands runs, so ``ospo-gym envs`` stays light:
the options of a command are added to its parser on its first parse (see :func:`add_agent_commands`).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.util
import inspect
import json
import re
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ospo_gym.output_files import check_output_folder
from ospo_gym.registration import ENV_IDS

ENV_ARG = {"flag": "--env-arg", "metavar": "NAME=VALUE"}


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
    retriever: ``--env-arg retriever=bm25-full``)."""
    samples: int = 8
    """Sampled completions per prompt."""
    deterministic: bool = False
    """One greedy completion per prompt instead of samples."""
    seed: int = 12345
    """Seeds the sampled completions."""


@dataclass
class BenchOptions:
    """What ``ospo-gym bench`` runs: every agent variant of ``preset`` × task × seed, with identical budgets."""

    preset: str = "main"
    """``main`` (GRPO vs OSPO-PROP vs OSPO-RANK) or an ablation: ``width``, ``budget``, ``contiguity``, ``group``,
    ``retriever-shift``."""
    envs: list[str] | None = None
    """Tasks to run: names of built-in bench tasks (``additive``, ``interaction``, ``retrieval``, ``esci``) or env
    ids; default: the preset's."""
    algos: list[str] | None = None
    """Keep only the variants of these estimators; default: all of the preset's."""
    seeds: int = 3
    """Seeds 0..N-1; a seed fixes the tiny policy's initial weights (the same for every agent), sampling and prompts."""
    steps: int | None = None
    """Training steps per run; default: the task's (identical for every agent of a task)."""
    eval_every: int | None = None
    """Evaluate every this many steps (and at steps 0 and the last); default: the task's."""
    eval_samples: int = 16
    """Sampled completions per prompt of every evaluation (all the env's prompts, a fixed seed)."""
    eval_seed: int = 12345
    """Seed of every evaluation's sampling (identical across runs and steps)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict, metadata=ENV_ARG)
    """Env constructor argument for every task, repeatable (over the task's own)."""
    eval_env_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata={"flag": "--eval-env-arg", "metavar": "NAME=VALUE"}
    )
    """Also evaluate on the env built with these arguments over the training ones (e.g. another retriever)."""
    out: str | None = None
    """Output folder for results.json, results.md and the PNG curves; default: ``bench_results/<preset>``."""
    runs_dir: str | None = None
    """Parent of the run folders (metrics.jsonl per run); default: ``<out>/runs``."""
    jobs: int = 0
    """Runs in parallel, one process and one torch thread each; 0: one per CPU core."""
    progress: bool = True
    """Show the progress bar (on stderr)."""


# -- dataclass -> argparse -------------------------------------------------------------------------------------
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (``name: type = default`` then ``\"\"\"doc\"\"\"``)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):  # no source (frozen app): options without help
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, after in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = plain_text(after.value.value)
    return docs


def plain_text(doc: str) -> str:
    """A docstring as one line of terminal text: reST roles and double backticks dropped."""
    doc = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", doc)
    return " ".join(doc.replace("``", "").split())


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """``(base type, accepts None)`` of a field's type hint."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return (args[0] if len(args) == 1 else str), len(args) < len(typing.get_args(hint))
    return hint, False


def _scalar_parser(base: Any, optional: bool) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if optional and text.lower() in ("none", "null"):
            return None
        return base(text)

    parse.__name__ = getattr(base, "__name__", "value") + (" or none" if optional else "")
    return parse


_METAVARS = {int: "INT", float: "FLOAT", str: "TEXT"}


def add_dataclass_options(
    parser: argparse.ArgumentParser, cls: type, *, exclude: Sequence[str] = (), title: str | None = None
) -> None:
    """One option per field of ``cls`` (minus ``exclude``): ``--field-name``, typed from the annotation, help from
    the field's docstring. Defaults are *not* stored (``argparse.SUPPRESS``): only what was typed reaches the
    namespace, so a YAML file can fill the rest (:func:`resolve_options`)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    summary = plain_text((cls.__doc__ or "").split("\n\n")[0]) or None
    group = parser.add_argument_group(title or cls.__name__, summary.replace("%", "%%") if summary else None)
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = docs.get(f.name, "").replace("%", "%%")
        base, optional = _unwrap(hints[f.name])
        origin = typing.get_origin(base)
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        if f.metadata.get("positional"):
            group.add_argument(f.name, help=help_text)
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
            help_text += f" [default: {'on' if default else 'off'}]"
        elif origin is dict:
            kwargs.update(action="append", metavar=f.metadata.get("metavar", "NAME=VALUE"))
        elif origin is list:
            kwargs.update(nargs="+", metavar=f.name.rstrip("s").upper())
            help_text += f" [default: {default}]" if default is not None else ""
        else:
            kwargs.update(
                type=_scalar_parser(base, optional),
                metavar=_METAVARS.get(base, "VALUE") + ("|none" if optional else ""),
            )
            help_text += f" [default: {default}]"
        group.add_argument(flag, help=help_text, **kwargs)


def known_keys(*classes: type, exclude: Sequence[str] = ()) -> set[str]:
    return {f.name for cls in classes for f in dataclasses.fields(cls)} - set(exclude)


def load_yaml(path: str | None, allowed: set[str]) -> dict[str, Any]:
    """The mapping in a YAML file (``yaml.safe_load``), checked against the allowed keys."""
    if path is None:
        return {}
    try:
        import yaml
    except ImportError:
        raise UsageError("--config needs PyYAML: pip install pyyaml") from None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise UsageError(f"cannot read --config {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise UsageError(f"--config {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UsageError(f"--config {path} is not valid YAML: {' '.join(str(err).split())}") from None
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise UsageError(
            f"--config {path} is nested too deeply to read; a config is a flat mapping of option names to values"
        ) from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise UsageError(
            f"--config {path} must hold a mapping of option names to values, got {type(data).__name__}"
        )
    unknown = sorted(set(map(str, data)) - allowed)
    if unknown:
        raise UsageError(f"unknown keys {unknown} in --config {path}; known: {', '.join(sorted(allowed))}")
    return data


def resolve_options(cls: type, args: argparse.Namespace, from_yaml: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``cls`` that the YAML file or the command line set (command line wins); dict-typed fields
    merge (``NAME=VALUE`` pairs parsed over the file's mapping)."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        typed = getattr(args, f.name, dataclasses.MISSING)
        in_file = from_yaml.get(f.name, dataclasses.MISSING)
        if f.metadata.get("flag") or typing.get_origin(typing.get_type_hints(cls)[f.name]) is dict:
            merged: dict[str, Any] = {}
            if in_file is not dataclasses.MISSING:
                if not isinstance(in_file, dict):
                    raise UsageError(f"{f.name} in --config must be a mapping, got {in_file!r}")
                merged.update(in_file)
            if typed is not dataclasses.MISSING:
                merged.update(parse_kwargs(typed, f.metadata.get("flag", "--" + f.name)))
            if merged or in_file is not dataclasses.MISSING:
                values[f.name] = merged
        elif typed is not dataclasses.MISSING:
            values[f.name] = typed
        elif in_file is not dataclasses.MISSING:
            values[f.name] = _coerce(f.name, in_file, typing.get_type_hints(cls)[f.name])
    return values


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """A YAML value as the field's type, as the command line would parse it (YAML reads ``1e-3`` as a string)."""
    base, optional = _unwrap(hint)
    if value is None:
        if optional:
            return None
    elif base is bool:
        if isinstance(value, bool):
            return value
    elif typing.get_origin(base) is list:
        if isinstance(value, list):
            return [str(v) for v in value]
        if isinstance(value, str | int):
            return [str(value)]
    elif base in (int, float) and not isinstance(value, bool):
        if isinstance(value, int | float) and (base is float or isinstance(value, int)):
            return base(value)
        if isinstance(value, str):
            try:
                return base(value)
            except ValueError:
                pass
    elif base is str:
        if isinstance(value, str):
            return value
    else:
        return value
    expected = getattr(base, "__name__", str(base)) + (" or null" if optional else "")
    raise UsageError(f"{name} in --config must be {expected}, got {value!r}")


def parse_kwargs(pairs: Sequence[str], flag: str = "--env-arg") -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``; values are JSON when they parse, else strings."""
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"{flag} expects NAME=VALUE, got {pair!r}")
        try:
            kwargs[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            kwargs[name.strip()] = raw
        except RecursionError:  # json recurses once per nesting level
            raise UsageError(f"{flag} {name.strip()}=...: the JSON value is nested too deeply") from None
    return kwargs


class UsageError(ValueError):
    """Bad user input: one line on stderr, exit status 2. A ``ValueError``, which ``ospo_gym.cli.main`` reports that
    way, so it is caught even when ``cli`` runs as ``__main__`` (``python -m ospo_gym.cli``: two module copies)."""


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def exit_usage_error(parser: argparse.ArgumentParser, message: str) -> typing.NoReturn:
    """Exit with status 2 and argparse's error as one line on stderr, pointing at ``--help`` (argparse's own
    ``error`` prints the whole usage block first, which buries the one line that matters)."""
    parser.exit(2, f"{parser.prog}: error: {' '.join(message.split())} (see {parser.prog} --help)\n")


# -- shared checks -----------------------------------------------------------------------------------------------
def check_env_id(env_id: str) -> None:
    import gymnasium as gym

    if env_id not in gym.registry:
        raise UsageError(f"unknown env {env_id!r}; known: {', '.join(ENV_IDS)}")


def make_single_env(env_id: str, env_kwargs: dict[str, Any]) -> Any:
    """``gym.make(env_id, **env_kwargs)``, with construction errors reported as one line."""
    import gymnasium as gym

    check_env_id(env_id)
    try:
        return gym.make(env_id, **env_kwargs)
    except (TypeError, ValueError, OSError, LookupError) as err:
        raise UsageError(f"cannot build {env_id}: {one_line(err)}") from None


def check_algo(algo: str) -> None:
    from ospo_gym.agents import list_estimators

    if algo not in list_estimators():
        raise UsageError(f"unknown algo {algo!r}; known: {', '.join(list_estimators())}")


def check_agent_config(config: Any) -> None:
    """What ``AgentConfig`` accepts but only fails when used — a negative seed, a device this machine lacks, the
    vLLM engine without vLLM — reported now, before any model, run folder or environment is built."""
    from ospo_gym.agents.policy import resolve_device

    if config.seed < 0:
        raise UsageError(f"--seed must be >= 0 (numpy and gymnasium seeds are non-negative), got {config.seed}")
    if config.device is not None:
        try:
            resolve_device(config.device)
        except ValueError as err:
            raise UsageError(f"--device {config.device}: {one_line(err)}") from None
    if config.rollout == "vllm" and importlib.util.find_spec("vllm") is None:  # found, not imported: no side effects
        from ospo_gym.agents.vllm_rollout import INSTALL_HINT

        raise UsageError(f"--rollout vllm: vLLM is not installed; {INSTALL_HINT}")


def _quiet_transformers() -> None:
    """No per-load progress bars or advisory warnings from transformers in CLI output."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:  # without a network, huggingface_hub logs every retry of every file: a screenful before the one error
        from huggingface_hub.utils import logging as hub_logging
    except ImportError:
        return
    hub_logging.set_verbosity_error()


# -- train ---------------------------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from ospo_gym.agents import Agent, AgentConfig
    from ospo_gym.agents.logger import create_run_dir

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
    check_algo(config.algo)
    check_agent_config(config)
    check_output_folder(config.run_dir, what="--run-dir")
    env = make_single_env(opts.env, opts.env_kwargs)
    from ospo_gym.agents import distributed

    world = distributed.setup(config.device)  # under torchrun: one run folder, created by rank 0
    # a new folder of its own (suffixed if another run took the name this second); with --policy, Agent.learn
    # creates it, so that a policy which fails to load leaves no empty run folder behind
    run_dir = None
    if opts.tiny:
        run_dir = create_run_dir(config.run_dir, opts.env, config.algo, config.seed, world=world)
    _quiet_transformers()
    if opts.tiny:
        from ospo_gym.tiny_policy import build_env_policy

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
    from ospo_gym.agents import Agent, AgentConfig
    from ospo_gym.agents.checkpoint import find_checkpoint, run_folder_of

    overrides = {k: v for k, v in agent_values.items() if k in ("progress_bar", "tensorboard")}
    _quiet_transformers()
    checkpoint = find_checkpoint(opts.resume)  # a damaged or missing checkpoint is a CheckpointError: exit 2
    if run_folder_of(checkpoint) is None:
        overrides["run_dir"] = agent_values.get("run_dir", AgentConfig.run_dir)
    agent = Agent.load(checkpoint, verified=True, **overrides)
    if not _learn(agent, max(opts.steps - agent.num_steps, 0)):
        return DIVERGED_EXIT
    return _finish(agent, opts)


DIVERGED_EXIT = 1
"""Exit status of ``train`` when training diverged: a failed run, not a usage error (2)."""


def _learn(agent: Any, steps: int) -> bool:
    """``agent.learn(steps)``; ``False`` if training diverged, reported in one line on stderr. The agent is
    then closed without a final checkpoint (its weights may be non-finite); periodic checkpoints stay as they
    are."""
    from ospo_gym.agents import TrainingDivergedError

    try:
        agent.learn(steps)
    except TrainingDivergedError as err:
        agent.close()
        if agent.world.is_main:  # every rank stops alike; one line for all of them
            print(f"ospo-gym: error: {one_line(err)}", file=sys.stderr)
        return False
    return True


def _finish(agent: Any, opts: TrainOptions) -> int:
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
    from ospo_gym.agents import Agent
    from ospo_gym.agents.checkpoint import AGENT_JSON, CheckpointError, find_checkpoint

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
    _quiet_transformers()
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


# -- bench ---------------------------------------------------------------------------------------------------------
BENCH_EXCLUDE = ("algo", "seed", "run_dir", "progress_bar", "save_every")
"""AgentConfig fields that ``bench`` sets itself (the variant's estimator, the seed, the run folders)."""


def cmd_bench(args: argparse.Namespace) -> int:
    from ospo_gym import bench
    from ospo_gym.agents import AgentConfig

    file_values = load_yaml(args.config, known_keys(BenchOptions, AgentConfig, exclude=BENCH_EXCLUDE))
    opts = BenchOptions(**resolve_options(BenchOptions, args, file_values))
    overrides = {
        k: v for k, v in resolve_options(AgentConfig, args, file_values).items() if k not in BENCH_EXCLUDE
    }
    try:
        plan = bench.make_plan(
            opts.preset,
            tasks=opts.envs,
            algos=opts.algos,
            seeds=opts.seeds,
            steps=opts.steps,
            eval_every=opts.eval_every,
            eval_samples=opts.eval_samples,
            eval_seed=opts.eval_seed,
            env_kwargs=opts.env_kwargs,
            eval_env_kwargs=opts.eval_env_kwargs,
            config_overrides=overrides,
        )
        for task in plan.tasks:  # fail before any run starts
            make_single_env(task.env_id, task.env_kwargs).close()
            if task.eval_env_kwargs:
                make_single_env(task.env_id, {**task.env_kwargs, **task.eval_env_kwargs}).close()
        for variant in plan.variants:
            check_algo(variant.algo)
            check_agent_config(AgentConfig.tiny_cpu(**{**variant.overrides, **overrides}))  # every variant's is valid
    except bench.PlanError as err:
        raise UsageError(str(err)) from None
    if opts.jobs < 0:
        raise UsageError(f"--jobs must be >= 0 (0: one per CPU core), got {opts.jobs}")
    out = check_output_folder(opts.out, what="--out") if opts.out else Path("bench_results") / opts.preset
    if opts.runs_dir is not None:
        check_output_folder(opts.runs_dir, what="--runs-dir")
    bench.check_outputs(plan, out, opts.runs_dir)  # results.json, results.md, the PNGs: before any run starts
    command = command_line("bench", args)
    results = bench.run_bench(
        plan, out, runs_dir=opts.runs_dir, jobs=opts.jobs, progress=opts.progress, command=command
    )
    print(bench.console_summary(results, out))
    return 0


def command_line(name: str, args: argparse.Namespace) -> str:
    """The command as typed, rebuilt from the namespace: only typed options are in it (defaults are suppressed)."""
    import shlex

    words = ["ospo-gym", name]
    for action in _PARSERS[name]._actions:
        value = getattr(args, action.dest, None)
        if (
            action.dest == "help"
            or value is None
            or (action.dest != "config" and action.default is not argparse.SUPPRESS)
        ):
            continue
        flag = action.option_strings[0] if action.option_strings else None
        if isinstance(action, argparse.BooleanOptionalAction):
            words.append(flag if value else "--no-" + flag[2:])
        elif action.nargs == "+":
            words += [flag, *map(str, value)]
        elif isinstance(action, argparse._AppendAction):
            for item in value:
                words += [flag, item]
        elif flag is None:
            words.append(str(value))
        else:
            words += [flag, str(value)]
    return " ".join(shlex.quote(w) for w in words)


# -- wiring --------------------------------------------------------------------------------------------------------
def _train_options(parser: argparse.ArgumentParser) -> None:
    from ospo_gym.agents import AgentConfig

    add_dataclass_options(parser, TrainOptions, title="run")
    add_dataclass_options(parser, AgentConfig, title="agent (AgentConfig)")


def _eval_options(parser: argparse.ArgumentParser) -> None:
    add_dataclass_options(parser, EvalOptions, title="evaluation")


def _bench_options(parser: argparse.ArgumentParser) -> None:
    from ospo_gym.agents import AgentConfig

    add_dataclass_options(parser, BenchOptions, title="benchmark")
    add_dataclass_options(
        parser, AgentConfig, exclude=BENCH_EXCLUDE, title="agent overrides for every run (AgentConfig)"
    )


COMMANDS: dict[
    str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
] = {
    "train": (
        "train one agent on one env; writes a run folder with metrics.jsonl and a checkpoint",
        _train_options,
        cmd_train,
    ),
    "eval": (
        "mean reward of a checkpoint on an env (optionally with other env arguments); prints JSON",
        _eval_options,
        cmd_eval,
    ),
    "bench": (
        "head-to-head benchmark: agents x tasks x seeds with identical budgets; JSON, Markdown, PNG",
        _bench_options,
        cmd_bench,
    ),
}


_PARSERS: dict[str, argparse.ArgumentParser] = {}


def add_agent_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``train``, ``eval`` and ``bench`` to the CLI's subparsers.

    Their options need ``ospo_gym.agents`` (torch), so each parser gets them on its first parse — when the command
    was chosen — not when the parser is built. Their argparse errors are one line, like every error of the CLI.
    """
    for name, (help_text, add_options, func) in COMMANDS.items():
        parser = sub.add_parser(name, help=help_text, description=help_text + ". " + _epilog(name))
        parser.add_argument(
            "--config",
            default=None,
            metavar="YAML",
            help="YAML file of option values (keys: the option names with underscores); flags typed here win",
        )
        parser.set_defaults(func=func)
        _PARSERS[name] = parser
        _lazy_options(parser, add_options)


def _epilog(name: str) -> str:
    return {
        "train": "Example: ospo-gym train --tiny --env ospo/AdditiveKeywords-v0 --env-arg shared_weights=true --steps 150",
        "eval": "Example: ospo-gym eval runs/<run folder>/checkpoint --samples 16",
        "bench": "Example: ospo-gym bench (the main job, about 4 min on 2 idle CPU cores); ospo-gym bench --preset width",
    }[name]


def _lazy_options(
    parser: argparse.ArgumentParser, add_options: Callable[[argparse.ArgumentParser], None]
) -> None:
    parse_known_args = parser.parse_known_args
    state = {"ready": False}

    def parse_with_options(
        args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> Any:
        if not state["ready"]:
            state["ready"] = True
            try:
                add_options(parser)
            except ImportError as err:
                parser.error(
                    f"{one_line(err)} (this command needs the agents extra: pip install 'ospo-gym[agents]')"
                )
        namespace, extras = parse_known_args(args, namespace)
        if extras:  # reported here, in one line, rather than by the top-level parser with its usage
            error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras

    def error(message: str) -> typing.NoReturn:
        exit_usage_error(parser, message)

    parser.parse_known_args = parse_with_options  # type: ignore[method-assign]
    parser.error = error  # type: ignore[method-assign]
