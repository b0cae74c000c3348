"""Where data is looked for, and the processed-task cache (fingerprints, atomic entries, no pickle)."""

from __future__ import annotations

import json
import os
import shutil
import warnings

import numpy as np
import pytest
from fixtures_real import esci_dir, hm_dir

from ospo_gym.data import DataError
from ospo_gym.data import cache as task_cache
from ospo_gym.data.cache import TaskCache, cache_key, fingerprint, pack_strings, unpack_strings
from ospo_gym.data.esci import load_esci
from ospo_gym.data.hm import load_hm
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
    with pytest.warns(UserWarning, match="unreadable processed-data cache entry"):
        assert cache.load("k" * 64) is None
    cache.save("k" * 64, arrays, {"counts": {"n": 2}})
    raw = (folder / "arrays.npz").read_bytes()
    (folder / "arrays.npz").write_bytes(raw[: len(raw) // 2])  # truncated: a zip without its directory
    with pytest.warns(UserWarning, match="unreadable processed-data cache entry"):
        assert cache.load("k" * 64) is None
    cache.save("k" * 64, arrays, {"counts": {"n": 2}})  # overwrites the corrupt entry
    assert cache.load("k" * 64) is not None
    meta_path = folder / "meta.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "format": -1}))
    with pytest.warns(UserWarning, match="format -1"):
        assert cache.load("k" * 64) is None


def test_an_unwritable_cache_warns_and_goes_on(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="could not write"):
        assert TaskCache(blocker / "cache", "demo").save("k" * 64, {"x": np.zeros(1)}, {}) is None


# --- a processed-data entry is verified, never trusted (issue 13, item 7) ---------------------------------------

LOADERS = {
    "esci": lambda cache: load_esci(esci_dir(), cache_dir=cache, min_exact=None, max_exact=None),
    "hm": lambda cache: load_hm(hm_dir(), cache_dir=cache),
}


def task_state(data) -> dict:
    """Every field of a loaded task but ``info``; arrays as (dtype, bytes), so a changed dtype shows."""
    return {
        name: (value.dtype.str, value.tobytes()) if isinstance(value, np.ndarray) else value
        for name, value in vars(data).items()
        if name != "info"
    }


def _edit_meta(change):
    def damage(folder):
        path = folder / "meta.json"
        path.write_text(json.dumps(change(json.loads(path.read_text()))))

    return damage


def _bump_count(index):
    """The one-number edit: count ``index`` (in name order) of meta.json's counts plus one."""

    def change(meta):
        name = sorted(meta["counts"])[index]
        return {**meta, "counts": {**meta["counts"], name: meta["counts"][name] + 1}}

    return _edit_meta(change)


def _edit_arrays(change):
    def damage(folder):
        with np.load(folder / "arrays.npz", allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        np.savez(folder / "arrays.npz", **change(arrays))

    return damage


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGES = {
    "one-number edit of count 0": _bump_count(0),
    "one-number edit of count 1": _bump_count(1),
    "one-number edit of count 2": _bump_count(2),
    "meta.json is []": lambda folder: (folder / "meta.json").write_text("[]"),
    "meta.json deeply nested": lambda folder: (folder / "meta.json").write_text("[" * 100_000),
    "meta.json truncated": lambda folder: _truncate(folder / "meta.json"),
    "meta.json missing": lambda folder: (folder / "meta.json").unlink(),
    "options edited": _edit_meta(lambda meta: {**meta, "options": {**meta["options"], "fields": ["x"]}}),
    "arrays.npz truncated": lambda folder: _truncate(folder / "arrays.npz"),
    "a pool row out of range": _edit_arrays(lambda a: {**a, "pool_docs": a["pool_docs"] + 10**6}),
    "offsets of another dtype": _edit_arrays(lambda a: {**a, "pool_offsets": a["pool_offsets"].astype(np.float64)}),
    "an array missing": _edit_arrays(lambda a: {k: v for k, v in a.items() if k != "pool_docs"}),
}


@pytest.mark.parametrize("dataset", sorted(LOADERS))
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_processed_entry_warns_and_is_rebuilt(dataset, damage, tmp_path):
    load = LOADERS[dataset]
    fresh = load(tmp_path)
    (folder,) = tmp_path.glob(f"{dataset}-*")
    DAMAGES[damage](folder)
    with pytest.warns(UserWarning, match="unreadable processed-data cache entry .*; rebuilding it"):
        rebuilt = load(tmp_path)
    assert not rebuilt.info["cached"] and task_state(rebuilt) == task_state(fresh)
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # replaced in place, nothing left aside
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuild rewrote the entry: a clean hit now
        again = load(tmp_path)
    assert again.info["cached"] and task_state(again) == task_state(fresh)
    assert {k: v for k, v in again.info.items() if k != "seconds" and k != "cached"} == {
        k: v for k, v in fresh.info.items() if k != "seconds" and k != "cached"
    }


def test_an_entry_that_is_a_symlink_is_replaced_never_followed(tmp_path):
    cache = tmp_path / "cache"
    fresh = LOADERS["esci"](cache)
    (folder,) = cache.glob("esci-*")
    outside = tmp_path / "outside"
    shutil.move(folder, outside)  # a valid entry, but outside the cache folder
    folder.symlink_to(outside, target_is_directory=True)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in outside.iterdir()}
    with pytest.warns(UserWarning, match=r"\(it is not a folder\); rebuilding it"):
        rebuilt = LOADERS["esci"](cache)
    assert not rebuilt.info["cached"] and task_state(rebuilt) == task_state(fresh)
    assert folder.is_dir() and not folder.is_symlink()
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in outside.iterdir()} == before
    assert LOADERS["esci"](cache).info["cached"]


def test_read_entry_refuses_what_save_never_writes(tmp_path):
    read_entry = task_cache.read_entry
    cache = TaskCache(tmp_path, "demo")
    key = "ab" * 32
    folder = cache.save(key, {"x": np.arange(3)}, {"counts": {"n": 3}})
    assert read_entry(folder, key, "demo")[1]["counts"] == {"n": 3}
    meta = folder / "meta.json"
    good = meta.read_bytes()
    meta.write_bytes(good[:-1] + b" " * task_cache.MAX_META_BYTES + b"}")  # valid JSON, but past the size bound
    with pytest.raises(ValueError, match="larger than"):
        read_entry(folder, key, "demo")
    meta.unlink()
    (tmp_path / "elsewhere.json").write_bytes(good)
    meta.symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(ValueError, match="meta.json is not a regular file"):
        read_entry(folder, key, "demo")
    meta.unlink()
    meta.write_bytes(good)
    np.savez_compressed(folder / "arrays.npz", x=np.arange(3))
    with pytest.raises(ValueError, match="compressed"):
        read_entry(folder, key, "demo")
    with pytest.raises(ValueError, match="kind 'demo', not 'other'"):
        read_entry(folder, key, "other")
    with pytest.raises(ValueError, match="letters, digits"):
        cache.entry("../" + key)
