"""Where data is looked for, and the processed-task cache (fingerprints, atomic entries, no pickle)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from ospo_gym.data import DataError
from ospo_gym.data.cache import TaskCache, cache_key, fingerprint, pack_strings, unpack_strings
from ospo_gym.data.paths import data_root, find_dataset_dir, processed_cache_dir, user_cache_dir


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("OSPO_GYM_DATA", raising=False)
    monkeypatch.delenv("OSPO_GYM_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return monkeypatch


def test_root_is_data_dir_then_env_var_then_user_cache(clean_env, tmp_path):
    assert data_root(None) == (user_cache_dir(), "the user cache dir")
    assert user_cache_dir() == tmp_path / "xdg" / "ospo-gym"
    clean_env.setenv("OSPO_GYM_DATA", str(tmp_path / "env"))
    assert data_root(None) == (tmp_path / "env", "$OSPO_GYM_DATA")
    assert data_root(tmp_path / "given") == (tmp_path / "given", "data_dir=")


def test_processed_cache_dir_order(clean_env, tmp_path):
    assert processed_cache_dir() == tmp_path / "xdg" / "ospo-gym" / "processed"
    clean_env.setenv("OSPO_GYM_CACHE", str(tmp_path / "c"))
    assert processed_cache_dir() == tmp_path / "c"
    assert processed_cache_dir(tmp_path / "d") == tmp_path / "d"


def test_files_are_found_at_the_root_or_a_known_subfolder(clean_env, tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp_path / "sub" / name).write_text("x")
    assert find_dataset_dir("X", ["a.txt", "b.txt"], ["other", "sub"], tmp_path, "get it") == tmp_path / "sub"


def test_a_given_data_dir_never_falls_back_to_the_env_var(clean_env, tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    (good / "a.txt").write_text("x")
    clean_env.setenv("OSPO_GYM_DATA", str(good))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt.part").write_text("x")
    with pytest.raises(DataError) as err:
        find_dataset_dir("X", ["a.txt"], ["sub"], tmp_path / "empty", "run the downloader")
    message = str(err.value)
    assert "a.txt" in message and str(tmp_path / "empty") in message and "data_dir=" in message
    assert "(lacks a.txt)" in message and "no such folder" in message and "run the downloader" in message
    assert str(good) not in message


def test_fingerprint_sees_edits_of_the_same_size(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 3_000_000)
    before = fingerprint(path)
    stat = path.stat()
    path.write_bytes(b"a" * 2_999_999 + b"b")  # same size, last byte differs
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime too
    after = fingerprint(path)
    assert before["size"] == after["size"] and before["mtime_ns"] == after["mtime_ns"]
    assert before["head_tail_sha256"] != after["head_tail_sha256"]
    assert cache_key("k", [path], {"a": 1}) != cache_key("k", [path], {"a": 2})


@pytest.mark.parametrize("strings", [[], [""], ["", ""], ["a", "ñandú", "ワイヤレス 🎧", ""]])
def test_strings_round_trip(strings):
    packed = pack_strings(strings)
    assert packed.dtype == np.uint8
    assert unpack_strings(packed, len(strings)) == strings


def test_packing_rejects_nul():
    with pytest.raises(ValueError, match="NUL"):
        pack_strings(["a\x00b"])


def test_cache_entries_are_atomic_plain_arrays_and_rebuilt_when_corrupt(tmp_path):
    cache = TaskCache(tmp_path / "cache", "demo")
    assert cache.load("k" * 64) is None
    arrays = {"x": np.arange(5), "s": pack_strings(["a", "b"])}
    folder = cache.save("k" * 64, arrays, {"counts": {"n": 2}})
    assert folder is not None and sorted(p.name for p in folder.iterdir()) == ["arrays.npz", "meta.json"]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [folder.name]  # no temp folder left behind
    with np.load(folder / "arrays.npz", allow_pickle=False) as archive:  # loads without pickle
        assert all(archive[name].dtype != object for name in archive.files)
    loaded, meta = cache.load("k" * 64)
    np.testing.assert_array_equal(loaded["x"], arrays["x"])
    assert meta["counts"] == {"n": 2} and meta["key"] == "k" * 64
    assert cache.load("j" * 64) is None  # another key
    (folder / "arrays.npz").write_bytes(b"garbage")
    assert cache.load("k" * 64) is None
    cache.save("k" * 64, arrays, {"counts": {"n": 2}})
    raw = (folder / "arrays.npz").read_bytes()
    (folder / "arrays.npz").write_bytes(raw[: len(raw) // 2])  # truncated: a zip without its directory
    assert cache.load("k" * 64) is None
    cache.save("k" * 64, arrays, {"counts": {"n": 2}})  # overwrites the corrupt entry
    assert cache.load("k" * 64) is not None
    meta_path = folder / "meta.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "format": -1}))
    assert cache.load("k" * 64) is None


def test_an_unwritable_cache_warns_and_goes_on(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="could not write"):
        assert TaskCache(blocker / "cache", "demo").save("k" * 64, {"x": np.zeros(1)}, {}) is None
