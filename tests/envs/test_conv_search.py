"""ospo/ConvSearch-v0: the env contract every id passes (multi-step version), the shopper's rules, the knobs, the
turn oracle's replay and the ground-truth variant."""

from __future__ import annotations

import doctest
import pickle

import gymnasium as gym
import numpy as np
import pytest
from fixtures_real import esci_dir, hm_dir, scratch_dir
from gymnasium.utils.env_checker import check_env

import ospo_gym
from ospo_gym.credit import shapley_exact
from ospo_gym.credit.owen import union_sums
from ospo_gym.envs import conv_search
from ospo_gym.envs.shopper import FOUND_REPLY, turn_kind

ID = "ospo/ConvSearch-v0"
SMALL = {"num_products": 400, "num_targets": 8}
SHAPED = {**SMALL, "reveal_reward": 0.1, "turn_cost": 0.02, "max_turns": 5}


@pytest.fixture(scope="module")
def env():
    return gym.make(ID, **SHAPED).unwrapped


def make(**kwargs):
    return gym.make(ID, **{**SMALL, **kwargs})


def product_type(env, prompt_id):
    return env.task.openings[prompt_id].removeprefix("I'm looking for ").rstrip(".")


def belief(env, prompt_id, name):
    return env.task.vocab[name][env.shopper.beliefs[prompt_id, env.task.attributes.index(name)]]


def scripted(env, prompt_id):
    """A plausible episode: search the type, ask colour and brand, search with what was said."""
    ptype = product_type(env, prompt_id)
    return [
        "ask: which colour?",
        ptype,
        "what brand is it?",
        f"{belief(env, prompt_id, 'brand')} {belief(env, prompt_id, 'color')} {ptype}",
        "ask: material?",
    ]


def play(env, prompt_id, actions):
    env.reset(options={"prompt_id": prompt_id})
    steps = []
    for action in actions:
        steps.append(env.step(action))
        if steps[-1][2]:
            break
    return steps


# -- the contract ------------------------------------------------------------------------------------------------


def test_registered_as_a_multi_turn_id():
    assert ID in ospo_gym.registration.MULTI_TURN_ENV_IDS and ID in gym.registry
    assert ID in ospo_gym.registration.ALL_ENV_IDS and ID not in ospo_gym.ENV_IDS  # single-step tests skip it


def test_check_env():
    check_env(make().unwrapped, skip_render_check=True)


@pytest.mark.parametrize("dataset", ["esci", "hm"])
def test_check_env_on_data_files(dataset):
    folder = esci_dir() if dataset == "esci" else hm_dir()
    env = make(data_dir=str(folder), dataset=dataset, cache_dir=str(scratch_dir() / "cache"))
    check_env(env.unwrapped, skip_render_check=True)


def test_same_seed_same_episode():
    def rollout(seed):
        env = make(shopper_noise=0.3, reveal_reward=0.1)
        obs, info = env.reset(seed=seed)
        out = [obs, info["prompt_id"]]
        env.action_space.seed(seed)
        for i in range(4):
            action = env.action_space.sample() if i % 2 else "ask: brand or colour?"
            obs, reward, terminated, truncated, info = env.step(action)
            out += [action, obs, reward, terminated, info["reply"]]
            if terminated:
                break
        return out

    assert rollout(5) == rollout(5)
    assert rollout(5) != rollout(6)


def test_env_pickles(env):
    env.reset(seed=1)
    env.step("ask: colour?")
    clone = pickle.loads(pickle.dumps(env))
    assert clone.step("some words") == env.step("some words")


def test_multi_step_episode_and_its_end(env):
    obs, info = env.reset(options={"prompt_id": 0})
    assert obs == env.prompt(0) and info == {"prompt_id": 0, "turn": 0}
    for turn in range(1, 6):
        obs, reward, terminated, truncated, info = env.step("zzz unrelated words")
        assert not truncated and info["turn"] == turn and obs.count("\nyou: ") == turn
        assert terminated == (turn == 5)  # max_turns=5, no search finds the target
    assert info["reply"] == "Nothing came up." and info["return"] == pytest.approx(-0.02 * 5)  # no reveal, no ranking
    with pytest.raises(gym.error.ResetNeeded):
        env.step("again")


def test_step_checks_type_and_reset():
    env = make().unwrapped
    with pytest.raises(gym.error.ResetNeeded):
        env.step("text")
    env.reset(seed=0)
    with pytest.raises(TypeError, match="must be a str"):
        env.step(123)
    with pytest.raises(ValueError, match="unknown prompt_id"):
        env.reset(options={"prompt_id": 99})
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"prompt": 0})
    with pytest.raises(ValueError, match="vector_entry_point"):
        env.reset(options={"prompt_ids": [0]})


def test_vector_env_matches_single_env():
    n = 3
    venv = gym.make_vec(ID, num_envs=n, vectorization_mode="vector_entry_point", **SHAPED)
    obs, info = venv.reset(seed=10)
    singles = [gym.make(ID, **SHAPED) for _ in range(n)]
    starts = [s.reset(seed=10 + i) for i, s in enumerate(singles)]
    assert list(obs) == [o for o, _ in starts] and info["prompt_id"].tolist() == [i["prompt_id"] for _, i in starts]
    script = [["ask: colour?", "zzz", "ask: brand?", "qqq", "ask: what else?"], ["qqq", "?", "www", "eee", "rrr"]]
    script.append([product_type(venv.unwrapped.env, starts[2][1]["prompt_id"])] * 5)
    finished = [False] * n
    for t in range(5):
        actions = [script[i][t] for i in range(n)]
        obs, rewards, terminated, truncated, info = venv.step(actions)
        for i, single in enumerate(singles):
            if finished[i]:
                continue
            s_obs, s_reward, s_term, _, _ = single.step(actions[i])
            assert rewards[i] == s_reward and terminated[i] == s_term
            if s_term:
                assert info["final_obs"][i] == s_obs and info["_final_info"][i]
                assert obs[i] == venv.unwrapped.env.prompt(int(info["prompt_id"][i]))  # SAME_STEP autoreset
                finished[i] = True
            else:
                assert obs[i] == s_obs
    assert finished == [True] * n


def test_vector_env_pins_prompts_and_checks_input():
    venv = gym.make_vec(ID, num_envs=4, vectorization_mode="vector_entry_point", **SMALL)
    obs, info = venv.reset(options={"prompt_ids": [2] * 4})
    assert len(set(obs)) == 1 and info["prompt_id"].tolist() == [2] * 4
    with pytest.raises(ValueError, match="one per sub-env"):
        venv.reset(options={"prompt_ids": [2]})
    with pytest.raises(ValueError, match="unknown prompt_id"):
        venv.reset(options={"prompt_id": -1})
    with pytest.raises(ValueError, match="actions"):
        venv.step(["x"])


def test_sync_vector_mode_runs_the_same_episodes():
    sync = gym.make_vec(ID, num_envs=2, vectorization_mode="sync", **SMALL)
    native = gym.make_vec(ID, num_envs=2, vectorization_mode="vector_entry_point", **SMALL)
    assert sync.reset(seed=3)[0] == native.reset(seed=3)[0]
    steps = [venv.step(("ask: colour?", "zzz")) for venv in (sync, native)]
    assert steps[0][0] == steps[1][0]
    np.testing.assert_array_equal(steps[0][1], steps[1][1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_turns": 0}, "max_turns"),
        ({"max_turns": 65}, "max_turns"),
        ({"max_turns": 9, "exact_credit": True}, r"max_turns must be an int in \[1, 8\]"),
        ({"reveal_per_turn": 4}, "reveal_per_turn"),
        ({"reveal_per_turn": 0}, "reveal_per_turn"),
        ({"shopper_noise": 1.5}, "shopper_noise"),
        ({"shopper_noise": "x"}, "shopper_noise"),
        ({"turn_cost": -0.1}, "turn_cost"),
        ({"reveal_reward": float("inf")}, "reveal_reward"),
        ({"k": 0}, "k must"),
        ({"num_targets": 0}, "num_targets"),
        ({"relevance": "soft"}, "relevance"),
        ({"exact_credit": 1}, "exact_credit"),
        ({"max_turn_chars": 0}, "max_turn_chars"),
        ({"segmentation": "letters"}, "segmentation"),
    ],
)
def test_knobs_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_docstring_example_runs():
    result = doctest.testmod(conv_search, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# -- the shopper ------------------------------------------------------------------------------------------------


def test_turn_kinds():
    assert [turn_kind(t) for t in ("ask: colour", "  ASK: x", "which brand?", "red shoes", "why? red shoes")] == [
        "ask", "ask", "ask", "search", "search"
    ]


def test_a_question_reveals_the_attribute_it_names(env):
    env.reset(options={"prompt_id": 1})
    _, reward, _, _, info = env.step("ask: which colour is it?")
    assert info["kind"] == "ask" and info["revealed"] == ["color"]
    assert info["reply"] == f"The colour is {belief(env, 1, 'color')}."
    assert reward == pytest.approx(0.1 - 0.02)
    _, reward, _, _, info = env.step("the colour again?")
    assert info["revealed"] == [] and "already told you the color" in info["reply"] and reward == pytest.approx(-0.02)


def test_a_search_reply_depends_on_what_was_retrieved(env):
    for prompt_id in env.prompt_ids:
        env.reset(options={"prompt_id": prompt_id})
        _, _, terminated, _, info = env.step("zzzz qqqq")  # retrieves nothing
        assert info["reply"] == "Nothing came up." and not terminated
        ranking = env.rank([product_type(env, prompt_id)])[0]
        _, _, terminated, _, info = env.step(product_type(env, prompt_id))
        if env.task.targets[prompt_id] in ranking:
            assert terminated and info["found"] and info["reply"] == FOUND_REPLY
            continue
        listed = ranking[ranking >= 0]
        for name in info["revealed"]:  # "none of these are <value>": true of every listed product
            value = env.shopper.beliefs[prompt_id, env.task.attributes.index(name)]
            assert not np.any(env.task.product_values[name][listed] == value)
            assert belief(env, prompt_id, name) in info["reply"]


def test_the_target_in_the_top_k_ends_the_episode_with_its_ndcg(env):
    for prompt_id in env.prompt_ids:
        words = [belief(env, prompt_id, a) for a in env.task.attributes]
        env.reset(options={"prompt_id": prompt_id})
        _, reward, terminated, _, info = env.step(" ".join([*words, product_type(env, prompt_id)]))
        ranking = env.rank([info["retrieval_text"]])
        expected = env.task.ndcg(np.array([prompt_id]), ranking, env.rules.k)[0] - 0.02
        assert reward == pytest.approx(expected)
        assert terminated == bool(env.task.targets[prompt_id] in ranking[0])


def test_noise_makes_the_shopper_state_wrong_values():
    clean, noisy = make().unwrapped, make(shopper_noise=1.0).unwrapped
    truth = np.stack([clean.task.product_values[a][clean.task.targets] for a in clean.task.attributes], axis=1)
    np.testing.assert_array_equal(clean.shopper.beliefs, truth)
    assert np.all(noisy.shopper.beliefs != truth)


def test_reveal_per_turn_bounds_what_one_turn_reveals():
    env = make(reveal_per_turn=3).unwrapped
    env.reset(options={"prompt_id": 0})
    assert len(env.step("ask: brand, colour and material?")[4]["revealed"]) == 3
    env = make(reveal_per_turn=1).unwrapped
    env.reset(options={"prompt_id": 0})
    assert len(env.step("ask: brand, colour and material?")[4]["revealed"]) == 1


def test_observation_fits_the_space_for_the_longest_turns():
    env = make(max_turns=2, max_turn_chars=50, reveal_per_turn=3).unwrapped
    env.reset(seed=0)
    env.step("a" * 500 + "?")
    obs = env.step("ask: brand, colour and material?" + "b" * 100)[0]
    assert len(obs) <= env.observation_space.max_length and obs.count("a") >= 50


# -- the turn oracle --------------------------------------------------------------------------------------------


def test_replaying_every_turn_reproduces_the_return_exactly(env):
    for prompt_id in env.prompt_ids:
        steps = play(env, prompt_id, scripted(env, prompt_id))
        turns, total = steps[-1][4]["turns"], steps[-1][4]["return"]
        assert total == sum(s[1] for s in steps)
        spans = env.oracle.segment_turns(turns)
        full_turns = tuple(range(len(turns)))
        full_segments = tuple(range(sum(len(s) for s in spans)))
        assert env.oracle.turn_values(prompt_id, turns, [full_turns, ()]).tolist() == [total, 0.0]
        assert env.oracle.values(prompt_id, turns, spans, [full_segments])[0] == total


def test_leaving_a_turn_out_recomputes_the_replies(env):
    prompt_id = 2
    turns = ["ask: colour?", "ask: colour?"]
    values = env.oracle.turn_values(prompt_id, turns, [(0,), (1,), (0, 1)])
    # alone, either question reveals the colour (0.1 − 0.02); together the second one is told "already"
    np.testing.assert_allclose(values, [0.08, 0.08, 0.08 - 0.02])
    phi = shapley_exact(lambda cs: env.oracle.turn_values(prompt_id, turns, cs), 2)
    np.testing.assert_allclose(phi, [0.03, 0.03])


def test_segment_coalitions_keep_the_kind_and_drop_empty_turns(env):
    prompt_id = 3
    turns = ["ask: which colour", "zzz qqq"]
    spans = env.oracle.segment_turns(turns)
    assert [len(s) for s in spans] == [3, 2]
    # keeping only "colour" of the question: still a question (kind from the original text), still reveals
    only_colour, nothing = env.oracle.values(prompt_id, turns, spans, [(2,), ()])
    assert only_colour == pytest.approx(0.08) and nothing == 0.0
    # keeping only "which": a question that names nothing, the shopper volunteers its first attribute
    assert env.oracle.values(prompt_id, turns, spans, [(1,)])[0] == pytest.approx(0.08)


def test_oracle_is_batched_deterministic_and_checked(env):
    calls = []
    original = env.replay_returns

    def spy(prompt_ids, sessions):
        calls.append(len(sessions))
        return original(prompt_ids, sessions)

    oracle = conv_search.TurnOracle(spy, segmentation="word")
    episodes = [(p, scripted(env, p)[:3]) for p in (0, 1, 0)]
    coalitions = [[(), (0,), (0, 1), (0, 1, 2), (2,)]] * 3
    batch = oracle.turn_values_batch([p for p, _ in episodes], [t for _, t in episodes], coalitions)
    assert calls == [10]  # one replay call; the third episode repeats the first, so 2 x 5 distinct sessions
    for (p, turns), values in zip(episodes, batch, strict=True):
        np.testing.assert_array_equal(values, env.oracle.turn_values(p, turns, coalitions[0]))
    with pytest.raises(ValueError, match="outside"):
        env.oracle.turn_values(0, ["a", "b"], [(2,)])
    with pytest.raises(ValueError, match="list of str"):
        env.oracle.turn_values_batch([0], ["one turn as a bare string"], [[()]])
    with pytest.raises(ValueError, match="unknown prompt_id"):
        env.oracle.turn_values(99, ["a"], [(0,)])


# -- the ground-truth variant -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exact_env():
    return gym.make(ID, **SHAPED, exact_credit=True).unwrapped


def test_ground_truth_turn_credit_is_efficient_and_only_in_the_variant(env, exact_env):
    prompt_id = 4
    turns = scripted(exact_env, prompt_id)
    steps = play(exact_env, prompt_id, turns)
    turns = steps[-1][4]["turns"]
    phi = exact_env.ground_truth_turn_credit(prompt_id, turns)
    assert phi.shape == (len(turns),) and phi.sum() == pytest.approx(steps[-1][4]["return"])
    with pytest.raises(ValueError, match="exact_credit=True"):
        env.ground_truth_turn_credit(prompt_id, turns)


def test_exact_owen_sums_per_turn_to_the_turn_shapley_values(exact_env):
    prompt_id = 5
    turns = ["ask: colour?", product_type(exact_env, prompt_id), "which brand?"]
    sizes = [len(s) for s in exact_env.oracle.segment_turns(turns)]
    owen = exact_env.ground_truth_credit(prompt_id, turns)
    shapley = exact_env.ground_truth_turn_credit(prompt_id, turns)
    np.testing.assert_allclose(union_sums(owen, sizes), shapley, atol=1e-12)


def test_esci_files_give_real_queries_targets_and_judgements():
    env = make(data_dir=str(esci_dir()), cache_dir=str(scratch_dir() / "cache"), num_targets=5).unwrapped
    from ospo_gym.data.esci import load_esci

    data = load_esci(esci_dir(), cache_dir=scratch_dir() / "cache")
    assert env.task.attributes == ("brand", "color") and len(env.prompt_ids) == 5
    for prompt_id in env.prompt_ids:
        query = env.task.openings[prompt_id].removeprefix("I'm looking for ").removesuffix(".")
        q = data.queries.index(query)
        pool = data.pool_docs[data.pool_offsets[q] : data.pool_offsets[q + 1]]
        labels = data.pool_labels[data.pool_offsets[q] : data.pool_offsets[q + 1]]
        assert env.task.targets[prompt_id] == pool[labels == 0][0]  # the first Exact product
        assert set(env.task.relevant[prompt_id]) == set(pool[labels < 3])  # E, S, C have positive gains
        steps = play(env, prompt_id, ["ask: brand?", query, "ask: colour?"])
        turns, total = steps[-1][4]["turns"], steps[-1][4]["return"]
        assert env.oracle.turn_values(prompt_id, turns, [tuple(range(len(turns)))])[0] == total


def test_hm_files_give_purchased_targets_and_their_attributes():
    import pandas as pd

    from ospo_gym.data.hm import load_hm

    env = make(data_dir=str(hm_dir()), dataset="hm", cache_dir=str(scratch_dir() / "cache"), num_targets=6).unwrapped
    data = load_hm(hm_dir(), split="test", cache_dir=scratch_dir() / "cache")
    articles = pd.read_csv(hm_dir() / "articles.csv", dtype=str).set_index("article_id")
    assert env.task.attributes == ("color", "pattern", "section") and len(env.prompt_ids) == 6
    firsts = set(data.pool_docs[data.pool_offsets[:-1]].tolist())
    for prompt_id in env.prompt_ids:
        target = int(env.task.targets[prompt_id])
        assert target in firsts  # a customer's first purchase of the test window
        row = articles.loc[data.article_ids[target]]
        assert env.task.openings[prompt_id] == f"I'm looking for {row['product_type_name'].lower()}."
        for a, column in (("color", "colour_group_name"), ("pattern", "graphical_appearance_name"), ("section", "index_group_name")):
            assert env.task.vocab[a][env.task.product_values[a][target]] == row[column].lower()
        relevant = env.task.relevant[prompt_id]
        assert target in relevant and env.task.gains[prompt_id][list(relevant).index(target)] == 1.0
        same_type = [i for i in range(len(data.article_ids))
                     if articles.loc[data.article_ids[i], "product_type_name"] == row["product_type_name"]]  # fmt: skip
        assert sorted(relevant.tolist()) == same_type  # every article of its type, and only those, gains
        steps = play(env, prompt_id, ["ask: what colour?", "ask: which pattern?", data.texts[target]])
        assert "colour is" in steps[0][0] and "pattern is" in steps[1][0]
        turns, total = steps[-1][4]["turns"], steps[-1][4]["return"]
        assert env.oracle.turn_values(prompt_id, turns, [tuple(range(len(turns)))])[0] == total
    with pytest.raises(ValueError, match="unknown dataset 'kaggle'"):
        make(data_dir=str(hm_dir()), dataset="kaggle")


ODD_TURNS = [
    "", " ", "?", "ask:", "ASK:?", "\x00\x01", "\ud800 lone surrogate", "ñandú ワイヤレス 🎧", "<answer></answer>",
    "<think>colour?</think>", "<answer>red</answer>?", "ask: brand brand brand colour material?", "a" * 5000,
    "brand?" * 400, "None of these are red.", "That's it, thank you!",
]


def test_odd_turns_never_break_an_episode_or_its_replay(env):
    rng = np.random.default_rng(0)
    for episode in range(12):
        prompt_id = episode % len(env.prompt_ids)
        turns = [ODD_TURNS[int(i)] for i in rng.integers(len(ODD_TURNS), size=5)]
        steps = play(env, prompt_id, turns)
        for obs, reward, _, _, info in steps:
            assert np.isfinite(reward) and env.observation_space.contains(obs)
            assert len(obs) <= env.observation_space.max_length
            assert all(len(t) <= env.max_turn_chars for t in info["turns"])
        kept, total = steps[-1][4]["turns"], steps[-1][4]["return"]
        spans = env.oracle.segment_turns(kept)
        every = tuple(range(sum(len(s) for s in spans)))
        assert env.oracle.turn_values(prompt_id, kept, [tuple(range(len(kept)))])[0] == total
        assert env.oracle.values(prompt_id, kept, spans, [every])[0] == total
