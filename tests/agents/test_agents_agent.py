"""The agent loop: parameters move, metrics are logged, checkpoints reload exactly and resume the same run."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
from test_agents_support import ENV_ID, ENV_KWARGS, fast_config, tiny_policy_path

import ospo_gym  # noqa: F401

torch = pytest.importorskip("torch")

from ospo_gym.agents import Agent, completion_logprobs, generate, logger  # noqa: E402
from ospo_gym.agents.checkpoint import CheckpointError  # noqa: E402
from ospo_gym.agents.logger import read_metrics  # noqa: E402


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    return tiny_policy_path(tmp_path_factory)


def make_agent(tiny_policy, tmp_path, algo="grpo", **overrides):
    config = fast_config(run_dir=str(tmp_path / "runs"), **overrides)
    return Agent(ENV_ID, algo=algo, policy=tiny_policy, config=config, env_kwargs=ENV_KWARGS)


def comparable(history):
    """Metrics without wall-clock timings."""
    return [{k: v for k, v in row.items() if not k.startswith("perf/") or k == logger.PERF_COMPLETION_TOKENS} for row in history]


@pytest.mark.parametrize("algo", ["grpo", "ospo_prop", "ospo_rank"])
def test_every_trainable_parameter_changes_after_one_step(tiny_policy, tmp_path, algo):
    agent = make_agent(tiny_policy, tmp_path, algo)
    before = {name: p.detach().clone() for name, p in agent.model.named_parameters() if p.requires_grad}
    agent.learn(1)
    assert agent.history[0][logger.REWARD_STD] > 0  # otherwise every advantage is 0 and nothing should move
    unchanged = [name for name, p in agent.model.named_parameters() if torch.equal(p.detach(), before[name])]
    assert unchanged == []


def test_metrics_go_to_jsonl_with_prefixed_names(tiny_policy, tmp_path):
    agent = make_agent(tiny_policy, tmp_path, "ospo_prop")
    seen = []
    agent.learn(3, callback=lambda a, metrics: seen.append(metrics) or len(seen) < 2)  # stops after two steps
    assert agent.num_steps == 2
    assert agent.run_dir.parent == tmp_path / "runs"
    assert agent.run_dir.name.startswith("ospo_AdditiveKeywords-v0__ospo_prop__0__")
    records = read_metrics(agent.run_dir / "metrics.jsonl")
    assert [r[logger.STEP] for r in records] == [1, 2]
    keys = set(records[0]) - {logger.STEP}
    assert all(k.startswith(logger.METRIC_PREFIXES) for k in keys)
    for name in (logger.REWARD_MEAN, logger.LOSS_CLIP_FRACTION, logger.LOSS_KL, logger.CREDIT_ORACLE_CALLS,
                 logger.PERF_STEP_SECONDS):  # fmt: skip
        assert name in keys
    assert records[0][logger.CREDIT_ORACLE_CALLS] in (0, 1)
    assert (agent.run_dir / "config.json").is_file()


def test_predict_and_evaluate(tiny_policy, tmp_path):
    agent = make_agent(tiny_policy, tmp_path)
    prompt = agent.envs.prompt(agent.envs.prompt_ids[0])
    assert agent.predict(prompt) == agent.predict(prompt)
    assert isinstance(agent.predict(prompt, deterministic=False), str)
    score = agent.evaluate(2)
    assert 0.0 <= score <= 1.0 and score == agent.evaluate(2)


def test_evaluate_on_another_env_scores_the_same_completions_there(tiny_policy, tmp_path):
    """``evaluate(env=...)``: what evaluating with the other env in place of the training env gave, by id or by
    instance; the training env stays the one the agent trains on."""
    from ospo_gym.agents.groups import GroupedEnv

    agent = make_agent(tiny_policy, tmp_path)
    own = agent.evaluate(2, seed=5)
    other = {**ENV_KWARGS, "seed": 7}  # another task: other keywords, so other prompts and rewards
    training_env = agent.envs
    agent.envs = GroupedEnv(gym.make(ENV_ID, **other), 1, agent.config.seed)
    swapped = agent.evaluate(2, seed=5)
    agent.envs = training_env
    assert swapped != own
    assert agent.evaluate(2, seed=5, env=ENV_ID, env_kwargs=other) == swapped
    instance = gym.make(ENV_ID, **other)
    assert agent.evaluate(2, seed=5, env=instance) == swapped
    vector = gym.make_vec(ENV_ID, num_envs=3, vectorization_mode="vector_entry_point", **other)
    assert agent.evaluate(2, seed=5, env=vector) == swapped
    assert agent.envs is training_env and agent.evaluate(2, seed=5) == own
    assert agent.evaluate(2, seed=5, env=ENV_ID, env_kwargs=ENV_KWARGS) == own
    with pytest.raises(ValueError, match="env_kwargs only apply"):
        agent.evaluate(2, env_kwargs=other)
    with pytest.raises(ValueError, match="env_kwargs only apply"):
        agent.evaluate(2, env=instance, env_kwargs=other)
    with pytest.raises(ValueError, match="not an ospo-gym generative-search env"):
        agent.evaluate(2, env=gym.make("CartPole-v1"))


def test_save_then_load_gives_identical_logprobs(tiny_policy, tmp_path):
    agent = make_agent(tiny_policy, tmp_path, "ospo_rank", beta=0.05)
    agent.learn(1)
    agent.save(tmp_path / "ckpt")
    agent.save(tmp_path / "ckpt")  # overwriting an existing checkpoint is atomic too
    loaded = Agent.load(tmp_path / "ckpt")
    # a checkpoint outside any run folder starts a fresh run under the default parent, not the saved one
    assert loaded.num_steps == 1 and loaded.config == dataclasses.replace(agent.config, run_dir="runs")
    rollout = generate(agent.model, agent.tokenizer, ["want: a", "avoid: b c"], max_new_tokens=6, seed=0)
    inputs = (rollout.prompt_tokens, rollout.prompt_mask, rollout.completion_tokens, rollout.completion_mask)
    with torch.no_grad():
        for a, b in ((agent.model, loaded.model), (agent.reference, loaded.reference)):
            assert torch.equal(completion_logprobs(a, *inputs), completion_logprobs(b, *inputs))
    assert sorted(p.name for p in (tmp_path).iterdir()) == ["ckpt", "runs"]  # no temp folders left behind


@pytest.mark.parametrize("algo", ["grpo", "ospo_prop"])
def test_resume_continues_the_same_run(tiny_policy, tmp_path, algo):
    overrides = dict(num_iterations=2, beta=0.02) if algo == "grpo" else {}
    straight = make_agent(tiny_policy, tmp_path / "a", algo, **overrides).learn(4)

    first = make_agent(tiny_policy, tmp_path / "b", algo, **overrides).learn(2)
    first.save(first.run_dir / "checkpoint")  # inside its run folder: the resumed run goes on there
    first.predict("want: something", deterministic=False)  # consumes global randomness: must not matter
    np.random.default_rng().random()
    resumed = Agent.load(first.run_dir / "checkpoint").learn(2)

    assert comparable(first.history + resumed.history) == comparable(straight.history)
    assert resumed.run_dir == first.run_dir
    assert [r[logger.STEP] for r in read_metrics(resumed.run_dir / "metrics.jsonl")] == [1, 2, 3, 4]


def test_periodic_checkpoints_keep_the_newest(tiny_policy, tmp_path):
    agent = make_agent(tiny_policy, tmp_path, save_every=1, keep_checkpoints=2).learn(3)
    kept = sorted(p.name for p in (agent.run_dir / "checkpoints").iterdir())
    assert kept == ["step-00000002", "step-00000003"]
    assert Agent.load(agent.run_dir / "checkpoints" / "step-00000002").num_steps == 2
    assert Agent.load(agent.run_dir).num_steps == 3  # a run folder resumes from its newest checkpoint


def test_single_env_instance_and_zero_variance_skipping(tiny_policy, tmp_path):
    env = gym.make(ENV_ID, **ENV_KWARGS)
    config = fast_config(run_dir=str(tmp_path), skip_zero_variance_groups=True, scale_rewards="batch")
    agent = Agent(env, algo="ospo_rank", policy=tiny_policy, config=config).learn(2)
    assert agent.env_id == ENV_ID
    assert all(np.isfinite(row[logger.REWARD_MEAN]) for row in agent.history)


def test_vector_env_must_match_the_batch(tiny_policy, tmp_path):
    env = gym.make_vec(ENV_ID, num_envs=3, vectorization_mode="vector_entry_point", **ENV_KWARGS)
    with pytest.raises(ValueError, match="prompts_per_step × group_size"):
        Agent(env, policy=tiny_policy, config=fast_config(run_dir=str(tmp_path)))


def test_constructor_errors(tiny_policy, tmp_path):
    with pytest.raises(ValueError, match="unknown advantage estimator"):
        make_agent(tiny_policy, tmp_path, algo="ppo")
    with pytest.raises(ValueError, match="build_tiny_qwen2"):
        Agent(ENV_ID, config=fast_config(), env_kwargs=ENV_KWARGS)
    with pytest.raises(CheckpointError, match="neither a checkpoint folder nor a run folder"):
        Agent.load(tmp_path)


def test_torch_thread_count_is_restored(tiny_policy, tmp_path):
    before = torch.get_num_threads()
    agent = make_agent(tiny_policy, tmp_path, torch_threads=before + 1)
    agent.learn(1)
    agent.predict("want:")
    assert torch.get_num_threads() == before


def test_lora_trains_adapters_only_and_reloads(tiny_policy, tmp_path):
    pytest.importorskip("peft")
    agent = make_agent(tiny_policy, tmp_path, "ospo_prop", lora_rank=4, beta=0.05)
    assert agent.reference is None  # the KL reference is the base model with adapters disabled
    frozen = {n: p.detach().clone() for n, p in agent.model.named_parameters() if not p.requires_grad}
    agent.learn(2)
    assert all(torch.equal(p, frozen[n]) for n, p in agent.model.named_parameters() if not p.requires_grad)
    assert all("lora_" in n for n, p in agent.model.named_parameters() if p.requires_grad)
    assert agent.history[-1][logger.LOSS_KL] > 0
    agent.save(tmp_path / "ckpt")
    loaded = Agent.load(tmp_path / "ckpt")
    rollout = generate(agent.model, agent.tokenizer, ["want: a"], max_new_tokens=6, seed=0)
    inputs = (rollout.prompt_tokens, rollout.prompt_mask, rollout.completion_tokens, rollout.completion_mask)
    with torch.no_grad():
        assert torch.equal(completion_logprobs(agent.model, *inputs), completion_logprobs(loaded.model, *inputs))
    loaded.learn(1)



def test_lora_adapters_start_from_the_seed(tiny_policy, tmp_path):
    """peft draws the A matrices from torch's global RNG: same seed, same adapters; another seed, others; the
    global RNG state is left alone; a (model, tokenizer) policy gets adapters too."""
    pytest.importorskip("peft")
    from ospo_gym.agents.policy import load_policy

    def adapters(agent):
        return {n: p.detach().clone() for n, p in agent.model.named_parameters() if "lora_A" in n}

    first = adapters(make_agent(tiny_policy, tmp_path / "a", lora_rank=4, seed=3))
    torch.manual_seed(1234)  # the global generator must not matter
    second = adapters(make_agent(tiny_policy, tmp_path / "b", lora_rank=4, seed=3))
    other = adapters(make_agent(tiny_policy, tmp_path / "c", lora_rank=4, seed=4))
    assert first and all(torch.equal(first[n], second[n]) for n in first)
    assert not all(torch.equal(first[n], other[n]) for n in first)
    pair = Agent(ENV_ID, policy=load_policy(tiny_policy, device="cpu"), config=fast_config(lora_rank=4, seed=3,
                 run_dir=str(tmp_path / "runs")), env_kwargs=ENV_KWARGS)  # fmt: skip
    from_pair = adapters(pair)
    assert sorted(from_pair) == sorted(first) and all(torch.equal(first[n], from_pair[n]) for n in first)
    before = torch.get_rng_state()
    make_agent(tiny_policy, tmp_path / "d", lora_rank=4, seed=5)
    assert torch.equal(torch.get_rng_state(), before)


def test_agent_is_a_context_manager_that_closes(tiny_policy, tmp_path):
    closed = []
    with pytest.raises(RuntimeError, match="boom"), make_agent(tiny_policy, tmp_path) as agent:
        agent.envs.env.close = lambda: closed.append(True)
        agent.learn(1)
        assert agent._logger is not None
        raise RuntimeError("boom")
    assert closed == [True] and agent._logger is None


def test_micro_batches_accumulate_to_the_whole_batch_update(tiny_policy, tmp_path):
    """Forward / backward in chunks of 3 completions (8 per step: 3 + 3 + 2, fewer where flat groups are
    skipped) gives the whole-batch update: same metrics and weights up to float rounding, with a KL reference,
    two updates per batch and skipped groups in play."""
    settings = dict(algo="ospo_prop", beta=0.05, num_iterations=2, skip_zero_variance_groups=True, seed=2)
    whole = make_agent(tiny_policy, tmp_path / "whole", **settings)
    chunked = make_agent(tiny_policy, tmp_path / "chunked", micro_batch_size=3, **settings)
    calls = []
    forward = chunked.learner.forward
    def counting(*args, **kwargs):  # the update's forwards are the ones without a KV cache
        if kwargs.get("use_cache") is False:
            calls.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    chunked.learner.forward = counting
    # as on a rank with fewer chunks than the busiest one: one padding chunk (a row, no tokens) per update
    busiest = chunked.world.max
    object.__setattr__(chunked.world, "max", lambda values: busiest(values) + (len(np.atleast_1d(values)) == 1))
    whole.learn(3)
    chunked.learn(3)
    assert max(calls) == 3 < chunked.config.batch_size  # the update never saw more than 3 completions at once
    assert 1 in calls  # the padding chunks ran
    for a, b in zip(comparable(whole.history), comparable(chunked.history), strict=True):
        assert a.keys() == b.keys()
        for key, value in a.items():
            assert b[key] == (value if value is None else pytest.approx(value, rel=1e-4, abs=1e-6)), key
    assert any(row[logger.LOSS_POLICY] is not None for row in whole.history)
    bound = whole.config.learning_rate * len(whole.history) * whole.config.num_iterations
    for (name, p), q in zip(whole.model.named_parameters(), chunked.model.parameters(), strict=True):
        # Adam turns last-bit differences of near-zero gradients into steps of up to ~lr: an element or two may
        # move that far (never more than lr per update); a chunking bug moves most elements beyond 1e-5
        gap = (q - p).abs()
        assert float(gap.max()) <= bound, name
        assert int((gap > 1e-5).sum()) <= max(2, gap.numel() // 1000), name

def test_token_offsets_are_computed_only_for_estimators_that_read_them(tiny_policy, tmp_path, monkeypatch):
    import ospo_gym.agents.agent as agent_module

    calls = []
    real = agent_module.batch_token_offsets
    monkeypatch.setattr(agent_module, "batch_token_offsets", lambda *a, **k: calls.append(1) or real(*a, **k))
    make_agent(tiny_policy, tmp_path / "g", "grpo").train_step()
    assert calls == []  # GRPO broadcasts Â: no re-encoding of the completions
    make_agent(tiny_policy, tmp_path / "o", "ospo_prop").train_step()
    assert calls == [1]


@pytest.mark.parametrize(
    ("algo", "overrides"),
    [
        ("ospo_prop", dict(beta=0.05, num_iterations=2)),
        ("grpo", dict(beta=0.05, num_iterations=2)),
        ("ospo_prop", {}),  # one iteration, no KL: only the forward pass ahead overlaps
        ("ospo_prop", dict(micro_batch_size=3)),
    ],
)
def test_overlapped_credit_trains_bit_for_bit_as_the_sequential_order(tiny_policy, tmp_path, algo, overrides):
    """overlap_credit runs the estimator on a worker thread while the KL reference's and the pre-update policy's
    log-probs and the first chunk's forward pass are computed; on CPU the metrics and the weights are those of the
    sequential order, and the estimator did run off the main thread."""
    import threading

    plain = make_agent(tiny_policy, tmp_path / "plain", algo, **overrides)
    overlapped = make_agent(tiny_policy, tmp_path / "overlapped", algo, overlap_credit=True, **overrides)
    threads = []
    inner = overlapped.estimator

    def spy(*args):
        threads.append(threading.current_thread() is threading.main_thread())
        return inner(*args)

    overlapped.estimator = spy
    plain.learn(3)
    overlapped.learn(3)
    assert threads == [False] * 3
    assert comparable(plain.history) == comparable(overlapped.history)
    for (name, a), (_, b) in zip(plain.model.named_parameters(), overlapped.model.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    overlapped.close()
    assert overlapped._credit_thread is None
    plain.close()


def test_overlapped_credit_runs_the_first_forward_pass_while_the_credit_is_computed(tiny_policy, tmp_path, monkeypatch):
    """With one iteration and no KL the forward pass with gradients is what overlaps: the estimator (made to wait
    for it) sees it start, and each step still runs exactly one such pass (none is computed twice)."""
    import threading

    from ospo_gym.agents import update

    agent = make_agent(tiny_policy, tmp_path, "ospo_prop", overlap_credit=True)
    started = threading.Event()
    grad_passes = []
    inner_logprobs = update.completion_logprobs

    def counted(*args, **kwargs):
        if torch.is_grad_enabled():
            grad_passes.append(agent.num_steps)
            started.set()
        return inner_logprobs(*args, **kwargs)

    monkeypatch.setattr(update, "completion_logprobs", counted)
    inner = agent.estimator
    seen = []

    def waiting(*args):
        seen.append(started.wait(timeout=30))  # sequentially the pass comes after the estimator: times out
        started.clear()
        return inner(*args)

    agent.estimator = waiting
    agent.learn(2)
    assert seen == [True, True]
    assert grad_passes == [0, 1]
    agent.close()


def test_overlapped_credit_passes_the_estimators_error_on(tiny_policy, tmp_path):
    agent = make_agent(tiny_policy, tmp_path, "ospo_prop", overlap_credit=True, beta=0.05)

    def broken(*args):
        raise RuntimeError("credit failed")

    agent.estimator = broken
    with pytest.raises(RuntimeError, match="credit failed"):
        agent.train_step()
    assert not agent.model.training  # the forward pass ahead set train mode; a failed step leaves eval
    agent.close()
