"""ConvSearch as tool calls (TRL's ``environment_factory`` protocol): every tool call must be the Gymnasium
env's turn — the same replies and the same return — and a rollout that stops early is scored as the env scores an
episode that ends there."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from integration_support import conv_episode

import ospo_gym  # noqa: F401
from ospo_gym.integrations.conversation_tools import ENDED_REPLY, conv_search_dataset, conv_search_tools

ENV_KWARGS = {"max_turns": 4, "num_products": 300, "num_targets": 8}


@pytest.fixture(scope="module")
def factory():
    return conv_search_tools("ospo/ConvSearch-v0", env_kwargs=ENV_KWARGS)


def gym_episode(turns, prompt_id=3, **overrides):
    """Replies and return of ``turns`` stepped in a fresh Gymnasium env (stopping at the episode's end)."""
    return conv_episode(gym.make("ospo/ConvSearch-v0", **{**ENV_KWARGS, **overrides}).unwrapped, prompt_id, turns)


def test_tool_calls_are_the_envs_turns_and_the_reward_its_return(factory):
    tools = factory()
    tools.reset(prompt_id=np.int64(3), prompt=[{"role": "user", "content": "..."}])
    title = factory.env.task.texts[factory.env.task.targets[3]]
    replies = [tools.ask("what colour is it?"), tools.ask("ask: which brand?"), tools.search(title)]
    expected, total = gym_episode(["ask: what colour is it?", "ask: which brand?", title])
    assert replies == expected and len(expected) == 3  # the title finds the target: the episode ends at turn 3
    assert tools.get_reward() == pytest.approx(total, abs=1e-12) and total > 0.5
    assert tools.search("anything") == ENDED_REPLY and tools.get_reward() == pytest.approx(total, abs=1e-12)
    assert tools.turns == ["ask: what colour is it?", "ask: which brand?", title]


def test_stopping_early_scores_the_last_search_as_the_env_would_at_an_end(factory):
    task = factory.env.task
    # another product's title: a search that misses the target but retrieves relevant products (NDCG > 0)
    words = next(
        task.texts[row] for row in range(len(task.texts)) if row != task.targets[3]
        and gym_episode([task.texts[row]])[1] == 0 and gym_episode([task.texts[row]], max_turns=1)[1] > 0
    )  # fmt: skip
    tools = factory()
    tools.reset(prompt_id=3)
    tools.ask("what colour?")
    tools.search(words)
    _, total = gym_episode(["ask: what colour?", words], max_turns=2)  # the env ends the same turns there
    assert tools.get_reward() == pytest.approx(total, abs=1e-12)
    assert not tools.conversation.done and total > 0  # a partial match: the rule, not a zero, is tested
    fresh = factory()
    fresh.reset(prompt_id=3)
    fresh.ask("what colour?")
    assert fresh.get_reward() == 0.0  # no search: nothing retrieved


def test_a_search_that_reads_as_a_question_is_still_a_search(factory):
    tools = factory()
    tools.reset(prompt_id=3)
    assert tools.search("ask: red shoes?") == gym_episode(["red shoes"])[0][0]


def test_the_dataset_rows_carry_the_opening_and_the_prompt_id(factory):
    rows = list(conv_search_dataset(factory, prompt_ids=[5, 2]))
    assert [r["prompt_id"] for r in rows] == [5, 2]
    assert rows[0]["prompt"] == [{"role": "user", "content": factory.env.prompt(5).removeprefix("shopper: ")}]


def test_bad_use_is_one_clear_error(factory):
    tools = factory()
    with pytest.raises(RuntimeError, match="reset"):
        tools.ask("what colour?")
    with pytest.raises(ValueError, match="no prompt_id"):
        tools.reset(prompt=[])
    with pytest.raises(ValueError, match="unknown prompt_id"):
        tools.reset(prompt_id=99)
    with pytest.raises(ValueError, match="ConvSearch"):
        conv_search_tools("ospo/SyntheticRetrieval-v0", env_kwargs={"num_products": 300, "num_queries": 4})
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        conv_search_dataset(factory, prompt_ids=[])


# -- TRL's own tool loop ------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_trl_grpo_trainer_plays_the_tool_calls_in_the_env(tmp_path, factory):
    """GRPOTrainer(environment_factory=...) with a scripted generator in place of the model's sampling: its first
    turn calls ``search`` with the target's title (TRL parses the Qwen3 tool call, runs the tool, appends its
    reply and generates again), its second ends. TRL's reward must be each episode's Gymnasium return."""
    pytest.importorskip("trl")
    import torch
    import trl
    from trl import GRPOConfig, GRPOTrainer
    from trl.chat_template_utils import add_response_schema

    from ospo_gym.agents import load_policy
    from ospo_gym.agents.tiny_policy import build_tiny_qwen2

    env = factory.env
    first = {}
    for p in env.prompt_ids:
        first.setdefault(env.prompt(p), p)
    ids = sorted(first.values())[:2]
    template = (Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja").read_text()
    title_of = {env.prompt(p).removeprefix("shopper: "): env.task.texts[env.task.targets[p]] for p in ids}
    # the BPE tokenizer learns the rendered prompts (tool schema included), so they fit the tiny model's context
    build_tiny_qwen2(list(env.task.texts[:100]), tmp_path / "draft")
    _, draft = load_policy(tmp_path / "draft", device="cpu")
    draft.chat_template = template
    tools = factory()
    rendered = [draft.apply_chat_template([{"role": "user", "content": o}], tools=[tools.ask, tools.search],
                                          tokenize=False, add_generation_prompt=True) for o in title_of]  # fmt: skip
    folder = tmp_path / "policy"
    build_tiny_qwen2(rendered * 4 + list(env.task.texts[:100]), folder, vocab_size=2000)
    model, tokenizer = load_policy(folder, device="cpu")
    tokenizer.chat_template = template
    tokenizer = add_response_schema(tokenizer)
    args = GRPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, report_to="none", num_generations=2,
                      per_device_train_batch_size=4, max_steps=1, max_completion_length=900, logging_steps=1,
                      save_strategy="no", seed=0)  # fmt: skip
    trainer = GRPOTrainer(model=model, args=args, processing_class=tokenizer,
                          train_dataset=conv_search_dataset(factory, prompt_ids=ids), environment_factory=factory)  # fmt: skip
    calls = []

    def scripted(prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        out = []
        for row in prompt_ids:
            text = tokenizer.decode(row)
            if "<tool_response>" in text:
                answer = "Done.<|im_end|>"
            else:
                opening = next(o for o in title_of if o in text)
                call = json.dumps({"name": "search", "arguments": {"query": title_of[opening]}})
                answer = f"<tool_call>\n{call}\n</tool_call><|im_end|>"
            calls.append(answer)
            out.append(tokenizer(answer, add_special_tokens=False)["input_ids"])
        return out, None

    trainer._generate_single_turn = scripted
    torch.manual_seed(0)
    trainer.train()
    logged = trainer.state.log_history[0]
    assert float(logged["tools/call_frequency"]) > 0 and float(logged["tools/failure_frequency"]) == 0
    returns = [gym_episode([title_of[env.prompt(p).removeprefix("shopper: ")]], p)[1] for p in ids]
    assert min(returns) > 0.5  # the titles find their targets
    assert float(logged["rewards/ConvSearchTools/mean"]) == pytest.approx(np.mean(returns), abs=1e-3)
    assert sum("<tool_call>" in c for c in calls) == 4 and sum(c.startswith("Done") for c in calls) == 4
