"""ConvSearch as a verl agent loop, on the CPU, with a scripted rollout server in place of vLLM.

Each sample must be the Gymnasium episode of the same turns: the reward its return, the response mask 1 exactly on
the policy's generated tokens and 0 on the shopper's replies. Runs in verl's own virtualenv (.ci/stage_verl.sh).
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from integration_support import conv_episode

import ospo_gym  # noqa: F401

HAS_VERL = importlib.util.find_spec("verl") is not None
pytestmark = pytest.mark.skipif(not HAS_VERL, reason="needs verl in its own virtualenv: .ci/stage_verl.sh")
ENV_KWARGS = {"max_turns": 3, "num_products": 300, "num_targets": 8}
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
YAML = Path(__file__).resolve().parents[2] / "examples" / "verl" / "conv_search_agent_loop.yaml"


@pytest.fixture(scope="module")
def module():
    return pytest.importorskip("ospo_gym.integrations.verl_conversation")


@pytest.fixture(scope="module")
def gym_env():
    return gym.make("ospo/ConvSearch-v0", **ENV_KWARGS).unwrapped


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, gym_env):
    from transformers import AutoTokenizer

    from ospo_gym.agents.tiny_policy import build_tiny_qwen2

    folder = tmp_path_factory.mktemp("conv_policy")
    texts = [gym_env.prompt(p) for p in gym_env.prompt_ids] + list(gym_env.task.texts[:100])
    build_tiny_qwen2(texts, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    # the chat markers are special tokens, as in Qwen's tokenizer: decoding a turn with skip_special_tokens drops them
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = TEMPLATE
    return tokenizer


class ScriptedServer:
    """verl's rollout server with canned turns (what a policy would generate), in order."""

    def __init__(self, tokenizer, turns):
        self.tokenizer, self.turns, self.calls = tokenizer, list(turns), 0

    async def generate(self, request_id, prompt_ids, sampling_params, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        text = self.turns[self.calls] + "<|im_end|>"
        self.calls += 1
        return TokenOutput(token_ids=self.tokenizer(text, add_special_tokens=False)["input_ids"], log_probs=None)


def make_loop(module, tokenizer, server, response_length=600):
    from omegaconf import OmegaConf
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap

    config = OmegaConf.create({
        "actor_rollout_ref": {"rollout": {"prompt_length": 512, "response_length": response_length}},
        "data": {"apply_chat_template_kwargs": {}, "mm_processor_kwargs": {}},
        "ospo": {"env_id": "ospo/ConvSearch-v0", "env_kwargs": ENV_KWARGS},
    })  # fmt: skip
    return module.ConvSearchAgentLoop(
        trainer_config=DictConfigWrap(config), server_manager=server, tokenizer=tokenizer, processor=None,
        dataset_cls=None, data_config=DictConfigWrap(config.data),
    )  # fmt: skip


def run(module, tokenizer, gym_env, prompt_id, turns, **loop_kwargs):
    server = ScriptedServer(tokenizer, turns)
    row = module.conv_search_dataset(gym_env, prompt_ids=[prompt_id]).iloc[0]

    async def go():  # verl's agent loop binds the event loop it is built in, as its worker does
        loop = make_loop(module, tokenizer, server, **loop_kwargs)
        return await loop.run({"temperature": 1.0}, raw_prompt=list(row["prompt"]), extra_info=row["extra_info"])

    return asyncio.run(go()), server


@pytest.mark.parametrize("found", [True, False])
def test_a_sample_is_the_gym_episode_with_the_policy_tokens_masked_in(module, tokenizer, gym_env, found):
    title = gym_env.task.texts[gym_env.task.targets[2]]
    turns = ["ask: what colour?", title if found else "zzz qqq", "blue"]
    out, server = run(module, tokenizer, gym_env, 2, turns)
    replies, total = conv_episode(gym_env, 2, turns)
    played = len(replies)
    assert played == (2 if found else 3) and server.calls == played  # the env's end stops the generation
    assert out.reward_score == pytest.approx(total, abs=1e-12)
    assert out.extra_fields["ospo_turns"] == turns[:played] and out.num_turns == 1 + 2 * played
    ids, mask = np.array(out.response_ids), np.array(out.response_mask)
    assert len(ids) == len(mask)
    policy = tokenizer.decode(ids[mask == 1])
    shopper = tokenizer.decode(ids[mask == 0])
    assert policy == "".join(t + "<|im_end|>" for t in turns[:played])  # exactly the generated tokens, in order
    for reply in replies[:-1]:  # every reply but the last (nothing is generated after it) is in the context
        assert reply in shopper and reply not in policy
    assert tokenizer.decode(out.prompt_ids).endswith("<|im_start|>assistant\n")


def test_a_spent_response_budget_ends_the_episode_and_scores_what_was_played(module, tokenizer, gym_env):
    words = gym_env.task.texts[gym_env.task.targets[2]].split()[0]
    out, server = run(module, tokenizer, gym_env, 2, [words, "ask: which brand?", "x"], response_length=4)
    assert server.calls == 1 and len(out.response_ids) <= 4
    env = gym.make("ospo/ConvSearch-v0", **{**ENV_KWARGS, "max_turns": 1}).unwrapped
    assert out.reward_score == pytest.approx(conv_episode(env, 2, [words])[1], abs=1e-12)  # as if the episode ended


def test_dataset_yaml_and_bad_input(module, gym_env, tokenizer, tmp_path):
    from omegaconf import OmegaConf

    frame = module.conv_search_dataset(gym_env, str(tmp_path / "conv.parquet"), prompt_ids=[3, 1])
    assert list(frame["agent_name"]) == [module.AGENT_NAME] * 2
    assert [e["prompt_id"] for e in frame["extra_info"]] == [3, 1]
    assert (tmp_path / "conv.parquet").is_file()
    (entry,) = OmegaConf.load(YAML)
    assert entry.name == module.AGENT_NAME
    assert entry._target_ == f"{module.__name__}.ConvSearchAgentLoop"
    async def go():
        loop = make_loop(module, tokenizer, ScriptedServer(tokenizer, []))
        return await loop.run({}, raw_prompt=[{"role": "user", "content": "hi"}], extra_info={})

    with pytest.raises(ValueError, match="no prompt_id"):
        asyncio.run(go())
    with pytest.raises(ValueError, match="ConvSearch"):
        module.conv_search_dataset("ospo/SyntheticRetrieval-v0", env_kwargs={"num_products": 300, "num_queries": 4})
