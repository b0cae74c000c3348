"""What users of Gymnasium's vector API hit: the three vectorization modes agree, async shared memory holds any
text, prompt pinning works (or says where it does), and prompt ids are plain JSON values."""

from __future__ import annotations

import copy
import json
import multiprocessing as mp

import gymnasium as gym
import numpy as np
import pytest
from fixtures_real import real_env_kwargs
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory

import ospo_gym
from ospo_gym.spaces import UnicodeText

SMALL = {
    "ospo/AdditiveKeywords-v0": {"vocab_size": 16, "num_prompts": 6},
    "ospo/SyntheticRetrieval-v0": {"num_products": 200, "num_queries": 12},
    "ospo/Interaction-v0": {"num_prompts": 6},
    "ospo/LongRange-v0": {"num_prompts": 6},
    **real_env_kwargs(),
}
SAME_STEP = {"autoreset_mode": AutoresetMode.SAME_STEP}
TWO_IDS = ("ospo/AdditiveKeywords-v0", "ospo/SyntheticRetrieval-v0")


def make_vec(env_id: str, mode: str, num_envs: int = 4) -> gym.vector.VectorEnv:
    vector_kwargs = {} if mode == "vector_entry_point" else {"vector_kwargs": SAME_STEP}
    return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode, **vector_kwargs, **SMALL[env_id])


def prompt_ids(env_id: str) -> list:
    return gym.make(env_id, **SMALL[env_id]).unwrapped.prompt_ids


def plain(values) -> list:
    """A vector info entry as a list of plain values (what a user would log)."""
    return np.asarray(values, dtype=object).tolist()


def test_every_id_has_small_settings():
    assert set(SMALL) == set(ospo_gym.ENV_IDS)


@pytest.mark.parametrize("env_id", ospo_gym.ENV_IDS)
def test_async_with_shared_memory_matches_sync(env_id):
    envs = {mode: gym.make_vec(env_id, num_envs=4, vectorization_mode=mode, **SMALL[env_id]) for mode in ("sync", "async")}
    try:
        resets = {mode: env.reset(seed=0) for mode, env in envs.items()}
        assert resets["async"][0] == resets["sync"][0] and isinstance(resets["async"][0], tuple)
        assert plain(resets["async"][1]["prompt_id"]) == plain(resets["sync"][1]["prompt_id"])
        actions = tuple(obs[:30] for obs in resets["sync"][0])
        steps = {mode: env.step(actions) for mode, env in envs.items()}
        assert steps["async"][0] == steps["sync"][0]
        np.testing.assert_array_equal(steps["async"][1], steps["sync"][1])
    finally:
        for env in envs.values():
            env.close()


def test_unicode_text_shared_memory_round_trip():
    texts = ["query: ワイヤレス イヤホン 🎧", "", "a:b\x00c", "lone \ud800 surrogate", "x" * 40]
    space = UnicodeText(40)
    memory = create_shared_memory(space, n=len(texts), ctx=mp.get_context("fork"))
    view = read_from_shared_memory(space, memory, n=len(texts))
    for index, text in enumerate(texts):
        write_to_shared_memory(space, index, text, memory)
    assert copy.deepcopy(view) == tuple(texts) and list(view) == texts and view[1:3] == tuple(texts[1:3])
    write_to_shared_memory(space, 1, "later", memory)
    assert view[1] == "later"  # the view follows the memory, as AsyncVectorEnv(copy=False) expects
    with pytest.raises(ValueError, match="does not fit.*shared_memory"):
        write_to_shared_memory(space, 0, "y" * 41, memory)


def test_observation_space_holds_the_longest_prompt():
    env = gym.make("ospo/ESCI-v0", **SMALL["ospo/ESCI-v0"]).unwrapped
    longest = max(len(env.prompt(p)) for p in env.prompt_ids)
    assert env.observation_space.max_length == longest
    assert env.observation_space.contains("any text, longer than every prompt " * 100)


@pytest.mark.parametrize("env_id", TWO_IDS)
@pytest.mark.parametrize("options", [None, "prompt_id"])
def test_three_modes_agree_on_resets_steps_and_autoreset(env_id, options):
    results, rewards_of = {}, {}
    pinned = None if options is None else {"prompt_id": prompt_ids(env_id)[2]}
    for mode in ("vector_entry_point", "sync", "async"):
        env = make_vec(env_id, mode)
        try:
            obs, info = env.reset(seed=5, options=pinned)
            trace, rewards_of[mode] = [obs, plain(info["prompt_id"])], []
            for step in range(2):  # one-step episodes: every step ends them all and autoresets
                actions = tuple(f"{o[-25:]} extra words {step}" for o in obs)
                obs, rewards, terminated, truncated, info = env.step(actions)
                rewards_of[mode].append(rewards)
                trace += [obs, terminated.tolist(), truncated.tolist(), plain(info["prompt_id"])]
                trace += [plain(info["final_obs"]), plain(info["final_info"]["prompt_id"])]
                trace += [plain(info["final_info"]["retrieval_text"])]
            results[mode] = trace
        finally:
            env.close()
    if options == "prompt_id":
        assert len(set(results["vector_entry_point"][1])) == 1
    for mode in ("sync", "async"):
        assert results[mode] == results["vector_entry_point"]
        # The native env scores the N texts in one batch; sums may differ from one-at-a-time in the last bit.
        np.testing.assert_allclose(rewards_of[mode], rewards_of["vector_entry_point"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("env_id", TWO_IDS)
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.filterwarnings("ignore:.*ERROR:")  # AsyncVectorEnv logs the worker's error as warnings, then raises it
def test_per_sub_env_pinning_names_the_mode_that_can(env_id, mode):
    ids = prompt_ids(env_id)
    env = make_vec(env_id, mode, num_envs=2)
    try:
        with pytest.raises(ValueError, match="vectorization_mode='vector_entry_point'"):
            env.reset(options={"prompt_ids": [ids[1], ids[1]]})
    finally:
        env.close()
    native = make_vec(env_id, "vector_entry_point", num_envs=2)
    _, info = native.reset(options={"prompt_ids": [ids[1], ids[0]]})
    assert plain(info["prompt_id"]) == [ids[1], ids[0]]
    with pytest.raises(ValueError, match="not both"):
        native.reset(options={"prompt_id": ids[0], "prompt_ids": [ids[0], ids[0]]})


@pytest.mark.parametrize("env_id", ospo_gym.ENV_IDS)
def test_prompt_ids_are_plain_json_values(env_id):
    env = gym.make(env_id, **SMALL[env_id])
    _, info = env.reset(seed=0)
    json.dumps(info["prompt_id"])
    assert json.loads(json.dumps(info["prompt_id"])) == info["prompt_id"]
    json.dumps(env.step("some words")[4]["prompt_id"])
    json.dumps(env.unwrapped.prompt_ids)
    for mode in ("vector_entry_point", "sync"):
        venv = make_vec(env_id, mode, num_envs=2)
        _, info = venv.reset(seed=0)
        json.dumps(info["prompt_id"].tolist())
        info = venv.step(("some words", "other words"))[4]
        json.dumps([info["prompt_id"].tolist(), info["final_info"]["prompt_id"].tolist()])
        venv.close()
