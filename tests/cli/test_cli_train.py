"""`ospo-gym train` / `eval`: options generated from AgentConfig, YAML + flags, run folder and checkpoint, JSON
reward, and bad input exiting 2 with one line and no traceback."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("yaml")

from cli_support import run_main  # noqa: E402

from ospo_gym.agents import AgentConfig  # noqa: E402

SMALL_ENV = ["--env-arg", "vocab_size=12", "--env-arg", "num_prompts=3"]
QUIET = ["--no-progress-bar", "--no-tensorboard"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ospo_gym.cli", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """One `train --tiny --steps 2` through the real entry point, with a YAML file that a flag partly overrides."""
    folder = tmp_path_factory.mktemp("train")
    config = folder / "run.yaml"
    config.write_text(
        "learning_rate: 0.005\ngroup_size: 4\nenv_kwargs:\n  vocab_size: 12\n  num_prompts: 3\n",
        encoding="utf-8",
    )
    result = cli("train", "--tiny", "--steps", "2", "--config", str(config), "--group-size", "2",
                 "--run-dir", str(folder / "runs"), "--eval-samples", "2", *QUIET)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_train_writes_run_folder_metrics_and_checkpoint(trained):
    run_dir = Path(trained["run_dir"])
    assert run_dir.name.startswith("ospo_AdditiveKeywords-v0__grpo__0__")  # {env}__{algo}__{seed}__{time}
    assert (run_dir / "tiny_policy" / "config.json").is_file()
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    checkpoint = Path(trained["checkpoint"])
    assert (checkpoint / "agent.json").is_file() and (checkpoint / "policy").is_dir()
    assert trained["steps"] == 2 and 0 <= trained["eval_reward_mean"] <= 1


def test_yaml_fills_options_and_flags_win(trained):
    meta = json.loads((Path(trained["checkpoint"]) / "agent.json").read_text())
    assert meta["config"]["learning_rate"] == 0.005  # from the file
    assert meta["config"]["group_size"] == 2  # the flag beat the file's 4
    assert meta["config"]["max_new_tokens"] == AgentConfig.tiny_cpu().max_new_tokens  # --tiny's preset
    assert meta["env_kwargs"] == {"vocab_size": 12, "num_prompts": 3}


def test_eval_prints_json_reward(trained):
    result = cli("eval", trained["checkpoint"], "--samples", "2", "--env-arg", "hint_noise=0.5")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert 0.0 <= record["reward_mean"] <= 1.0
    # applied over the checkpoint's own env arguments
    assert record["env_kwargs"] == {"vocab_size": 12, "num_prompts": 3, "hint_noise": 0.5}
    assert record["num_prompts"] == 3 and record["step"] == 2



def test_eval_of_a_run_folder_hashes_each_checkpoint_file_once(trained, capsys, monkeypatch):
    """`eval` resolves the run folder (verifying the manifest) and loads that folder without hashing it again:
    a 7B checkpoint is ~15 GB, seconds per GB."""
    from ospo_gym.agents import checkpoint as checkpoint_module

    hashed: list[str] = []
    original = checkpoint_module._sha256
    monkeypatch.setattr(checkpoint_module, "_sha256", lambda file: hashed.append(str(file)) or original(file))
    code, out, err = run_main(["eval", trained["run_dir"], "--samples", "1"], capsys)
    assert code == 0, err
    assert json.loads(out)["step"] == 2
    manifest = json.loads((Path(trained["checkpoint"]) / "manifest.json").read_text())
    assert len(hashed) == len(manifest["files"]) == len(set(hashed))

def test_train_resume_continues_a_copied_run_folder(trained, tmp_path):
    copy = tmp_path / "moved_run"
    shutil.copytree(trained["run_dir"], copy)
    result = cli("train", "--resume", str(copy), "--steps", "3", *QUIET)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 3 and summary["run_dir"] == str(copy)
    assert [json.loads(line)["step"] for line in (copy / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert len((Path(trained["run_dir"]) / "metrics.jsonl").read_text().splitlines()) == 2  # the original untouched
    (copy / "checkpoint" / "trainer_state.pt").write_bytes(b"garbage")
    broken = cli("train", "--resume", str(copy / "checkpoint"), "--steps", "4", *QUIET)
    assert broken.returncode == 2 and "Traceback" not in broken.stderr
    assert "trainer_state.pt has 7 bytes" in broken.stderr


def test_every_agent_config_field_is_an_option(capsys):
    code, out, _ = run_main(["train", "--help"], capsys)
    assert code == 0
    for f in dataclasses.fields(AgentConfig):
        assert "--" + f.name.replace("_", "-") in out
    assert "--no-contiguous" in out and "Widest coalition window" in out  # booleans, help from the docstrings


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--tiny", "--env", "ospo/Nope-v0"], "unknown env"),
        (["train", "--tiny", "--algo", "nope"], "unknown algo"),
        (["train", "--tiny", "--env-arg", "vocab_size"], "NAME=VALUE"),
        (["train", "--tiny", "--env-arg", "vocab_size=2"], "cannot build"),
        (["train", "--tiny", "--steps", "-3"], "--steps must be >= 0"),
        (["train", "--tiny", "--steps", "many"], "invalid int value"),
        (["train", "--tiny", "--learning-rate", "-1"], "learning_rate must be > 0"),
        (["train", "--tiny", "--bogus"], "unrecognized arguments"),
        (["train"], "exactly one of --policy PATH and --tiny"),
        (["train", "--policy", "./no/such/model"], "no such folder"),
        (["train", "--tiny", "--config", "/no/such.yaml"], "cannot read --config"),
        (["eval", "/no/such/checkpoint"], "neither a checkpoint folder nor a run folder"),
        (["eval"], "required: checkpoint"),
        (["bench", "--preset", "nope"], "unknown preset"),
        (["bench", "--envs", "nope"], "unknown task"),
        (["bench", "--seeds", "0"], "--seeds must be >= 1"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, message, capsys):
    code, _, err = run_main(args, capsys)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_yaml_values_are_typed_like_flags(tmp_path, capsys):
    from ospo_gym.cli.options import load_yaml, resolve_options
    from ospo_gym.cli.train import TrainOptions

    config = tmp_path / "run.yaml"
    config.write_text("learning_rate: 1e-3\nepsilon_high: null\nsteps: 5\n", encoding="utf-8")
    values = load_yaml(str(config), {"learning_rate", "epsilon_high", "steps"})
    assert resolve_options(AgentConfig, argparse.Namespace(), values) == {
        "learning_rate": 1e-3,
        "epsilon_high": None,
    }
    assert resolve_options(TrainOptions, argparse.Namespace(), values) == {"steps": 5}
    config.write_text("group_size: lots\n", encoding="utf-8")
    code, _, err = run_main(["train", "--tiny", "--config", str(config)], capsys)
    assert code == 2 and "group_size in --config must be int" in err


def test_bad_yaml_keys_are_named(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("learning_rat: 0.1\n", encoding="utf-8")
    code, _, err = run_main(["train", "--tiny", "--config", str(config)], capsys)
    assert code == 2 and "unknown keys ['learning_rat']" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--tiny", "--algo", "nope"],
        ["eval", "missing_checkpoint"],
        ["train", "--tiny", "--steps", "-1"],
    ],
)
def test_bad_input_through_the_entry_point_has_no_traceback(args):
    result = cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_cli_import_stays_light():
    code = "import sys, ospo_gym.cli; ospo_gym.cli.build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


def _non_finite_tensors(run_dir: Path) -> list[str]:
    """Where under ``run_dir`` a safetensors file or trainer state holds a non-finite float tensor."""
    import torch
    from safetensors.torch import load_file

    def floats(value, where):
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                yield where
        elif isinstance(value, dict):
            for key, item in value.items():
                yield from floats(item, f"{where}/{key}")
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                yield from floats(item, f"{where}/{i}")

    bad = []
    for path in run_dir.rglob("*.safetensors"):
        bad += floats(load_file(path), str(path))
    for path in run_dir.rglob("trainer_state.pt"):
        bad += floats(torch.load(path, weights_only=True), str(path))
    return bad


def test_a_diverging_run_exits_1_in_one_line_and_keeps_only_finite_checkpoints(tmp_path, capsys):
    args = ["train", "--tiny", "--steps", "3", "--learning-rate", "1e30", "--save-every", "1",
            "--keep-checkpoints", "2", "--run-dir", str(tmp_path), *SMALL_ENV, *QUIET]  # fmt: skip
    code, out, err = run_main(args, capsys)
    assert code == 1 and out == ""  # a failed run, not a usage error (2): no summary
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    found = re.search(r"training diverged at step (\d+): the (loss|gradient norm) is", lines[0])
    assert found and "learning_rate" in lines[0], lines[0]
    (run_dir,) = tmp_path.iterdir()
    assert not (run_dir / "checkpoint").exists()  # no final checkpoint of the diverged weights
    failed = int(found.group(1))
    kept = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert kept == [f"step-{s:08d}" for s in range(max(failed - 2, 1), failed)]  # none pruned for the failure
    assert _non_finite_tensors(run_dir) == []
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == failed - 1


def test_two_train_runs_started_in_the_same_second_get_their_own_run_folders(tmp_path, capsys, monkeypatch):
    from ospo_gym.agents import logger

    stamp, second = logger.run_name, 1_900_000_000.0
    monkeypatch.setattr(logger, "run_name", lambda env, algo, seed, when=None: stamp(env, algo, seed, second))
    common = ["train", "--steps", "0", "--run-dir", str(tmp_path), *SMALL_ENV, *QUIET]
    code, out, err = run_main([*common, "--tiny"], capsys)  # the command makes the folder (for the policy)
    assert code == 0, err
    first = Path(json.loads(out.strip().splitlines()[-1])["run_dir"])
    code, out, err = run_main([*common, "--policy", str(first / "tiny_policy")], capsys)  # Agent.learn does
    assert code == 0, err
    again = Path(json.loads(out.strip().splitlines()[-1])["run_dir"])
    assert first.parent == again.parent == tmp_path and again.name == first.name + "-1"
    assert (first / "checkpoint" / "agent.json").is_file() and (again / "checkpoint" / "agent.json").is_file()


# -- user errors through the real entry point: exit 2, one line, no traceback, nothing built (issue 13, item 10) --
def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def _no_cuda() -> bool:
    import torch

    return not torch.cuda.is_available()


def _no_vllm() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is None


@pytest.mark.parametrize(
    ("flags", "message", "applies"),
    [
        (["--device", "nope"], "--device nope: device 'nope' is not a device torch knows", True),
        (["--device", "cuda"], "--device cuda: device 'cuda' needs CUDA", _no_cuda),
        (["--seed", "-1"], "seed must be an int in [0, 2**63)", True),
        (["--rollout", "vllm"], "--rollout vllm: vLLM is not installed; rollout='vllm' needs vLLM: pip install", _no_vllm),
    ],
    ids=["device-nope", "device-cuda-without-cuda", "seed-negative", "vllm-not-installed"],
)
def test_train_config_errors_exit_2_before_anything_is_built(tmp_path, flags, message, applies):
    if callable(applies) and not applies():
        pytest.skip("this machine has what the option needs")
    runs = tmp_path / "runs"
    line = _one_error_line(cli("train", "--tiny", "--steps", "1", "--run-dir", str(runs), *flags, *QUIET))
    assert message in line
    assert not runs.exists()  # failed before the tiny policy (or anything else) was built


@pytest.mark.parametrize("below", [False, True])
def test_train_run_dir_naming_a_file_exits_2(tmp_path, below):
    file = tmp_path / "runs"
    file.write_text("not a folder")
    run_dir = file / "sub" if below else file
    line = _one_error_line(cli("train", "--tiny", "--steps", "1", "--run-dir", str(run_dir), *QUIET))
    assert f"--run-dir {run_dir}" in line and f"{file} is a regular file, not a folder" in line
    assert file.read_text() == "not a folder"


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, "a:\n" + "".join("  " * depth + "b:\n" for depth in range(1, 3000))],
    ids=["flow-sequences", "block-mappings"],
)
def test_deeply_nested_yaml_config_exits_2(tmp_path, text):
    config = tmp_path / "deep.yaml"
    config.write_text(text, encoding="utf-8")
    line = _one_error_line(cli("train", "--tiny", "--config", str(config), "--run-dir", str(tmp_path / "runs")))
    assert f"--config {config} is nested too deeply" in line


def test_offline_hub_policy_is_one_line_saying_to_pass_a_local_folder(tmp_path):
    import os

    hub = str(tmp_path / "hf")  # an empty cache: the model cannot be there
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": hub, "HF_HUB_CACHE": hub}
    command = [sys.executable, "-m", "ospo_gym.cli", "train", "--policy", "Qwen/Qwen2.5-0.5B", "--steps", "1",
               "--run-dir", str(tmp_path / "runs"), *QUIET]  # fmt: skip
    line = _one_error_line(subprocess.run(command, capture_output=True, text=True, timeout=120, env=env))
    assert "cannot load policy 'Qwen/Qwen2.5-0.5B': not found locally and could not be downloaded" in line
    assert "pass --policy a local folder" in line


def test_pickled_trainer_state_is_refused_in_one_line(trained, tmp_path):
    import torch

    from ospo_gym.agents import checkpoint as ckpt

    copy = tmp_path / "checkpoint"
    shutil.copytree(trained["checkpoint"], copy)
    torch.save({"step": Path("x")}, copy / ckpt.TRAINER_STATE)  # an object of a class: needs pickle's GLOBAL
    (copy / ckpt.MANIFEST).write_text(json.dumps(ckpt._manifest(copy)), encoding="utf-8")  # as anyone can
    line = _one_error_line(cli("eval", str(copy), "--samples", "1"))
    assert "trainer_state.pt holds a pickled Python object (pathlib.PosixPath), which is never loaded" in line


def test_eval_negative_seed_exits_2(trained):
    line = _one_error_line(cli("eval", trained["checkpoint"], "--seed", "-1"))
    assert line == "ospo-gym: error: --seed must be >= 0, got -1"
