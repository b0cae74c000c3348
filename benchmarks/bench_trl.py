"""Step time of our GRPO loop against TRL's ``GRPOTrainer`` on the same tiny Qwen2, prompts, reward and budget.

Both sides: the same random Qwen2 (built once here with ``build_tiny_qwen2``), prompts of the additive task, its
reward (``env.unwrapped.rewards(prompt_ids, texts)``, wrapped as a TRL reward function), G completions per prompt,
``max_new_tokens`` / ``max_completion_length``, fp32 on CPU, ``torch.set_num_threads(threads)``, AdamW with the
same lr, no KL (beta = 0), one update per generation batch (num_iterations = 1), loss "dapo" / token_mean,
gradient checkpointing off. TRL is also timed with its default gradient checkpointing on.

A step is the wall time of one optimizer step with everything around it (sampling, reward, advantages, loss,
backward, AdamW, logging). The two loops are interleaved step by step in one process: a TRL callback runs one
step of ours after each TRL step, so both see the same machine load. TRL's step is the time from the end of that
callback to TRL's next ``on_step_end``. Each setting does this with TRL's gradient checkpointing off, then on;
``--warmup`` steps of each are not timed.

    python benchmarks/bench_trl.py          # writes benchmarks/results/trl_vs_ours.json
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
import time
import warnings
from pathlib import Path

import gymnasium as gym
import torch
from _common import summary, trl_grpo_settings, trl_matched_agent_config, write_report

import ospo_gym  # noqa: F401
from ospo_gym.agents import Agent, build_tiny_qwen2, load_policy

RESULTS = Path(__file__).parent / "results"
ENV_ID = "ospo/AdditiveKeywords-v0"
# (completions per step, max_new_tokens): the anchors measured for TRL 1.16 on this machine
SETTINGS = [(8, 16), (32, 16), (32, 64)]
ANCHORS_TRL_MIN_SECONDS = {"8x16": 0.051, "32x16": 0.107, "32x64": 0.285}


def task_texts(env: gym.Env) -> list[str]:
    base = env.unwrapped
    return [base.prompt(p) for p in base.prompt_ids] + [" ".join(base.vocabulary)] * 3


def build_model(directory: Path, hidden_size: int, heads: int) -> Path:
    env = gym.make(ENV_ID)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_tiny_qwen2(task_texts(env), directory, hidden_size=hidden_size, heads=heads)


def our_agent(model_dir: Path, group: int, prompts: int, tokens: int, args: argparse.Namespace, run_dir: str) -> Agent:
    config = trl_matched_agent_config("grpo", group, prompts, tokens, args, run_dir)
    return Agent(ENV_ID, policy=str(model_dir), config=config)


def time_pair(
    model_dir: Path, group: int, prompts: int, tokens: int, args: argparse.Namespace, scratch: str, checkpointing: bool
) -> tuple[list[float], list[float]]:
    """``(ours, trl)`` seconds per step, the two loops interleaved step by step."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    env = gym.make(ENV_ID).unwrapped
    ids = list(env.prompt_ids)
    dataset = Dataset.from_dict({"prompt": [env.prompt(p) for p in ids], "prompt_id": ids})

    def additive_reward(prompts: list[str], completions: list[str], prompt_id: list[int], **_: object) -> list[float]:
        return [float(r) for r in env.rewards(list(prompt_id), list(completions))]

    agent = our_agent(model_dir, group, prompts, tokens, args, scratch)
    logger = agent._run_logger()

    class Interleave(TrainerCallback):
        """After each TRL step: note its time, run and time one step of ours, restart TRL's clock."""

        def __init__(self) -> None:
            self.trl: list[float] = []
            self.ours: list[float] = []
            self.resumed: float | None = None

        def on_step_begin(self, *_: object, **__: object) -> None:
            if self.resumed is None:
                self.resumed = time.perf_counter()

        def on_step_end(self, *_: object, **__: object) -> None:
            self.trl.append(time.perf_counter() - self.resumed)
            start = time.perf_counter()
            metrics = agent.train_step()  # what Agent.learn does per step: a step, then a log line
            logger.log(agent.num_steps, metrics)
            self.ours.append(time.perf_counter() - start)
            self.resumed = time.perf_counter()

    config = GRPOConfig(
        **trl_grpo_settings(
            scratch, group, prompts, tokens, args,
            weight_decay=0.0, loss_type="dapo", gradient_checkpointing=checkpointing, fp16=False,
        )
    )  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    _, tokenizer = load_policy(model_dir, device="cpu")
    clock = Interleave()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=additive_reward,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[clock],
    )
    with contextlib.redirect_stdout(io.StringIO()):  # TRL prints a metrics dict per logged step
        trainer.train()
    agent.close()
    return clock.ours[args.warmup :], clock.trl[args.warmup :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group", type=int, default=8, help="G, completions per prompt")
    parser.add_argument("--settings", default=",".join(f"{b}x{t}" for b, t in SETTINGS),
                        help="comma-separated BxT: completions per step x max_new_tokens")  # fmt: skip
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each loop per setting and mode")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps at the start")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-trl-checkpointing", action="store_true", help="skip TRL with gradient checkpointing on")
    parser.add_argument("--out", type=Path, default=RESULTS / "trl_vs_ours.json")
    args = parser.parse_args()

    import transformers
    import trl

    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    load_at_start = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = build_model(Path(scratch) / "tiny_qwen2", args.hidden_size, args.heads)
        model, tokenizer = load_policy(model_dir, device="cpu")
        parameters = sum(p.numel() for p in model.parameters())
        for setting in args.settings.split(","):
            batch, tokens = (int(x) for x in setting.split("x"))
            if batch % args.group:
                raise ValueError(f"completions per step {batch} must be a multiple of G={args.group}")
            prompts = batch // args.group
            sides: dict[str, list[float]] = {}
            sides["ours"], sides["trl"] = time_pair(model_dir, args.group, prompts, tokens, args, scratch, False)
            if not args.no_trl_checkpointing:
                sides["ours_beside_trl_checkpointing"], sides["trl_checkpointing"] = time_pair(
                    model_dir, args.group, prompts, tokens, args, scratch, True
                )
            row = {
                "setting": setting,
                "completions_per_step": batch,
                "prompts_per_step": prompts,
                "max_new_tokens": tokens,
                **{side: summary(seconds) for side, seconds in sides.items() if seconds},
                "trl_anchor_min_seconds": ANCHORS_TRL_MIN_SECONDS.get(setting),
            }
            row["ratio_ours_over_trl_min"] = round(row["ours"]["min"] / row["trl"]["min"], 3)
            row["ratio_ours_over_trl_median"] = round(row["ours"]["median"] / row["trl"]["median"], 3)
            if "trl_checkpointing" in row:
                beside, checkpointing = row["ours_beside_trl_checkpointing"], row["trl_checkpointing"]
                row["ratio_ours_over_trl_checkpointing_min"] = round(beside["min"] / checkpointing["min"], 3)
                row["ratio_ours_over_trl_checkpointing_median"] = round(beside["median"] / checkpointing["median"], 3)
            results.append(row)
            print(json.dumps(row), flush=True)

    report = {
        "command": "python benchmarks/bench_trl.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in {"out", "no_trl_checkpointing"}
        ),
        "what": "seconds per training step (end of one optimizer step to the end of the next), steady state",
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
        },
        "machine": {"cpu_count": os.cpu_count(), "threads": args.threads, "load_average_1min_at_start": round(load_at_start, 2)},
        "model": {"type": "tiny random Qwen2 (build_tiny_qwen2)", "parameters": parameters, "vocab": len(tokenizer),
                  "hidden_size": args.hidden_size, "heads": args.heads, "layers": 2, "dtype": "float32"},  # fmt: skip
        "common": {"group_size": args.group, "beta": 0.0, "num_iterations": 1, "loss": "token_mean (TRL dapo)",
                   "optimizer": "AdamW", "lr": args.lr, "max_grad_norm": 1.0, "temperature": 1.0, "top_p": 1.0,
                   "env": ENV_ID},  # fmt: skip
        "target": "ours <= 0.8 x TRL (gradient checkpointing off on both)",
        "met": all(r["ratio_ours_over_trl_min"] <= 0.8 and r["ratio_ours_over_trl_median"] <= 0.8 for r in results),
        "results": results,
    }
    write_report(report, args.out)


if __name__ == "__main__":
    main()
