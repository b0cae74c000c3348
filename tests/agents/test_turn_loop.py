"""The multi-turn agent loop (agents/turn_loop.py through Agent) with a tiny random Qwen2 on ConvSearch: rollouts
match the env and its oracle, only the policy's own tokens are in the loss, the config's estimator is the one
used, resume repeats an uninterrupted run, and bad settings are refused before any model is built."""

from __future__ import annotations

import dataclasses
import warnings

import gymnasium as gym
import numpy as np
import pytest

import ospo_gym  # noqa: F401

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from ospo_gym.agents import Agent, AgentConfig, TrainingDivergedError, generate, logger  # noqa: E402
from ospo_gym.agents.estimators import register_estimator  # noqa: E402
from ospo_gym.agents.logger import read_metrics  # noqa: E402
from ospo_gym.agents.tiny_policy import build_env_policy  # noqa: E402
from ospo_gym.agents.turn_loop import (  # noqa: E402
    conversation_prompt,
    play_conversations,
    transcript_messages,
    turn_seed,
)

ID = "ospo/ConvSearch-v0"
ENV = {"num_products": 300, "num_targets": 4, "max_turns": 3, "reveal_reward": 0.1, "turn_cost": 0.02}
ALGOS = ["trajectory_grpo", "turn_grpo", "ospo_turn"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """A tiny model runs fastest on one thread (the agent's tiny_cpu config does the same); restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def env():
    return gym.make(ID, **ENV).unwrapped


@pytest.fixture(scope="module")
def policy_path(env, tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_env_policy(env, tmp_path_factory.mktemp("conv_policy"), seed=0)


def config(tmp_path, **overrides) -> AgentConfig:
    settings = dict(progress_bar=False, tensorboard=False, run_dir=str(tmp_path / "runs"), group_size=4)
    settings.update(overrides)
    return AgentConfig.tiny_cpu(**settings)


def make_agent(policy_path, tmp_path, algo="ospo_turn", **overrides) -> Agent:
    return Agent(ID, algo=algo, policy=policy_path, config=config(tmp_path, **overrides), env_kwargs=ENV)


def comparable(history):
    """Metrics without wall-clock timings."""
    return [{k: v for k, v in row.items() if not k.startswith("perf/") or k == logger.PERF_COMPLETION_TOKENS} for row in history]


class Spy:
    """Wraps the agent's PolicyUpdate and keeps what each call got."""

    def __init__(self, update):
        self.update, self.calls = update, []

    def __call__(self, rollout, advantages, flat, **kwargs):
        self.calls.append((rollout, np.array(advantages), np.array(flat)))
        return self.update(rollout, advantages, flat, **kwargs)


def test_conversation_prompt_without_a_template(policy_path):
    from ospo_gym.agents import load_policy

    _, tokenizer = load_policy(policy_path, device="cpu")
    messages = [{"role": "user", "content": "I'm looking for a mat."}, {"role": "assistant", "content": "ask: colour?"}]
    assert conversation_prompt(tokenizer, messages) == "shopper: I'm looking for a mat.\nyou: ask: colour?\nyou:"


def test_an_observation_reads_back_as_the_loop_s_messages(env):
    obs, _ = env.reset(options={"prompt_id": 1})
    said = ["ask: which colour?", "two\nlines", "red mat"]
    for turn in said:
        obs, _, terminated, _, info = env.step(turn)
        if terminated:
            break
    messages = transcript_messages(obs)
    assert [m["role"] for m in messages] == [("user", "assistant")[i % 2] for i in range(2 * len(info["turns"]) + 1)]
    assert messages[0]["content"] == env.task.openings[1]
    assert [m["content"] for m in messages if m["role"] == "assistant"] == info["turns"]  # a line break stays in its turn


def test_rollout_matches_the_env_and_is_reproducible(env, policy_path):
    from ospo_gym.agents import load_policy

    model, tokenizer = load_policy(policy_path, device="cpu")

    def sample(prompts, turn, rows):
        return generate(model, tokenizer, prompts, max_new_tokens=8, seed=turn_seed(7, turn), row_ids=rows, formatted=True)

    prompt_ids, groups = [0, 0, 1, 1], [0, 0, 1, 1]
    batch, samples = play_conversations(env, sample, tokenizer, prompt_ids, groups)
    again, _ = play_conversations(env, sample, tokenizer, prompt_ids, groups)
    assert batch.texts == again.texts and np.array_equal(batch.rewards, again.rewards)
    # an episode's turns do not depend on the other episodes of the batch (draws keyed by the episode's row)
    alone, _ = play_conversations(env, sample, tokenizer, prompt_ids[2:], groups[2:], first_row=2)
    assert alone.texts == batch.texts[2:]
    for b, prompt_id in enumerate(prompt_ids):
        turns = batch.turns(b)
        assert 1 <= len(turns) <= ENV["max_turns"]
        # the same turns through env.step give the same step rewards, and the oracle's full replay the return
        env.reset(options={"prompt_id": prompt_id})
        steps = [env.step(t)[1] for t in turns]
        np.testing.assert_allclose(steps, batch.turn_rewards[b])
        assert env.oracle.turn_values(prompt_id, turns, [tuple(range(len(turns)))])[0] == batch.rewards[b]
    assert len(samples.row_episodes) == sum(len(s) for s in batch.turn_spans)


@pytest.mark.parametrize("algo", ALGOS)
def test_only_the_policy_s_own_tokens_are_in_the_loss(policy_path, tmp_path, algo):
    """Fails if a shopper token (or any prompt token) is a completion token of the update, if a turn is scored
    after another turn's prompt, or if a token gets another token's advantage."""
    agent = make_agent(policy_path, tmp_path, algo)
    spy = agent.policy_update = Spy(agent.policy_update)
    estimated = []
    registered = agent.estimator
    agent.estimator = lambda batch, oracle, cfg: estimated.append((batch, registered(batch, oracle, cfg))) or estimated[-1][1]
    agent.learn(1)
    ((rollout, advantages, flat),), ((batch, episode_advantages),) = spy.calls, estimated
    base, tokenizer = agent.envs.base, agent.tokenizer
    mask = rollout.completion_mask.numpy()
    # the update's rows: turn 0 of every episode, then turn 1 of those still going, ...
    longest = max(len(s) for s in batch.turn_spans)
    row_episodes = np.concatenate([np.flatnonzero([len(s) > t for s in batch.turn_spans]) for t in range(longest)])
    row_turns = np.concatenate([np.full(int(sum(len(s) > t for s in batch.turn_spans)), t) for t in range(longest)])
    assert len(row_episodes) == len(rollout.texts) == len(flat)
    for r, (b, k) in enumerate(zip(row_episodes, row_turns, strict=True)):
        decoded = tokenizer.decode(rollout.completion_tokens[r][mask[r]].tolist(), skip_special_tokens=True)
        assert decoded[: base.max_turn_chars] == batch.turns(b)[k]  # the row's loss tokens are that turn, no more
        prompt = tokenizer.decode(rollout.prompt_tokens[r][rollout.prompt_mask[r].bool()].tolist())
        assert prompt.startswith(f"shopper: {base.task.openings[batch.prompt_ids[b]]}") and prompt.endswith("\nyou:")
        assert prompt.count("\nshopper: ") == k  # the shopper's replies so far are in the prompt, and only there
    # the loss holds exactly the estimator's tokens, each with its own advantage, in order
    assert mask.sum() == batch.completion_mask.sum()
    for b in range(len(batch.texts)):
        rows = row_episodes == b
        np.testing.assert_array_equal(advantages[rows][mask[rows]], episode_advantages[b][batch.completion_mask[b]])
    assert not advantages[~mask].any()


def test_the_config_s_estimator_is_the_one_used_and_grpo_is_trajectory_grpo(policy_path, tmp_path):
    runs = {}
    for algo in ["trajectory_grpo", "grpo", "turn_grpo", "ospo_turn"]:
        agent = make_agent(policy_path, tmp_path, algo)
        spy = agent.policy_update = Spy(agent.policy_update)
        agent.learn(1)
        runs[algo] = spy.calls[0][1]
        assert agent.history[0][logger.REWARD_STD] > 0  # otherwise every estimator gives 0 and nothing is compared
    np.testing.assert_array_equal(runs["grpo"], runs["trajectory_grpo"])  # same rollout: same step, seed, weights
    assert not np.allclose(runs["turn_grpo"], runs["trajectory_grpo"])
    assert not np.allclose(runs["ospo_turn"], runs["trajectory_grpo"])


def test_one_step_moves_every_trainable_parameter_and_logs(policy_path, tmp_path):
    agent = make_agent(policy_path, tmp_path, "ospo_turn")
    before = {name: p.detach().clone() for name, p in agent.model.named_parameters() if p.requires_grad}
    agent.learn(1)
    unchanged = [name for name, p in agent.model.named_parameters() if torch.equal(p.detach(), before[name])]
    assert unchanged == []
    (record,) = read_metrics(agent.run_dir / "metrics.jsonl")
    assert record[logger.STEP] == 1 and 1 <= record[logger.REWARD_TURNS_MEAN] <= ENV["max_turns"]
    assert record[logger.CREDIT_ORACLE_CALLS] == 1 and record[logger.CREDIT_ORACLE_VALUES] > 0
    assert agent.run_dir.name.startswith("ospo_ConvSearch-v0__ospo_turn__0__")


@pytest.mark.slow  # three agents of two steps each: ~10 s on a shared CPU
def test_resume_repeats_the_uninterrupted_run(policy_path, tmp_path):
    straight = make_agent(policy_path, tmp_path, "ospo_turn", run_dir=str(tmp_path / "straight")).learn(3)
    first = make_agent(policy_path, tmp_path, "ospo_turn", run_dir=str(tmp_path / "split")).learn(1)
    first.evaluate(2)  # draws of its own, outside the training streams
    first.save(first.run_dir / "checkpoint")
    resumed = Agent.load(first.run_dir / "checkpoint").learn(2)
    assert resumed.multi_turn and resumed.env_id == ID
    assert comparable(first.history + resumed.history) == comparable(straight.history)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert [r[logger.STEP] for r in read_metrics(resumed.run_dir / "metrics.jsonl")] == [1, 2, 3]


def test_predict_and_evaluate(policy_path, tmp_path, env):
    agent = make_agent(policy_path, tmp_path, "trajectory_grpo")
    obs, _ = env.reset(options={"prompt_id": 0})
    turn = agent.predict(obs)
    assert isinstance(turn, str) and turn == agent.predict(obs)  # greedy
    score = agent.evaluate(2)
    assert score == agent.evaluate(2) and 0.0 - ENV["turn_cost"] * ENV["max_turns"] <= score <= 1.0 + 0.3
    assert agent.evaluate(2, seed=1) != score or agent.evaluate(2, seed=2) != score  # the seed picks the samples


def nan_advantages(batch, oracle, cfg):
    return np.full(batch.completion_mask.shape, np.nan)


register_estimator("test_nan_turn_advantages", nan_advantages)


def test_non_finite_advantages_stop_before_anything_is_applied_or_logged(policy_path, tmp_path):
    agent = make_agent(policy_path, tmp_path, "test_nan_turn_advantages")
    before = [p.detach().clone() for p in agent.model.parameters()]
    with pytest.raises(TrainingDivergedError, match="step 1"):
        agent.learn(1)
    assert agent.num_steps == 0 and agent.history == []
    assert all(torch.equal(a, b) for a, b in zip(before, agent.model.parameters(), strict=True))
    assert not (agent.run_dir / "metrics.jsonl").exists() or read_metrics(agent.run_dir / "metrics.jsonl") == []


@pytest.mark.parametrize(
    ("env_id", "env_kwargs", "overrides", "message"),
    [
        (ID, ENV, {"algo": "ospo_prop"}, "multi-turn env: use one of trajectory_grpo"),
        ("ospo/AdditiveKeywords-v0", {"vocab_size": 12, "num_prompts": 4}, {"algo": "ospo_turn"}, "needs a multi-turn env"),
        (ID, ENV, {"algo": "no_such_estimator"}, "unknown advantage estimator"),
    ],
)
def test_bad_settings_are_refused_before_a_model_is_built(tmp_path, env_id, env_kwargs, overrides, message):
    cfg = dataclasses.replace(config(tmp_path), **overrides)
    with pytest.raises(ValueError, match=message):
        Agent(env_id, policy=tmp_path / "no_model_here", config=cfg, env_kwargs=env_kwargs)


def test_fsdp_is_refused_on_a_multi_turn_env(tmp_path, monkeypatch):
    from ospo_gym.agents import distributed

    monkeypatch.setattr(distributed, "setup", lambda device=None: distributed.World(rank=0, size=2))
    cfg = config(tmp_path, parallelism="fsdp")
    with pytest.raises(ValueError, match="parallelism='fsdp' is not supported on multi-turn envs"):
        Agent(ID, algo="ospo_turn", policy=tmp_path / "no_model_here", config=cfg, env_kwargs=ENV)
