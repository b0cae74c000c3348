"""Multi-turn estimators: the batch layout, trajectory GRPO, turn-level GRPO by hand, and ospo_turn's invariants
(mean preserved, efficiency over turns, exact Owen / Shapley when every coalition is enumerated)."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest

import ospo_gym  # noqa: F401

pytest.importorskip("torch")

from ospo_gym.agents import AgentConfig, MultiTurnRolloutBatch, get_estimator, list_estimators  # noqa: E402
from ospo_gym.agents.estimators import group_advantages  # noqa: E402
from ospo_gym.agents.turn_estimators import ospo_turn_credit, turn_grpo_advantages  # noqa: E402
from ospo_gym.credit.owen import union_sums  # noqa: E402

ENV = {"num_products": 400, "num_targets": 8, "reveal_reward": 0.1, "turn_cost": 0.02, "max_turns": 4}


def word_offsets(text: str) -> np.ndarray:
    """One 'token' per word (leading space included), then an EOS token with an empty span."""
    spans = [(m.start(), m.end()) for m in re.finditer(r"\s*\S+", text)]
    return np.asarray(spans + [(len(text), len(text))], dtype=np.int64).reshape(-1, 2)


def batch_of(episodes, rewards, group_index, prompt_ids=None, turn_rewards=None, step=0):
    offsets = [[word_offsets(t) for t in turns] for turns in episodes]
    prompt_ids = [0] * len(episodes) if prompt_ids is None else prompt_ids
    return MultiTurnRolloutBatch.from_turns(
        prompt_ids, group_index, rewards, episodes, offsets, turn_rewards=turn_rewards, step=step
    )


@pytest.fixture(scope="module")
def env():
    return gym.make("ospo/ConvSearch-v0", **ENV, exact_credit=True).unwrapped


def played(env, prompt_id, actions):
    """The turns the env kept and their step rewards."""
    env.reset(options={"prompt_id": prompt_id})
    rewards = []
    for action in actions:
        _, reward, terminated, _, info = env.step(action)
        rewards.append(reward)
        if terminated:
            break
    return info["turns"], np.array(rewards), info["return"]


def product_type(env, prompt_id):
    return env.task.openings[prompt_id].removeprefix("I'm looking for ").rstrip(".")


def group(env, prompt_id):
    """Four different episodes of one prompt (a GRPO group)."""
    ptype = product_type(env, prompt_id)
    scripts = [
        ["ask: colour?", ptype, "which brand?", "ask: material?"],
        [ptype, "zzz"],
        ["which brand?", "ask: colour?", "qqq www"],
        ["zzz qqq", "ask: anything else?", ptype + " now"],
    ]
    return [played(env, prompt_id, s) for s in scripts]


def episode_batch(env, prompt_ids):
    episodes, rewards, turn_rewards, groups, pids = [], [], [], [], []
    for g, prompt_id in enumerate(prompt_ids):
        for turns, steps, total in group(env, prompt_id):
            episodes.append(turns)
            rewards.append(total)
            turn_rewards.append(steps)
            groups.append(g)
            pids.append(prompt_id)
    return batch_of(episodes, rewards, groups, pids, turn_rewards)


# -- the layout ---------------------------------------------------------------------------------------------------


def test_estimators_are_registered_on_import():
    assert {"trajectory_grpo", "turn_grpo", "ospo_turn"} <= set(list_estimators())


def test_from_turns_joins_the_turns_and_their_tokens():
    batch = batch_of([["ask: colour?", "red shoes"], ["zzz"]], [0.5, 0.1], [0, 0])
    assert batch.texts == ["ask: colour?\nred shoes", "zzz"]
    assert batch.turn_spans[0].tolist() == [[0, 12], [13, 22]] and batch.turns(0) == ["ask: colour?", "red shoes"]
    assert batch.completion_mask.sum(axis=1).tolist() == [3 + 3, 2]  # words + one EOS per turn
    assert batch.token_turns(0).tolist() == [0, 0, 0, 1, 1, 1]  # the EOS of turn 0 stays in turn 0
    for (s, e), turn in zip(batch.token_offsets[0].tolist(), [0, 0, 0, 1, 1, 1], strict=True):
        lo, hi = batch.turn_spans[0][turn]
        assert lo <= s <= e <= hi


def test_bad_turn_layouts_are_refused():
    with pytest.raises(ValueError, match="token offsets for 1"):
        MultiTurnRolloutBatch.from_turns([0], [0], [0.0], [["a", "b"]], [[word_offsets("a")]])
    good = batch_of([["a b", "c"]], [0.0], [0])
    with pytest.raises(ValueError, match="not ordered"):
        MultiTurnRolloutBatch(
            good.prompt_ids, good.group_index, good.rewards, good.texts, good.token_offsets, good.completion_mask,
            turn_spans=[np.array([[2, 5], [0, 1]])],
        )
    with pytest.raises(ValueError, match="one reward per turn"):
        batch_of([["a b", "c"]], [0.0], [0], turn_rewards=[[0.1]])
    single = batch_of([["a"]], [0.0], [0])
    from ospo_gym.agents import RolloutBatch

    plain = RolloutBatch(single.prompt_ids, single.group_index, single.rewards, single.texts, single.token_offsets, single.completion_mask)
    for name in ("trajectory_grpo", "turn_grpo", "ospo_turn"):
        with pytest.raises(ValueError, match="MultiTurnRolloutBatch"):
            get_estimator(name)(plain, None, AgentConfig())


# -- trajectory and turn-level GRPO -------------------------------------------------------------------------------


def test_trajectory_grpo_is_one_advantage_per_episode(env):
    batch = episode_batch(env, [0, 1])
    out = get_estimator("trajectory_grpo")(batch, env.oracle, AgentConfig())
    expected = group_advantages(batch.rewards, batch.group_index)
    for b in range(len(batch.rewards)):
        valid = batch.completion_mask[b]
        np.testing.assert_array_equal(out[b, valid], expected[b])
        assert not out[b, ~valid].any()
    assert np.ptp(expected) > 0


def test_turn_grpo_by_hand():
    # one group of two episodes: two turns and three turns
    batch = batch_of(
        [["a", "b"], ["c", "d", "e"]], [1.0, 0.0], [0, 0], turn_rewards=[[0.2, 0.8], [0.0, 0.5, -0.5]]
    )
    out = turn_grpo_advantages(batch, "none", outcome_weight=0.5)
    outcome = np.array([0.5, -0.5])  # returns 1 and 0, centred, not scaled
    turn0 = np.array([0.1, -0.1])  # position 0: rewards 0.2 and 0.0
    turn1 = np.array([0.15, -0.15])  # position 1: rewards 0.8 and 0.5 (position 2 has one episode: its Â is 0)
    # each turn is one word + one EOS token; the last turn of each episode gets the outcome advantage alone
    expected0 = [turn0[0] + 0.5 * outcome[0]] * 2 + [outcome[0]] * 2
    expected1 = [turn0[1] + 0.5 * outcome[1]] * 2 + [turn1[1] + 0.5 * outcome[1]] * 2 + [outcome[1]] * 2
    np.testing.assert_allclose(out[0, :4], expected0)
    np.testing.assert_allclose(out[1, :6], expected1)
    assert not out[0, 4:].any()


def test_turn_grpo_needs_turn_rewards_and_matches_grpo_on_one_turn():
    with pytest.raises(ValueError, match="turn_rewards"):
        get_estimator("turn_grpo")(batch_of([["a"]], [0.0], [0]), None, AgentConfig())
    batch = batch_of([["a b"], ["c"], ["d e f"]], [0.3, 0.9, 0.1], [0, 0, 0], turn_rewards=[[0.3], [0.9], [0.1]])
    np.testing.assert_allclose(
        get_estimator("turn_grpo")(batch, None, AgentConfig()), get_estimator("trajectory_grpo")(batch, None, AgentConfig())
    )


# -- ospo_turn ----------------------------------------------------------------------------------------------------


def test_ospo_turn_keeps_every_episodes_mean_and_shifts_credit_between_turns(env):
    batch = episode_batch(env, [0, 1, 2])
    config = AgentConfig(w_max=4, max_coalitions=12)
    out = get_estimator("ospo_turn")(batch, env.oracle, config)
    advantages = group_advantages(batch.rewards, batch.group_index)
    counts = batch.completion_mask.sum(axis=1)
    np.testing.assert_allclose(out.sum(axis=1), counts * advantages, atol=1e-9)
    assert not out[~batch.completion_mask].any()
    varied = [b for b in range(len(counts)) if advantages[b] != 0 and np.ptp(out[b, batch.completion_mask[b]]) > 1e-9]
    assert varied, "credit should differ between the tokens of some episode"
    again = get_estimator("ospo_turn")(batch, env.oracle, config)
    np.testing.assert_array_equal(out, again)  # seeded by (seed, step, row)


def test_two_level_credit_is_efficient_over_turns(env):
    batch = episode_batch(env, [3])
    spans, credit = ospo_turn_credit(batch, env.oracle, AgentConfig(w_max=2, max_coalitions=6))
    for b in range(len(batch.rewards)):
        sizes = [len(s) for s in spans[b]]
        turns = batch.turns(b)
        full = tuple(range(sum(sizes)))
        v_full, v_empty = env.oracle.values(batch.prompt_ids[b], turns, spans[b], [full, ()])
        assert union_sums(credit[b], sizes).sum() == pytest.approx(v_full - v_empty)
        assert v_full == pytest.approx(batch.rewards[b])  # no turn left out: the episode's return
        # every subset of turns is pooled (4 turns), so the turn sums are exact even with sampled inner windows
        np.testing.assert_allclose(union_sums(credit[b], sizes), env.ground_truth_turn_credit(batch.prompt_ids[b], turns), atol=1e-12)


def test_enumerated_two_level_credit_is_exact_owen_and_sums_to_exact_turn_shapley(env):
    batch = episode_batch(env, [4, 5])
    spans, credit = ospo_turn_credit(batch, env.oracle, AgentConfig(), all_inner=True)
    for b in range(len(batch.rewards)):
        turns, prompt_id = batch.turns(b), batch.prompt_ids[b]
        sizes = [len(s) for s in spans[b]]
        if sum(sizes) > 16:
            continue
        np.testing.assert_allclose(credit[b], env.ground_truth_credit(prompt_id, turns), atol=1e-12)
        np.testing.assert_allclose(union_sums(credit[b], sizes), env.ground_truth_turn_credit(prompt_id, turns), atol=1e-12)


def test_registered_ospo_turn_is_exact_when_windows_cover_every_subset(env):
    # turns of at most two words: contiguous windows are every subset, and 4 turns enumerate every outer set
    turns = ["ask: colour?", product_type(env, 6).split()[-1], "which brand?", "zzz"]
    played_turns, steps, total = played(env, 6, turns)
    batch = batch_of([played_turns], [total], [0], [6])
    spans, credit = ospo_turn_credit(batch, env.oracle, AgentConfig())
    assert max(len(s) for s in spans[0]) <= 2
    np.testing.assert_allclose(credit[0], env.ground_truth_credit(6, played_turns), atol=1e-12)


def test_ospo_turn_refuses_a_single_turn_oracle(env):
    single = gym.make("ospo/AdditiveKeywords-v0", vocab_size=16, num_prompts=2).unwrapped
    batch = batch_of([["a b"], ["c"]], [1.0, 0.0], [0, 0])
    with pytest.raises(ValueError, match="TurnOracle"):
        get_estimator("ospo_turn")(batch, single.oracle, AgentConfig())
