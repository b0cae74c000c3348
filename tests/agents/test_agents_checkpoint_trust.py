"""A checkpoint is data to verify, never a source of paths: its manifest must list every file inside it and
nothing outside, agent.json and trainer_state.pt are checked field by field, damaged policy files are one
CheckpointError (exit 2 in the CLI), a resumed run writes only in the run folder the checkpoint lies in, and
resuming from an older checkpoint moves the abandoned branch aside instead of mixing two timelines."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import pytest
from test_agents_support import ENV_ID, ENV_KWARGS, fast_config, tiny_policy_path

torch = pytest.importorskip("torch")

from cli_support import run_main  # noqa: E402

from ospo_gym.agents import Agent  # noqa: E402
from ospo_gym.agents.checkpoint import (  # noqa: E402
    CheckpointError,
    prune_checkpoints,
    read_checkpoint,
    verify_checkpoint,
)
from ospo_gym.agents.logger import read_metrics  # noqa: E402

QUIET = ["--no-progress-bar", "--no-tensorboard"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A checkpoint of a tiny agent after one step (every test copies it before touching anything)."""
    root = tmp_path_factory.mktemp("saved")
    policy = tiny_policy_path(tmp_path_factory)
    config = fast_config(run_dir=str(root / "runs"))
    agent = Agent(ENV_ID, policy=policy, config=config, env_kwargs=ENV_KWARGS)
    return agent.learn(1).save(root / "ckpt")


def copy_of(saved: Path, target: Path) -> Path:
    shutil.copytree(saved, target, symlinks=True)
    return target


def rehash(folder: Path, extra: dict[str, Path] | None = None) -> None:
    """Recompute the manifest of ``folder`` as anyone can: every file inside (following links), plus ``extra``
    names (listed with the size and digest of the file each is mapped to)."""
    files: dict[str, dict] = {}
    listed = {
        (Path(top) / name).relative_to(folder).as_posix(): Path(top) / name
        for top, _, names in os.walk(folder, followlinks=True)
        for name in names
    }
    listed.pop("manifest.json", None)
    for name, file in {**listed, **(extra or {})}.items():
        data = file.read_bytes()
        files[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (folder / "manifest.json").write_text(json.dumps({"format": 2, "files": files}), encoding="utf-8")


def edit_agent_json(folder: Path, **changes) -> None:
    meta = json.loads((folder / "agent.json").read_text(encoding="utf-8"))
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(meta.get(key), dict):
            meta[key].update(value)
        else:
            meta[key] = value
    (folder / "agent.json").write_text(json.dumps(meta), encoding="utf-8")
    rehash(folder)


def flip_weights(folder: Path) -> None:
    weights = folder / "policy" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-9] + bytes([data[-9] ^ 0xFF]) + data[-8:])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- item 3: the manifest lists every file, inside the checkpoint only ---------------------------------------
def test_checkpoints_written_by_save_verify(saved):
    verify_checkpoint(saved)
    meta, state = read_checkpoint(saved)
    assert meta["step"] == 1 and set(state) == {"optimizer", "rng"}


def test_an_empty_manifest_is_refused(saved, tmp_path):
    folder = copy_of(saved, tmp_path / "ckpt")
    flip_weights(folder)
    (folder / "manifest.json").write_text(json.dumps({"format": 2, "files": {}}), encoding="utf-8")
    with pytest.raises(CheckpointError, match="does not list agent.json, trainer_state.pt, policy weights"):
        verify_checkpoint(folder)
    with pytest.raises(CheckpointError):
        Agent.load(folder)


def test_a_file_not_in_the_manifest_is_refused(saved, tmp_path):
    folder = copy_of(saved, tmp_path / "ckpt")
    (folder / "policy" / "adapter_config.json").write_text('{"base_model_name_or_path": "someone/else"}')
    with pytest.raises(CheckpointError, match="adapter_config.json is in the checkpoint but not in its"):
        verify_checkpoint(folder)
    with pytest.raises(CheckpointError, match="not in its manifest"):
        Agent.load(folder)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../outside.txt", "'..' part"),
        ("ABSOLUTE", "an absolute path"),
        ("policy/../agent.json", "'..' part"),
        ("policy//config.json", "an empty"),
        ("./agent.json", "'.' or"),
        ("policy\\config.json", "backslash"),
        ("", "an empty path"),
        ("manifest.json", "the manifest itself"),
    ],
)
def test_manifest_entries_must_name_files_inside_the_checkpoint(saved, tmp_path, name, problem):
    folder = copy_of(saved, tmp_path / "ckpt")
    outside = tmp_path / "outside.txt"
    outside.write_text("a file next to the checkpoint")
    name = str(outside) if name == "ABSOLUTE" else name
    rehash(folder, extra={name: outside})
    with pytest.raises(CheckpointError, match=f"{problem}.*relative POSIX paths"):
        verify_checkpoint(folder)


@pytest.mark.parametrize("what", ["file", "folder"])
def test_symbolic_links_inside_are_refused(saved, tmp_path, what):
    folder = copy_of(saved, tmp_path / "ckpt")
    name = "policy/tokenizer.json" if what == "file" else "policy"
    target = tmp_path / "elsewhere"
    os.replace(folder / name, target)
    (folder / name).symlink_to(target)
    rehash(folder)  # listing and hashing what the links point to
    with pytest.raises(CheckpointError, match="is a symbolic link"):
        verify_checkpoint(folder)


def test_a_fifo_inside_is_refused(saved, tmp_path):
    folder = copy_of(saved, tmp_path / "ckpt")
    os.mkfifo(folder / "policy" / "extra.json")
    with pytest.raises(CheckpointError, match="not a regular file"):
        verify_checkpoint(folder)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100_000, "nested too deeply"),
        ('{"files": ' * 5000 + "{}" + "}" * 5000, "nested too deeply"),
        (" " * (9 << 20) + "{}", "larger than"),
        ("[]", "expected a JSON object"),
        ('{"files": {"agent.json": {"size": "12", "sha256": "00"}}}', "damaged entry for 'agent.json'"),
        ('{"files": {"agent.json": {"size": true, "sha256": "' + "0" * 64 + '"}}}', "damaged entry"),
        ('{"files": {}, "files": {}}', "duplicate key 'files'"),
        (b"\xff\xfe{}", "not valid JSON"),
    ],
)
def test_a_malformed_manifest_is_one_clear_error(saved, tmp_path, text, message):
    folder = copy_of(saved, tmp_path / "ckpt")
    data = text if isinstance(text, bytes) else text.encode()
    (folder / "manifest.json").write_bytes(data)
    with pytest.raises(CheckpointError, match=message):
        verify_checkpoint(folder)


# -- items 10 / 11: agent.json, trainer_state.pt and the policy files are checked ----------------------------
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"step": 1e30}, "step must be an integer"),
        ({"step": 10**30}, "step must be an integer"),
        ({"step": -1}, "step must be an integer"),
        ({"step": "3"}, "step must be an integer"),
        ({"step": True}, "step must be an integer"),
        ({"config": []}, "config must be an object"),
        ({"env_id": 5}, "env_id must be"),
        ({"env_kwargs": "vocab_size=3"}, "env_kwargs must be"),
        ({"run_dir": ["x"]}, "run_dir must be"),
        ({"rng": {"python": [3, [0] * 10, None]}}, "rng.python"),
        ({"rng": {"numpy": ["MT19937", [1 << 40] * 624, 0, 0, 0.0]}}, "rng.numpy"),
        ({"rng": None}, "rng must be"),
        ({"format": "2"}, "checkpoint format '2'"),
    ],
)
def test_agent_json_fields_are_checked(saved, tmp_path, changes, message):
    folder = copy_of(saved, tmp_path / "ckpt")
    edit_agent_json(folder, **changes)
    with pytest.raises(CheckpointError, match=message):
        verify_checkpoint(folder)
    with pytest.raises(CheckpointError, match=message):
        Agent.load(folder)


def test_a_deeply_nested_agent_json_in_a_run_folder_is_a_checkpoint_error(saved, tmp_path):
    final = copy_of(saved, tmp_path / "run" / "checkpoint")
    (final / "agent.json").write_text("[" * 100_000)  # read to order a run's checkpoints, before verifying
    rehash(final)
    with pytest.warns(UserWarning, match="nested too deeply"):
        with pytest.raises(CheckpointError, match="no intact"):
            Agent.load(tmp_path / "run")


def test_a_bad_config_in_agent_json_is_a_checkpoint_error(saved, tmp_path):
    folder = copy_of(saved, tmp_path / "ckpt")
    edit_agent_json(folder, config={"group_size": "eight"})
    with pytest.raises(CheckpointError, match="agent.json holds a config that is not valid"):
        Agent.load(folder)
    with pytest.raises(ValueError, match="unknown AgentConfig fields") as error:
        Agent.load(saved, no_such_field=1)
    assert not isinstance(error.value, CheckpointError)  # a wrong override is the user's error


def test_a_checkpoint_saved_with_the_old_estimator_key_still_loads(saved, tmp_path):
    """agent.json written before ``estimator`` became ``credit_variant`` (its manifest recomputed to match)."""
    folder = copy_of(saved, tmp_path / "ckpt")
    meta = json.loads((folder / "agent.json").read_text(encoding="utf-8"))
    meta["config"].pop("credit_variant")
    meta["config"]["estimator"] = "weighted"
    (folder / "agent.json").write_text(json.dumps(meta), encoding="utf-8")
    rehash(folder)
    with pytest.warns(DeprecationWarning, match="'estimator' is deprecated"):
        assert Agent.load(folder).config.credit_variant == "weighted"
    with pytest.warns(DeprecationWarning, match="'estimator' is deprecated"):  # an override under the new name wins
        assert Agent.load(folder, credit_variant="released").config.credit_variant == "released"


@pytest.mark.parametrize(
    "state",
    [
        {"optimizer": {"state": {}, "param_groups": []}, "rng": {"torch": torch.zeros(3, dtype=torch.uint8)}},
        {"optimizer": [], "rng": {}},
        [1, 2, 3],
    ],
)
def test_trainer_state_layout_is_checked(saved, tmp_path, state):
    folder = copy_of(saved, tmp_path / "ckpt")
    torch.save(state, folder / "trainer_state.pt")
    rehash(folder)
    with pytest.raises(CheckpointError, match="trainer_state.pt is damaged or not ospo-gym's"):
        read_checkpoint(folder)


def test_an_optimizer_state_of_another_model_is_a_checkpoint_error(saved, tmp_path):
    folder = copy_of(saved, tmp_path / "ckpt")
    state = torch.load(folder / "trainer_state.pt", weights_only=True)
    state["optimizer"]["param_groups"][0]["params"] = [0]  # one parameter where the model has many
    torch.save(state, folder / "trainer_state.pt")
    rehash(folder)
    with pytest.raises(CheckpointError, match="optimizer state that does not fit the policy"):
        Agent.load(folder)


def _damage_policy(folder: Path, how: str) -> None:
    policy = folder / "policy"
    if how == "safetensors_header":
        weights = policy / "model.safetensors"
        weights.write_bytes(b"\xff" * 8 + weights.read_bytes()[8:])  # the header length
    elif how == "safetensors_json":
        weights = policy / "model.safetensors"
        data = weights.read_bytes()
        weights.write_bytes(data[:8] + b"[" + data[9:])  # the header's opening brace
    elif how == "config_json":
        (policy / "config.json").write_text("{not json")
    elif how == "config_value":
        config = json.loads((policy / "config.json").read_text())
        (policy / "config.json").write_text(json.dumps({**config, "hidden_size": "big"}))
    elif how == "tokenizer":
        (policy / "tokenizer.json").write_text("{}")
    rehash(folder)


DAMAGES = ["safetensors_header", "safetensors_json", "config_json", "config_value", "tokenizer"]


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_policy_files_are_a_checkpoint_error(saved, tmp_path, how):
    folder = copy_of(saved, tmp_path / "ckpt")
    _damage_policy(folder, how)
    verify_checkpoint(folder)  # the manifest was recomputed: only loading shows the damage
    with pytest.raises(CheckpointError, match="does not hold a loadable model.*use another checkpoint"):
        Agent.load(folder)


@pytest.mark.parametrize("how", ["safetensors_header", "config_json"])
def test_train_resume_of_damaged_policy_files_exits_2_with_one_line(saved, tmp_path, capsys, how):
    folder = copy_of(saved, tmp_path / "ckpt")
    _damage_policy(folder, how)
    code, _, err = run_main(["train", "--resume", str(folder), "--steps", "2", *QUIET], capsys)
    assert code == 2 and "Traceback" not in err
    assert "does not hold a loadable model" in err and len(err.strip().splitlines()) == 1


# -- item 2: a resumed run writes only where the checkpoint lies ---------------------------------------------
@pytest.fixture
def victim(tmp_path) -> Path:
    """Somebody's run folder, which a checkpoint's agent.json names as its run_dir."""
    folder = tmp_path / "victim"
    for name in ("checkpoint", "checkpoints/step-00000001", "checkpoints/step-00000002"):
        (folder / name).mkdir(parents=True)
        (folder / name / "keep.txt").write_text(f"the victim's {name}")
    records = [json.dumps({"step": step, "reward/mean": 0.5}) for step in range(9)]
    (folder / "metrics.jsonl").write_text("\n".join(records) + "\n")
    return folder


def _hostile(saved: Path, target: Path, victim: Path) -> Path:
    """A copy of ``saved`` whose agent.json points at ``victim`` and asks for a checkpoint every step."""
    folder = copy_of(saved, target)
    edit_agent_json(folder, run_dir=str(victim), config={"save_every": 1, "keep_checkpoints": 1})
    return folder


def test_a_checkpoint_cannot_send_the_resumed_run_elsewhere(saved, tmp_path, victim):
    before = snapshot(victim)
    hostile = _hostile(saved, tmp_path / "downloads" / "ckpt", victim)
    standalone = Agent.load(hostile, run_dir=str(tmp_path / "runs"))
    run_dir_after_load = standalone.run_dir
    standalone.learn(2).save(standalone.run_dir / "checkpoint")
    in_a_run = Agent.load(_hostile(saved, tmp_path / "other_run" / "checkpoints" / "step-00000001", victim))
    in_a_run.learn(2).save(in_a_run.run_dir / "checkpoint")

    assert snapshot(victim) == before
    assert run_dir_after_load is None  # it lies in no run folder: learn made a fresh one
    assert standalone.run_dir.parent == tmp_path / "runs"
    assert [r["step"] for r in read_metrics(standalone.run_dir / "metrics.jsonl")] == [2, 3]
    assert in_a_run.run_dir == tmp_path / "other_run"  # the run folder it lies in
    assert names(tmp_path / "other_run" / "checkpoints") == ["step-00000003"]


def test_a_standalone_checkpoint_cannot_choose_the_parent_of_its_new_run_folder(saved, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    hostile = copy_of(saved, tmp_path / "downloads" / "ckpt")
    edit_agent_json(hostile, config={"run_dir": str(elsewhere)})
    monkeypatch.chdir(tmp_path / "downloads")
    agent = Agent.load(hostile)
    agent.learn(1)
    agent.close()
    assert list(elsewhere.iterdir()) == []  # the saved config's run_dir is not where we write
    assert agent.run_dir.parent == Path("runs") and (tmp_path / "downloads" / agent.run_dir).is_dir()


def test_train_resume_cannot_be_sent_elsewhere(saved, tmp_path, victim, capsys):
    before = snapshot(victim)
    standalone = _hostile(saved, tmp_path / "downloads" / "ckpt", victim)
    args = ["train", "--resume", str(standalone), "--steps", "3", "--run-dir", str(tmp_path / "runs"), *QUIET]
    code, out, err = run_main(args, capsys)
    assert code == 0, err
    first = json.loads(out.strip().splitlines()[-1])
    in_a_run = _hostile(saved, tmp_path / "other_run" / "checkpoint", victim)
    code, out, err = run_main(["train", "--resume", str(in_a_run), "--steps", "3", *QUIET], capsys)
    assert code == 0, err
    second = json.loads(out.strip().splitlines()[-1])

    assert snapshot(victim) == before
    assert Path(first["run_dir"]).parent == tmp_path / "runs" and first["steps"] == 3
    assert second["run_dir"] == str(tmp_path / "other_run") and second["steps"] == 3


# -- item 4: resuming an older checkpoint starts a new branch -----------------------------------------------
def test_resuming_an_older_checkpoint_moves_the_abandoned_branch_aside(tmp_path_factory, tmp_path):
    config = fast_config(run_dir=str(tmp_path / "runs"), save_every=2, keep_checkpoints=3)
    policy = tiny_policy_path(tmp_path_factory)
    first = Agent(ENV_ID, policy=policy, config=config, env_kwargs=ENV_KWARGS).learn(6)
    run = first.run_dir
    first.save(run / "checkpoint")  # as `train` ends: a final checkpoint of step 6
    abandoned = {name: snapshot(run / "checkpoints" / name) for name in ("step-00000004", "step-00000006")}

    older = Agent.load(run / "checkpoints" / "step-00000002")
    assert (run / "checkpoints" / "step-00000006").is_dir()  # loading alone moves nothing
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        older.learn(2)  # steps 3 and 4, on a new branch
    older.save(run / "checkpoint")
    Agent.load(run).learn(4)  # the newest checkpoint of the run is now the new branch's step 4

    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == list(range(1, 9))
    assert any("abandoned branch" in str(w.message) for w in caught)
    assert names(run / "checkpoints") == ["step-00000004", "step-00000006", "step-00000008"]
    (branch,) = (run / "abandoned").iterdir()
    assert branch.name.startswith("after-step-00000002__")
    for name, files in abandoned.items():
        assert snapshot(branch / "checkpoints" / name) == files  # moved, not lost
        verify_checkpoint(branch / "checkpoints" / name)
    assert read_checkpoint(branch / "checkpoint")[0]["step"] == 6
    assert [r["step"] for r in read_metrics(branch / "metrics.jsonl")] == [3, 4, 5, 6]


def test_train_resume_from_an_older_checkpoint_keeps_one_timeline(tmp_path, capsys):
    runs = tmp_path / "runs"
    base = ["--save-every", "2", "--keep-checkpoints", "3", *QUIET]
    code, out, err = run_main(["train", "--tiny", "--steps", "6", "--run-dir", str(runs), *base], capsys)
    assert code == 0, err
    run = Path(json.loads(out.strip().splitlines()[-1])["run_dir"])
    older = str(run / "checkpoints" / "step-00000002")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = run_main(["train", "--resume", older, "--steps", "4", *QUIET], capsys)
    assert code == 0, err
    code, out, err = run_main(["train", "--resume", str(run), "--steps", "8", *QUIET], capsys)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["steps"] == 8
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == list(range(1, 9))
    assert any("abandoned branch" in str(w.message) for w in caught)
    (branch,) = (run / "abandoned").iterdir()
    assert names(branch / "checkpoints") == ["step-00000004", "step-00000006"]
    assert read_checkpoint(branch / "checkpoint")[0]["step"] == 6


def test_prune_removes_only_periodic_checkpoint_folders(tmp_path):
    run = tmp_path / "run"
    outside = tmp_path / "outside"
    (outside / "data").mkdir(parents=True)
    (outside / "data" / "keep.txt").write_text("not the run's")
    for name in ("step-00000001", "step-00000002", "step-00000003", "notes"):
        (run / "checkpoints" / name).mkdir(parents=True)
    (run / "checkpoints" / "step-00000000").symlink_to(outside / "data")
    (run / "abandoned" / "x" / "checkpoints" / "step-00000001").mkdir(parents=True)
    prune_checkpoints(run, keep=1)
    assert names(run / "checkpoints") == ["notes", "step-00000000", "step-00000003"]
    assert (outside / "data" / "keep.txt").read_text() == "not the run's"  # a link is never followed
    assert (run / "abandoned" / "x" / "checkpoints" / "step-00000001").is_dir()
