"""The verifiers integration, scored offline: no model, no API.

The environment's dataset rows get hand-written completions in verifiers' formats (chat messages as dicts and as
verifiers' message models, content parts, plain text), scored through verifiers' own entry points — the
environment's rubric (``score_group`` / ``score_rollout``) and a whole ``run_group`` rollout with a scripted client
in place of the model — and the rewards must be the ospo-gym env's ``rewards(prompt_ids, completions)``.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from integration_support import assert_import_refused, scripted_client

import ospo_gym  # noqa: F401

MODULE = "ospo_gym.integrations.verifiers"
ENV_ID = "ospo/SyntheticRetrieval-v0"
ENV_KWARGS = {"num_products": 300, "num_queries": 12}
HAS_VERIFIERS = importlib.util.find_spec("verifiers") is not None
pytestmark = pytest.mark.usefixtures("keep_signal_handlers")  # see conftest.py


# -- without verifiers: nothing is imported, and asking for it says how to install it --------------------------
def test_import_ospo_gym_imports_no_verifiers():
    code = "import sys, ospo_gym, ospo_gym.integrations; print('verifiers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]


def test_without_verifiers_the_import_says_install_the_extra(monkeypatch):
    assert_import_refused(monkeypatch, MODULE, "verifiers", r"pip install 'ospo-gym\[verifiers\]'")


@pytest.mark.skipif(not HAS_VERIFIERS, reason="needs the verifiers extra: pip install 'ospo-gym[verifiers]'")
@pytest.mark.parametrize("version", ["0.4.0", "0.3.0", "0.2.1", "0.4.0.dev1"])
def test_an_untested_verifiers_version_is_refused(monkeypatch, version):
    match = rf"verifiers {version} is installed.*pip install 'ospo-gym\[verifiers\]'"
    assert_import_refused(monkeypatch, MODULE, "verifiers", match, version=version)


# -- fixtures ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def integration():
    if not HAS_VERIFIERS:
        pytest.skip("needs the verifiers extra: pip install 'ospo-gym[verifiers]'")
    sys.modules.pop(MODULE, None)  # the version test above imports it under a patched version
    return importlib.import_module(MODULE)


@pytest.fixture(scope="module")
def vf():
    return pytest.importorskip("verifiers")


@pytest.fixture(scope="module")
def vf_env(integration):
    return integration.load_environment(ENV_ID, env_kwargs=ENV_KWARGS)


@pytest.fixture(scope="module")
def base(vf_env):
    """The ospo-gym env the verifiers environment scores with (the first rubric of verifiers' RubricGroup)."""
    return vf_env.rubric.rubrics[0].env


def query(row) -> str:
    """The shopper's query of a SyntheticRetrieval prompt ("query: <words>")."""
    return row["prompt"][-1]["content"].removeprefix("query: ")


def answers(rows) -> list[str]:
    """Completions whose env rewards differ (1.0 for the query itself, less for parts of it, 0 for other words),
    so that a reward given to the wrong row or a wrong text shows."""
    texts = []
    for i, row in enumerate(rows):
        words = query(row).split()
        texts.append([query(row), f"<think>hm</think><answer>{words[0]}</answer>", "zzz qqq", words[-1]][i % 4])
    return texts


def state_of(vf, row, completion):
    """A finished single-turn rollout as verifiers' environment holds it before scoring (``init_state`` plus the
    rendered completion), for a dataset row."""
    state = vf.State(input=dict(row))
    state["prompt"] = row["prompt"]
    state["completion"] = completion
    state["trajectory"] = []
    return state


def count_env_calls(monkeypatch, base):
    calls = []
    original = base.rewards
    monkeypatch.setattr(base, "rewards", lambda ids, texts: calls.append(len(texts)) or original(ids, texts))
    return calls, original


# -- the environment and its dataset -----------------------------------------------------------------------------
def test_load_environment_is_a_single_turn_env_of_the_envs_prompts(integration, vf, vf_env, base):
    assert isinstance(vf_env, vf.SingleTurnEnv) and vf_env.max_turns == 1
    rows = vf_env.get_dataset()
    assert len(rows) == len(base.prompt_ids) > 1
    assert [row["info"]["prompt_id"] for row in rows] == list(base.prompt_ids)
    assert [row["prompt"] for row in rows] == [[{"role": "user", "content": base.prompt(p)}] for p in base.prompt_ids]
    assert rows["example_id"] == list(range(len(rows)))  # verifiers' own formatting ran over our rows


def test_system_prompt_and_prompt_subset(integration, base):
    pick = [base.prompt_ids[2], base.prompt_ids[0], base.prompt_ids[2]]
    env = integration.load_environment(base, system_prompt="Write a search query.", prompt_ids=pick)
    rows = env.get_dataset()
    assert [row["info"]["prompt_id"] for row in rows] == pick
    assert rows[0]["prompt"] == [
        {"role": "system", "content": "Write a search query."},
        {"role": "user", "content": base.prompt(pick[0])},
    ]


def test_verifiers_loader_takes_this_module_by_name(integration, vf, base):
    """What ``vf-eval ospo_gym.integrations.verifiers -a '{"env": ..., "env_kwargs": ...}'`` does first."""
    env = vf.load_environment(MODULE, env=ENV_ID, env_kwargs=ENV_KWARGS)
    assert isinstance(env, vf.SingleTurnEnv) and env.env_id == MODULE
    assert env.get_dataset()["info"] == [{"prompt_id": p} for p in base.prompt_ids]


# -- scoring: verifiers' rubric gives the env's rewards -----------------------------------------------------------
def completion_forms(vf, text):
    """One text in each of verifiers' completion forms."""
    return [
        text,  # completion format: plain text
        [{"role": "assistant", "content": text}],  # chat messages as dicts
        [vf.AssistantMessage(content=text)],  # verifiers' message models, as a rollout renders them
        [{"role": "assistant", "content": [{"type": "text", "text": text}]}],  # text content parts
    ]


@pytest.mark.parametrize("form", range(4), ids=["text", "chat", "models", "parts"])
def test_score_group_gives_the_envs_rewards_in_one_env_call(integration, vf, vf_env, base, monkeypatch, form):
    rows = [vf_env.get_dataset()[i] for i in range(8)]
    texts = answers(rows)
    expected = base.rewards([row["info"]["prompt_id"] for row in rows], texts).tolist()
    assert len(set(expected)) >= 3  # the completions tell rows and texts apart
    states = [state_of(vf, row, completion_forms(vf, text)[form]) for row, text in zip(rows, texts, strict=True)]
    calls, _ = count_env_calls(monkeypatch, base)
    asyncio.run(vf_env.rubric.score_group(states))  # the environment's rubric: verifiers' RubricGroup
    assert [s["reward"] for s in states] == expected
    assert [s["metrics"]["env_reward"] for s in states] == expected
    assert calls == [len(rows)]  # one batched env call for the group


def test_score_rollout_scores_one_rollout_alone(integration, vf, vf_env, base):
    row = vf_env.get_dataset()[3]
    text = query(row).split()[0]
    state = state_of(vf, row, [{"role": "assistant", "content": text}])
    asyncio.run(vf_env.rubric.score_rollout(state))  # verifiers' independent_scoring path
    assert state["reward"] == base.rewards([row["info"]["prompt_id"]], [text])[0] > 0


def test_an_empty_answer_is_the_empty_text(integration, vf, vf_env, base):
    rows = [vf_env.get_dataset()[i] for i in range(3)]
    empty = [[{"role": "assistant", "content": None}], [], [{"role": "assistant", "content": ""}]]
    states = [state_of(vf, row, c) for row, c in zip(rows, empty, strict=True)]
    asyncio.run(vf_env.rubric.score_group(states))
    assert [s["reward"] for s in states] == base.rewards([r["info"]["prompt_id"] for r in rows], [""] * 3).tolist()


def test_a_whole_verifiers_rollout_with_a_scripted_client(integration, vf, vf_env, base, monkeypatch):
    rows = [vf_env.get_dataset()[i] for i in range(4)]
    texts = answers(rows)
    answer_of = {row["prompt"][-1]["content"]: t for row, t in zip(rows, texts, strict=True)}
    client = scripted_client(vf, lambda prompt: answer_of[prompt[-1].content])
    calls, original = count_env_calls(monkeypatch, base)
    outputs = asyncio.run(vf_env.run_group([dict(row) for row in rows], client, "scripted", {}))
    assert [o["error"] for o in outputs] == [None] * 4
    assert [o["completion"][-1]["content"] for o in outputs] == texts
    assert [o["reward"] for o in outputs] == original([r["info"]["prompt_id"] for r in rows], texts).tolist()
    assert calls == [4]


# -- bad input: one clear error ------------------------------------------------------------------------------------
class PromptsOnlyEnv(gym.Env):
    """Prompts and rewards, no oracle (the reward does not need one); its integer ids do not fit int64."""

    observation_space = gym.spaces.Text(100)
    action_space = gym.spaces.Text(100)
    prompt_ids = [2**64 - 5, 7]

    def prompt(self, prompt_id):
        return f"prompt {prompt_id}"

    def rewards(self, prompt_ids, actions):
        return np.asarray([float(p == 7) + len(a) / 10 for p, a in zip(prompt_ids, actions, strict=True)])


def test_ids_arrow_cannot_hold_travel_as_json_info(integration, vf):
    env = integration.load_environment(PromptsOnlyEnv())
    rows = env.get_dataset()
    assert rows["info"] == ['{"prompt_id": 18446744073709551611}', '{"prompt_id": 7}']
    states = [state_of(vf, row, "ab") for row in rows]
    asyncio.run(env.rubric.score_group(states))
    assert [s["reward"] for s in states] == [0.2, 1.2]  # the exact ids reached the env


def test_unknown_env_id(integration):
    with pytest.raises(ValueError, match=r"unknown env id 'ospo/Nope-v0'; ospo-gym registers .*SyntheticRetrieval"):
        integration.load_environment("ospo/Nope-v0")


def test_env_without_prompts_or_rewards(integration):
    with pytest.raises(ValueError, match="CartPoleEnv is not an ospo-gym generative-search env .*prompt_ids"):
        integration.load_environment(gym.make("CartPole-v1"))
    with pytest.raises(ValueError, match="env_kwargs only apply when env is an id"):
        integration.load_environment(PromptsOnlyEnv(), env_kwargs={"num_queries": 3})
    with pytest.raises(ValueError, match="no prompts: prompt_ids is empty"):
        integration.load_environment(PromptsOnlyEnv(), prompt_ids=[])
    with pytest.raises(ValueError, match="builds the dataset from the env; .*prompt_ids="):
        integration.load_environment(PromptsOnlyEnv(), dataset=None)


@pytest.mark.parametrize(
    "completion, why",
    [
        (5, "neither a string nor a list of chat messages"),
        (["not", "messages"], "neither a string nor a list of chat messages"),
        ([{"role": "assistant", "content": 3}], "content is not text"),
        ([{"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "content is not text"),
    ],
)
def test_a_completion_that_is_not_text_is_one_clear_error(integration, vf, vf_env, completion, why):
    """verifiers' rubric would log the reward function's error and score 0; ours raises it."""
    rows = [vf_env.get_dataset()[i] for i in range(2)]
    states = [state_of(vf, rows[0], "fine"), state_of(vf, rows[1], completion)]
    with pytest.raises(ValueError, match=rf"completion 1 is not text \(.*{why}\).*expected a string or chat messages"):
        asyncio.run(vf_env.rubric.score_group(states))
    with pytest.raises(ValueError, match="completion 0 is not text"):
        asyncio.run(vf_env.rubric.score_rollout(state_of(vf, rows[1], completion)))


def test_a_row_without_prompt_id_is_one_clear_error(integration, vf, vf_env):
    row = dict(vf_env.get_dataset()[0], info={"other": 1})
    with pytest.raises(ValueError, match=r"rollout 0 has no prompt_id in its info .*prompt_dataset\(env\)"):
        asyncio.run(vf_env.rubric.score_group([state_of(vf, row, "text")]))

