"""Shared fixtures of the agent tests (a tiny random Qwen2 built once per session) and tests of that builder.

Other ``test_agents_*`` modules call :func:`tiny_policy_path` / :func:`load_tiny` from their own fixtures.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import ospo_gym  # noqa: F401

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from ospo_gym.agents import AgentConfig, build_tiny_qwen2  # noqa: E402

ENV_ID = "ospo/AdditiveKeywords-v0"
ENV_KWARGS = dict(vocab_size=12, num_prompts=4, num_positive=3, num_negative=3, shared_weights=True)


def task_texts(env) -> list[str]:
    """What the tiny tokenizer learns its merges from: the prompts and the keywords."""
    base = env.unwrapped
    return [base.prompt(p) for p in base.prompt_ids] + [" ".join(base.vocabulary)] * 3


def fast_config(**overrides) -> AgentConfig:
    """The tiny-CPU preset without progress bars or TensorBoard."""
    settings = dict(progress_bar=False, tensorboard=False)
    settings.update(overrides)
    return AgentConfig.tiny_cpu(**settings)


def tiny_policy_path(tmp_path_factory, env_kwargs: dict | None = None, name: str = "tiny_qwen2") -> Path:
    """Path of a tiny random Qwen2 (and its BPE tokenizer) for the additive task (``ENV_KWARGS`` by default).

    It lives in the session's base temp dir, so it is built once per session whichever module asks first.
    """
    folder = tmp_path_factory.getbasetemp() / name
    if not (folder / "config.json").is_file():
        env = gym.make(ENV_ID, **(ENV_KWARGS if env_kwargs is None else env_kwargs))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build_tiny_qwen2(task_texts(env), folder)
    return folder


@functools.cache
def load_tiny(path: Path):
    """``(model, tokenizer)`` of the tiny policy, loaded once with the ordinary ``from_pretrained``."""
    from ospo_gym.agents import load_policy

    return load_policy(path, device="cpu")


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory):
    return tiny_policy_path(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_loaded(tiny_policy):
    return load_tiny(tiny_policy)


def test_tiny_model_loads_back_with_auto_classes(tiny_policy):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_policy)
    model = AutoModelForCausalLM.from_pretrained(tiny_policy)
    assert model.config.model_type == "qwen2"
    assert model.config.vocab_size == len(tokenizer) <= 512
    assert tokenizer.eos_token_id is not None and tokenizer.pad_token_id is not None
    assert tokenizer.eos_token_id != tokenizer.pad_token_id
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    assert head_dim >= 16


def test_tiny_tokenizer_roundtrips_and_gives_character_offsets(tiny_loaded):
    _, tokenizer = tiny_loaded
    text = "want: tavo kire avoid: ü 日本 <x>"
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    assert tokenizer.decode(encoded["input_ids"]) == text
    spans = np.asarray(encoded["offset_mapping"])
    assert spans[0, 0] == 0 and spans[-1, 1] == len(text)
    assert np.all(spans[1:, 0] >= spans[:-1, 0]) and np.all(spans[:, 1] >= spans[:, 0])


def test_task_keywords_are_single_tokens(tiny_loaded):
    _, tokenizer = tiny_loaded
    env = gym.make(ENV_ID, **ENV_KWARGS).unwrapped
    for word in env.vocabulary:
        assert len(tokenizer(" " + word, add_special_tokens=False)["input_ids"]) == 1


def test_builder_rejects_narrow_heads(tmp_path):
    with pytest.raises(ValueError, match="head_dim"):
        build_tiny_qwen2(["a b c"], tmp_path, hidden_size=32, heads=4)
    with pytest.raises(ValueError, match="vocab_size"):
        build_tiny_qwen2(["a b c"], tmp_path, vocab_size=100)
    with pytest.raises(ValueError, match="non-empty text"):
        build_tiny_qwen2([""], tmp_path)
