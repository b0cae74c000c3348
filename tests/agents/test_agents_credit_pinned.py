"""The batched credit path (issue 17) gives exactly the token advantages of the per-completion loop it replaced.

``frozen_ospo_credit`` below is a FROZEN COPY of ``ospo_credit`` as it was before the batching (per-completion
segmentation and ``sample_coalitions``), kept only as the reference of these tests: do not update it when the
estimator changes on purpose; change the test instead.
"""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest

import ospo_gym  # noqa: F401

pytest.importorskip("torch")

from ospo_gym.agents import AgentConfig, RolloutBatch, get_estimator  # noqa: E402
from ospo_gym.credit import (  # noqa: E402
    clip_token_advantages,
    ospo_token_advantages,
    sample_coalitions,
    segment_credit,
)
from ospo_gym.credit.coalitions import sample_coalitions_batch  # noqa: E402


# ---- FROZEN REFERENCE (the pre-issue-17 per-completion loop of agents/estimators.py) -------------------------
def frozen_ospo_credit(batch, oracle, config, redistribution):
    advantages = batch.sequence_advantages(config.scale_rewards, ddof=config.std_ddof)
    spans = [oracle.segment(text) if a != 0.0 else [] for text, a in zip(batch.texts, advantages, strict=True)]
    streams = np.random.SeedSequence([config.seed, batch.step]).spawn(batch.first_row + len(batch.texts))[batch.first_row :]
    asked = [b for b, s in enumerate(spans) if len(s) >= 2 and advantages[b] != 0.0]
    coalitions = {
        b: sample_coalitions(
            len(spans[b]),
            config.w_max,
            config.max_coalitions,
            rng=np.random.default_rng(streams[b]),
            contiguous=config.contiguous,
            cover_singletons=config.credit_path == "default",
        )
        for b in asked
    }
    credit = [np.zeros(len(s)) for s in spans]
    if asked:
        values = oracle.values_batch(
            [batch.prompt_ids[b] for b in asked],
            [batch.texts[b] for b in asked],
            [spans[b] for b in asked],
            [coalitions[b] for b in asked],
        )
        for b, value in zip(asked, values, strict=True):
            credit[b] = segment_credit(coalitions[b], value, len(spans[b]), variant=config.credit_variant)
    token_advantages = ospo_token_advantages(
        spans, credit, batch.token_offsets, advantages, redistribution=redistribution, mask=batch.completion_mask,
        rewards=batch.rewards, credit_path=config.credit_path,
    )  # fmt: skip
    if config.clip_token_advantages is not None:
        every = batch.sequence_advantages(config.scale_rewards, ddof=config.std_ddof, whole_batch=True)
        token_advantages = clip_token_advantages(token_advantages, every, config.clip_token_advantages)
    return token_advantages


# ---- END OF THE FROZEN REFERENCE -------------------------------------------------------------------------------


def word_offsets(text: str) -> np.ndarray:
    """One 'token' per word with its leading space, then an EOS token of empty span."""
    spans = [(m.start(), m.end()) for m in re.finditer(r"\s*\S+", text)]
    return np.asarray(spans + [(len(text), len(text))], dtype=np.int64).reshape(-1, 2)


def random_batch(env, rng: np.random.Generator, groups: int, group_size: int, words: int, step: int) -> RolloutBatch:
    """Completions of env words (repeats inside a group, some flat groups), with their env rewards."""
    vocab = np.asarray(env.vocabulary)
    prompt_ids, texts = [], []
    for g in range(groups):
        pid = env.prompt_ids[int(rng.integers(len(env.prompt_ids)))]
        group = [" ".join(rng.choice(vocab, size=int(rng.integers(1, words + 1)))) for _ in range(group_size)]
        if g % 3 == 1:
            group[1] = group[0]  # a repeated completion (segmented once, sampled twice)
        if g % 3 == 2:
            group = [group[0]] * group_size  # a flat group: Â = 0
        prompt_ids += [pid] * group_size
        texts += group
    rewards = env.rewards(prompt_ids, texts)
    offsets = [word_offsets(t) for t in texts]
    mask = np.zeros((len(texts), max(len(o) for o in offsets)), dtype=bool)
    for b, o in enumerate(offsets):
        mask[b, : len(o)] = True
    group_index = np.repeat(np.arange(groups), group_size)
    return RolloutBatch(prompt_ids, group_index, rewards, texts, offsets, mask, step)


ENVS = {
    "retrieval": ("ospo/SyntheticRetrieval-v0", {"num_products": 300, "num_queries": 20}),
    "additive": ("ospo/AdditiveKeywords-v0", {}),
    "phrases": ("ospo/SyntheticRetrieval-v0", {"num_products": 300, "num_queries": 20, "segmentation": "phrase"}),
}
CONFIGS = {
    "prop": AgentConfig(algo="ospo_prop"),
    "rank": AgentConfig(algo="ospo_rank"),
    "released": AgentConfig.released(algo="ospo_prop"),
    "released_rank": AgentConfig.released(algo="ospo_rank"),
    "small_budget": AgentConfig(algo="ospo_prop", w_max=3, max_coalitions=7, seed=5),
    "noncontiguous": AgentConfig(algo="ospo_rank", contiguous=False, max_coalitions=20),
    "weighted_clip": AgentConfig(algo="ospo_prop", credit_variant="weighted", clip_token_advantages=1.5),
}


@pytest.fixture(scope="module", params=sorted(ENVS))
def env(request):
    env_id, kwargs = ENVS[request.param]
    return gym.make(env_id, **kwargs).unwrapped


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_batched_credit_equals_the_frozen_per_completion_loop(env, name):
    config = CONFIGS[name]
    redistribution = "rank" if config.algo == "ospo_rank" else "prop"
    rng = np.random.default_rng(7)
    informative = 0
    for step in range(3):
        batch = random_batch(env, rng, groups=4, group_size=6, words=20, step=step)
        want = frozen_ospo_credit(batch, env.oracle, config, redistribution)
        got = get_estimator(config.algo)(batch, env.oracle, config)
        assert got.dtype == want.dtype and np.array_equal(got, want), (name, step)
        # the comparison means something: some rows are not GRPO's uniform advantage
        advantages = batch.sequence_advantages(config.scale_rewards, ddof=config.std_ddof)
        uniform = np.where(batch.completion_mask, advantages[:, None], 0.0)
        informative += int(np.any(~np.isclose(got, uniform), axis=1).sum())
    assert informative > 0


def test_a_rank_of_a_data_parallel_batch_draws_its_global_rows_coalitions(env):
    config = AgentConfig(algo="ospo_prop", w_max=3, max_coalitions=7)
    batch = random_batch(env, np.random.default_rng(3), groups=2, group_size=6, words=20, step=4)
    batch.first_row = 12  # rows 12..23 of the step's global batch
    assert np.array_equal(get_estimator("ospo_prop")(batch, env.oracle, config),
                          frozen_ospo_credit(batch, env.oracle, config, "prop"))  # fmt: skip


@pytest.mark.parametrize("cover", [True, False])
@pytest.mark.parametrize(("w_max", "budget"), [(8, 96), (3, 7), (2, 4), (8, None), (30, 40)])
def test_sample_coalitions_batch_equals_one_call_per_text(cover, w_max, budget):
    sizes = [0, 1, 2, 3, 5, 9, 16, 16, 25, 40]
    seeds = np.random.SeedSequence([11, 2]).spawn(len(sizes))
    got = sample_coalitions_batch(sizes, w_max, budget, seeds=seeds, cover_singletons=cover)
    want = [
        sample_coalitions(n, w_max, budget, rng=np.random.default_rng(s), cover_singletons=cover)
        for n, s in zip(sizes, seeds, strict=True)
    ]
    assert got == want
    assert any(len(c) == budget for c in got) or budget is None  # the budget bit somewhere


def test_sample_coalitions_batch_needs_one_seed_per_text():
    with pytest.raises(ValueError, match="one seed per text"):
        sample_coalitions_batch([3, 4], seeds=[0])
