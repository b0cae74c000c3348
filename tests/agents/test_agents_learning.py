"""Slow: every built-in algorithm learns the additive keyword task with the tiny CPU policy.

Run with ``pytest -m slow -s tests/agents/test_agents_learning.py`` (prints the numbers). Reward is the mean over all
prompts, 16 (8 for the per-prompt task) sampled completions each, before and after training. Measured on 2 CPU
cores, tiny_cpu preset (8 completions per prompt, 8 new tokens, lr 2e-3, one torch thread):

* shared weights (``ENV_KWARGS``), 2 prompts per step, 150 steps, ~5 s per run, seeds 0–2: untrained 0.51,
  trained 0.95–0.98 for grpo, ospo_prop and ospo_rank alike.
* per-prompt weights (``PER_PROMPT``: 8 prompts, 24 keywords, the policy must read the prompt), 4 prompts per
  step, seeds 0–2: untrained 0.46; after 300 steps grpo 0.73–0.78, ospo_prop 0.82–0.84, ospo_rank 0.75–0.86;
  after 600 steps (~30 s) grpo 0.76/0.85/0.83, ospo_prop 0.89/0.91/0.89, ospo_rank 0.85/0.90/0.96.

The thresholds below only ask for clear learning, with a wide margin; they do not rank the algorithms.
"""

from __future__ import annotations

import pytest
from test_agents_support import ENV_ID, ENV_KWARGS, fast_config, tiny_policy_path

pytest.importorskip("torch")

from ospo_gym.agents import Agent  # noqa: E402

PER_PROMPT = dict(vocab_size=24, num_prompts=8, num_positive=3, num_negative=3, shared_weights=False)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["grpo", "ospo_prop", "ospo_rank"])
def test_algorithm_learns_the_additive_task(tmp_path_factory, tmp_path, algo):
    config = fast_config(run_dir=str(tmp_path), seed=1)
    agent = Agent(ENV_ID, algo=algo, policy=tiny_policy_path(tmp_path_factory), config=config, env_kwargs=ENV_KWARGS)
    untrained = agent.evaluate(16)
    agent.learn(150)
    trained = agent.evaluate(16)
    print(f"\n{algo} shared weights: untrained {untrained:.3f} -> trained {trained:.3f} after 150 steps")
    assert untrained < 0.6
    assert trained > untrained + 0.25 and trained > 0.8


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["grpo", "ospo_prop", "ospo_rank"])
def test_algorithm_learns_per_prompt_keywords(tmp_path_factory, tmp_path, algo):
    policy = tiny_policy_path(tmp_path_factory, PER_PROMPT, name="tiny_qwen2_per_prompt")
    config = fast_config(run_dir=str(tmp_path), seed=1, prompts_per_step=4)
    agent = Agent(ENV_ID, algo=algo, policy=policy, config=config, env_kwargs=PER_PROMPT)
    untrained = agent.evaluate(8)
    agent.learn(300)
    trained = agent.evaluate(8)
    print(f"\n{algo} per-prompt weights: untrained {untrained:.3f} -> trained {trained:.3f} after 300 steps")
    assert trained > untrained + 0.15
