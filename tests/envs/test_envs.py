"""The environment contract, checked on every registered id (Gymnasium's tests/envs/test_envs.py style)."""

from __future__ import annotations

import doctest
import importlib
import pickle

import gymnasium as gym
import numpy as np
import pytest
from fixtures_real import real_env_kwargs
from gymnasium.utils.env_checker import check_env

import ospo_gym
from ospo_gym.credit import sample_coalitions

# Small instances keep the suite fast; the defaults are exercised by the doctests and benchmarks.
SMALL = {
    "ospo/AdditiveKeywords-v0": {"vocab_size": 16, "num_prompts": 4},
    "ospo/SyntheticRetrieval-v0": {"num_products": 300, "num_queries": 12},
    "ospo/Interaction-v0": {"num_prompts": 4},
    "ospo/LongRange-v0": {"num_prompts": 4},
    # ESCI and H&M read fixture files in the published formats (tests/fixtures_real.py).
    **real_env_kwargs(),
}
ACTIONS = ["", "   ", "<think>x</think>", "hello world", "ñandú ワイヤレス 🎧", "a" * 5000, "\x00\x01 bad \ud800"]


@pytest.fixture(params=ospo_gym.ENV_IDS)
def env_id(request):
    return request.param


def make(env_id, **kwargs):
    return gym.make(env_id, **{**SMALL[env_id], **kwargs})


def test_every_id_is_registered_and_has_small_settings():
    assert set(SMALL) == set(ospo_gym.ENV_IDS)
    assert all(i in gym.registry for i in ospo_gym.ENV_IDS)


def test_check_env(env_id):
    env = make(env_id)
    check_env(env.unwrapped, skip_render_check=True)


def test_same_seed_same_rollout(env_id):
    def rollout(seed):
        env = make(env_id)
        obs, info = env.reset(seed=seed)
        out = [obs, info["prompt_id"]]
        env.action_space.seed(seed)
        action = env.action_space.sample()
        out += [action, env.step(action)[1]]
        obs, _ = env.reset()
        return [*out, obs]

    assert rollout(3) == rollout(3)


def test_env_pickles(env_id):
    env = make(env_id).unwrapped
    obs, info = env.reset(seed=1)
    clone = pickle.loads(pickle.dumps(env))
    clone.reset(seed=1)
    action = "some words " + obs
    assert env.step(action)[1] == clone.step(action)[1]


def test_rewards_finite_in_unit_interval_and_spans_valid(env_id):
    env = make(env_id).unwrapped
    env.reset(seed=0)
    for action in ACTIONS:
        env.reset(seed=0)
        obs, reward, terminated, truncated, info = env.step(action)
        assert np.isfinite(reward) and 0.0 <= reward <= 1.0
        assert terminated and not truncated
        previous = 0
        for start, end in info["segments"]:
            assert previous <= start < end <= len(action)
            previous = end


def test_vector_env_matches_single_env(env_id):
    n = 3
    venv = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", **SMALL[env_id])
    obs, info = venv.reset(seed=10)
    singles = [make(env_id).reset(seed=10 + i) for i in range(n)]
    assert list(obs) == [o for o, _ in singles]
    assert list(info["prompt_id"]) == [i["prompt_id"] for _, i in singles]
    actions = [o[: 40 + 10 * i] for i, o in enumerate(obs)]
    _, rewards, terminated, truncated, info = venv.step(actions)
    for i, (_o, single_info) in enumerate(singles):
        env = make(env_id)
        env.reset(options={"prompt_id": single_info["prompt_id"]})
        _, reward, *_, step_info = env.step(actions[i])
        assert np.isclose(rewards[i], reward)
        assert info["final_info"]["segments"][i] == step_info["segments"]
    assert terminated.all() and not truncated.any()


def test_vector_env_pins_prompts_for_a_group(env_id):
    venv = gym.make_vec(env_id, num_envs=4, vectorization_mode="vector_entry_point", **SMALL[env_id])
    pid = venv.unwrapped.env.prompt_ids[1]
    obs, info = venv.reset(options={"prompt_ids": [pid] * 4})
    assert len(set(obs)) == 1 and list(info["prompt_id"]) == [pid] * 4
    with pytest.raises(ValueError, match="one per sub-env"):
        venv.reset(options={"prompt_ids": [pid]})
    obs, info = venv.reset(options={"prompt_id": pid})  # every sub-env, as in the sync and async modes
    assert len(set(obs)) == 1 and list(info["prompt_id"]) == [pid] * 4
    with pytest.raises(ValueError, match="unknown reset options"):
        venv.reset(options={"prompt": pid})


def test_reset_options_are_checked(env_id):
    env = make(env_id)
    pid = env.unwrapped.prompt_ids[-1]
    obs, info = env.reset(options={"prompt_id": pid})
    assert info["prompt_id"] == pid and obs == env.unwrapped.prompt(pid)
    with pytest.raises(ValueError, match="unknown prompt_id"):
        env.reset(options={"prompt_id": "no-such-prompt"})
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"prompt": pid})


def test_step_checks_action_type_and_reset(env_id):
    env = make(env_id).unwrapped
    with pytest.raises(gym.error.ResetNeeded):
        env.step("text")
    env.reset(seed=0)
    with pytest.raises(TypeError, match="must be a str"):
        env.step(123)


def test_oracle_contract(env_id):
    env = make(env_id).unwrapped
    obs, info = env.reset(seed=2)
    text = f"<think>plan</think>{obs}"
    spans = env.oracle.segment(text)
    assert all(start >= len("<think>plan</think>") for start, _ in spans)
    coalitions = sample_coalitions(len(spans), 4, 20, rng=0)
    values = env.oracle.values(info["prompt_id"], text, spans, coalitions)
    assert values.shape == (len(coalitions),) and np.isfinite(values).all()
    # v(S) is the reward of the segments' text joined by single spaces
    for coalition, value in zip(coalitions, values, strict=True):
        joined = " ".join(text[spans[i][0] : spans[i][1]] for i in coalition)
        assert np.isclose(value, env.score_texts([info["prompt_id"]], [joined])[0])
    # batched == one at a time, and deterministic
    again = env.oracle.values_batch([info["prompt_id"]] * 2, [text, text], [spans, spans], [coalitions, coalitions])
    np.testing.assert_allclose(again[0], values)
    np.testing.assert_allclose(again[1], values)
    with pytest.raises(ValueError, match="outside"):
        env.oracle.values(info["prompt_id"], text, spans, [(len(spans),)])
    with pytest.raises(ValueError, match="span"):
        env.oracle.values(info["prompt_id"], text, [(5, 2)], [(0,)])


def test_oracle_batches_and_caches_in_one_reward_call(env_id):
    env = make(env_id).unwrapped
    calls = []
    original = env.score_texts

    def spy(prompt_ids, texts):
        calls.append(len(texts))
        return original(prompt_ids, texts)

    env.score_texts = spy
    env.__dict__.pop("oracle", None)
    obs, info = env.reset(seed=0)
    spans = env.oracle.segment(obs)
    coalitions = sample_coalitions(len(spans), 2, None)
    env.oracle.values_batch([info["prompt_id"]] * 3, [obs] * 3, [spans] * 3, [coalitions] * 3)
    assert len(calls) == 1
    assert calls[0] == len({" ".join(obs[spans[i][0] : spans[i][1]] for i in c) for c in coalitions})


def test_ground_truth_credit_is_efficient(env_id):
    env = make(env_id).unwrapped
    obs, info = env.reset(seed=4)
    pid = info["prompt_id"]
    spans = env.oracle.segment(obs)
    phi = env.ground_truth_credit(pid, obs)
    assert phi.shape == (len(spans),)
    full, empty = env.oracle.values(pid, obs, spans, [tuple(range(len(spans))), ()])
    assert np.isclose(phi.sum(), full - empty)


def test_ground_truth_credit_rejects_too_many_segments():
    env = make("ospo/Interaction-v0").unwrapped
    text = ", ".join(f"alpha{i} beta{i}" for i in range(25))
    with pytest.raises(ValueError, match="segments"):
        env.ground_truth_credit(0, text)


@pytest.mark.parametrize(
    "module",
    ["ospo_gym.envs.additive", "ospo_gym.envs.interaction", "ospo_gym.envs.retrieval", "ospo_gym.envs.esci", "ospo_gym.envs.hm",
     "ospo_gym.envs.long_range"],
)
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_importing_the_package_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, ospo_gym, gymnasium as gym; gym.make('ospo/AdditiveKeywords-v0'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
