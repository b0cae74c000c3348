"""Step time of OSPO-PROP inside TRL (``OSPOTrainer``) over TRL's own GRPO (``GRPOTrainer``), interleaved.

Both trainers start from the same tiny random Qwen2 (built here on the env's texts, as
``bench_step_ratio.py`` builds it), take the same prompts (``prompt_dataset(env)``) and reward
(``reward_function(env)``) of the same env, and the same config: G completions per prompt, ``--prompts`` prompts per
step, ``max_completion_length``, fp32 on the CPU, AdamW at a constant lr, no KL, one update per generation, TRL's
default "dapo" loss, gradient checkpointing off, ``torch.set_num_threads(threads)``. OSPO-PROP adds M coalitions
of width <= w_max per completion through the env's oracle.

Interleaving: each trainer runs its own ``train()`` in a thread of its own, and a callback passes a baton at every
``on_step_end`` so that exactly one runs at a time, GRPO and OSPO steps alternating; both see the same machine load.
A trainer's step is the wall time from getting the baton back to its next ``on_step_end`` (sampling, reward,
credit, loss, backward, optimizer, logging). ``--warmup`` steps of each are not timed.

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

import ospo_gym  # noqa: F401
from ospo_gym.agents import build_tiny_qwen2, load_policy

ENV_ID = "ospo/SyntheticRetrieval-v0"


class Baton:
    """Strict alternation between two threads: whoever holds the baton runs, then hands it over and waits."""

    def __init__(self, first: str, second: str) -> None:
        self._turn = first
        self._names = (first, second)
        self._changed = threading.Condition()
        self.failed = False

    def wait(self, name: str) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._turn == name or self.failed)

    def hand_over(self, name: str) -> None:
        with self._changed:
            self._turn = self._names[1] if name == self._names[0] else self._names[0]
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
            baton.hand_over(name)  # the other trainer finishes its last step

    return StepClock()


def summary(seconds: list[float]) -> dict[str, float]:
    return {"min": round(min(seconds), 4), "median": round(float(np.median(seconds)), 4), "n": len(seconds)}


def settings(args: argparse.Namespace, output_dir: str) -> dict[str, Any]:
    return dict(
        output_dir=output_dir,
        per_device_train_batch_size=args.group * args.prompts,
        num_generations=args.group,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        optim="adamw_torch",
        max_grad_norm=1.0,
        beta=0.0,
        num_iterations=1,
        scale_rewards="group",
        gradient_checkpointing=False,
        max_steps=args.warmup + args.steps,
        use_cpu=True,
        bf16=False,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=args.seed,
        dataloader_num_workers=0,
    )


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
        baton = Baton("grpo", "ospo_prop")
        clocks = {"grpo": step_clock(baton, "grpo"), "ospo_prop": step_clock(baton, "ospo_prop")}

        def model() -> Any:
            return AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)

        grpo = GRPOTrainer(model=model(), reward_funcs=reward, args=GRPOConfig(**settings(args, scratch)),
                           train_dataset=dataset, processing_class=tokenizer, callbacks=[clocks["grpo"]])  # fmt: skip
        ospo_args = OSPOConfig(**settings(args, scratch), algo="ospo_prop", max_coalitions=args.coalitions,
                               w_max=args.w_max)  # fmt: skip
        ospo = OSPOTrainer(model(), reward, ospo_args, dataset, processing_class=tokenizer, env=env,
                           callbacks=[clocks["ospo_prop"]])  # fmt: skip
        errors: list[BaseException] = []

        def run(trainer: Any) -> None:
            try:
                trainer.train()
            except BaseException as err:  # the other thread must not wait for a baton that never comes
                errors.append(err)
                baton.fail()

        threads = [threading.Thread(target=run, args=(t,), daemon=True) for t in (grpo, ospo)]
        with contextlib.redirect_stdout(io.StringIO()):  # TRL prints a metrics dict per logged step
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        if errors:
            raise errors[0]

    timed = {name: clock.seconds[args.warmup :] for name, clock in clocks.items()}
    credit = [row["credit/seconds"] for row in ospo.state.log_history if "credit/seconds" in row][args.warmup :]
    lengths = {
        name: float(np.mean([row["completions/mean_length"] for row in t.state.log_history if "completions/mean_length" in row]))
        for name, t in (("grpo", grpo), ("ospo_prop", ospo))
    }  # fmt: skip
    result = {
        "command": "python benchmarks/bench_trl_ospo.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"
        ),  # fmt: skip
        "what": "seconds per optimizer step, OSPOTrainer (ospo_prop) over TRL's GRPOTrainer, steps interleaved",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "trl": trl.__version__},  # fmt: skip
        "machine": {"cpu_count": os.cpu_count(), "threads": args.threads,
                    "load_average_1min_at_start": round(load_at_start, 2),
                    "load_average_1min_at_end": round(os.getloadavg()[0], 2)},  # fmt: skip
        "env": ENV_ID,
        "grpo": summary(timed["grpo"]),
        "ospo_prop": summary(timed["ospo_prop"]),
        "ospo_credit_seconds": summary(credit),
        "completion_tokens_mean": {name: round(value, 2) for name, value in lengths.items()},
        "target": "ospo_prop / grpo <= 1.3",
    }
    result["ratio_median"] = round(result["ospo_prop"]["median"] / result["grpo"]["median"], 3)
    result["ratio_min"] = round(result["ospo_prop"]["min"] / result["grpo"]["min"], 3)
    result["met"] = result["ratio_median"] <= 1.3 and result["ratio_min"] <= 1.3
    text = json.dumps(result, indent=1)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
