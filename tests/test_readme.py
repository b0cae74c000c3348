"""Every example in README.md runs and gives the output its comments promise.

The Python blocks run in order in one namespace, as a reader would paste them, in a temporary folder: the env,
vector-env and credit blocks (numpy only), then the training and estimator blocks (torch; a few seconds with the
tiny policy). The TRL block needs TRL and a downloaded model: the fast suite only compiles it; ``-m slow`` runs it
with the tiny policy in place of Qwen, one step, on the CPU (the TRL integration has its own tests besides). The
shell examples are checked too: the ``ospo-gym credit`` line of docs/credit.md runs, and the command table names
every command.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from doc_snippets import fenced_blocks, repo_root, run_blocks, working_folder

README = (repo_root() / "README.md").read_text(encoding="utf-8")
BLOCKS = fenced_blocks(README)
PYTHON = [code for language, code in BLOCKS if language == "python"]
TRL_BLOCKS = [code for code in PYTHON if "ospo_gym.integrations.trl" in code]
AGENT_BLOCKS = [code for code in PYTHON if "ospo_gym.agents" in code and code not in TRL_BLOCKS]
CORE_BLOCKS = [code for code in PYTHON if code not in TRL_BLOCKS and code not in AGENT_BLOCKS]


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    """The numpy-only blocks, run once: per block, (what it printed, the names after it)."""
    with working_folder(tmp_path_factory.mktemp("readme")):
        return run_blocks(CORE_BLOCKS, {})


def test_the_readme_has_the_examples_this_file_checks():
    assert len(CORE_BLOCKS) == 3 and len(AGENT_BLOCKS) == 2 and len(TRL_BLOCKS) == 1


def test_env_and_oracle_example_gives_meaningful_credit(core):
    printed, ns = core[0]
    promised = re.search(r"print\(obs\)\s+# (.+)", CORE_BLOCKS[0]).group(1)
    assert printed.splitlines()[0] == promised  # the comment shows the real prompt
    assert 0.0 < ns["reward"] <= 1.0
    assert len(ns["spans"]) >= 4 and len(ns["info"]["segments"]) == len(ns["spans"])
    exact = ns["env"].unwrapped.ground_truth_credit(ns["pid"], ns["text"])
    assert (exact > 0.05).sum() >= 2 and (exact < 0).sum() >= 1  # the query's words help, the added words hurt
    assert np.isclose(exact.sum(), ns["reward"])  # efficiency: v(full) − v(∅), and v(∅) = 0


def test_vector_example_scores_a_pinned_group(core):
    ns = core[1][1]
    rewards = ns["rewards"]
    assert rewards.shape == (8,) and np.allclose(rewards[:4], ns["reward"]) and rewards[4] != rewards[0]


def test_credit_example_spreads_the_advantage_over_the_tokens(core):
    ns = core[2][1]
    credit = ns["credit"]
    assert len(credit) == len(ns["spans"]) and (np.abs(credit) > 0.05).sum() >= 2
    exact = ns["env"].unwrapped.ground_truth_credit(ns["pid"], ns["text"])
    assert np.array_equal(np.sign(credit), np.sign(exact))
    tokens = ns["ospo_token_advantages"]([ns["spans"]], [credit], ns["token_spans"], np.array([0.5]))
    assert np.isclose(tokens.mean(), 0.5) and tokens.std() > 0  # the mean stays Â, the shares differ


def test_training_and_estimator_examples_learn(core, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    with working_folder(tmp_path):
        printed = [out for out, _ in run_blocks(AGENT_BLOCKS, dict(core[-1][1]))]
    from ospo_gym.agents import list_estimators

    before, after = (float(x) for x in re.findall(r"\d+\.\d+", printed[0].splitlines()[-1]))
    assert after > before, printed[0]
    assert "rloo" in list_estimators() and float(printed[1].split()[-1]) > before, printed[1]  # yours learns too
    assert (tmp_path / "checkpoint").is_dir()


def test_trl_example_compiles():
    compile(TRL_BLOCKS[0], "README.md TRL block", "exec")


@pytest.mark.slow
def test_trl_example_runs_one_step_with_the_tiny_policy(tmp_path):
    pytest.importorskip("trl")
    import gymnasium as gym

    from ospo_gym.agents import build_tiny_qwen2

    env = gym.make("ospo/SyntheticRetrieval-v0", num_products=300, num_queries=20)
    policy = build_tiny_qwen2([env.unwrapped.prompt(p) for p in env.unwrapped.prompt_ids], tmp_path / "tiny")
    code = TRL_BLOCKS[0]
    for old, new in [
        ('"Qwen/Qwen2.5-0.5B-Instruct"', repr(str(policy))),
        ("max_steps=100", "max_steps=1"),
        ('report_to="none",', 'report_to="none", use_cpu=True, bf16=False,'),  # as the README says for a CPU
    ]:
        assert old in code, old
        code = code.replace(old, new)
    namespace: dict = {}
    with working_folder(tmp_path):
        exec(compile(code, "README.md TRL block", "exec"), namespace)
    assert namespace["trainer"].state.global_step == 1


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ospo_gym.cli", *args], capture_output=True, text=True, check=False)


def test_credit_command_example_gives_meaningful_credit():
    """The ``ospo-gym credit`` example of docs/credit.md (the README points there)."""
    page = (repo_root() / "docs" / "credit.md").read_text(encoding="utf-8")
    lines = [line for language, code in fenced_blocks(page) if language == "bash" for line in code.splitlines()]
    (command,) = [line for line in lines if line.startswith("ospo-gym credit ")]
    result = cli(*shlex.split(command)[1:], "--no-color")
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^\s*([+-]\d+\.\d+)\s+exact\s+([+-]\d+\.\d+)", result.stdout, flags=re.M)
    credit = np.array([float(c) for c, _ in rows])
    assert len(rows) >= 4 and (credit > 0.05).sum() >= 2 and (credit < 0).sum() >= 1, result.stdout


def test_command_table_lists_every_command():
    result = cli("--help")
    assert result.returncode == 0, result.stderr
    commands = set(re.search(r"\{([\w,-]+)\}", result.stdout).group(1).split(","))
    table = set(re.findall(r"^\| `ospo-gym (\w+)` \|", README, flags=re.M))
    assert table == commands
    named = set(re.findall(r"`ospo-gym (\w+)", README))
    assert named <= commands, named - commands
