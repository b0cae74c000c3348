"""Guarding the run: a non-finite loss, gradient, weight or advantage stops (or skips) an update before
anything bad is kept, the config refuses non-finite knobs, and every new run gets a run folder of its own."""

from __future__ import annotations

import math
import re
import time

import numpy as np
import pytest
from test_agents_support import ENV_ID, ENV_KWARGS, fast_config, tiny_policy_path

import ospo_gym  # noqa: F401

torch = pytest.importorskip("torch")

from ospo_gym import agents  # noqa: E402
from ospo_gym.agents import Agent, AgentConfig, get_estimator, logger, register_estimator, update  # noqa: E402
from ospo_gym.agents.guard import nonfinite_parameter  # noqa: E402
from ospo_gym.agents.logger import read_metrics  # noqa: E402

SAME_SECOND = time.mktime((2030, 1, 2, 3, 4, 5, 0, 0, -1))


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    return tiny_policy_path(tmp_path_factory)


def make_agent(tiny_policy, tmp_path, **overrides) -> Agent:
    config = fast_config(run_dir=str(tmp_path / "runs"), **overrides)
    return Agent(ENV_ID, policy=tiny_policy, config=config, env_kwargs=ENV_KWARGS)


def weights(agent: Agent) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in agent.model.named_parameters()}


def assert_same_weights(agent: Agent, before: dict[str, torch.Tensor]) -> None:
    for name, p in agent.model.named_parameters():
        assert torch.equal(p.detach(), before[name]), name


def _grpo_then_overflow(first_bad_step: int):
    """GRPO's advantages, then 1e39 from ``first_bad_step`` (0-based): finite in float64, inf in float32."""

    def estimator(batch, oracle, config):
        advantages = get_estimator("grpo")(batch, oracle, config)
        return np.full_like(advantages, 1e39) if batch.step >= first_bad_step else advantages

    return estimator


register_estimator("test_agents_guard_overflow_at_0", _grpo_then_overflow(0))
register_estimator("test_agents_guard_overflow_at_2", _grpo_then_overflow(2))


# -- config --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [math.inf, math.nan, 0.0, -1.0])
def test_learning_rate_must_be_finite_and_positive(value):
    with pytest.raises(ValueError, match="learning_rate must be > 0 and finite"):
        AgentConfig(learning_rate=value)


@pytest.mark.parametrize(
    ("field", "value"),
    [("weight_decay", math.inf), ("max_grad_norm", math.inf), ("epsilon_high", math.inf), ("beta", math.inf),
     ("temperature", math.inf), ("lora_alpha", math.inf), ("clip_token_advantages", math.inf),
     ("vllm_is_cap", math.inf), ("weight_decay", math.nan), ("on_nonfinite", "ignore")],
)  # fmt: skip
def test_other_float_knobs_refuse_non_finite_values(field, value):
    with pytest.raises(ValueError, match=field):
        AgentConfig(**{field: value})


# -- advantages ----------------------------------------------------------------------------------------------
def test_advantages_beyond_float32_stop_before_any_update(tiny_policy, tmp_path):
    agent = make_agent(tiny_policy, tmp_path, algo="test_agents_guard_overflow_at_0", save_every=1)
    before = weights(agent)
    with pytest.raises(agents.TrainingDivergedError, match=r"at step 1: .*advantages.*not finite in float32"):
        agent.learn(2)
    assert agent.num_steps == 0 and agent.history == []
    assert_same_weights(agent, before)
    assert not (agent.run_dir / "metrics.jsonl").exists()  # no step was logged
    assert not (agent.run_dir / "checkpoints").exists()


def test_a_late_divergence_keeps_the_good_checkpoints(tiny_policy, tmp_path):
    algo = "test_agents_guard_overflow_at_2"
    agent = make_agent(tiny_policy, tmp_path, algo=algo, save_every=1, keep_checkpoints=2)
    with pytest.raises(agents.TrainingDivergedError, match="at step 3"):
        agent.learn(4)
    assert agent.num_steps == 2
    kept = sorted(p.name for p in (agent.run_dir / "checkpoints").iterdir())
    assert kept == ["step-00000001", "step-00000002"]  # nothing written for step 3, and nothing pruned for it
    assert [r[logger.STEP] for r in read_metrics(agent.run_dir / "metrics.jsonl")] == [1, 2]


# -- loss, gradient, weights ---------------------------------------------------------------------------------
def _poison_loss(monkeypatch, at_call: int) -> None:
    """Make the ``at_call``-th (0-based) policy loss NaN, as an fp overflow in the forward pass would."""
    calls = []
    original = update.policy_loss

    def poisoned(*args, **kwargs):
        loss, parts = original(*args, **kwargs)
        calls.append(None)
        return (loss * math.nan if len(calls) == at_call + 1 else loss), parts

    monkeypatch.setattr(update, "policy_loss", poisoned)


def test_a_nan_loss_stops_before_the_optimizer_step(tiny_policy, tmp_path, monkeypatch):
    agent = make_agent(tiny_policy, tmp_path, save_every=1)
    agent.learn(1)
    before = weights(agent)
    moments = {k: v.clone() for k, v in agent.optimizer.state_dict()["state"][0].items()}
    _poison_loss(monkeypatch, at_call=0)
    with pytest.raises(agents.TrainingDivergedError, match="at step 2: the loss is nan; the update was not"):
        agent.learn(1)
    assert agent.num_steps == 1
    assert_same_weights(agent, before)  # nothing applied: these weights are still good to save
    for key, value in agent.optimizer.state_dict()["state"][0].items():
        assert torch.equal(value, moments[key]), key
    assert sorted(p.name for p in (agent.run_dir / "checkpoints").iterdir()) == ["step-00000001"]


def test_skip_mode_drops_the_update_counts_it_and_goes_on(tiny_policy, tmp_path, monkeypatch):
    agent = make_agent(tiny_policy, tmp_path, on_nonfinite="skip")
    agent.learn(1)
    before = weights(agent)
    _poison_loss(monkeypatch, at_call=0)
    agent.learn(1)
    assert agent.history[-1][logger.LOSS_SKIPPED_UPDATES] == 1
    assert_same_weights(agent, before)
    assert all(bool(torch.isfinite(p).all()) for p in agent.model.parameters())
    agent.learn(1)  # the next update goes through
    assert [row[logger.LOSS_SKIPPED_UPDATES] for row in agent.history] == [0, 1, 0]
    assert any(not torch.equal(p.detach(), before[n]) for n, p in agent.model.named_parameters())
    assert [r[logger.LOSS_SKIPPED_UPDATES] for r in read_metrics(agent.run_dir / "metrics.jsonl")] == [0, 1, 0]


@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_a_weight_gone_non_finite_stops_and_nothing_is_saved(tiny_policy, tmp_path, mode):
    agent = make_agent(tiny_policy, tmp_path, save_every=1, on_nonfinite=mode)
    name, victim = next((n, p) for n, p in agent.model.named_parameters() if p.requires_grad)
    step = agent.optimizer.step

    def broken_step(*args, **kwargs):  # an update that overflows one weight
        out = step(*args, **kwargs)
        with torch.no_grad():
            victim.view(-1)[0] = math.inf
        return out

    agent.optimizer.step = broken_step
    message = rf"at step 1: parameter {re.escape(repr(name))} is not finite"
    with pytest.raises(agents.TrainingDivergedError, match=message):
        agent.learn(2)
    assert agent.num_steps == 0 and not (agent.run_dir / "checkpoints").exists()
    assert not (agent.run_dir / "metrics.jsonl").exists()  # no step was logged


def test_save_refuses_non_finite_weights_and_writes_nothing(tiny_policy, tmp_path):
    agent = make_agent(tiny_policy, tmp_path)
    agent.save(tmp_path / "good")
    with torch.no_grad():
        next(agent.model.parameters())[0].fill_(math.nan)  # as a library user's own code could leave it
    with pytest.raises(ValueError, match="refusing to save .* inf or NaN"):
        agent.save(tmp_path / "good")
    with pytest.raises(ValueError, match="refusing to save"):
        agent.save(tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()
    Agent.load(tmp_path / "good", progress_bar=False).close()  # the earlier checkpoint is untouched and loads
    agent.close()


def test_huge_but_finite_weights_are_not_called_non_finite(tiny_policy, tmp_path):
    """The fused check sums L1 norms (they overflow near float32's limit); exact checks decide."""
    agent = make_agent(tiny_policy, tmp_path)
    with torch.no_grad():
        for p in agent.model.parameters():
            p.fill_(3e38)
    assert nonfinite_parameter(agent.model, agent.world, sharded=False, trainable_only=True) is None  # all finite


# -- run folders ---------------------------------------------------------------------------------------------
def test_create_run_dir_suffixes_a_name_taken_in_the_same_second(tmp_path):
    first = logger.create_run_dir(tmp_path, ENV_ID, "grpo", 0, when=SAME_SECOND)
    second = logger.create_run_dir(tmp_path, ENV_ID, "grpo", 0, when=SAME_SECOND)
    third = logger.create_run_dir(tmp_path, ENV_ID, "grpo", 0, when=SAME_SECOND)
    assert first.name == logger.run_name(ENV_ID, "grpo", 0, SAME_SECOND)
    assert (second.name, third.name) == (first.name + "-1", first.name + "-2")
    assert all(p.is_dir() and not any(p.iterdir()) for p in (first, second, third))


def test_two_agents_started_in_the_same_second_get_their_own_run_folders(tiny_policy, tmp_path, monkeypatch):
    stamp = logger.run_name
    monkeypatch.setattr(logger, "run_name", lambda env, algo, seed, when=None: stamp(env, algo, seed, SAME_SECOND))
    one, two = make_agent(tiny_policy, tmp_path).learn(0), make_agent(tiny_policy, tmp_path).learn(0)
    assert one.run_dir != two.run_dir and one.run_dir.parent == two.run_dir.parent == tmp_path / "runs"
    assert (one.run_dir / "config.json").is_file() and (two.run_dir / "config.json").is_file()
