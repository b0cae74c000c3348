"""Policies: load a Hugging Face causal LM (optionally with LoRA), or build a tiny random Qwen2 for CPU work."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ospo_gym.errors import one_line

# Qwen2's pre-tokenisation: contractions, letter runs with one leading non-letter, single digits, punctuation
# runs, newlines, spaces. Using it (and NFC, byte-level BPE) makes our tokenizer load back as Qwen2Tokenizer
# unchanged, which is what AutoTokenizer picks for a qwen2 config.
QWEN2_PRETOKENIZE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


def default_device() -> torch.device:
    """``cuda`` when available, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a ``torch.device`` (``None``: :func:`default_device`).

    Raises ``ValueError`` for a name torch does not know, or a CUDA device this machine does not have (torch built
    without CUDA, no GPU visible, or an index past the last GPU), before any model is moved there.
    """
    if device is None:
        return default_device()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device {str(device)!r} is not a device torch knows; use cpu, cuda or cuda:N (or mps, xpu, ...)"
        ) from None
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"device {str(device)!r} needs CUDA, but torch {torch.__version__} sees no CUDA GPU; use device "
                "'cpu' or leave the device unset (cuda when available, else cpu)"
            )
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"device {str(device)!r}: this machine has {count} CUDA GPU(s), cuda:0..cuda:{count - 1}")
    return resolved


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA, fp32 elsewhere."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def quiet_transformers() -> None:
    """No per-load progress bars, advisory warnings or retry logs from transformers and the Hugging Face Hub:
    what the CLI and the benchmark call before they load a model."""
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


def load_policy(
    name_or_path: str | Path,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    lora_rank: int | None = None,
    lora_alpha: float = 16.0,
    seed: int = 0,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` with ``AutoModelForCausalLM`` / ``AutoTokenizer`` from a local path or hub name.

    The tokenizer pads on the left (for batched generation) and gets ``pad = eos`` if it has no pad token.
    With ``lora_rank`` the model is wrapped in LoRA adapters on every linear layer (needs ``peft``), initialised
    from ``seed``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=dtype or default_dtype(device))
    except Exception as err:
        _raise_for_folder(name_or_path, err)
        raise
    prepare_tokenizer(tokenizer)
    model.to(device)
    if lora_rank is not None:
        model = add_lora(model, lora_rank, lora_alpha, seed=seed)
    return model, tokenizer


def resolve_policy(
    policy: Any,
    *,
    device: str | torch.device | None = None,
    lora_rank: int | None = None,
    lora_alpha: float = 16.0,
    seed: int = 0,
) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from what a user passes as a policy.

    Accepts a path or hub name (:func:`load_policy`; a folder with ``adapter_config.json`` is a saved LoRA policy),
    a ``(model, tokenizer)`` pair, or a model whose tokenizer is loaded from ``model.name_or_path``. ``lora_rank``
    wraps a model that has no adapters yet in new ones initialised from ``seed``.
    """
    if policy is None:
        raise ValueError(
            "pass policy=<path or hub name of a causal LM>, a (model, tokenizer) pair or a model; for CPU tests "
            "build one with ospo_gym.agents.build_tiny_qwen2(texts, directory)"
        )
    if isinstance(policy, str | Path):
        if (Path(policy) / "adapter_config.json").is_file():
            return load_lora_policy(policy, device=device)
        return load_policy(policy, device=device, lora_rank=lora_rank, lora_alpha=lora_alpha, seed=seed)
    if isinstance(policy, tuple) and len(policy) == 2:
        model, tokenizer = policy
    else:
        from transformers import AutoTokenizer

        model, tokenizer = policy, AutoTokenizer.from_pretrained(policy.name_or_path)
    if device is not None:
        model.to(device)
    if lora_rank is not None and not is_lora(model):
        model = add_lora(model, lora_rank, lora_alpha, seed=seed)
    return model, prepare_tokenizer(tokenizer)


def load_lora_policy(path: str | Path, *, device: str | torch.device | None = None) -> tuple[Any, Any]:
    """A saved LoRA policy: trainable adapters on the base model their ``adapter_config.json`` names (needs peft)."""
    try:
        from peft import AutoPeftModelForCausalLM
    except ImportError as error:
        raise ImportError(f"{path} holds LoRA adapters; loading them needs peft: pip install peft") from error
    from transformers import AutoTokenizer

    device = resolve_device(device)
    try:
        dtype = default_dtype(device)
        model = AutoPeftModelForCausalLM.from_pretrained(str(path), is_trainable=True, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception as err:
        _raise_for_folder(path, err)
        raise
    return model.to(device), prepare_tokenizer(tokenizer)


class PolicyLoadError(OSError):
    """A local model folder whose files do not load (damaged, or not a causal LM); the message names the
    folder and the loader's error. An ``OSError``, like the loaders' own errors for a missing file."""


def _raise_for_folder(path: str | Path, err: Exception) -> None:
    """Re-raise a loader's failure on a local folder as one :class:`PolicyLoadError`; return for anything else
    (hub names, a missing package, memory), which the caller then re-raises unchanged."""
    if isinstance(err, ImportError | MemoryError) or not Path(path).is_dir():
        return
    message = one_line(str(err))[:300] or "no details"
    raise PolicyLoadError(f"{path} does not hold a loadable model ({type(err).__name__}: {message})") from err


def is_lora(model: Any) -> bool:
    """Is ``model`` wrapped in peft adapters?"""
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def frozen_copy(model: Any) -> Any:
    """A deep copy in eval mode with gradients off (the KL reference)."""
    reference = copy.deepcopy(model)
    reference.eval()
    reference.requires_grad_(False)
    return reference


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Left padding, and a pad token (the EOS token if there is none). Returns the tokenizer."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError("the tokenizer has neither a pad nor an EOS token; set tokenizer.eos_token first")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def add_lora(model: Any, rank: int, alpha: float, *, seed: int = 0) -> Any:
    """Wrap ``model`` with LoRA adapters (rank ``rank``) on all linear layers; only the adapters train.

    peft draws the ``A`` matrices from torch's global generator; here they come from ``seed`` instead (the
    global RNG state is left as it was), so that a run repeats, and every process of a torchrun job starts
    from the adapters a single process would have.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as error:
        raise ImportError("LoRA needs the peft package: pip install peft (or set lora_rank=None)") from error
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules="all-linear", task_type="CAUSAL_LM")
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> Any:
    """A byte-level BPE tokenizer (Qwen2's pre-tokenisation) trained on ``texts``, as a ``PreTrainedTokenizerFast``.

    Every byte is in its alphabet (any string encodes), ``<|endoftext|>`` is EOS and ``<|pad|>`` pad, and it gives
    character offsets with ``return_offsets_mapping``. ``vocab_size`` is a target: a small corpus may give fewer
    tokens; it must exceed the 256 bytes and the two special tokens.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size <= len(alphabet) + 2:
        raise ValueError(f"vocab_size must exceed {len(alphabet) + 2} (the byte alphabet and two special tokens)")
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("train_bpe_tokenizer needs at least one non-empty text to learn BPE merges from")

    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS_TOKEN, PAD_TOKEN], initial_alphabet=alphabet, show_progress=False
    )
    backend.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)


def build_tiny_qwen2(
    texts: Iterable[str],
    directory: str | Path,
    *,
    vocab_size: int = 512,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
) -> Path:
    """Train a byte-level BPE tokenizer on ``texts``, build a random Qwen2 around it, save both to ``directory``.

    The result loads back with ``AutoTokenizer.from_pretrained`` / ``AutoModelForCausalLM.from_pretrained``. The
    tokenizer has every byte in its alphabet (any string encodes), ``<|endoftext|>`` as EOS, ``<|pad|>`` as pad, and
    gives character offsets with ``return_offsets_mapping``. The model ties its input and output embeddings.

    Args:
        texts: the task's texts (prompts, the words the policy should write); BPE merges are learnt from them.
        directory: where to save (created).
        vocab_size: BPE target size (at most; a small corpus may give fewer tokens). Must exceed the 256 bytes.
        hidden_size, layers, heads: model width, depth, attention heads (``hidden_size / heads`` >= 16, even).
        seed: seeds the weights.

    Returns:
        ``directory`` as a Path.
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if heads < 1 or hidden_size % heads or hidden_size // heads < 16 or (hidden_size // heads) % 2:
        raise ValueError(
            f"hidden_size ({hidden_size}) must be a multiple of heads ({heads}) with an even head_dim >= 16; "
            "e.g. hidden_size=64, heads=4"
        )
    if layers < 1:
        raise ValueError(f"layers must be >= 1, got {layers}")
    tokenizer = train_bpe_tokenizer(texts, vocab_size)

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
