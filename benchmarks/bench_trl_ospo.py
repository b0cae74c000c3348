"""Step time of OSPO-PROP inside TRL (``OSPOTrainer``) over TRL's own GRPO (``GRPOTrainer``), interleaved, and
both against ospo-gym's own agent running GRPO and OSPO-PROP on the same model, prompts and env.

Both trainers start from the same tiny random Qwen2 (built here on the env's texts, as
``bench_step_ratio.py`` builds it), take the same prompts (``prompt_dataset(env)``) and reward
(``reward_function(env)``) of the same env, and the same config: G completions per prompt, ``--prompts`` prompts per
step, ``max_completion_length``, fp32 on the CPU, AdamW at a constant lr, no KL, one update per generation, TRL's
default "dapo" loss, gradient checkpointing off, ``torch.set_num_threads(threads)``. OSPO-PROP adds M coalitions
of width <= w_max per completion through the env's oracle.

Our agent (``ospo_gym.agents.Agent``, one per algorithm) gets the same settings in its own terms: G, prompts per step,
``max_new_tokens``, lr, ``beta=0``, one update per generation, ``token_mean`` loss (TRL's "dapo"), ``max_grad_norm``,
group-scaled Â with the unbiased std, M and w_max for OSPO-PROP; it samples its prompts from the same env's prompt
ids, rendered as it renders them for the policy (plain text for the tiny Qwen2, which has no chat template, as
``prompt_dataset`` renders them for TRL).

Interleaving: four arms take turns, TRL GRPO, TRL OSPO-PROP, our GRPO, our OSPO-PROP, one optimizer step each, in a
cycle. Each arm runs in a thread of its own and passes a baton after every step (TRL: at ``on_step_end``), so that
exactly one runs at a time and all see the same machine load. An arm's step is the wall time from getting the baton
back to the end of its next step (sampling, reward, credit, loss, backward, optimizer, logging). ``--warmup`` steps
of each are not timed.

    python benchmarks/bench_trl_ospo.py                 # prints the result as JSON
    python benchmarks/bench_trl_ospo.py --out FILE.json # also writes it
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from _common import summary, trl_grpo_settings, trl_matched_agent_config

import ospo_gym  # noqa: F401
from ospo_gym.agents import Agent, build_tiny_qwen2, load_policy
from ospo_gym.agents.logger import PERF_COMPLETION_TOKENS, PERF_CREDIT_SECONDS

ENV_ID = "ospo/SyntheticRetrieval-v0"


class Baton:
    """Strict turns among threads, in the cycle ``names``: whoever holds the baton runs, then hands it to the next
    name and waits for its turn to come round again."""

    def __init__(self, *names: str) -> None:
        self._names = names
        self._turn = names[0]
        self._changed = threading.Condition()
        self.failed = False

    def wait(self, name: str) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._turn == name or self.failed)

    def hand_over(self, name: str) -> None:
        with self._changed:
            self._turn = self._names[(self._names.index(name) + 1) % len(self._names)]
            self._changed.notify_all()

    def fail(self) -> None:
        with self._changed:
            self.failed = True
            self._changed.notify_all()


def step_clock(baton: Baton, name: str) -> Any:
    """A TRL callback that records this trainer's step times and passes the baton after every step."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.resumed = 0.0

        def on_train_begin(self, *_: object, **__: object) -> None:
            baton.wait(name)
            self.resumed = time.perf_counter()

        def on_step_end(self, *_: object, **__: object) -> None:
            self.seconds.append(time.perf_counter() - self.resumed)
            baton.hand_over(name)
            baton.wait(name)
            self.resumed = time.perf_counter()

        def on_train_end(self, *_: object, **__: object) -> None:
            baton.hand_over(name)  # the next arm finishes its last step

    return StepClock()


def our_agent(model_dir: Path, algo: str, args: argparse.Namespace, run_dir: str) -> Agent:
    """ospo-gym's own agent with the TRL arms' settings (see the module docstring)."""
    config = trl_matched_agent_config(
        algo, args.group, args.prompts, args.max_new_tokens, args, run_dir,
        temperature=1.0, top_p=1.0, scale_rewards="group", w_max=args.w_max, max_coalitions=args.coalitions,
    )  # fmt: skip
    return Agent(ENV_ID, policy=str(model_dir), config=config)


def run_ours(agent: Agent, baton: Baton, name: str, steps: int) -> dict[str, list[float]]:
    """``steps`` steps of our agent, one per turn of the baton: seconds, credit seconds and mean completion length
    of each step."""
    logger = agent._run_logger()
    record: dict[str, list[float]] = {"seconds": [], "credit": [], "tokens": []}
    for _ in range(steps):
        baton.wait(name)
        if baton.failed:
            break
        start = time.perf_counter()
        metrics = agent.train_step()  # what Agent.learn does per step: a step, then a log line
        logger.log(agent.num_steps, metrics)
        record["seconds"].append(time.perf_counter() - start)
        record["credit"].append(float(metrics[PERF_CREDIT_SECONDS]))
        record["tokens"].append(float(metrics[PERF_COMPLETION_TOKENS]))
        baton.hand_over(name)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group", type=int, default=8, help="G, completions per prompt")
    parser.add_argument("--prompts", type=int, default=2, help="prompts per step")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--coalitions", type=int, default=96, help="M")
    parser.add_argument("--w-max", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each trainer")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps at the start")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()

    import transformers
    import trl
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from ospo_gym.integrations.trl import OSPOConfig, OSPOTrainer, prompt_dataset, reward_function

    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    load_at_start = os.getloadavg()[0]
    env = gym.make(ENV_ID)
    base = env.unwrapped
    with tempfile.TemporaryDirectory() as scratch:
        texts = [base.prompt(p) for p in base.prompt_ids] + [" ".join(base.vocabulary)] * 3
        model_dir = build_tiny_qwen2(texts, Path(scratch) / "tiny_qwen2", seed=args.seed)
        _, tokenizer = load_policy(model_dir, device="cpu")
        dataset, reward = prompt_dataset(env, tokenizer), reward_function(env)
        baton = Baton("grpo", "ospo_prop", "ours_grpo", "ours_ospo_prop")
        clocks = {"grpo": step_clock(baton, "grpo"), "ospo_prop": step_clock(baton, "ospo_prop")}
        ours = {name: our_agent(model_dir, name.removeprefix("ours_"), args, str(Path(scratch) / name))
                for name in ("ours_grpo", "ours_ospo_prop")}  # fmt: skip
        ours_times: dict[str, dict[str, list[float]]] = {}

        def model() -> Any:
            return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)

        trl_settings = trl_grpo_settings(scratch, args.group, args.prompts, args.max_new_tokens, args)
        grpo = GRPOTrainer(model=model(), reward_funcs=reward, args=GRPOConfig(**trl_settings),
                           train_dataset=dataset, processing_class=tokenizer, callbacks=[clocks["grpo"]])  # fmt: skip
        ospo_args = OSPOConfig(**trl_settings, algo="ospo_prop", max_coalitions=args.coalitions,
                               w_max=args.w_max)  # fmt: skip
        ospo = OSPOTrainer(model(), reward, ospo_args, dataset, processing_class=tokenizer, env=env,
                           callbacks=[clocks["ospo_prop"]])  # fmt: skip
        errors: list[BaseException] = []

        def run(trainer: Any) -> None:
            try:
                trainer.train()
            except BaseException as err:  # the other threads must not wait for a baton that never comes
                errors.append(err)
                baton.fail()

        def run_agent(name: str) -> None:
            try:
                ours_times[name] = run_ours(ours[name], baton, name, args.warmup + args.steps)
            except BaseException as err:
                errors.append(err)
                baton.fail()

        threads = [threading.Thread(target=run, args=(t,), daemon=True) for t in (grpo, ospo)]
        threads += [threading.Thread(target=run_agent, args=(name,), daemon=True) for name in ours]
        with contextlib.redirect_stdout(io.StringIO()):  # TRL prints a metrics dict per logged step
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        for agent in ours.values():
            agent.close()
        if errors:
            raise errors[0]

    timed = {name: clock.seconds[args.warmup :] for name, clock in clocks.items()}
    timed.update({name: record["seconds"][args.warmup :] for name, record in ours_times.items()})
    credit = [row["credit/seconds"] for row in ospo.state.log_history if "credit/seconds" in row][args.warmup :]
    lengths = {
        name: float(np.mean([row["completions/mean_length"] for row in t.state.log_history if "completions/mean_length" in row]))
        for name, t in (("grpo", grpo), ("ospo_prop", ospo))
    }  # fmt: skip
    lengths.update({name: float(np.mean(record["tokens"])) for name, record in ours_times.items()})
    result = {
        "command": "python benchmarks/bench_trl_ospo.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"
        ),  # fmt: skip
        "what": "seconds per optimizer step, OSPOTrainer (ospo_prop) over TRL's GRPOTrainer, and both against "
                "ospo-gym's own Agent (grpo, ospo_prop); the four arms' steps interleaved",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "trl": trl.__version__},  # fmt: skip
        "machine": {"cpu_count": os.cpu_count(), "threads": args.threads,
                    "load_average_1min_at_start": round(load_at_start, 2),
                    "load_average_1min_at_end": round(os.getloadavg()[0], 2)},  # fmt: skip
        "env": ENV_ID,
        "grpo": summary(timed["grpo"]),
        "ospo_prop": summary(timed["ospo_prop"]),
        "ours_grpo": summary(timed["ours_grpo"]),
        "ours_ospo_prop": summary(timed["ours_ospo_prop"]),
        "ospo_credit_seconds": summary(credit),
        "ours_ospo_credit_seconds": summary(ours_times["ours_ospo_prop"]["credit"][args.warmup :]),
        "completion_tokens_mean": {name: round(value, 2) for name, value in lengths.items()},
        "target": "ospo_prop / grpo <= 1.3",
    }
    result["ratio_median"] = round(result["ospo_prop"]["median"] / result["grpo"]["median"], 3)
    result["ratio_min"] = round(result["ospo_prop"]["min"] / result["grpo"]["min"], 3)
    result["met"] = result["ratio_median"] <= 1.3 and result["ratio_min"] <= 1.3

    def ratio(over: str, under: str, stat: str) -> float:
        return round(result[over][stat] / result[under][stat], 3)

    # against our agent: each TRL arm over ours with the same algorithm, and our own OSPO-PROP / GRPO
    result["against_ours"] = {
        f"{arm}_over_ours_{arm}": {stat: ratio(arm, f"ours_{arm}", stat) for stat in ("median", "min")}
        for arm in ("grpo", "ospo_prop")
    }
    result["against_ours"]["ours_ospo_prop_over_ours_grpo"] = {
        stat: ratio("ours_ospo_prop", "ours_grpo", stat) for stat in ("median", "min")
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
