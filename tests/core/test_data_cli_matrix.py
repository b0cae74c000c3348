"""Bad data through the real command line (issue #7): every malformed-data case of the ESCI and H&M loaders, run by
``ospo-gym train`` / ``eval`` (``--env ospo/ESCI-v0`` / ``ospo/HM-v0`` with ``--env-arg data_dir=...``),
``ospo-gym data hm --verify`` and ``ospo-gym data esci --dest``, exits with status 2 and one line on stderr that
names the file and the problem, never a traceback, and leaves the damaged files byte for byte as they were.

The cases are the loader tests' own (``_breakers`` of ``test_data_esci`` / ``test_data_hm``, built from the
fixtures of ``fixtures_real``), plus damaged files (truncated, not the format, empty) and missing files. Most runs
call ``ospo_gym.cli.main`` in this process; two go through a real process (``python -m ospo_gym.cli`` and the
``ospo-gym`` console script) to see exactly what a user sees on stderr.

The other side (issue 13): odd but valid files (CSVs with a UTF-8 byte-order mark, uint64 query ids above 2**63)
are accepted, and every damaged processed-data cache entry of ``test_data_paths_cache.DAMAGES`` is rebuilt with a
warning, then loaded cleanly, by the same commands.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import test_data_esci
import test_data_hm
import test_data_paths_cache
from fixtures_real import esci_dir, hm_dir

from ospo_gym.cli import main
from ospo_gym.data.esci_schema import EXAMPLES_FILE, PRODUCTS_FILE
from ospo_gym.data.fixtures import write_esci_parquet
from ospo_gym.data.hm_files import ARTICLES_FILE, CUSTOMERS_FILE, TRANSACTIONS_FILE
from ospo_gym.data.hm_files import FILES as HM_FILES

ESCI_FILES = (EXAMPLES_FILE, PRODUCTS_FILE)
ENV_IDS = {"esci": "ospo/ESCI-v0", "hm": "ospo/HM-v0"}
DATASET_FILES = {"esci": ESCI_FILES, "hm": HM_FILES}
QUIET = ["--no-progress-bar", "--no-tensorboard"]


@dataclass(frozen=True)
class Case:
    """One bad data folder: ``build(folder)`` writes it; the error must match ``problem`` (a regex) and name
    ``file`` (its full path; None: any of the dataset's files, as the loader tests leave it open). ``missing``: the
    file is not there at all (``data esci`` would download it, so that command is not run)."""

    dataset: str
    build: Callable[[Path], None]
    problem: str
    file: str | None = None
    missing: bool = False


# --- the case table -------------------------------------------------------------------------------------------


def _esci_table(breaker: Callable) -> Callable[[Path], None]:
    return lambda folder: test_data_esci._write(folder, *breaker(*test_data_esci.frames()))


def _hm_table(breaker: Callable) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for frame, name in zip(breaker(*test_data_hm.frames()), HM_FILES, strict=True):
            frame.to_csv(folder / name, index=False)

    return build


def _cut_inside_a_line(raw: bytes) -> bytes:
    """The first half of a CSV file and one more field: the last row is cut short."""
    return raw[: raw.index(b",", len(raw) // 2) + 1]


DAMAGE = {  # raw bytes -> damaged bytes
    "truncated": lambda raw: raw[: len(raw) // 2],
    "not parquet": lambda raw: b"product_id,title\n1,a\n",
    "empty file": lambda raw: b"",
    "cut inside a line": _cut_inside_a_line,
    "not text": lambda raw: bytes(range(256)) * 8,
    "missing": None,
}


def _damaged(dataset: str, name: str, damage: str) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        if dataset == "esci":
            write_esci_parquet(*test_data_esci.frames(), folder)
        else:
            shutil.copytree(hm_dir(), folder)
        path = folder / name
        if DAMAGE[damage] is None:
            path.unlink()
        else:
            path.write_bytes(DAMAGE[damage](path.read_bytes()))

    return build


def _cases() -> dict[str, Case]:
    cases = {}
    for label, (breaker, match) in test_data_esci._breakers().items():
        cases[f"esci: {label}"] = Case("esci", _esci_table(breaker), match)
    for name in ESCI_FILES:
        for damage in ("truncated", "not parquet", "empty file"):
            cases[f"esci: {damage} {name}"] = Case("esci", _damaged("esci", name, damage), "truncated or corrupt", name)
        cases[f"esci: missing {name}"] = Case("esci", _damaged("esci", name, "missing"), "ESCI data not found", name, True)
    for label, (breaker, match) in test_data_hm._breakers().items():
        cases[f"hm: {label}"] = Case("hm", _hm_table(breaker), match)
    for name in HM_FILES:
        cases[f"hm: cut inside a line {name}"] = Case("hm", _damaged("hm", name, "cut inside a line"), "truncated or corrupt", name)
        cases[f"hm: missing {name}"] = Case("hm", _damaged("hm", name, "missing"), "H&M data not found", name, True)
    cases[f"hm: empty file {TRANSACTIONS_FILE}"] = Case("hm", _damaged("hm", TRANSACTIONS_FILE, "empty file"), "is empty", TRANSACTIONS_FILE)
    cases[f"hm: not text {ARTICLES_FILE}"] = Case("hm", _damaged("hm", ARTICLES_FILE, "not text"), "truncated or corrupt", ARTICLES_FILE)
    cases[f"hm: not text {CUSTOMERS_FILE}"] = Case("hm", _damaged("hm", CUSTOMERS_FILE, "not text"), "truncated or corrupt", CUSTOMERS_FILE)  # fmt: skip
    return cases


CASES = _cases()


# --- running the CLI ------------------------------------------------------------------------------------------


def run_main(args: list[str]) -> tuple[int, str, str]:
    """``main(args)`` in this process; argparse's own exits arrive as SystemExit. Any other exception escapes
    (and fails the test): the CLI must not let one through."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, by relative path: a changed, added or removed file shows."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def check_one_line_error(
    code: int, out: str, err: str, case: Case, folder: Path, problem: str | None = None, file: str | None = None
) -> str:
    """Status 2, nothing on stdout, one line on stderr matching ``problem`` (default: the case's) and naming ``file``
    (default: the case's; ``""``: any file of the dataset) under ``folder``. Returns the line."""
    file = case.file if file is None else file or None
    assert code == 2, f"exit status {code}; stderr: {err}"
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"expected one line on stderr, got {len(lines)}: {err!r}"
    line = lines[0]
    assert line.startswith("ospo-gym: error: "), line
    assert re.search(problem or case.problem, line), f"{problem or case.problem!r} not in {line!r}"
    if file is not None:  # the damaged file, by its path, or by its name in a "not found" report of the folder
        assert str(folder / file) in line or (str(folder) in line and file in line), line
    else:
        assert any(str(folder / name) in line for name in DATASET_FILES[case.dataset]), line
    assert out == "", out
    return line


@pytest.fixture(autouse=True)
def _no_user_dirs(tmp_path, monkeypatch):
    """Nothing read from or written to the user's data and cache folders."""
    monkeypatch.setenv("OSPO_GYM_DATA", str(tmp_path / "no-default-data"))
    monkeypatch.setenv("OSPO_GYM_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """A tiny checkpoint (0 steps on a small AdditiveKeywords) for ``eval --env <real-data id>``."""
    pytest.importorskip("torch")
    runs = tmp_path_factory.mktemp("checkpoint")
    code, out, err = run_main(["train", "--tiny", "--steps", "0", "--env-arg", "vocab_size=12",
                               "--env-arg", "num_prompts=3", "--run-dir", str(runs), *QUIET])  # fmt: skip
    assert code == 0, err
    return str(next(runs.glob("*/checkpoint")))


def _env_args(case: Case, folder: Path, tmp_path: Path) -> list[str]:
    return ["--env", ENV_IDS[case.dataset], "--env-arg", f"data_dir={folder}", "--env-arg", f"cache_dir={tmp_path / 'cache'}"]


COMMANDS = {
    "train": lambda case, folder, tmp_path, ckpt: [
        "train", "--tiny", "--steps", "1", "--run-dir", str(tmp_path / "runs"), *_env_args(case, folder, tmp_path), *QUIET,
    ],
    "eval": lambda case, folder, tmp_path, ckpt: ["eval", ckpt, "--samples", "1", *_env_args(case, folder, tmp_path)],
    "data hm --verify": lambda case, folder, tmp_path, ckpt: ["data", "hm", "--verify", str(folder)],
    "data esci --dest": lambda case, folder, tmp_path, ckpt: ["data", "esci", "--dest", str(folder), "--quiet"],
}  # fmt: skip


def _matrix() -> list:
    params = []
    for name, case in CASES.items():
        commands = ["train", "eval", "data hm --verify" if case.dataset == "hm" else "data esci --dest"]
        for command in commands:
            if command == "data esci --dest" and case.missing:
                continue  # it would download the missing file
            params.append(pytest.param(command, name, id=f"{command} | {name}"))
    return params


@pytest.mark.parametrize(("command", "name"), _matrix())
def test_bad_data_exits_2_with_one_line_and_loses_nothing(command, name, tmp_path, request):
    case = CASES[name]
    folder = tmp_path / "data"
    case.build(folder)
    before = snapshot(folder)
    ckpt = request.getfixturevalue("checkpoint") if command == "eval" else ""
    code, out, err = run_main(COMMANDS[command](case, folder, tmp_path, ckpt))
    if command == "data esci --dest":  # checks the published checksums (the examples file's first), not the schema
        line = check_one_line_error(code, out, err, case, folder, problem="does not match its checksum", file="")
        assert "delete it or rerun with --force" in line
    else:
        line = check_one_line_error(code, out, err, case, folder)
        if command in ("train", "eval"):
            assert line.startswith(f"ospo-gym: error: cannot build {ENV_IDS[case.dataset]}: "), line
    assert snapshot(folder) == before  # not one byte changed, added or removed
    assert not (tmp_path / "runs").exists()  # train stopped before making a run folder
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.npz"))  # nothing cached


def test_every_case_of_the_loader_tests_is_in_the_matrix():
    names = set(CASES)
    assert {f"esci: {k}" for k in test_data_esci._breakers()} <= names
    assert {f"hm: {k}" for k in test_data_hm._breakers()} <= names
    matrix = {p.values for p in _matrix()}
    for name, case in CASES.items():
        assert ("train", name) in matrix and ("eval", name) in matrix
        if case.dataset == "hm":
            assert ("data hm --verify", name) in matrix
    assert {"esci: NUL in a product id", "hm: NUL in an article id", "hm: NUL in a customer id"} <= names
    cache_matrix = {p.values for p in _cache_matrix()}
    assert {(d, k) for d in ENV_IDS for k in test_data_paths_cache.DAMAGES} == cache_matrix


# --- odd but valid data, and damaged caches: accepted (issue 13) ----------------------------------------------


def _with_byte_order_marks(folder: Path) -> None:
    """The H&M fixture as Excel saves CSV files: each starts with a UTF-8 byte-order mark."""
    folder.mkdir(parents=True)
    for path in hm_dir().iterdir():
        (folder / path.name).write_bytes(b"\xef\xbb\xbf" + path.read_bytes())


def _uint64_query_ids(folder: Path) -> None:
    products, examples = test_data_esci.frames()
    test_data_esci._write(folder, products, examples.assign(query_id=examples.query_id.astype(np.uint64) + np.uint64(2**63)))


ACCEPTED = {  # name -> (dataset, build)
    "hm: UTF-8 byte-order marks": ("hm", _with_byte_order_marks),
    "esci: uint64 query ids above 2**63": ("esci", _uint64_query_ids),
}


def _train_0_steps(dataset: str, folder: Path, tmp_path: Path) -> list[str]:
    return ["train", "--tiny", "--steps", "0", "--run-dir", str(tmp_path / "runs"), "--env", ENV_IDS[dataset],
            "--env-arg", f"data_dir={folder}", "--env-arg", f"cache_dir={tmp_path / 'cache'}", *QUIET]  # fmt: skip


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_odd_but_valid_data_is_accepted(name, tmp_path):
    pytest.importorskip("torch")
    dataset, build = ACCEPTED[name]
    folder = tmp_path / "data"
    build(folder)
    before = snapshot(folder)
    code, out, err = run_main(_train_0_steps(dataset, folder, tmp_path))
    assert code == 0 and "Traceback" not in err, err
    if dataset == "hm":
        code, out, err = run_main(["data", "hm", "--verify", str(folder)])
        assert code == 0 and err == "" and str(folder) in out
    else:  # the task the run used, as cached: ids kept exact, not wrapped negative
        (entry,) = (tmp_path / "cache").glob("esci-*")
        with np.load(entry / "arrays.npz", allow_pickle=False) as arrays:
            assert arrays["query_ids"].dtype == np.uint64 and int(arrays["query_ids"].min()) >= 2**63
    assert snapshot(folder) == before


def _cache_matrix() -> list:
    return [pytest.param(d, k, id=f"train | {d}: {k}") for d in ENV_IDS for k in test_data_paths_cache.DAMAGES]


@pytest.mark.parametrize(("dataset", "damage"), _cache_matrix())
def test_a_damaged_cache_entry_is_rebuilt_then_used(dataset, damage, tmp_path):
    pytest.importorskip("torch")
    folder = esci_dir() if dataset == "esci" else hm_dir()
    before = snapshot(folder)
    argv = _train_0_steps(dataset, folder, tmp_path)
    assert run_main(argv)[0] == 0
    (entry,) = (tmp_path / "cache").glob(f"{dataset}-*")
    test_data_paths_cache.DAMAGES[damage](entry)
    with pytest.warns(UserWarning, match="unreadable processed-data cache entry .*; rebuilding it"):
        code, out, err = run_main(argv)
    assert code == 0 and "Traceback" not in err, err
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run_main(argv)[0] == 0
    assert not [w for w in caught if "cache entry" in str(w.message)]  # the rebuilt entry loads cleanly
    assert snapshot(folder) == before


# --- what a user sees: real processes ------------------------------------------------------------------------


def _process(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OSPO_GYM_DATA": str(tmp_path / "no-default-data"), "OSPO_GYM_CACHE": str(tmp_path / "cache")}
    return subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env)


def test_verify_of_a_folder_missing_a_file_through_python_m(tmp_path):
    case = CASES[f"hm: missing {CUSTOMERS_FILE}"]
    folder = tmp_path / "data"
    case.build(folder)
    before = snapshot(folder)
    result = _process([sys.executable, "-m", "ospo_gym.cli", "data", "hm", "--verify", str(folder)], tmp_path)
    line = check_one_line_error(result.returncode, result.stdout, result.stderr, case, folder)
    assert f"{folder} (lacks {CUSTOMERS_FILE})" in line
    assert snapshot(folder) == before


def test_train_on_a_truncated_parquet_through_the_console_script(tmp_path):
    pytest.importorskip("torch")
    case = CASES[f"esci: truncated {PRODUCTS_FILE}"]
    folder = tmp_path / "data"
    case.build(folder)
    before = snapshot(folder)
    script = Path(sys.executable).with_name("ospo-gym")
    argv = [str(script)] if script.is_file() else [sys.executable, "-m", "ospo_gym.cli"]
    result = _process([*argv, *COMMANDS["train"](case, folder, tmp_path, "")], tmp_path)
    line = check_one_line_error(result.returncode, result.stdout, result.stderr, case, folder)
    assert line.startswith("ospo-gym: error: cannot build ospo/ESCI-v0: ") and str(folder / PRODUCTS_FILE) in line
    assert snapshot(folder) == before and not (tmp_path / "runs").exists()
