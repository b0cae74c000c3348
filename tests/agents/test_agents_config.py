"""AgentConfig: defaults, presets and validation messages that say how to fix the value."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from ospo_gym.agents import AgentConfig  # noqa: E402


def test_defaults_and_derived_fields():
    config = AgentConfig()
    assert config.epsilon_high == config.epsilon == 0.2
    assert config.batch_size == config.group_size * config.prompts_per_step == 8
    assert AgentConfig(epsilon_high=0.28).epsilon_high == 0.28


def test_from_dict_reads_the_old_estimator_key_as_credit_variant_with_a_warning():
    with pytest.warns(DeprecationWarning, match="'estimator' is deprecated .* use 'credit_variant'"):
        config = AgentConfig.from_dict({"estimator": "weighted", "seed": 3})
    assert (config.credit_variant, config.seed) == ("weighted", 3)
    assert "estimator" not in config.to_dict() and config.to_dict()["credit_variant"] == "weighted"
    with pytest.raises(ValueError, match="give credit_variant only: estimator is its deprecated old name"):
        AgentConfig.from_dict({"estimator": "weighted", "credit_variant": "owen"})


def test_tiny_cpu_preset_takes_overrides():
    config = AgentConfig.tiny_cpu(algo="ospo_rank", max_new_tokens=4)
    assert config.algo == "ospo_rank" and config.max_new_tokens == 4
    assert 1e-3 <= config.learning_rate <= 3e-3


def test_roundtrip_through_dict():
    config = AgentConfig.tiny_cpu(beta=0.1)
    assert AgentConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown AgentConfig fields"):
        AgentConfig.from_dict({"lr": 1.0})


@pytest.mark.parametrize(
    ("field", "value", "hint"),
    [
        ("group_size", 1, "group_size must be >= 2"),
        ("prompts_per_step", 0, "prompts_per_step"),
        ("loss_aggregation", "mean", "token_mean"),
        ("scale_rewards", "std", "'group', 'batch', 'none'"),
        ("credit_variant", "shapley", "owen"),
        ("w_max", 0, "w_max"),
        ("max_coalitions", 1, "empty and the full coalition"),
        ("clip_token_advantages", 0.0, "clip_token_advantages"),
        ("max_new_tokens", 0, "max_new_tokens"),
        ("temperature", 0.0, "deterministic=True"),
        ("top_p", 0.0, r"top_p must be in \(0, 1\]"),
        ("learning_rate", 0.0, "learning_rate"),
        ("epsilon", 1.5, "epsilon"),
        ("epsilon_high", -0.1, "epsilon_high"),
        ("beta", -1.0, "beta must be >= 0"),
        ("num_iterations", 0, "num_iterations"),
        ("micro_batch_size", 0, "micro_batch_size must be >= 1 or None"),
        ("max_grad_norm", 0.0, "None to turn clipping off"),
        ("lora_rank", 0, "lora_rank"),
        ("torch_threads", 0, "torch_threads"),
        ("save_every", -1, "save_every"),
        ("algo", "", "algo"),
    ],
)
def test_invalid_values_raise_with_a_hint(field, value, hint):
    with pytest.raises(ValueError, match=hint):
        AgentConfig(**{field: value})


def test_released_preset_sets_every_credit_knob_and_overrides_win():
    config = AgentConfig.released()
    assert (config.algo, config.credit_variant, config.credit_path) == ("ospo_prop", "released", "released")
    assert config.clip_token_advantages == 2.0 and config.contiguous
    assert AgentConfig.released(algo="ospo_rank", clip_token_advantages=None).clip_token_advantages is None
    assert AgentConfig().credit_path == "default"
    assert AgentConfig.from_dict(config.to_dict()) == config
    message = r"credit_path must be one of \('default', 'released'\), got 'paper'"
    with pytest.raises(ValueError, match=message):
        AgentConfig(credit_path="paper")
