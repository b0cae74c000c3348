"""The `ospo-gym` command line: envs and credit; bad input exits 2 with one line and no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import gymnasium as gym
import pytest

import ospo_gym
from ospo_gym.cli import build_parser, main
from ospo_gym.credit import CREDIT_VARIANTS
from ospo_gym.credit.defaults import DEFAULT_MAX_COALITIONS, DEFAULT_W_MAX


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ospo_gym.cli", *args], capture_output=True, text=True)


def test_envs_lists_every_id_with_its_knobs(capsys):
    assert main(["envs", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert set(ospo_gym.ENV_IDS) <= set(listing)
    assert listing["ospo/AdditiveKeywords-v0"]["vocab_size"] == "32"


def test_credit_prints_a_row_per_segment(capsys):
    assert main(["credit", "--env", "ospo/Interaction-v0", "--prompt-id", "0", "--text", "alpha beta, gamma delta", "--exact"]) == 0
    out = capsys.readouterr().out
    assert "segments: 2" in out and "exact" in out and "gamma delta" in out


@pytest.mark.parametrize("variant", CREDIT_VARIANTS)
def test_credit_takes_every_segment_credit_variant(variant, capsys):
    env = gym.make("ospo/AdditiveKeywords-v0").unwrapped
    want, avoid = env.prompt(0).removeprefix("want: ").split(" avoid: ")
    text = " ".join([*want.split()[:2], avoid.split()[0]])  # two wanted keywords, one to avoid
    code = main(["credit", "--env", "ospo/AdditiveKeywords-v0", "--prompt-id", "0", "--text", text,
                 "--credit-variant", variant, "--no-color"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "segments: 3" in out
    signs = [line.split()[0][0] for line in out.splitlines()[2:]]
    assert signs == ["+", "+", "-"]


def test_estimator_is_a_deprecated_alias_of_credit_variant_on_the_command_line(capsys):
    credit = ["credit", "--env", "ospo/AdditiveKeywords-v0", "--prompt-id", "0", "--text", "a b c", "--no-color"]
    assert main([*credit, "--credit-variant", "weighted"]) == 0
    new = capsys.readouterr()
    assert main([*credit, "--estimator", "weighted"]) == 0
    old = capsys.readouterr()
    assert old.out == new.out and new.err == ""
    assert "warning: --estimator is deprecated and will be removed in the next version; use --credit-variant" in old.err
    with pytest.raises(SystemExit) as exit_:  # the old flag is checked against the same choices
        main([*credit, "--estimator", "magic"])
    assert exit_.value.code == 2 and "invalid choice: 'magic'" in capsys.readouterr().err


def test_train_reads_the_old_estimator_flag_and_yaml_key_as_credit_variant(tmp_path, capsys):
    agents = pytest.importorskip("ospo_gym.agents")
    from ospo_gym.cli.options import UsageError, command_line, known_keys, load_yaml, resolve_options

    parser = build_parser()
    args = parser.parse_args(["train", "--tiny", "--estimator", "released"])
    assert "warning: --estimator is deprecated" in capsys.readouterr().err
    assert resolve_options(agents.AgentConfig, args, {}) == {"credit_variant": "released"}
    assert command_line(args.command_parser, args) == "ospo-gym train --tiny --credit-variant released"
    assert "--estimator" not in args.command_parser.format_help()  # hidden: --help shows the new name only
    config = tmp_path / "old.yaml"
    config.write_text("estimator: weighted\n", encoding="utf-8")
    values = load_yaml(str(config), known_keys(agents.AgentConfig))
    assert resolve_options(agents.AgentConfig, parser.parse_args(["train"]), values) == {"credit_variant": "weighted"}
    assert "the --config key estimator is deprecated" in capsys.readouterr().err
    config.write_text("estimator: weighted\ncredit_variant: owen\n", encoding="utf-8")
    values = load_yaml(str(config), known_keys(agents.AgentConfig))
    with pytest.raises(UsageError, match="both credit_variant and its deprecated old name estimator"):
        resolve_options(agents.AgentConfig, parser.parse_args(["train"]), values)


def test_credit_offers_what_agent_config_takes_with_the_cores_defaults():
    """One tuple of variants (``weighted`` included) and one place for the coalition defaults
    (ospo_gym.credit.defaults), for the credit command and AgentConfig alike."""
    agent_config = pytest.importorskip("ospo_gym.agents").AgentConfig
    args = build_parser().parse_args(["credit", "--text", "x"])
    assert args.command_parser._option_string_actions["--credit-variant"].choices == CREDIT_VARIANTS
    for variant in CREDIT_VARIANTS:
        assert agent_config(credit_variant=variant).credit_variant == variant
    assert args.w_max == agent_config().w_max == DEFAULT_W_MAX
    assert args.max_coalitions == agent_config().max_coalitions == DEFAULT_MAX_COALITIONS


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["credit", "--env", "ospo/Nope-v0", "--text", "x"], "unknown env"),
        (["credit", "--prompt-id", "nope", "--text", "x"], "unknown prompt id"),
        (["credit", "--env-arg", "vocab_size", "--text", "x"], "NAME=VALUE"),
        (["credit", "--env-arg", "vocab_size=2", "--text", "x"], "cannot build"),
        (["credit", "--w-max", "0", "--text", "a b c"], "w_max"),
    ],
)
def test_bad_input_exits_2_without_traceback(args, message):
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["credit", "--text", "x", "--w-max", "x"], "argument --w-max: invalid int value: 'x'"),
        (["nope"], "invalid choice: 'nope'"),
        ([], "the following arguments are required: command"),
        (["data", "esci", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_argparse_errors_are_one_line_pointing_at_help(args, message):
    result = run(*args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "--help)" in result.stderr
    assert "usage:" not in result.stderr


def test_help_still_prints_the_whole_usage():
    result = run("credit", "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: ospo-gym credit")
    assert "--max-coalitions" in result.stdout and "--no-color" in result.stdout


def test_credit_negative_seed_is_one_clear_line():
    result = run("credit", "--text", "a b", "--seed", "-1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "ospo-gym: error: --seed must be >= 0, got -1"


@pytest.mark.parametrize("below", [False, True])
def test_data_esci_dest_naming_a_file_exits_2(tmp_path, below):
    """Before any download: --dest is a regular file, or lies under one."""
    file = tmp_path / "esci"
    file.write_text("not a folder")
    dest = file / "sub" if below else file
    result = run("data", "esci", "--dest", str(dest), "--url-base", "http://127.0.0.1:9/none", "--quiet")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"--dest {dest}" in result.stderr and f"{file} is a regular file, not a folder" in result.stderr
    assert file.read_text() == "not a folder"


def test_data_esci_refuses_a_link_where_a_file_goes(tmp_path):
    """A link in --dest is not read, hashed, appended to or replaced: the downloads write only regular files."""
    from ospo_gym.data.esci_schema import EXAMPLES_FILE

    target = tmp_path / "elsewhere.parquet"
    target.write_bytes(b"keep me")
    dest = tmp_path / "esci"
    dest.mkdir()
    (dest / EXAMPLES_FILE).symlink_to(target)
    result = run("data", "esci", "--dest", str(dest), "--url-base", "http://127.0.0.1:9/none", "--quiet")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"{dest / EXAMPLES_FILE} is a symbolic link (to {target})" in result.stderr
    assert (dest / EXAMPLES_FILE).is_symlink() and target.read_bytes() == b"keep me"


def test_deeply_nested_env_arg_json_is_one_line():
    result = run("credit", "--text", "x", "--env-arg", "vocab_size=" + "[" * 50_000)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "ospo-gym: error: --env-arg vocab_size=...: the JSON value is nested too deeply"


@pytest.mark.parametrize(
    "args", [["envs"], ["credit", "--text", "alpha beta"], ["cache", "dir"], ["data", "hm"], ["envs", "--help"]]
)
def test_commands_without_agents_never_import_torch(args):
    """The command table names each command's module by string: only the chosen one is imported."""
    code = (
        "import sys; from ospo_gym.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert result.stderr.strip().splitlines()[-1] == "False", result.stderr


def test_every_command_names_functions_that_exist():
    pytest.importorskip("torch")  # train, eval and bench live on the agents extra
    import importlib

    from ospo_gym.cli import COMMANDS

    for name, command in COMMANDS.items():
        for dotted in (command.options, command.body):
            module, _, function = dotted.partition(":")
            assert module.startswith("ospo_gym.cli."), (name, dotted)
            assert callable(getattr(importlib.import_module(module), function)), (name, dotted)
