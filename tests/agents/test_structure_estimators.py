"""AgentConfig.coalition_structure in the OSPO estimators: the old settings unchanged, the new ones wired."""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("torch")

from ospo_gym.agents import AgentConfig, RolloutBatch, get_estimator, group_advantages  # noqa: E402
from ospo_gym.credit import (  # noqa: E402
    register_segment_encoder,
    sample_coalitions,
    segment_credit,
    segment_unions,
    structured_credit,
)
from ospo_gym.envs.long_range import LongRangeEnv  # noqa: E402


def batch_of(env: LongRangeEnv, texts: list[str], step: int = 0) -> RolloutBatch:
    offsets = [
        np.asarray([(m.start(), m.end()) for m in re.finditer(r"\s*\S+", t)] + [(len(t), len(t))]).reshape(-1, 2)
        for t in texts
    ]
    mask = np.zeros((len(texts), max(len(o) for o in offsets)), dtype=bool)
    for b, o in enumerate(offsets):
        mask[b, : len(o)] = True
    rewards = env.rewards([0] * len(texts), texts)
    return RolloutBatch([0] * len(texts), np.zeros(len(texts), dtype=int), rewards, texts, offsets, mask, step)


@pytest.fixture
def env_and_batch():
    env = LongRangeEnv(num_prompts=2, length=12, gap=4)
    rng = np.random.default_rng(0)
    answer = env.prompt(0).split("write: ")[1].split(" |")[0].split()
    texts = [" ".join(rng.permutation(answer)[: int(rng.integers(4, 12))]) for _ in range(6)]
    return env, batch_of(env, texts, step=3)


def test_random_structure_is_the_contiguous_false_ablation_bit_for_bit(env_and_batch):
    env, batch = env_and_batch
    old = get_estimator("ospo_prop")(batch, env.oracle, AgentConfig(algo="ospo_prop", contiguous=False, max_coalitions=20))
    new = get_estimator("ospo_prop")(
        batch, env.oracle, AgentConfig(algo="ospo_prop", coalition_structure="random", max_coalitions=20)
    )
    np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("structure", ["windows", "windows+complements", "owen"])
def test_each_structure_reaches_the_tokens_and_keeps_the_mean_advantage(env_and_batch, structure):
    env, batch = env_and_batch
    config = AgentConfig(algo="ospo_prop", coalition_structure=structure, w_max=3, max_coalitions=40)
    token_adv = get_estimator("ospo_prop")(batch, env.oracle, config)
    counts = batch.completion_mask.sum(axis=1)
    np.testing.assert_allclose(token_adv.sum(axis=1) / counts, group_advantages(batch.rewards, batch.group_index), atol=1e-9)
    # the credit of completion 0 is the structure's own: rebuild it by hand from the same seeded stream
    text = batch.texts[0]
    spans = env.oracle.segment(text)
    stream = np.random.SeedSequence([config.seed, batch.step]).spawn(1)[0]
    unions = segment_unions(text, spans) if structure == "owen" else None
    coalitions = sample_coalitions(
        len(spans), 3, 40, rng=np.random.default_rng(stream), coalition_structure=structure, unions=unions
    )
    values = env.oracle.values(0, text, spans, coalitions)
    credit = structured_credit(coalitions, values, len(spans), structure, unions=unions)
    if structure == "windows":
        np.testing.assert_array_equal(credit, segment_credit(coalitions, values, len(spans)))
    prop = credit - credit.min()  # PROP: one token per word here, shares proportional to min–max credit
    shares = token_adv[0, : len(spans)] / token_adv[0, : len(spans)].sum()
    np.testing.assert_allclose(shares, prop / prop.sum(), atol=1e-9)


def test_owen_structure_differs_from_windows_where_partners_are_far_apart(env_and_batch):
    env, batch = env_and_batch
    runs = {
        s: get_estimator("ospo_prop")(batch, env.oracle, AgentConfig(algo="ospo_prop", coalition_structure=s, w_max=2))
        for s in ("windows", "owen")
    }
    assert not np.allclose(runs["windows"], runs["owen"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"coalition_structure": "stripes"}, "coalition_structure"),
        ({"coalition_structure": "owen", "contiguous": False}, "contiguous=False"),
        ({"coalition_structure": "owen", "credit_variant": "weighted"}, "two-level Owen"),
        ({"owen_unions": "semantic"}, "owen_unions"),
        ({"owen_encoder": ""}, "owen_encoder"),
    ],
)
def test_bad_structure_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AgentConfig(**kwargs)


def stem_encoder(texts):
    """Words embedded by their first four letters (one-hot): LongRange's sibling words share a stem."""
    stems = sorted({t[:4] for t in texts})
    return np.eye(len(stems))[[stems.index(t[:4]) for t in texts]]


def test_embedding_unions_reach_the_estimator_through_the_registered_encoder(env_and_batch):
    env, old = env_and_batch
    answer = env.prompt(0).split("write: ")[1].split(" |")[0]
    batch = batch_of(env, [answer, *old.texts[1:]], step=3)  # the whole answer first: both pairs' partners in it
    register_segment_encoder("test-stems", stem_encoder)
    register_segment_encoder("test-orthogonal", lambda texts: np.eye(len(texts)))

    def run(**kwargs):
        config = AgentConfig(algo="ospo_prop", coalition_structure="owen", w_max=2, **kwargs)
        return get_estimator("ospo_prop")(batch, env.oracle, config)

    # on these texts the stem embeddings join exactly the words the lexical unions join (checked), so the two
    # settings must give the same advantages bit for bit; singleton unions (orthogonal embeddings) must not
    for text in batch.texts:
        spans = env.oracle.segment(text)
        np.testing.assert_array_equal(
            segment_unions(text, spans, "embedding", encoder=stem_encoder), segment_unions(text, spans, "lexical")
        )
    spans = env.oracle.segment(answer)
    assert len(set(segment_unions(answer, spans, "lexical").tolist())) < len(spans)  # some partners share a union
    stems = run(owen_unions="embedding", owen_encoder="test-stems")
    np.testing.assert_array_equal(stems, run(owen_unions="lexical"))
    assert not np.allclose(run(owen_unions="embedding", owen_encoder="test-orthogonal"), stems)
    with pytest.raises(ValueError, match="unknown segment encoder 'absent'"):
        run(owen_unions="embedding", owen_encoder="absent")
