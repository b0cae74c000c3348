"""``ospo/ConvSearch-v0`` through verifiers' multi-turn environment, offline: a scripted client plays the policy.

Each rollout must be the episode the Gymnasium env plays with the same turns: the same shopper replies, the same
number of turns (the env's own end: found, or max_turns), and the episode's return as the reward.
"""

from __future__ import annotations

import asyncio
import importlib.util

import gymnasium as gym
import pytest
from integration_support import conv_episode, scripted_client

import ospo_gym  # noqa: F401

HAS_VERIFIERS = importlib.util.find_spec("verifiers") is not None
pytestmark = [
    pytest.mark.skipif(not HAS_VERIFIERS, reason="needs the verifiers extra: pip install 'ospo-gym[verifiers]'"),
    pytest.mark.usefixtures("keep_signal_handlers"),
]
ENV_KWARGS = {"max_turns": 3, "num_products": 300, "num_targets": 12}


@pytest.fixture(scope="module")
def vf():
    return pytest.importorskip("verifiers")


@pytest.fixture(scope="module")
def integration():
    return pytest.importorskip("ospo_gym.integrations.verifiers")


@pytest.fixture(scope="module")
def gym_env():
    return gym.make("ospo/ConvSearch-v0", **ENV_KWARGS).unwrapped


@pytest.fixture(scope="module")
def distinct(gym_env):
    """Targets whose openings differ (the scripted client tells rows apart by the opening)."""
    first = {}
    for p in gym_env.prompt_ids:
        first.setdefault(gym_env.prompt(p), p)
    ids = sorted(first.values())
    assert len(ids) >= 4
    return ids[:4]


def script(env, prompt_id, find):
    """The policy's turns: a question, then the target's own title when ``find`` (the episode ends at turn 2) or
    words of no product (the episode runs to max_turns)."""
    title = env.task.texts[env.task.targets[prompt_id]]
    return ["ask: what colour?", title if find else "zzz qqq", "blue"]


def played(env, prompt_id, find):
    """What the Gymnasium env gives for ``script``: the turns taken, the shopper's replies and the return."""
    replies, total = conv_episode(env, prompt_id, script(env, prompt_id, find))
    return script(env, prompt_id, find)[: len(replies)], replies, total


def test_load_environment_gives_a_multi_turn_env_of_the_targets(integration, vf, gym_env, distinct):
    vf_env = integration.load_environment("ospo/ConvSearch-v0", env_kwargs=ENV_KWARGS, prompt_ids=distinct)
    assert isinstance(vf_env, vf.MultiTurnEnv) and not isinstance(vf_env, vf.SingleTurnEnv)
    rows = list(vf_env.get_dataset())
    assert [r["info"]["prompt_id"] for r in rows] == distinct
    assert [r["prompt"] for r in rows] == [
        [{"role": "user", "content": gym_env.prompt(p).removeprefix("shopper: ")}] for p in distinct
    ]


def test_a_rollout_is_the_gym_episode_and_its_reward_the_return(integration, vf, gym_env, distinct, monkeypatch):
    vf_env = integration.load_environment("ospo/ConvSearch-v0", env_kwargs=ENV_KWARGS, prompt_ids=distinct)
    env = vf_env.conv_env
    rows = list(vf_env.get_dataset())
    finds = set(distinct[0::2])
    id_of = {r["prompt"][0]["content"]: r["info"]["prompt_id"] for r in rows}

    def answer(prompt):
        turn = sum(m.role == "assistant" for m in prompt)
        p = id_of[prompt[0].content]
        return script(env, p, p in finds)[turn]

    calls = []
    replay = env.replay_returns
    monkeypatch.setattr(env, "replay_returns", lambda ids, sessions: calls.append(len(ids)) or replay(ids, sessions))
    outputs = asyncio.run(vf_env.run_group([dict(r) for r in rows], scripted_client(vf, answer), "scripted", {}))
    lengths = set()
    for row, out in zip(rows, outputs, strict=True):
        p = row["info"]["prompt_id"]
        turns, replies, total = played(gym_env, p, p in finds)
        assert out["error"] is None
        roles = [m["role"] for m in out["completion"]]
        assert roles == ["assistant", "user"] * len(turns)  # the last turn is played and answered
        assert [m["content"] for m in out["completion"][0::2]] == turns
        assert [m["content"] for m in out["completion"][1::2]] == replies
        assert out["reward"] == pytest.approx(total, abs=1e-12)
        lengths.add(len(turns))
    assert lengths == {2, 3}  # both ends of an episode were exercised: found early, and max_turns
    assert any(o["reward"] > 0.5 for o in outputs)
    assert calls == [len(rows)]  # the group is scored in one replay


def test_the_reward_replays_the_policy_turns_of_the_completion(integration, vf, gym_env, distinct):
    vf_env = integration.load_environment("ospo/ConvSearch-v0", env_kwargs=ENV_KWARGS, prompt_ids=distinct)
    p = distinct[0]
    turns, replies, total = played(gym_env, p, True)
    completion = [m for t, r in zip(turns, replies, strict=True) for m in ({"role": "assistant", "content": t},
                                                                           {"role": "user", "content": r})]  # fmt: skip
    rubric = vf_env.rubric.rubrics[0]
    assert rubric.env_reward([completion], [{"prompt_id": p}]) == pytest.approx([total], abs=1e-12)
    # dropping the winning search must change the return: the reward reads the turns, not a stored total
    assert rubric.env_reward([completion[:2]], [{"prompt_id": p}]) != pytest.approx([total], abs=1e-12)


def test_bad_arguments_are_one_clear_error(integration, distinct):
    with pytest.raises(ValueError, match="build the env with max_turns"):
        integration.load_environment("ospo/ConvSearch-v0", env_kwargs=ENV_KWARGS, max_turns=5)
    with pytest.raises(ValueError, match="unknown prompt_id"):
        integration.load_environment("ospo/ConvSearch-v0", env_kwargs=ENV_KWARGS, prompt_ids=[10**6])
    with pytest.raises(ValueError, match="lacks rewards"):  # prompts, but neither rewards nor replays
        integration.load_environment(PromptsOnly())


class PromptsOnly(gym.Env):
    observation_space = action_space = gym.spaces.Text(10)
    prompt_ids = [0]

    def prompt(self, prompt_id):
        return "hello"
