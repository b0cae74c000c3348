"""The verl integration: OSPO's token advantages through verl's own ``DataProto`` and advantage dispatch.

Runs in verl's own virtualenv (``.ci/stage_verl.sh``), on the CPU, without Ray: batches are hand-built
``verl.DataProto`` of scripted responses, tokenised by the tiny Qwen2 tokenizer of ``test_agents_support``.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from integration_support import assert_import_refused
from test_agents_support import tiny_policy_path

import ospo_gym  # noqa: F401

MODULE = "ospo_gym.integrations.verl"
HAS_VERL = importlib.util.find_spec("verl") is not None
needs_verl = pytest.mark.skipif(not HAS_VERL, reason="needs verl in its own virtualenv: .ci/stage_verl.sh")
G = 4  # responses per prompt
INTERACTION = dict(num_phrases=16, num_prompts=4, num_targets=4, num_distractors=3, num_synergies=2)
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "verl" / "ospo_esci.yaml"


# -- without verl ---------------------------------------------------------------------------------------------
def test_import_ospo_gym_does_not_import_verl():
    code = "import sys, ospo_gym, ospo_gym.integrations; print('verl' in sys.modules, 'ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_without_verl_the_import_says_install_it_in_its_own_venv(monkeypatch):
    match = r"needs verl \(verl>=0.9,<0.10\); install it in its own virtualenv.*pip install 'verl==0.9.1'"
    assert_import_refused(monkeypatch, MODULE, "verl", match)


def test_verl_is_an_extra_of_its_own_never_in_dev():
    """dev must stay installable with ospo-gym's own transformers pins: verl (transformers<5.11, ray) is only the
    ``verl`` extra, whose range is the one the module checks."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((EXAMPLE.parents[2] / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = extras["optional-dependencies"]
    assert "verl>=0.9,<0.10" in extras["verl"]
    assert [r for name, rs in extras.items() if name != "verl" for r in rs if r.lower().startswith("verl")] == []
    source = (EXAMPLE.parents[2] / "ospo_gym" / "integrations" / "verl.py").read_text(encoding="utf-8")
    assert 'VERL_VERSIONS = ">=0.9,<0.10"' in source


@needs_verl
@pytest.mark.parametrize("version", ["0.10.0", "0.8.4", "0.10.0.dev0"])
def test_an_untested_verl_version_is_refused(monkeypatch, version):
    assert_import_refused(monkeypatch, MODULE, "verl", rf"verl {version} is installed.*own virtualenv", version=version)


# -- fixtures ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def integration():
    if not HAS_VERL:
        pytest.skip("needs verl in its own virtualenv: .ci/stage_verl.sh")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(MODULE)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_policy_path(tmp_path_factory))


@pytest.fixture
def env():
    return gym.make("ospo/Interaction-v0", **INTERACTION)


def verl_config(adv_estimator="ospo_prop", norm=True, **ospo):
    from omegaconf import OmegaConf

    section = dict(env_id="ospo/Interaction-v0", env_kwargs=INTERACTION, w_max=2, max_coalitions=10, seed=5)
    section.update(ospo)
    return OmegaConf.create({
        "algorithm": {"adv_estimator": getattr(adv_estimator, "value", adv_estimator), "norm_adv_by_std_in_grpo": norm, "use_kl_in_reward": False},
        "actor_rollout_ref": {"rollout": {"n": G}}, "data": {"train_batch_size": 2}, "ospo": section,
    })  # fmt: skip


def algo_config(config):
    from verl.trainer.config import AlgoConfig

    algorithm = config.algorithm
    return AlgoConfig(adv_estimator=algorithm.adv_estimator, norm_adv_by_std_in_grpo=algorithm.norm_adv_by_std_in_grpo)


def phrase_texts(env, count, seed=0):
    """Responses of 3-6 distinct phrases: enough segments, and synergies, that the credit is not uniform."""
    phrases = [" ".join(p) for p in env.unwrapped.phrases]
    rng = np.random.default_rng(seed)
    return [", ".join(rng.choice(phrases, size=int(rng.integers(3, 7)), replace=False)) for _ in range(count)]


def verl_batch(tokenizer, env, texts, *, groups=2, step=3, with_prompt_ids=True):
    """A ``DataProto`` as verl's rollout leaves it: left-padded prompts, right-padded responses ending with EOS,
    ``response_mask``, ``attention_mask``, a fresh ``uid`` per group and the dataset's ``extra_info``."""
    import torch
    from verl import DataProto

    base = env.unwrapped
    prompt_ids = [base.prompt_ids[g] for g in range(groups) for _ in range(G)]
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    responses = [encode(t) + [tokenizer.eos_token_id] for t in texts]
    prompts = [encode(base.prompt(p)) for p in prompt_ids]
    width, plen = max(map(len, responses)) + 2, max(map(len, prompts))
    pad = tokenizer.pad_token_id
    response = torch.full((len(texts), width), pad, dtype=torch.long)
    response_mask = torch.zeros((len(texts), width), dtype=torch.long)
    prompt = torch.full((len(texts), plen), pad, dtype=torch.long)
    prompt_mask = torch.zeros((len(texts), plen), dtype=torch.long)
    for b, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        response[b, : len(r)], response_mask[b, : len(r)] = torch.tensor(r), 1
        prompt[b, plen - len(p) :], prompt_mask[b, plen - len(p) :] = torch.tensor(p), 1
    uids = [str(uuid.uuid4()) for _ in range(groups)]
    extra = [{"prompt_id": p, "index": b // G} if with_prompt_ids else {"index": b // G} for b, p in enumerate(prompt_ids)]
    return DataProto.from_dict(
        tensors={"prompts": prompt, "responses": response, "response_mask": response_mask,
                 "input_ids": torch.cat([prompt, response], 1), "attention_mask": torch.cat([prompt_mask, response_mask], 1)},
        non_tensors={"uid": np.array([uids[b // G] for b in range(len(texts))], dtype=object),
                     "extra_info": np.array(extra, dtype=object),
                     "data_source": np.array(["ospo/Interaction-v0"] * len(texts), dtype=object)},
        meta_info={"global_steps": step},
    )  # fmt: skip


def verl_advantages(data, config, rm_scores):
    """verl's trainer step from rewards to advantages: rm_scores -> token_level_scores -> token_level_rewards
    (no KL in the reward) -> ``compute_advantage`` with ``algorithm.adv_estimator``."""
    from verl.trainer.ppo.ray_trainer import compute_advantage

    data.batch["token_level_scores"] = rm_scores
    data.batch["token_level_rewards"] = data.batch["token_level_scores"]
    algorithm = config.algorithm
    out = compute_advantage(data, algorithm.adv_estimator, norm_adv_by_std_in_grpo=algorithm.norm_adv_by_std_in_grpo,
                            num_repeat=G, config=algo_config(config))  # fmt: skip
    return out.batch["advantages"]


def manager(integration, tokenizer, config):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return integration.OSPORewardManager(config, tokenizer)


def expected_token_advantages(tokenizer, data, env, algo, **knobs):
    """ospo-gym's estimator on the same responses, rebuilt independently from the batch."""
    from ospo_gym.agents import AgentConfig, RolloutBatch, get_estimator, token_offsets

    mask = data.batch["response_mask"].bool().numpy()
    rows = [data.batch["responses"][b][mask[b]].tolist() for b in range(len(mask))]
    texts = tokenizer.batch_decode(rows, skip_special_tokens=True)
    prompt_ids = [e["prompt_id"] for e in data.non_tensor_batch["extra_info"]]
    rewards = env.unwrapped.rewards(prompt_ids, texts)
    offsets = [token_offsets(tokenizer, row, text) for row, text in zip(rows, texts, strict=True)]
    batch = RolloutBatch(prompt_ids, np.arange(len(rows)) // G, rewards, texts, offsets, mask, step=3)
    settings = AgentConfig(algo=algo, group_size=G, prompts_per_step=2, w_max=2, max_coalitions=10, seed=5, **knobs)
    return get_estimator(algo)(batch, env.unwrapped.oracle, settings), rewards, mask


# -- parity: reward manager + verl's compute_advantage == ospo-gym's estimator ------------------------------------
@pytest.mark.parametrize(("adv_estimator", "algo"), [("ospo_prop", "ospo_prop"), ("ospo_rank", "ospo_rank"),
                                                     ("ospo", "ospo_rank")])  # fmt: skip
def test_verl_advantages_are_the_estimators(integration, tokenizer, env, adv_estimator, algo):
    config = verl_config(adv_estimator, algo=algo if adv_estimator == "ospo" else None, clip_token_advantages=1.5)
    data = verl_batch(tokenizer, env, phrase_texts(env, 2 * G))
    scored = manager(integration, tokenizer, config).score_batch(data)
    advantages = verl_advantages(data, config, scored.batch["rm_scores"])

    expected, rewards, mask = expected_token_advantages(tokenizer, data, env, algo, clip_token_advantages=1.5)
    assert advantages.shape == mask.shape
    np.testing.assert_allclose(advantages.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(scored.non_tensor_batch["ospo_reward"], rewards)
    assert scored.meta_info["reward_extra_keys"] == ["ospo_reward"]
    # the credit is not uniform: OSPO moved advantage between tokens of some response
    assert max(np.ptp(expected[b, mask[b]]) for b in range(len(mask)) if mask[b].any()) > 1e-3


def test_prop_and_rank_differ_and_the_draws_follow_the_step(integration, tokenizer, env):
    texts = phrase_texts(env, 2 * G)
    first = {}
    for algo in ("ospo_prop", "ospo_rank"):
        data = verl_batch(tokenizer, env, texts)
        first[algo] = manager(integration, tokenizer, verl_config(algo)).score_batch(data).batch["rm_scores"]
    assert not np.allclose(first["ospo_prop"].numpy(), first["ospo_rank"].numpy())
    few = verl_config("ospo_prop", max_coalitions=4)  # fewer coalitions than there are: the draws matter
    steps = [manager(integration, tokenizer, few).score_batch(verl_batch(tokenizer, env, texts, step=s)) for s in (3, 4)]
    assert not np.allclose(steps[0].batch["rm_scores"].numpy(), steps[1].batch["rm_scores"].numpy())


def test_one_batched_env_call_and_the_reward_loops_rewards_are_reused(integration, tokenizer, env, monkeypatch):
    config = verl_config("ospo_prop")
    rewards_manager = manager(integration, tokenizer, config)
    base = rewards_manager.env
    calls = []
    original = base.rewards
    monkeypatch.setattr(base, "rewards", lambda ids, texts: calls.append(len(texts)) or original(ids, texts))
    data = verl_batch(tokenizer, env, phrase_texts(env, 2 * G))
    whole = rewards_manager.score_batch(data)
    assert calls == [2 * G]  # one env call for the batch

    # verl's reward loop: one run_single per response (streamed), then the batch step reuses those rewards
    streamed = [asyncio.run(rewards_manager.run_single(data[b : b + 1])) for b in range(len(data))]
    assert calls == [2 * G] + [1] * (2 * G)
    rewards = [s["reward_score"] for s in streamed]
    np.testing.assert_array_equal(rewards, whole.non_tensor_batch["ospo_reward"])
    assert all(s["reward_extra_info"] == {"ospo_reward": s["reward_score"]} for s in streamed)
    data.non_tensor_batch["ospo_reward"] = np.asarray(rewards)
    again = rewards_manager.score_batch(data)
    assert calls == [2 * G] + [1] * (2 * G)  # no further env call
    np.testing.assert_array_equal(again.batch["rm_scores"].numpy(), whole.batch["rm_scores"].numpy())


def test_run_single_scores_the_reward_loops_own_sample_format(integration, tokenizer, env):
    """verl's agent loop sends the reward worker one unpadded sample: prompt + response ids, an all-ones
    attention_mask, no response_mask, and the dataset's fields as one-element arrays (``extra_info`` a dict)."""
    import torch
    from tensordict import TensorDict
    from verl import DataProto

    base = env.unwrapped
    text = phrase_texts(env, 1, seed=2)[0]
    prompt = tokenizer(base.prompt(base.prompt_ids[1]), add_special_tokens=False)["input_ids"]
    response = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = torch.tensor([prompt + response])
    sample = DataProto(
        batch=TensorDict(
            {"prompts": torch.tensor([prompt]), "responses": torch.tensor([response]), "input_ids": ids,
             "attention_mask": torch.ones_like(ids)}, batch_size=1),
        non_tensor_batch={"extra_info": np.array([{"prompt_id": base.prompt_ids[1], "index": 1}]),
                          "data_source": np.array(["ospo/Interaction-v0"])},
    )  # fmt: skip
    result = asyncio.run(manager(integration, tokenizer, verl_config()).run_single(sample))
    assert result["reward_score"] == float(base.rewards([base.prompt_ids[1]], [text])[0])
    assert result["reward_score"] > 0


@pytest.mark.parametrize("norm", [False, True])
def test_grpo_through_the_same_path_is_verls_own_grpo(integration, tokenizer, env, norm):
    """ospo.algo=grpo through the reward manager and the ``ospo`` estimator equals verl's built-in GRPO on the
    scalar reward: exactly without the std (Dr.GRPO), and with it up to the epsilons (verl: std + 1e-6,
    ospo-gym: std + 1e-4) — the unbiased std of both; the population std would be √(G/(G−1)) off and fail."""
    from verl.trainer.ppo.core_algos import AdvantageEstimator

    config = verl_config("ospo", algo="grpo", norm=norm)
    texts = phrase_texts(env, 2 * G, seed=3)
    data = verl_batch(tokenizer, env, texts)
    scored = manager(integration, tokenizer, config).score_batch(data)
    ours = verl_advantages(data, config, scored.batch["rm_scores"]).double().numpy()

    import torch

    plain = verl_batch(tokenizer, env, texts)
    rewards = torch.tensor(scored.non_tensor_batch["ospo_reward"], dtype=torch.float32)
    last = plain.batch["response_mask"].sum(1) - 1
    scalar = torch.zeros(plain.batch["responses"].shape)
    scalar[torch.arange(len(rewards)), last] = rewards  # verl's rm_scores: the reward on the last token
    grpo_config = verl_config(AdvantageEstimator.GRPO, norm=norm)
    theirs = verl_advantages(plain, grpo_config, scalar).double().numpy()
    assert np.abs(theirs).max() > 0.1
    if norm:
        std = rewards.double().numpy().reshape(-1, G).std(axis=1, ddof=1).repeat(G)[:, None]
        theirs = theirs * (std + 1e-6) / (std + 1e-4)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


# -- the rollout manager's credit step ---------------------------------------------------------------------------
def rollout_output(data, rewards):
    """What verl's AgentLoopManager returns after streaming rewards: the tensors, the reward on the last token in
    ``rm_scores``, ``reward_extra_info`` as non-tensors (no ``uid`` / ``extra_info``: those are the input's)."""
    import torch
    from verl import DataProto

    tensors = {k: data.batch[k].clone() for k in ("prompts", "responses", "response_mask", "input_ids", "attention_mask")}
    scores = torch.zeros(tensors["responses"].shape)
    scores[torch.arange(len(rewards)), tensors["response_mask"].sum(1) - 1] = torch.tensor(rewards, dtype=torch.float32)
    tensors["rm_scores"] = scores
    return DataProto.from_dict(tensors=tensors, non_tensors={"ospo_reward": np.asarray(rewards)},
                               meta_info={"reward_extra_keys": ["ospo_reward"]})  # fmt: skip


def loop_manager(integration, tokenizer, config):
    made = object.__new__(integration.OSPOAgentLoopManager)  # no Ray workers: only the credit step is exercised
    made.config = config
    made._ospo_tokenizer = lambda: tokenizer
    return made


def test_the_agent_loop_manager_writes_the_token_advantages(integration, tokenizer, env, monkeypatch):
    from verl.experimental.agent_loop import AgentLoopManager

    config = verl_config("ospo_prop")
    data = verl_batch(tokenizer, env, phrase_texts(env, 2 * G))
    rewards = env.unwrapped.rewards([e["prompt_id"] for e in data.non_tensor_batch["extra_info"]],
                                    tokenizer.batch_decode(data.batch["responses"], skip_special_tokens=True))  # fmt: skip
    prompts = data.select(non_tensor_batch_keys=["uid", "extra_info", "data_source"], deepcopy=True)
    prompts.meta_info = {"global_steps": 3}

    async def generated(self, batch):  # verl's own generate_sequences, without Ray
        return rollout_output(data, rewards)

    monkeypatch.setattr(AgentLoopManager, "generate_sequences", generated)
    ospo = loop_manager(integration, tokenizer, config)
    output = ospo.generate_sequences(prompts)
    expected, _, _ = expected_token_advantages(tokenizer, data, env, "ospo_prop")
    np.testing.assert_allclose(output.batch["rm_scores"].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert output.meta_info["reward_extra_keys"] == ["ospo_reward"]
    data.non_tensor_batch.update(output.non_tensor_batch)
    advantages = verl_advantages(data, config, output.batch["rm_scores"])
    np.testing.assert_allclose(advantages.numpy(), expected, rtol=1e-5, atol=1e-6)

    validation = prompts.select(deepcopy=True)
    validation.meta_info = {"validate": True}
    kept = ospo.generate_sequences(validation)  # validation keeps the scalar env reward
    np.testing.assert_allclose(kept.batch["rm_scores"].sum(1).numpy(), rewards, rtol=1e-6)
    grpo = loop_manager(integration, tokenizer, verl_config("grpo"))
    assert (grpo.generate_sequences(prompts).batch["rm_scores"] != 0).sum() <= len(rewards)  # verl's own: untouched


def test_the_agent_loop_manager_refuses_verls_transfer_queue_trainer(integration):
    from omegaconf import OmegaConf

    with pytest.raises(ValueError, match="trainer.use_v1=True selects the TransferQueue trainer.*use_v1=False"):
        integration.OSPOAgentLoopManager(OmegaConf.create({"trainer": {"use_v1": True}}), llm_client=None)


# -- the estimators refuse batches OSPO did not score -------------------------------------------------------------
def test_an_unscored_batch_is_refused_not_trained_on(integration, tokenizer, env):
    config = verl_config("ospo_prop")
    data = verl_batch(tokenizer, env, phrase_texts(env, 2 * G))
    scalar = data.batch["response_mask"].float()  # e.g. verl's scalar rm_scores: the manager was not set
    with pytest.raises(ValueError, match=r"not OSPO's ospo_prop token advantages.*agent_loop_manager_class"):
        verl_advantages(data, config, scalar)
    scored = manager(integration, tokenizer, verl_config("ospo_rank")).score_batch(data)
    with pytest.raises(ValueError, match="scored for algorithm.adv_estimator=ospo_rank"):
        verl_advantages(data, config, scored.batch["rm_scores"])


def test_groups_of_several_rollouts_are_accepted(integration, tokenizer, env):
    """verl's dynamic sampling trains on groups gathered from several rollouts: each was scored on its own."""
    from verl import DataProto

    config = verl_config("ospo_prop")
    scoring = manager(integration, tokenizer, config)
    parts = [verl_batch(tokenizer, env, phrase_texts(env, 2 * G)) for _ in range(2)]  # same widths, other uids
    scores = [scoring.score_batch(part).batch["rm_scores"] for part in parts]
    joined = DataProto.concat([verl_batch(tokenizer, env, phrase_texts(env, 2 * G)) for _ in range(2)])
    joined.non_tensor_batch["uid"] = np.concatenate([part.non_tensor_batch["uid"] for part in parts])
    import torch

    advantages = verl_advantages(joined, config, torch.cat(scores))
    np.testing.assert_array_equal(advantages.numpy(), (torch.cat(scores) * joined.batch["response_mask"]).numpy())


def test_kl_in_the_reward_is_refused(integration, tokenizer, env):
    from verl.trainer.config import AlgoConfig

    estimator = importlib.import_module("verl.trainer.ppo.core_algos").get_adv_estimator_fn("ospo_prop")
    data = verl_batch(tokenizer, env, phrase_texts(env, 2 * G))
    with pytest.raises(ValueError, match="use_kl_in_reward=False"):
        estimator(token_level_rewards=data.batch["response_mask"].float(), response_mask=data.batch["response_mask"],
                  config=AlgoConfig(adv_estimator="ospo_prop", use_kl_in_reward=True),
                  index=data.non_tensor_batch["uid"])  # fmt: skip


def test_importing_the_module_by_path_registers_the_estimators_as_verls_trainer_does():
    """verl's trainer resolves ``reward.reward_manager.source=importlib`` with the module path: that import alone
    registers ospo_prop / ospo_rank / ospo with verl (a fresh process, as verl's Ray trainer actor is)."""
    code = (
        "import warnings; warnings.simplefilter('ignore')\n"
        "from omegaconf import OmegaConf\n"
        "from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY as R\n"
        "from verl.trainer.ppo.reward import resolve_reward_manager_cls\n"
        "before = sorted(k for k in R if k.startswith('ospo'))\n"
        "config = OmegaConf.create({'reward': {'reward_manager': {'source': 'importlib', 'name': 'OSPORewardManager',"
        " 'module': {'path': 'pkg://ospo_gym.integrations.verl'}}}})\n"
        "cls = resolve_reward_manager_cls(config)\n"
        "print(before, sorted(k for k in R if k.startswith('ospo')), cls.__name__)\n"
    )
    if not HAS_VERL:
        pytest.skip("needs verl in its own virtualenv: .ci/stage_verl.sh")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split("\n")[-2] == "[] ['ospo', 'ospo_prop', 'ospo_rank'] OSPORewardManager"


# -- the dataset ------------------------------------------------------------------------------------------------
def test_prompt_dataset_is_verls_parquet_format(integration, tmp_path):
    import pandas as pd

    kwargs = dict(num_products=60, num_queries=6)
    path = tmp_path / "train.parquet"
    frame = integration.prompt_dataset("ospo/SyntheticRetrieval-v0", str(path), env_kwargs=kwargs,
                                       system_prompt="Write a search query.")  # fmt: skip
    base = gym.make("ospo/SyntheticRetrieval-v0", **kwargs).unwrapped
    back = pd.read_parquet(path)
    assert list(back.columns) == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    assert len(back) == len(base.prompt_ids) == len(frame)
    assert set(back["data_source"]) == {"ospo/SyntheticRetrieval-v0"}
    first = back.iloc[1]
    assert [dict(m) for m in first["prompt"]] == [
        {"role": "system", "content": "Write a search query."}, {"role": "user", "content": base.prompt(base.prompt_ids[1])},
    ]  # fmt: skip
    assert dict(first["extra_info"]) == {"prompt_id": base.prompt_ids[1], "index": 1}
    assert dict(first["reward_model"]) == {"style": "rule", "ground_truth": ""}
    # what verl's NaiveRewardManager-style compute_score reads back scores like the env
    text = " ".join(base.vocabulary[:3]) if hasattr(base, "vocabulary") else "red shoes"
    reward = integration.compute_score("ospo/SyntheticRetrieval-v0", text, "", dict(first["extra_info"]), env_kwargs=kwargs)
    assert reward == float(base.rewards([base.prompt_ids[1]], [text])[0])
    made = gym.make("ospo/SyntheticRetrieval-v0", **kwargs)
    assert integration.prompt_dataset(made, prompt_ids=[base.prompt_ids[0]])["data_source"].tolist() == [
        "ospo/SyntheticRetrieval-v0"
    ]


# -- bad input --------------------------------------------------------------------------------------------------
class PromptsOnlyEnv(gym.Env):
    """Prompts and rewards but no oracle."""

    observation_space = gym.spaces.Text(100)
    action_space = gym.spaces.Text(100)
    prompt_ids = [0, 1]

    def prompt(self, prompt_id):
        return f"prompt {prompt_id}"

    def rewards(self, prompt_ids, actions):
        return np.asarray([float(len(a) % 2) for a in actions])


def test_an_env_without_an_oracle_is_refused(integration, tokenizer):
    settings = integration.OSPOVerlConfig(env_id="none")
    with pytest.raises(ValueError, match=r"PromptsOnlyEnv has no coalition-value oracle.*algorithm.adv_estimator=grpo"):
        integration.OSPOScorer(PromptsOnlyEnv(), tokenizer, settings, "ospo_prop", group_size=G)
    with pytest.raises(ValueError, match="CartPoleEnv is not an ospo-gym generative-search env"):
        integration.OSPOScorer(gym.make("CartPole-v1"), tokenizer, settings, "ospo_prop", group_size=G)


def test_a_batch_without_prompt_ids_is_refused(integration, tokenizer, env):
    data = verl_batch(tokenizer, env, phrase_texts(env, 2 * G), with_prompt_ids=False)
    with pytest.raises(ValueError, match=r"row 0 of the batch has no env prompt id \(extra_info keys: \['index'\]\).*"
                                         r"prompt_dataset\(env, path\)"):  # fmt: skip
        manager(integration, tokenizer, verl_config()).score_batch(data)
    with pytest.raises(ValueError, match="extra_info has no 'prompt_id'"):
        integration.compute_score("ospo/Interaction-v0", "a b", "", {"index": 0}, env_kwargs=INTERACTION)


def test_an_unknown_estimator_name_lists_the_known_ones(integration, tokenizer):
    with pytest.raises(ValueError, match=r"unknown advantage estimator 'nope'; known: \[.*'ospo_prop'.*register_estimator"):
        manager(integration, tokenizer, verl_config("ospo", algo="nope")).score_batch(None)
    with pytest.raises(ValueError, match=r"ospo.algo, which is not set; add \+ospo.algo="):
        manager(integration, tokenizer, verl_config("ospo")).score_batch(None)
    with pytest.raises(ValueError, match="disagree; set algorithm.adv_estimator=ospo"):
        manager(integration, tokenizer, verl_config("ospo_prop", algo="ospo_rank")).score_batch(None)


def test_a_response_that_is_not_text_is_refused(integration, tokenizer, env):
    scorer = manager(integration, tokenizer, verl_config())
    data = verl_batch(tokenizer, env, phrase_texts(env, 2 * G))
    data.batch["responses"] = data.batch["responses"].float()
    with pytest.raises(ValueError, match="holds torch.float32 values, not text token ids"):
        scorer.score_batch(data)
    gapped = verl_batch(tokenizer, env, phrase_texts(env, 2 * G))
    gapped.batch["response_mask"][2, 1] = 0  # a tool turn inside the response
    with pytest.raises(ValueError, match="response mask of row 2 has gaps"):
        scorer.score_batch(gapped)
    with pytest.raises(ValueError, match=r"the response is not text: list \[1, 2\]"):
        integration.compute_score("ospo/Interaction-v0", [1, 2], "", {"prompt_id": 0}, env_kwargs=INTERACTION)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (dict(env_id=""), r"no ospo.env_id; add \+ospo.env_id="),
        (dict(typo=1), r"unknown ospo config keys \['typo'\]"),
        (dict(segmentation="letters"), "ospo.segmentation must be one of"),
        (dict(w_max=0), "w_max must be >= 1"),
    ],
)
def test_bad_ospo_config_is_refused(integration, tokenizer, section, message):
    with pytest.raises(ValueError, match=message):
        manager(integration, tokenizer, verl_config(**section)).score_batch(None)


# -- the example config fits verl 0.9.1's schema ------------------------------------------------------------------
def test_the_example_config_only_sets_keys_verl_has(integration):
    """Every key the example sets exists in verl's generated ppo_trainer config, except the ``ospo`` section and
    the one field verl reads with ``.get`` (agent_loop_manager_class, a field of its AgentLoopConfig)."""
    import verl
    from omegaconf import OmegaConf

    base = OmegaConf.load(Path(verl.__file__).parent / "trainer/config/_generated_ppo_trainer.yaml")
    example = OmegaConf.load(EXAMPLE)
    assert list(example.defaults) == ["ppo_trainer", "_self_"]
    added = {"ospo", "actor_rollout_ref.rollout.agent.agent_loop_manager_class"}

    def keys(node, prefix=""):
        for key, value in node.items():
            path = f"{prefix}{key}"
            if OmegaConf.is_dict(value) and path not in added:
                yield from keys(value, path + ".")
            else:
                yield path

    for path in keys(example):
        if path in ("defaults", "hydra") or path.split(".")[0] in ("defaults", "hydra") or path in added:
            continue
        node = base
        for key in path.split("."):
            assert key in list(node.keys()), f"verl 0.9.1 has no config key {path}"  # "in" skips ??? values
            node = node._get_node(key)
    assert example.algorithm.adv_estimator in integration.OSPO_ESTIMATORS
    assert example.trainer.use_v1 is False  # the credit step hooks the RayPPOTrainer loop (see examples/verl)
    assert example.reward.reward_manager.module.path == "pkg://ospo_gym.integrations.verl"
    assert integration.OSPOVerlConfig.from_verl(example).env_id == "ospo/ESCI-v0"


def smoke_overrides():
    """The Hydra overrides of the launch script's SMOKE=1 branch."""
    import re
    import shlex

    script = (EXAMPLE.parent / "run_ospo_esci.sh").read_text()
    branch = re.search(r'SMOKE:-0}" = "1" \]; then\n\s*set -- (.*?)"\$@"', script, re.S).group(1)
    return shlex.split(branch.replace("\\\n", " "))


def test_the_example_composes_with_hydra_into_verl_configs(integration):
    """verl's main_ppo composes the example (its defaults: verl's ppo_trainer) with the smoke run's overrides,
    and verl's config dataclasses accept the result; the OSPO section and the credit manager are there."""
    from hydra import compose, initialize_config_dir
    from verl.utils.config import omega_conf_to_dataclass

    overrides = smoke_overrides()
    assert "actor_rollout_ref.model.path=Qwen/Qwen2.5-0.5B-Instruct" in overrides
    with initialize_config_dir(config_dir=str(EXAMPLE.parent), version_base=None):
        config = compose(config_name="ospo_esci", overrides=overrides)
    assert config.trainer.total_training_steps == 3 and config.trainer.n_gpus_per_node == 1
    agent = omega_conf_to_dataclass(config.actor_rollout_ref.rollout.agent)
    assert agent.agent_loop_manager_class == "ospo_gym.integrations.verl.OSPOAgentLoopManager"
    algorithm = omega_conf_to_dataclass(config.algorithm)
    assert (algorithm.adv_estimator, algorithm.use_kl_in_reward) == ("ospo_prop", False)
    settings = integration.OSPOVerlConfig.from_verl(config)
    assert settings.env_kwargs == {"split": "train", "retriever": "bm25", "locale": "us"}
    assert settings.estimator_name(config.algorithm.adv_estimator) == "ospo_prop"
