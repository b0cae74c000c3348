"""The minimal multi-turn loop (agents/turn_loop.py) with a tiny random Qwen2 on ConvSearch: the rollout matches
the env and its oracle, only the policy's tokens carry advantages, and one update moves the weights."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest

import ospo_gym  # noqa: F401

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from ospo_gym.agents import AgentConfig, build_tiny_qwen2, get_estimator, load_policy  # noqa: E402
from ospo_gym.agents.turn_loop import conversation_prompt, rollout_conversations, turn_update  # noqa: E402

pytestmark = pytest.mark.slow  # a tiny tokenizer and model are built and sampled: ~40 s on a shared CPU

ENV = {"num_products": 300, "num_targets": 4, "max_turns": 3, "reveal_reward": 0.1, "turn_cost": 0.02}


@pytest.fixture(scope="module")
def env():
    return gym.make("ospo/ConvSearch-v0", **ENV).unwrapped


@pytest.fixture(scope="module")
def policy(env, tmp_path_factory):
    texts = env.task.openings + env.task.texts[:100] + ["ask: which colour? brand? material?"] * 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = build_tiny_qwen2(texts, tmp_path_factory.mktemp("conv_policy"), seed=0)
    return load_policy(path, device="cpu")


def config(**overrides):
    return AgentConfig(max_new_tokens=8, progress_bar=False, tensorboard=False, learning_rate=1e-2, **overrides)


def test_conversation_prompt_without_a_template(policy):
    _, tokenizer = policy
    messages = [{"role": "user", "content": "I'm looking for a mat."}, {"role": "assistant", "content": "ask: colour?"}]
    assert conversation_prompt(tokenizer, messages) == "shopper: I'm looking for a mat.\nyou: ask: colour?\nyou:"


def test_rollout_matches_the_env_and_is_reproducible(env, policy):
    model, tokenizer = policy
    prompt_ids, groups = [0, 0, 1, 1], [0, 0, 1, 1]
    batch, samples = rollout_conversations(model, tokenizer, env, prompt_ids, groups, config())
    again, _ = rollout_conversations(model, tokenizer, env, prompt_ids, groups, config())
    assert batch.texts == again.texts and np.array_equal(batch.rewards, again.rewards)
    for b, prompt_id in enumerate(prompt_ids):
        turns = batch.turns(b)
        assert 1 <= len(turns) <= ENV["max_turns"]
        # the same turns through env.step give the same step rewards, and the oracle's full replay the return
        env.reset(options={"prompt_id": prompt_id})
        steps = [env.step(t)[1] for t in turns]
        np.testing.assert_allclose(steps, batch.turn_rewards[b])
        assert env.oracle.turn_values(prompt_id, turns, [tuple(range(len(turns)))])[0] == batch.rewards[b]
    # the rows hold the policy's tokens only: every generated token of every turn, nothing else
    generated = np.zeros(len(prompt_ids), dtype=np.int64)
    for rollout, live in zip(samples.rollouts, samples.episodes, strict=True):
        np.add.at(generated, live, rollout.completion_mask.sum(dim=1).numpy())
    np.testing.assert_array_equal(batch.completion_mask.sum(axis=1), generated)


@pytest.mark.parametrize("algo", ["trajectory_grpo", "turn_grpo", "ospo_turn"])
def test_one_update_moves_the_weights_and_zero_advantages_do_not(env, policy, algo):
    model, tokenizer = policy
    cfg = config()
    batch, samples = rollout_conversations(model, tokenizer, env, [2] * 4 + [3] * 4, [0] * 4 + [1] * 4, cfg, step=1)
    advantages = get_estimator(algo)(batch, env.oracle, cfg)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.learning_rate)
    metrics = turn_update(model, optimizer, batch, samples, np.zeros_like(advantages), cfg)
    assert metrics["grad_norm"] == 0.0 and all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    if not np.any(advantages):
        pytest.skip("every group of this rollout has equal returns")
    metrics = turn_update(model, optimizer, batch, samples, advantages, cfg)
    assert np.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0
    assert metrics["tokens"] == batch.completion_mask.sum()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    with torch.no_grad():
        for p, b in zip(model.parameters(), before, strict=True):
            p.copy_(b)  # the module-scoped policy stays as built for the other tests
    with pytest.raises(ValueError, match="do not match"):
        turn_update(model, optimizer, batch, samples, advantages[:, :-1], cfg)
