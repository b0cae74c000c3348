"""docs/integrations.md stays true: its Stable-Baselines3 and verifiers blocks run (with smaller budgets), its TRL
section is the README's "Use with TRL" (which tests/test_readme.py runs), and its vf-eval command loads the env.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from doc_snippets import fenced_blocks, repo_root, run_blocks, section, working_folder

PAGE_PATH = repo_root() / "docs" / "integrations.md"
PAGE = PAGE_PATH.read_text(encoding="utf-8")
README = (repo_root() / "README.md").read_text(encoding="utf-8")
HEADINGS = ("TRL", "verl", "Stable-Baselines3", "verifiers")


def blocks_under(heading: str, language: str = "python") -> list[str]:
    return [code for lang, code in fenced_blocks(section(PAGE, heading)) if lang == language]


def test_the_page_has_its_sections_and_one_python_block_in_each_runnable_one():
    for heading in HEADINGS:
        section(PAGE, heading)  # raises unless the heading is there exactly once
    assert [len(blocks_under(h)) for h in HEADINGS] == [1, 0, 1, 1]


def test_the_trl_block_is_the_readmes_which_test_readme_runs():
    (page_block,) = [code for language, code in fenced_blocks(section(PAGE, "TRL")) if language == "python"]
    readme = section(README, "Use with TRL / verl / Stable-Baselines3")
    assert page_block in [code for language, code in fenced_blocks(readme) if language == "python"]


def test_the_verl_section_points_to_the_example():
    assert "examples/verl/" in section(PAGE, "verl")


def shrink(code: str, replacements: list[tuple[str, str]]) -> str:
    for old, new in replacements:
        assert old in code, f"the block no longer has {old!r}; update this test's budget"
        code = code.replace(old, new)
    return code


def test_the_stable_baselines3_block_runs(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("stable_baselines3")
    (code,) = blocks_under("Stable-Baselines3")
    code = shrink(code, [("total_timesteps=8_192", "total_timesteps=512"), ("n_eval_episodes=100", "n_eval_episodes=10")])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-unit MLP: more threads only add overhead
    try:
        with working_folder(tmp_path):
            ((printed, ns),) = run_blocks([code], {}, source="docs/integrations.md Stable-Baselines3")
    finally:
        torch.set_num_threads(threads)
    mean, std = (float(x) for x in re.fullmatch(r"mean reward (\d+\.\d\d) ± (\d+\.\d\d)\n", printed).groups())
    assert 0.0 <= mean <= 1.0 and std >= 0.0
    assert ns["model"].num_timesteps >= 512
    assert ns["model"].observation_space == ns["env"].observation_space  # PPO acted in the token-level env


needs_verifiers = pytest.mark.skipif(
    importlib.util.find_spec("verifiers") is None, reason="needs the verifiers extra: pip install 'ospo-gym[verifiers]'"
)


@needs_verifiers
@pytest.mark.usefixtures("keep_signal_handlers")
def test_the_verifiers_block_runs_and_scores_as_the_env(tmp_path):
    (code,) = blocks_under("verifiers")
    with working_folder(tmp_path):
        ((printed, ns),) = run_blocks([code], {}, source="docs/integrations.md verifiers")
    base = ns["vf_env"].rubric.rubrics[0].env
    expected = float(base.rewards([ns["row"]["info"]["prompt_id"]], [ns["answer"]])[0])
    assert printed == f"{expected}\n" and expected == 1.0  # as its comment says


@needs_verifiers
@pytest.mark.usefixtures("keep_signal_handlers")
def test_the_vf_eval_command_loads_the_env():
    """The first thing ``vf-eval`` does with the documented command: verifiers' loader on the module and args."""
    import verifiers as vf

    single, conversation = blocks_under("verifiers", "bash")
    for command, kind in ((single, vf.SingleTurnEnv), (conversation, vf.MultiTurnEnv)):
        words = shlex.split(command.replace("\\\n", " "))
        assert words[0] == "vf-eval"
        env_args = json.loads(words[words.index("-a") + 1])
        env = vf.load_environment(words[1], **env_args)
        assert isinstance(env, kind) and len(env.get_dataset()) == len(env.rubric.rubrics[0].env.prompt_ids)
    assert not isinstance(env, vf.SingleTurnEnv)  # the conversational env is not served single-turn


@needs_verifiers
@pytest.mark.slow
def test_the_vf_eval_command_runs_against_an_openai_server(echo_query_server, tmp_path):
    """The documented command, its model and server replaced by a loopback server that answers each prompt with its
    query: verifiers' own client, rollouts and rubric, and every reward is the env's 1.0."""
    command = blocks_under("verifiers", "bash")[0]  # the single-turn command (the echo server answers queries)
    command = shrink(command, [("-m MODEL", "-m echo"), ("http://localhost:8000/v1", echo_query_server)])
    vf_eval = shutil.which("vf-eval") or str(Path(sys.executable).parent / "vf-eval")
    words = [vf_eval, *shlex.split(command.replace("\\\n", " "))[1:], "-o", str(tmp_path / "out")]
    result = subprocess.run(words, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "env_reward: avg - 1.000, std - 0.000" in result.stdout, result.stdout[-2000:]
    runs = re.findall(r"^r\d+: \[(.*)\]$", result.stdout.split("env_reward:")[1].split("num_turns:")[0], flags=re.M)
    from ospo_gym.integrations.verifiers import load_environment

    env_args = json.loads(words[words.index("-a") + 1])
    prompts = min(20, len(load_environment(**env_args).get_dataset()))  # -n 20, or all the env has
    assert len(runs) == 4 and all(r.split(", ") == ["1.0"] * prompts for r in runs)  # -r 4 rollouts of each
