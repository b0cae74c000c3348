"""``ospo-gym cache`` (ospo_gym.cli.cache): listing and cleaning real cache entries, and "last used" on load."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from ospo_gym.cli import main
from ospo_gym.cli.cache import CacheEntry, format_size, remove_entries, scan_cache, select_entries
from ospo_gym.data.cache import TaskCache
from ospo_gym.retrieval import BM25Retriever
from ospo_gym.retrieval.index_cache import BM25IndexCache

DOCS = ["red running shoes", "blue denim jacket", "red wool socks", "winter coat with a hood"]
DAY = 86400.0


def task_entry(folder: Path, kind: str, size: int = 200) -> tuple[str, Path]:
    """A real ``TaskCache`` entry of ``kind``; returns its key and folder."""
    key = hashlib.sha256(f"{kind}-{size}".encode()).hexdigest()
    written = TaskCache(folder, kind).save(key, {"ids": np.arange(size)}, {"options": {"size": size}})
    assert written is not None
    return key, written


def bm25_entry(folder: Path) -> Path:
    assert not BM25Retriever(DOCS, index_cache=folder).index_info["cached"]
    (entry,) = folder.glob("bm25-*")
    return entry


def make_old(entry: Path, days: float) -> None:
    then = time.time() - days * DAY
    os.utime(entry / "meta.json", (then, then))


def days_unused(entry: Path) -> float:
    return (time.time() - (entry / "meta.json").stat().st_mtime) / DAY


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def cache_cmd(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(["cache", *args])
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def cache(tmp_path):
    """A cache folder with one entry of each kind: {"dir", "esci", "hm", "bm25", "esci_key", "hm_key"}."""
    folder = tmp_path / "cache"
    esci_key, esci = task_entry(folder, "esci", size=3000)
    hm_key, hm = task_entry(folder, "hm", size=20)
    return {"dir": folder, "esci": esci, "hm": hm, "bm25": bm25_entry(folder), "esci_key": esci_key, "hm_key": hm_key}


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# -- scanning ----------------------------------------------------------------------------------------------------


def test_scan_finds_every_kind_with_its_size_time_and_details(cache):
    folder = cache["dir"]
    (folder / "notes.txt").write_text("not a cache entry")
    (folder / "esci-short").mkdir()
    (folder / ".hidden").mkdir()
    (folder / ("hm-" + "0" * 32)).write_text("a file with an entry's name")
    leftover = Path(tempfile.mkdtemp(prefix=f".{cache['esci'].name}-", dir=folder))  # how TaskCache.save names it
    (leftover / "arrays.npz").write_bytes(b"x" * 123)
    big = folder.parent / "big.bin"
    big.write_bytes(b"0" * 50_000)
    (cache["hm"] / "link").symlink_to(big)  # counted as a link, never followed
    entries = scan_cache(folder)
    assert [(e.kind, e.name) for e in entries] == [
        ("esci", cache["esci"].name),
        ("hm", cache["hm"].name),
        ("bm25", cache["bm25"].name),
        ("incomplete", leftover.name),
    ]
    for entry in entries:
        assert entry.size_bytes == sum(p.lstat().st_size for p in entry.path.rglob("*") if not p.is_dir()) > 0
        assert not entry.damaged
    assert entries[-1].size_bytes == 123 and entries[1].size_bytes < 50_000
    assert entries[0].size_bytes > 3000 * 8 > entries[1].size_bytes  # the arrays dominate
    assert entries[0].last_used == (cache["esci"] / "meta.json").stat().st_mtime
    assert entries[0].settings == {"size": 3000} and entries[0].num_docs is None
    bm25 = entries[2]
    assert bm25.num_docs == len(DOCS) and bm25.settings["k1"] == 1.5 and bm25.settings["stopwords"] == "en"


def test_an_entry_with_an_unreadable_meta_file_is_listed_as_damaged(cache, capsys):
    (cache["hm"] / "meta.json").write_text('{"key": "trunc')
    (cache["esci"] / "arrays.npz").unlink()
    damaged = {e.name: e.damaged for e in scan_cache(cache["dir"])}
    assert damaged == {cache["esci"].name: True, cache["hm"].name: True, cache["bm25"].name: False}
    code, out, _ = cache_cmd(capsys, "list", "--cache-dir", str(cache["dir"]))
    assert code == 0
    assert [("damaged" in line) for line in out.splitlines()] == [True, True, False]
    code, out, _ = cache_cmd(capsys, "info", "--cache-dir", str(cache["dir"]))
    assert "2 damaged entries" in out


def test_a_deeply_nested_meta_file_is_listed_as_damaged(cache):
    (cache["hm"] / "meta.json").write_text("[" * 100_000)
    assert {e.name: e.damaged for e in scan_cache(cache["dir"])}[cache["hm"].name]


def test_scan_of_a_missing_folder_is_empty_and_of_a_file_is_an_error(tmp_path, capsys):
    assert scan_cache(tmp_path / "nowhere") == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        scan_cache(tmp_path / "file")
    code, out, err = cache_cmd(capsys, "list", "--cache-dir", str(tmp_path / "file"))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "not a folder" in err


def test_format_size():
    assert [format_size(n) for n in (0, 999, 1000, 1_234_567, 999_960, 3 * 10**12)] == [
        "0 B",
        "999 B",
        "1.0 kB",
        "1.2 MB",
        "1.0 MB",
        "3.0 TB",
    ]


def test_select_entries_checks_its_arguments(cache):
    entries = scan_cache(cache["dir"])
    with pytest.raises(ValueError, match="unknown cache kind"):
        select_entries(entries, kind="bm25s")
    with pytest.raises(ValueError, match=">= 0"):
        select_entries(entries, unused_days=-1)
    make_old(cache["hm"], 3)
    assert [e.kind for e in select_entries(entries, unused_days=2)] == []  # times as scanned, not re-read
    assert [e.kind for e in select_entries(scan_cache(cache["dir"]), unused_days=2)] == ["hm"]


# -- dir, info, list ---------------------------------------------------------------------------------------------


def test_dir_prints_the_folder_from_the_environment_or_the_option(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OSPO_GYM_CACHE", str(tmp_path / "from-env"))
    assert cache_cmd(capsys, "dir") == (0, f"{tmp_path / 'from-env'}\n", "")
    assert cache_cmd(capsys, "dir", "--cache-dir", str(tmp_path / "other")) == (0, f"{tmp_path / 'other'}\n", "")


def test_list_prints_one_line_per_entry(cache, capsys):
    make_old(cache["hm"], 400)
    code, out, err = cache_cmd(capsys, "list", "--cache-dir", str(cache["dir"]))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert len(lines) == 3
    for line, entry in zip(lines, scan_cache(cache["dir"]), strict=True):
        assert line.split()[0] == entry.kind and line.split()[4] == entry.name
        assert format_size(entry.size_bytes) in line
    day = datetime.fromtimestamp((cache["hm"] / "meta.json").stat().st_mtime).date().isoformat()
    assert day in lines[1] and day not in lines[0]
    assert "(4 docs)" in lines[2]
    code, out, _ = cache_cmd(capsys, "list", "--kind", "hm", "--cache-dir", str(cache["dir"]))
    assert out.splitlines() == [lines[1]]


def test_list_json(cache, capsys):
    code, out, _ = cache_cmd(capsys, "list", "--json", "--cache-dir", str(cache["dir"]))
    records = json.loads(out)
    assert [r["name"] for r in records] == [cache[k].name for k in ("esci", "hm", "bm25")]
    for record in records:
        folder = Path(record["path"])
        assert record["size_bytes"] == sum(len(b) for b in files_under(folder).values())
        assert record["last_used"] == (folder / "meta.json").stat().st_mtime
        assert datetime.fromisoformat(record["last_used_iso"]).timestamp() == pytest.approx(record["last_used"], abs=1)
    code, out, _ = cache_cmd(capsys, "list", "--json", "--kind", "bm25", "--cache-dir", str(cache["dir"]))
    (bm25,) = json.loads(out)
    assert bm25["kind"] == "bm25" and bm25["num_docs"] == 4 and bm25["settings"]["method"] == "lucene"
    assert cache_cmd(capsys, "list", "--json", "--kind", "incomplete", "--cache-dir", str(cache["dir"]))[1] == "[]\n"


def test_info_counts_and_sizes_per_kind(cache, capsys):
    (cache["dir"] / "unrelated.bin").write_bytes(b"0" * 5000)  # not counted
    code, out, _ = cache_cmd(capsys, "info", "--cache-dir", str(cache["dir"]))
    assert code == 0
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:]}
    sizes = {e.kind: e.size_bytes for e in scan_cache(cache["dir"])}
    for kind in ("esci", "hm", "bm25"):
        assert rows[kind] == ["1", *format_size(sizes[kind]).split()]
    assert rows["incomplete"] == ["0", "0", "B"]
    total = sum(sizes.values())
    assert rows["total"] == ["3", *format_size(total).split(), f"({total}", "bytes)"]


def test_info_and_list_of_a_missing_folder(tmp_path, capsys):
    code, out, _ = cache_cmd(capsys, "info", "--cache-dir", str(tmp_path / "none"))
    assert code == 0 and "does not exist yet" in out and out.splitlines()[-1].split()[:2] == ["total", "0"]
    assert cache_cmd(capsys, "list", "--cache-dir", str(tmp_path / "none")) == (0, "", "")
    assert not (tmp_path / "none").exists()


# -- last used ---------------------------------------------------------------------------------------------------


def test_a_successful_load_marks_the_entry_used_and_a_miss_does_not(tmp_path):
    key, entry = task_entry(tmp_path, "esci")
    make_old(entry, 100)
    miss = key[:32] + ("0" if key[32] != "0" else "1") * 32  # the same folder, another key: not a hit
    assert TaskCache(tmp_path, "esci").load(miss) is None
    assert days_unused(entry) > 99
    assert TaskCache(tmp_path, "esci").load(key) is not None
    assert days_unused(entry) < 0.01

    bm25 = bm25_entry(tmp_path)
    make_old(bm25, 100)
    bm25_key = json.loads((bm25 / "meta.json").read_text())["key"]
    with pytest.warns(UserWarning, match="rebuilding"):  # an entry that does not fit is not a use
        assert not BM25IndexCache(tmp_path).load_index(bm25_key, len(DOCS) + 1, None, None)
    assert days_unused(bm25) > 99
    assert [e.kind for e in select_entries(scan_cache(tmp_path), unused_days=30)] == ["bm25"]
    assert BM25Retriever(DOCS, index_cache=tmp_path).index_info["cached"]
    assert days_unused(bm25) < 0.01
    assert select_entries(scan_cache(tmp_path), unused_days=30) == []


def test_entries_load_when_last_used_can_not_be_recorded(cache, monkeypatch):
    def read_only(*args, **kwargs):
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setattr(os, "utime", read_only)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        arrays, meta = TaskCache(cache["dir"], "hm").load(cache["hm_key"])
        assert arrays["ids"].tolist() == list(range(20)) and meta["options"] == {"size": 20}
        assert BM25Retriever(DOCS, index_cache=cache["dir"]).index_info["cached"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="chmod does not stop root")
def test_a_read_only_cache_still_loads(cache):
    paths = [cache["dir"], *cache["dir"].rglob("*")]
    try:
        for path in paths:
            path.chmod(0o555 if path.is_dir() else 0o444)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert TaskCache(cache["dir"], "esci").load(cache["esci_key"]) is not None
            assert BM25Retriever(DOCS, index_cache=cache["dir"]).index_info["cached"]
    finally:
        for path in paths:
            path.chmod(0o755 if path.is_dir() else 0o644)


# -- remove and purge --------------------------------------------------------------------------------------------


def test_unused_days_removes_only_the_old_entries(cache, capsys):
    make_old(cache["esci"], 40)
    make_old(cache["bm25"], 29)
    size = scan_cache(cache["dir"])[0].size_bytes
    code, out, _ = cache_cmd(capsys, "remove", "--unused-days", "30", "--cache-dir", str(cache["dir"]))
    assert code == 0
    assert names(cache["dir"]) == {cache["hm"].name, cache["bm25"].name}
    assert out.splitlines() == [
        f"removed {cache['esci'].name} (esci, {format_size(size)})",
        f"freed {format_size(size)} ({size} bytes) in 1 entry from {cache['dir']}",
    ]
    code, out, _ = cache_cmd(capsys, "remove", "--unused-days", "30", "--cache-dir", str(cache["dir"]))
    assert (code, out) == (0, "nothing to remove\n")


def test_kind_narrows_what_is_removed(cache, capsys):
    make_old(cache["esci"], 40)
    make_old(cache["hm"], 40)
    code, out, _ = cache_cmd(capsys, "remove", "--kind", "hm", "--unused-days", "30", "--cache-dir", str(cache["dir"]))
    assert code == 0 and names(cache["dir"]) == {cache["esci"].name, cache["bm25"].name}
    code, out, _ = cache_cmd(capsys, "remove", "--kind", "bm25", "--cache-dir", str(cache["dir"]))
    assert code == 0 and names(cache["dir"]) == {cache["esci"].name}
    assert f"removed {cache['bm25'].name} (bm25," in out


@pytest.mark.parametrize("args", [["remove", "--all", "--dry-run"], ["purge", "--dry-run"]])
def test_dry_run_deletes_nothing(cache, capsys, args):
    before = files_under(cache["dir"])
    total = sum(len(b) for b in before.values())
    code, out, _ = cache_cmd(capsys, *args, "--cache-dir", str(cache["dir"]))
    assert code == 0 and files_under(cache["dir"]) == before
    assert sum(line.startswith("would remove ") for line in out.splitlines()) == 3
    assert f"would free {format_size(total)} ({total} bytes) in 3 entries" in out


def test_leftovers_of_an_interrupted_write_are_found_and_removed(cache, capsys):
    crash = (
        "import os, sys, numpy as np\n"
        "from ospo_gym.data.cache import TaskCache\n"
        "real_savez = np.savez\n"
        "def savez_then_die(*args, **kwargs):\n"
        "    real_savez(*args, **kwargs)\n"
        "    os._exit(3)\n"
        "np.savez = savez_then_die\n"
        "TaskCache(sys.argv[1], 'hm').save('ab' * 32, {'x': np.arange(5)}, {})\n"
    )
    result = subprocess.run([sys.executable, "-c", crash, str(cache["dir"])], capture_output=True, text=True)
    assert result.returncode == 3, result.stderr
    (leftover,) = [name for name in names(cache["dir"]) if name.startswith(".")]
    assert TaskCache(cache["dir"], "hm").load("ab" * 32) is None
    code, out, _ = cache_cmd(capsys, "list", "--kind", "incomplete", "--cache-dir", str(cache["dir"]))
    assert out.split()[0] == "incomplete" and out.split()[-1] == leftover
    code, out, _ = cache_cmd(capsys, "remove", "--kind", "incomplete", "--cache-dir", str(cache["dir"]))
    assert code == 0 and f"removed {leftover} (incomplete," in out
    assert names(cache["dir"]) == {cache[k].name for k in ("esci", "hm", "bm25")}


def test_purge_leaves_strays_and_never_follows_a_symlink_out(cache, tmp_path, capsys):
    folder = cache["dir"]
    outside = tmp_path / "outside"
    victim = outside / ("bm25-" + "1" * 32)  # looks like an entry, but is not in the cache folder
    victim.mkdir(parents=True)
    (victim / "meta.json").write_text("{}")
    (outside / "precious.txt").write_text("keep me")
    (folder / ("bm25-" + "2" * 32)).symlink_to(victim, target_is_directory=True)
    (folder / (".esci-" + "3" * 32 + "-x")).symlink_to(outside, target_is_directory=True)
    (cache["esci"] / "link").symlink_to(outside / "precious.txt")  # a symlink inside an entry
    strays = {"notes.txt", "esci-short", ".hidden", "hm-" + "0" * 32, ".bm25-notes", "ESCI-" + "a" * 32}
    for name in strays:
        if "." in name[1:] or name.startswith("hm-"):
            (folder / name).write_text("mine")
        else:
            (folder / name).mkdir()
            (folder / name / "meta.json").write_text("{}")
    code, out, err = cache_cmd(capsys, "purge", "--cache-dir", str(folder))
    assert code == 0 and out.count("removed ") == 3
    assert names(folder) == strays | {"bm25-" + "2" * 32, ".esci-" + "3" * 32 + "-x"}
    assert files_under(outside) == {"precious.txt": b"keep me", f"{victim.name}/meta.json": b"{}"}
    assert err.count("ospo-gym: warning: skipping") == 2 and "symlink" in err
    # remove_entries checks again: an entry named after the symlink, or found elsewhere, is refused.
    fake = [
        CacheEntry(folder / ("bm25-" + "2" * 32), "bm25", 1, 0.0),
        CacheEntry(victim, "bm25", 1, 0.0),
        CacheEntry(folder / "esci-short", "esci", 1, 0.0),
        CacheEntry(folder / ".hidden", "incomplete", 1, 0.0),
    ]
    removed, failed = remove_entries(fake, folder)
    assert removed == [] and len(failed) == 4
    assert names(folder) == strays | {"bm25-" + "2" * 32, ".esci-" + "3" * 32 + "-x"}
    assert files_under(outside) == {"precious.txt": b"keep me", f"{victim.name}/meta.json": b"{}"}


def test_an_interrupted_removal_never_leaves_an_entry_that_looks_valid(cache, capsys, monkeypatch):
    def half_delete(path, *args, **kwargs):
        (Path(path) / "arrays.npz").unlink()
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(shutil, "rmtree", half_delete)
    code, out, err = cache_cmd(capsys, "remove", "--kind", "esci", "--cache-dir", str(cache["dir"]))
    assert code == 1 and "could not remove" in err and "Input/output error" in err
    assert not cache["esci"].exists()
    assert TaskCache(cache["dir"], "esci").load(cache["esci_key"]) is None
    (left,) = [e for e in scan_cache(cache["dir"]) if e.kind == "incomplete"]
    assert left.name.startswith(f".{cache['esci'].name}-")
    monkeypatch.undo()
    code, out, err = cache_cmd(capsys, "remove", "--kind", "incomplete", "--cache-dir", str(cache["dir"]))
    assert code == 0 and err == ""
    assert names(cache["dir"]) == {cache["hm"].name, cache["bm25"].name}


def test_after_remove_the_next_load_rebuilds(cache, capsys):
    assert cache_cmd(capsys, "purge", "--cache-dir", str(cache["dir"]))[0] == 0
    assert names(cache["dir"]) == set()
    assert TaskCache(cache["dir"], "esci").load(cache["esci_key"]) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a plain miss: no "unreadable entry" warning
        rebuilt = BM25Retriever(DOCS, index_cache=cache["dir"])
    assert not rebuilt.index_info["cached"] and names(cache["dir"]) == {cache["bm25"].name}
    assert BM25Retriever(DOCS, index_cache=cache["dir"]).index_info["cached"]


def test_removing_from_a_missing_folder_is_nothing_to_remove(tmp_path, capsys):
    assert cache_cmd(capsys, "purge", "--cache-dir", str(tmp_path / "none")) == (0, "nothing to remove\n", "")
    assert not (tmp_path / "none").exists()


# -- errors ------------------------------------------------------------------------------------------------------


def test_remove_without_a_selector_refuses_in_one_line(cache):
    before = files_under(cache["dir"])
    result = subprocess.run(
        [sys.executable, "-m", "ospo_gym.cli", "cache", "remove", "--dry-run", "--cache-dir", str(cache["dir"])],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "--kind" in result.stderr and "--unused-days" in result.stderr and "--all" in result.stderr
    assert files_under(cache["dir"]) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["list", "--kind", "bm25s"], "unknown kind 'bm25s'"),
        (["remove", "--kind", "dense"], "unknown kind 'dense'"),
        (["remove", "--unused-days", "-3"], ">= 0"),
        (["remove", "--unused-days", "nan"], ">= 0"),
        (["remove", "--unused-days", "soon"], ">= 0"),
        ([], "required"),
    ],
)
def test_bad_input_exits_2_with_one_line(cache, capsys, args, message):
    before = files_under(cache["dir"])
    code, out, err = cache_cmd(capsys, *args, *(["--cache-dir", str(cache["dir"])] if args else []))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err
    assert files_under(cache["dir"]) == before


def test_the_cache_command_stays_light(tmp_path):
    code = (
        "import sys\n"
        "from ospo_gym.cli import main\n"
        f"assert main(['cache', 'info', '--cache-dir', {str(tmp_path)!r}]) == 0\n"
        "heavy = {'torch', 'pandas', 'pyarrow', 'bm25s', 'transformers'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
