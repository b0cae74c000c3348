"""The TRL integration: env datasets and rewards, and OSPOTrainer's token advantages against ospo-gym's estimators.

The trainer tests use the tiny random Qwen2 of ``test_agents_support`` on the additive task, on the CPU.
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
import warnings
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
from integration_support import assert_import_refused
from test_agents_support import ENV_ID, ENV_KWARGS, tiny_policy_path

import ospo_gym  # noqa: F401

torch = pytest.importorskip("torch")
HAS_TRL = importlib.util.find_spec("trl") is not None and importlib.util.find_spec("datasets") is not None
needs_trl = pytest.mark.skipif(not HAS_TRL, reason="needs the trl extra: pip install 'ospo-gym[trl]'")
MODULE = "ospo_gym.integrations.trl"
G = 4  # completions per prompt in these tests
# TRL 1.16 sets transformers 5's deprecated gradient_checkpointing argument; nothing to act on here
pytestmark = pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny model trains fastest on one thread (as ``AgentConfig.tiny_cpu`` does); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- without trl: nothing is imported, and asking for it says how to install it ---------------------------------
def test_import_ospo_gym_imports_neither_trl_nor_torch():
    code = "import sys, ospo_gym, ospo_gym.integrations; print('trl' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_without_trl_the_import_says_install_the_extra(monkeypatch):
    assert_import_refused(monkeypatch, MODULE, "trl", r"pip install 'ospo-gym\[trl\]'")


@needs_trl
@pytest.mark.parametrize("version", ["1.17.0", "1.15.2", "1.17.0.dev0"])
def test_an_untested_trl_version_is_refused(monkeypatch, version):
    match = rf"trl {version} is installed.*pip install 'ospo-gym\[trl\]'"
    assert_import_refused(monkeypatch, MODULE, "trl", match, version=version)


# -- fixtures ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def integration():
    if not HAS_TRL:
        pytest.skip("needs the trl extra: pip install 'ospo-gym[trl]'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(MODULE)


@pytest.fixture(scope="module")
def policy_path(tmp_path_factory):
    return tiny_policy_path(tmp_path_factory)


@pytest.fixture
def env():
    return gym.make(ENV_ID, **ENV_KWARGS)


def load(policy_path):
    """A fresh tiny model (training changes it) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(policy_path), AutoTokenizer.from_pretrained(policy_path)


def config(integration, tmp_path, **overrides):
    settings = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=2 * G,
        num_generations=G,
        max_completion_length=8,
        learning_rate=2e-3,
        lr_scheduler_type="constant",
        max_steps=3,
        use_cpu=True,
        bf16=False,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        gradient_checkpointing=False,
        seed=0,
    )
    settings.update(overrides)
    return integration.OSPOConfig(**settings)


def trainer(integration, policy_path, env, tmp_path, **overrides):
    model, tokenizer = load(policy_path)
    kwargs = {k: overrides.pop(k) for k in ("reward_funcs", "train_dataset", "rollout_func") if k in overrides}
    args = config(integration, tmp_path, **overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return integration.OSPOTrainer(model, args=args, processing_class=tokenizer, env=env, **kwargs)


def generation_batch(env, prompts=(0, 1)):
    """TRL's generation batch of whole groups: G copies of each prompt, as its sampler yields them."""
    base = env.unwrapped
    ids = [base.prompt_ids[i] for i in prompts]
    return [{"prompt": base.prompt(p), "prompt_id": p} for p in ids for _ in range(G)]


def generate_and_score(trainer_, inputs, seed=0):
    trainer_.model.train()
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return trainer_._generate_and_score_completions(inputs)


def rows_of(output):
    """The completions' valid token ids, one list per row."""
    ids, mask = output["completion_ids"], output["completion_mask"].bool()
    return [row[m].tolist() for row, m in zip(ids, mask, strict=True)]


class RecordingReward:
    """The env's reward, remembering what it returned (TRL keeps rewards as float32)."""

    __name__ = "recording_reward"

    def __init__(self, env):
        self.env, self.values = env.unwrapped, []

    def __call__(self, prompts, completions, prompt_id, **kwargs):
        self.values = [float(r) for r in self.env.rewards(list(prompt_id), list(completions))]
        return self.values


class PromptsOnlyEnv(gym.Env):
    """Prompts and rewards but no oracle; its prompt ids do not fit int64."""

    observation_space = gym.spaces.Text(100)
    action_space = gym.spaces.Text(100)
    prompt_ids = [2**64 - 5, 7]

    def prompt(self, prompt_id):
        return f"prompt {prompt_id}"

    def rewards(self, prompt_ids, actions):
        return np.asarray([float(len(a) % 2) for a in actions])


# -- prompt_dataset ----------------------------------------------------------------------------------------------
def test_prompt_dataset_is_plain_text_without_a_chat_template(integration, policy_path, env):
    _, tokenizer = load(policy_path)
    assert not getattr(tokenizer, "chat_template", None)
    data = integration.prompt_dataset(env, tokenizer)
    base = env.unwrapped
    assert data.column_names == ["prompt", "prompt_id"]
    assert data["prompt_id"] == base.prompt_ids
    assert data["prompt"] == [base.prompt(p) for p in base.prompt_ids]
    assert integration.prompt_dataset(env, str(policy_path))["prompt"] == data["prompt"]  # tokenizer by path
    vector = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode="vector_entry_point", **ENV_KWARGS)
    assert integration.prompt_dataset(vector).to_dict() == data.to_dict()
    by_id = integration.prompt_dataset(ENV_ID, env_kwargs=ENV_KWARGS, prompt_ids=[2, 0, 2])
    assert by_id["prompt_id"] == [2, 0, 2] and by_id["prompt"] == [base.prompt(2), base.prompt(0), base.prompt(2)]


def test_prompt_dataset_is_conversational_with_a_chat_template(integration, policy_path, env):
    _, tokenizer = load(policy_path)
    tokenizer.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
    base = env.unwrapped
    first = base.prompt(base.prompt_ids[0])
    data = integration.prompt_dataset(env, tokenizer)
    assert data[0]["prompt"] == [{"role": "user", "content": first}]
    system = integration.prompt_dataset(env, tokenizer, system_prompt="Write keywords.")
    assert system[0]["prompt"] == [{"role": "system", "content": "Write keywords."}, {"role": "user", "content": first}]
    assert integration.prompt_dataset(env, tokenizer, conversational=False)[0]["prompt"] == first
    with pytest.raises(ValueError, match="system_prompt needs conversational prompts"):
        integration.prompt_dataset(env, system_prompt="Write keywords.")


def test_prompt_dataset_keeps_integer_ids_beyond_int64_exact(integration):
    data = integration.prompt_dataset(PromptsOnlyEnv())
    assert data["prompt_id"] == [2**64 - 5, 7]
    assert data["prompt"] == ["prompt 18446744073709551611", "prompt 7"]


def test_prompt_dataset_refuses_a_non_ospo_env(integration):
    with pytest.raises(ValueError, match="CartPoleEnv is not an ospo-gym generative-search env"):
        integration.prompt_dataset(gym.make("CartPole-v1"))


# -- reward_function ---------------------------------------------------------------------------------------------
def test_reward_function_scores_a_batch_in_one_env_call(integration, env, monkeypatch):
    base = env.unwrapped
    calls = []
    original = base.rewards
    monkeypatch.setattr(base, "rewards", lambda ids, texts: calls.append(len(texts)) or original(ids, texts))
    reward = integration.reward_function(env)
    ids = [p for p in base.prompt_ids[:2] for _ in range(G)]
    texts = [" ".join(base.vocabulary[i : i + 3]) for i in range(len(ids))]
    plain = reward(prompts=[base.prompt(p) for p in ids], completions=texts, prompt_id=ids)
    assert calls == [len(ids)]
    assert plain == original(ids, texts).tolist()
    conversational = [[{"role": "assistant", "content": t}] for t in texts]
    blocks = [[{"role": "assistant", "content": [{"type": "text", "text": t}]}] for t in texts]
    assert reward(prompts=[[]] * len(ids), completions=conversational, prompt_id=ids) == plain
    assert reward(prompts=[[]] * len(ids), completions=blocks, prompt_id=ids) == plain
    assert calls == [len(ids)] * 3
    assert reward.__name__ == "env_reward"


def test_reward_function_bad_inputs(integration, env):
    reward = integration.reward_function(env)
    with pytest.raises(ValueError, match="no 'prompt_id' column; build the dataset with .*prompt_dataset"):
        reward(prompts=["p"], completions=["a"])
    with pytest.raises(ValueError, match=r"completion 1 is not text: int 5.*expected a string or chat messages"):
        reward(prompts=["p", "p"], completions=["a", 5], prompt_id=[0, 0])
    with pytest.raises(ValueError, match="completion 0 is not text"):
        reward(prompts=["p"], completions=[[{"role": "assistant", "content": 3}]], prompt_id=[0])


# -- OSPOConfig / OSPOTrainer bad input --------------------------------------------------------------------------
def test_the_estimator_sees_the_ospo_knobs(integration, tmp_path):
    knobs = dict(algo="ospo_rank", w_max=3, max_coalitions=20, contiguous=False, credit_variant="weighted",
                 clip_token_advantages=2.0, scale_rewards="batch", seed=7)  # fmt: skip
    settings = config(integration, tmp_path, max_completion_length=12, **knobs).agent_config()
    assert {name: getattr(settings, name) for name in knobs} == knobs
    assert (settings.group_size, settings.prompts_per_step, settings.max_new_tokens) == (G, 2, 12)


def test_unknown_estimator_name_lists_the_known_ones(integration, tmp_path):
    known = r"unknown advantage estimator 'nope'; known: \[.*'ospo_prop'.*register_estimator"
    with pytest.raises(ValueError, match=known):
        config(integration, tmp_path, algo="nope")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(w_max=0), "w_max must be >= 1"),
        (dict(max_coalitions=1), "max_coalitions must be >= 2"),
        (dict(credit_variant="exact"), "credit_variant must be one of"),
        (dict(segmentation="letters"), "segmentation must be one of"),
        (dict(remove_unused_columns=True), "drops the dataset's prompt_id column"),
        (dict(multi_objective_aggregation="normalize_then_sum"), "use 'sum_then_normalize'"),
    ],
)
def test_bad_ospo_knobs_are_refused(integration, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        config(integration, tmp_path, **overrides)


def test_trainer_refuses_an_env_without_an_oracle(integration, policy_path, tmp_path):
    with pytest.raises(ValueError, match=r"PromptsOnlyEnv has no coalition-value oracle .*gym.make\('ospo/\.\.\.'\)"):
        trainer(integration, policy_path, PromptsOnlyEnv(), tmp_path)
    with pytest.raises(ValueError, match="CartPoleEnv is not an ospo-gym"):
        trainer(integration, policy_path, gym.make("CartPole-v1"), tmp_path)


def test_trainer_refuses_a_dataset_without_prompt_id(integration, policy_path, env, tmp_path):
    from datasets import Dataset

    data = Dataset.from_dict({"prompt": ["want: a", "want: b"]})
    with pytest.raises(ValueError, match=r"columns \['prompt'\] but no 'prompt_id'.*prompt_dataset\(env\)"):
        trainer(integration, policy_path, env, tmp_path, train_dataset=data)


def test_trainer_refuses_other_configs_and_tools(integration, policy_path, env, tmp_path):
    from trl import GRPOConfig

    model, tokenizer = load(policy_path)
    plain = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", num_generations=G,
                       per_device_train_batch_size=G)  # fmt: skip
    with pytest.raises(ValueError, match=r"needs args=OSPOConfig\(\.\.\.\).*got GRPOConfig"):
        integration.OSPOTrainer(model, args=plain, processing_class=tokenizer, env=env)
    with pytest.raises(ValueError, match="does not support tools="):
        integration.OSPOTrainer(
            model, args=config(integration, tmp_path), processing_class=tokenizer, env=env, tools=[len]
        )


# -- token advantages: parity with ospo-gym's estimators ---------------------------------------------------------
INTERACTION = dict(num_phrases=16, num_prompts=4, num_targets=4, num_distractors=3, num_synergies=2)


def phrase_texts(env, count, seed=0):
    """Completions of 3-6 distinct phrases of ``ospo/Interaction-v0``: enough segments, and synergies, that the
    coalition draws and the OSPO knobs change the credit."""
    phrases = [" ".join(p) for p in env.unwrapped.phrases]
    rng = np.random.default_rng(seed)
    return [", ".join(rng.choice(phrases, size=int(rng.integers(3, 7)), replace=False)) for _ in range(count)]


def scripted_rollout(texts):
    """A TRL ``rollout_func`` that returns these completions (token ids ending with EOS) for the batch's prompts."""

    def rollout(prompts, trainer_):
        tokenizer = trainer_.processing_class
        encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        completions = [encode(text) + [tokenizer.eos_token_id] for text in texts]
        return {"prompt_ids": [encode(p) for p in prompts], "completion_ids": completions, "logprobs": None}

    return rollout


@pytest.mark.parametrize("algo", ["ospo_prop", "ospo_rank"])
@pytest.mark.parametrize("source", ["sampled", "scripted"])
def test_token_advantages_are_the_estimators(integration, policy_path, env, tmp_path, algo, source):
    """Rebuilt independently from TRL's output (texts decoded, offsets per row, rewards from the env), the
    estimator's advantages equal those OSPOTrainer hands to TRL's loss: for completions the tiny policy samples
    on the additive task, and for phrase completions (through TRL's rollout_func) on the interaction task."""
    from ospo_gym.agents import AgentConfig, RolloutBatch, get_estimator, token_offsets

    extra = {}
    if source == "scripted":
        env = gym.make("ospo/Interaction-v0", **INTERACTION)
        extra["rollout_func"] = scripted_rollout(phrase_texts(env, 2 * G))
    reward = RecordingReward(env)
    ospo = trainer(integration, policy_path, env, tmp_path, algo=algo, w_max=2, max_coalitions=10, seed=5,
                   clip_token_advantages=1.5, max_completion_length=16, reward_funcs=reward, **extra)  # fmt: skip
    inputs = generation_batch(env)
    output = generate_and_score(ospo, inputs)

    tokenizer = ospo.processing_class
    rows = rows_of(output)
    texts = tokenizer.batch_decode(rows, skip_special_tokens=True)
    mask = output["completion_mask"].bool().numpy()
    prompt_ids = [row["prompt_id"] for row in inputs]
    rewards = np.float32(reward.values).astype(np.float64)  # the precision TRL keeps them in
    assert np.allclose(rewards, env.unwrapped.rewards(prompt_ids, texts), atol=1e-6)
    batch = RolloutBatch(
        prompt_ids, np.arange(len(rows)) // G, rewards, texts,
        [token_offsets(tokenizer, row, text) for row, text in zip(rows, texts, strict=True)], mask, step=0,
    )  # fmt: skip
    settings = AgentConfig(algo=algo, group_size=G, w_max=2, max_coalitions=10, seed=5, clip_token_advantages=1.5)
    expected = get_estimator(algo)(batch, env.unwrapped.oracle, settings)

    advantages = output["advantages"]
    assert advantages.shape == mask.shape and advantages.dtype == torch.float32
    np.testing.assert_allclose(advantages.numpy(), expected, rtol=1e-5, atol=1e-6)
    # the credit is not uniform: OSPO moved advantage between tokens of some completion
    spread = [np.ptp(expected[b, mask[b]]) for b in range(len(rows)) if mask[b].any()]
    assert max(spread) > 1e-3


@pytest.mark.parametrize("scale", ["none", "group", "batch"])
def test_grpo_is_trls_own_advantage_on_every_token(integration, policy_path, env, tmp_path, monkeypatch, scale):
    """``algo="grpo"`` gives TRL's sequence advantage on every valid token: the same unbiased std (ddof=1) of the
    group or the batch; the population std (``std_ddof=0``) would be √(G/(G−1)) larger and fail this."""
    from trl import GRPOTrainer

    seen = {}
    original = GRPOTrainer._generate_and_score_completions

    def recording(self, inputs):
        output = original(self, inputs)
        seen["trl"] = output["advantages"].clone()
        return output

    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", recording)
    reward = RecordingReward(env)
    ospo = trainer(integration, policy_path, env, tmp_path, algo="grpo", scale_rewards=scale, reward_funcs=reward)
    output = generate_and_score(ospo, generation_batch(env))
    mask = output["completion_mask"].bool()
    assert bool((seen["trl"] != 0).any())
    expected = torch.where(mask, seen["trl"].double()[:, None], torch.zeros(()).double())
    np.testing.assert_allclose(output["advantages"].double().numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_processes_compute_what_one_process_computes(integration, policy_path, tmp_path, monkeypatch):
    """Split over 4 processes of 2 rows each (groups of 4 cross processes), each process's token advantages are
    its rows of the single-process ones: group stats, the clipping std and the coalition draws are global."""
    env = gym.make("ospo/Interaction-v0", **INTERACTION)
    ospo = trainer(integration, policy_path, env, tmp_path, algo="ospo_prop", clip_token_advantages=1.0,
                   w_max=2, max_coalitions=6)  # fmt: skip
    tokenizer = ospo.processing_class
    inputs = generation_batch(env)
    texts = phrase_texts(env, len(inputs), seed=1)
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
    rewards = torch.tensor(env.unwrapped.rewards([x["prompt_id"] for x in inputs], texts), dtype=torch.float32)
    width = max(map(len, rows))

    def credit(process, processes):
        size = len(rows) // processes
        local = slice(process * size, (process + 1) * size)
        monkeypatch.setattr(ospo, "accelerator", SimpleNamespace(process_index=process, num_processes=processes))
        scored = integration._Scored(inputs[local], rows[local], rewards[:, None])
        return ospo._token_advantages(scored, width)

    whole = credit(0, 1)
    mask = np.arange(width)[None, :] < np.asarray([len(r) for r in rows])[:, None]
    assert max(np.ptp(whole[b, mask[b]]) for b in range(len(rows))) > 1e-3
    split = np.concatenate([credit(p, 4) for p in range(4)])
    np.testing.assert_allclose(split, whole, rtol=1e-12, atol=1e-12)


PROCESS_SCRIPT = '''
import json, sys, warnings
warnings.filterwarnings("ignore")
import gymnasium as gym, numpy as np
import ospo_gym
from transformers import AutoModelForCausalLM, AutoTokenizer
from ospo_gym.integrations.trl import OSPOConfig, OSPOTrainer

policy, out, per_device, env_kwargs = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
env = gym.make("ospo/Interaction-v0", **env_kwargs)
phrases = [" ".join(p) for p in env.unwrapped.phrases]

def rollout(prompts, trainer):  # global row g gets the same phrases however the batch is split
    encode = lambda text: trainer.processing_class(text, add_special_tokens=False)["input_ids"]
    first = trainer.accelerator.process_index * len(prompts)
    rows = []
    for g in range(first, first + len(prompts)):
        rng = np.random.default_rng(g)
        text = ", ".join(rng.choice(phrases, size=int(rng.integers(3, 7)), replace=False))
        rows.append(encode(text) + [trainer.processing_class.eos_token_id])
    return {"prompt_ids": [encode(p) for p in prompts], "completion_ids": rows, "logprobs": None}

args = OSPOConfig(output_dir=out, per_device_train_batch_size=per_device, num_generations=8, max_steps=1,
                  max_completion_length=32, use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                  disable_tqdm=True, gradient_checkpointing=False, shuffle_dataset=False, algo="ospo_prop",
                  w_max=2, max_coalitions=10, clip_token_advantages=1.0)
trainer = OSPOTrainer(AutoModelForCausalLM.from_pretrained(policy), args=args, env=env, rollout_func=rollout,
                      processing_class=AutoTokenizer.from_pretrained(policy))
credit = trainer._token_advantages
seen = {}
trainer._token_advantages = lambda scored, width: seen.setdefault("a", credit(scored, width))
trainer.train()
rank = trainer.accelerator.process_index
json.dump({"processes": trainer.accelerator.num_processes, "advantages": seen["a"].tolist()},
          open(f"{out}/rank{rank}.json", "w"))
'''


@pytest.mark.slow
def test_two_trl_processes_compute_what_one_computes(integration, policy_path, tmp_path):
    """A real 2-process TRL run (torchrun, gloo on the CPU) with one group of 8 split 4 + 4 over the processes
    gives each process its rows of the single-process token advantages."""
    import json

    script = tmp_path / "one_step.py"
    script.write_text(PROCESS_SCRIPT)
    runs = {}
    for processes, per_device in ((1, 8), (2, 4)):
        out = tmp_path / f"run{processes}"
        out.mkdir()
        # --standalone: a free rendezvous port, not the fixed 29500 an earlier torchrun may still hold
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        arguments = [str(policy_path), str(out), str(per_device), json.dumps(INTERACTION)]
        command = [sys.executable, *(launcher if processes > 1 else []), str(script), *arguments]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        records = [json.loads((out / f"rank{r}.json").read_text()) for r in range(processes)]
        assert all(r["processes"] == processes for r in records)
        runs[processes] = [np.asarray(r["advantages"]) for r in records]
    (whole,) = runs[1]
    assert np.ptp(whole[whole != 0]) > 1e-3
    for rank, part in enumerate(runs[2]):
        rows = whole[4 * rank : 4 * (rank + 1)]
        np.testing.assert_allclose(part, rows[:, : part.shape[1]], rtol=1e-12, atol=1e-12)
        assert not rows[:, part.shape[1] :].any()  # the single process pads its rows to a longer width


def test_a_registered_user_estimator_works_by_name(integration, policy_path, env, tmp_path):
    from ospo_gym.agents import register_estimator

    batches = []

    def reward_on_tokens(batch, oracle, config):
        batches.append((batch, oracle, config))
        return np.where(batch.completion_mask, batch.rewards[:, None] + np.arange(batch.completion_mask.shape[1]), 0.0)

    register_estimator("test_trl_reward_on_tokens", reward_on_tokens)
    ospo = trainer(integration, policy_path, env, tmp_path, algo="test_trl_reward_on_tokens")
    inputs = generation_batch(env)
    output = generate_and_score(ospo, inputs)
    (batch, oracle, settings), = batches
    assert oracle is env.unwrapped.oracle and settings.algo == "test_trl_reward_on_tokens" and settings.group_size == G
    assert list(batch.prompt_ids) == [x["prompt_id"] for x in inputs] and batch.step == 0
    assert batch.texts == ospo.processing_class.batch_decode(rows_of(output), skip_special_tokens=True)
    mask = output["completion_mask"].bool().numpy()
    expected = np.where(mask, batch.rewards[:, None] + np.arange(mask.shape[1]), 0.0)
    np.testing.assert_allclose(output["advantages"].numpy(), expected, rtol=1e-6)


# -- training through TRL's loop ---------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", ["grpo", "ospo_prop", "ospo_rank"])
def test_three_cpu_training_steps(integration, policy_path, env, tmp_path, monkeypatch, algo):
    base = env.unwrapped
    calls = []
    original = base.rewards
    monkeypatch.setattr(base, "rewards", lambda ids, texts: calls.append(len(texts)) or original(ids, texts))
    ospo = trainer(integration, policy_path, env, tmp_path, algo=algo)
    before = {name: p.detach().clone() for name, p in ospo.model.named_parameters()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ospo.train()
    logged = [row for row in ospo.state.log_history if "loss" in row]
    assert ospo.state.global_step == 3 and len(logged) == 3
    assert all(np.isfinite(row["loss"]) and np.isfinite(row["grad_norm"]) for row in logged)
    assert all(row["credit/seconds"] >= 0 for row in logged)
    assert calls == [2 * G] * 3  # the default reward: one batched env call per generation batch
    changed = [name for name, p in ospo.model.named_parameters() if not torch.equal(p.detach(), before[name])]
    assert changed, "no weight moved"


def test_buffered_generations_with_accumulation_and_iterations_train(integration, policy_path, env, tmp_path):
    """One generation of 2 groups feeds 2 accumulated micro-batches of 4 rows, twice (num_iterations=2): the
    (B, T) advantages are shuffled and split with the batch."""
    ospo = trainer(integration, policy_path, env, tmp_path, per_device_train_batch_size=G,
                   gradient_accumulation_steps=2, num_iterations=2, max_steps=2)  # fmt: skip
    generated = []
    original = ospo._token_advantages
    ospo._token_advantages = lambda scored, width: generated.append(len(scored.inputs)) or original(scored, width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ospo.train()
    assert generated == [2 * G]  # one generation batch serves both optimizer steps
    logged = [row for row in ospo.state.log_history if "loss" in row]
    assert len(logged) == 2 and all(np.isfinite(row["loss"]) for row in logged)


def test_credit_step_counts_generations_within_an_optimizer_step(integration, policy_path, env, tmp_path):
    ospo = trainer(integration, policy_path, env, tmp_path, per_device_train_batch_size=G,
                   gradient_accumulation_steps=4, steps_per_generation=2)  # fmt: skip
    keys = []
    for global_step in range(3):
        for micro in range(4):
            ospo.state.global_step, ospo._step = global_step, 4 * global_step + micro
            if micro % 2 == 0:  # TRL generates every steps_per_generation micro-batches
                keys.append(ospo._credit_step())
    assert keys == list(range(6))


# -- learning ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ospo_prop_in_trl_raises_reward_on_synthetic_retrieval(integration, tmp_path):
    """OSPO-PROP through TRL's loop learns query rewriting: the mean reward of the last 10 steps is well above
    that of the first 10 (tiny Qwen2 warm-started on the env's words, as the head-to-head benchmark does)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ospo_gym.agents.tiny_policy import build_env_policy

    env = gym.make("ospo/SyntheticRetrieval-v0", num_products=300, num_queries=20)
    path = build_env_policy(env, tmp_path / "policy", seed=0, warm_start=50)
    args = config(integration, tmp_path, algo="ospo_prop", per_device_train_batch_size=4 * 8, num_generations=8,
                  max_steps=120, logging_steps=1)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
        ospo = integration.OSPOTrainer(model, args=args, processing_class=tokenizer, env=env)
        ospo.train()
    rewards = [row["reward"] for row in ospo.state.log_history if "reward" in row]
    first, last = float(np.mean(rewards[:10])), float(np.mean(rewards[-10:]))
    print(f"\nOSPO-PROP in TRL on SyntheticRetrieval: reward {first:.3f} (first 10 steps) -> {last:.3f} (last 10)")
    assert last > first + 0.15
