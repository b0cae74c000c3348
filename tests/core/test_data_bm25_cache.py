"""The on-disk BM25 index cache (ospo_gym.retrieval.index_cache) and the real-data envs' index_cache= switch."""

from __future__ import annotations

import json
import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from fixtures_real import esci_dir, hm_dir

import ospo_gym  # noqa: F401
from ospo_gym.credit import sample_coalitions
from ospo_gym.retrieval import BM25Retriever, TopListBM25Retriever
from ospo_gym.retrieval.index_cache import BM25IndexCache, index_key

DOCS = [
    "Red running shoes for men, lightweight",
    "Blue denim jacket with pockets",
    "Running socks (3 pairs), red and blue",
    "",
    "Ｗｉｒｅｌｅｓｓ earbuds 🎧 with charging case",
    "ワイヤレス イヤホン 赤",
    "The the THE",  # only stopwords
    "Jackets and coats: winter collection",
]
QUERIES = ["red shoes", "running", "jackets coat", "", "zzz", "earbuds 🎧", "赤", "the running the running"]


def esci(cache_dir, **kwargs):
    return gym.make("ospo/ESCI-v0", data_dir=str(esci_dir()), cache_dir=str(cache_dir), **kwargs).unwrapped


def hm(cache_dir, **kwargs):
    return gym.make("ospo/HM-v0", data_dir=str(hm_dir()), cache_dir=str(cache_dir), **kwargs).unwrapped


def entries(cache_dir):
    return sorted(p.name for p in cache_dir.glob("bm25-*"))


def index_state(retriever) -> bytes:
    """Everything the retriever holds except how its index was obtained, as pickle bytes."""
    state = retriever.__getstate__()
    state.pop("index_info")
    return pickle.dumps(state)


def probe(env):
    """Rewards of the queries and rewrites, and the oracle's coalition values of a few completions."""
    ids = list(env.prompt_ids)[:12]
    texts = [env.judged.queries[p] for p in ids]
    longer = [f"{t} {env.data.texts[int(env.judged.pools[p][0])][:60]}" for p, t in zip(ids, texts, strict=True)]
    rewards = env.rewards(ids + ids + ids[:2], texts + longer + ["", "zzz unknown"])
    spans = [env.oracle.segment(t) for t in longer[:4]]
    coalitions = [sample_coalitions(len(s), 4, 24, rng=i) for i, s in enumerate(spans)]
    values = env.oracle.values_batch(ids[:4], longer[:4], spans, coalitions)
    return rewards, values


@pytest.mark.parametrize("retriever", ["bm25", "bm25-exhaustive"])
def test_a_cached_esci_index_gives_bit_identical_rewards_and_values(tmp_path, retriever):
    kwargs = {"retriever": retriever, "retriever_kwargs": {"full_scoring_below": 0} if retriever == "bm25" else None}
    fresh = esci(tmp_path, index_cache=False, **kwargs)
    first = esci(tmp_path, **kwargs)  # builds and writes the entry
    cached = esci(tmp_path, **kwargs)
    assert not fresh.retriever.index_info["cached"] and not first.retriever.index_info["cached"]
    assert cached.retriever.index_info["cached"] and len(entries(tmp_path)) == 1
    expected_rewards, expected_values = probe(fresh)
    rewards, values = probe(cached)
    assert expected_rewards.tobytes() == rewards.tobytes() and 0 < rewards.max() <= 1
    assert all(a.tobytes() == b.tobytes() for a, b in zip(expected_values, values, strict=True))
    # The whole index — score matrix, tokenizer vocabulary, derived scoring arrays — pickles to the same bytes.
    assert index_state(cached.retriever) == index_state(fresh.retriever)


def test_one_entry_serves_both_bm25_retrievers_and_the_hm_env(tmp_path):
    assert not esci(tmp_path, retriever="bm25").retriever.index_info["cached"]
    full = esci(tmp_path, retriever="bm25-exhaustive").retriever
    assert full.index_info["cached"] and type(full) is BM25Retriever
    fresh, cached = hm(tmp_path), hm(tmp_path)
    assert cached.retriever.index_info["cached"] and isinstance(cached.retriever, TopListBM25Retriever)
    assert len(entries(tmp_path)) == 2  # one ESCI catalog, one H&M catalog
    ids = list(fresh.prompt_ids)[:10]
    texts = [fresh.data.texts[int(fresh.judged.pools[p][0])] for p in ids]
    assert fresh.rewards(ids, texts).tobytes() == cached.rewards(ids, texts).tobytes()


def test_k1_b_method_and_the_catalog_invalidate_the_entry(tmp_path):
    esci(tmp_path)
    for changed in ({"k1": 1.2}, {"b": 0.5}, {"method": "robertson"}, {"stopwords": None}):
        env = esci(tmp_path, retriever_kwargs=changed)
        assert not env.retriever.index_info["cached"], changed
        assert esci(tmp_path, retriever_kwargs=changed).retriever.index_info["cached"]
    assert not esci(tmp_path, fields=("title",)).retriever.index_info["cached"]  # other catalog texts
    assert len(entries(tmp_path)) == 6
    # Settings that do not change the index (scoring threads, dense postings) reuse the entry.
    reuse = esci(tmp_path, retriever_kwargs={"n_threads": 1, "dense_postings_mb": 0, "full_scoring_below": 0})
    assert reuse.retriever.index_info["cached"]


def test_the_key_covers_texts_settings_and_versions(monkeypatch):
    import bm25s

    base = {"k1": 1.5, "b": 0.75, "method": "lucene", "stopwords": "en", "stemmer_language": None, "token_pattern": r"\w+"}
    key = index_key(DOCS, base)
    assert index_key(list(DOCS), dict(base)) == key
    changed = [
        {**base, "k1": 1.2}, {**base, "b": 0.3}, {**base, "method": "bm25l"}, {**base, "stopwords": ["a"]},
        {**base, "stemmer_language": "english"}, {**base, "token_pattern": r"\w\w+"},
    ]  # fmt: skip
    assert len({index_key(DOCS, s) for s in changed} | {key}) == len(changed) + 1
    assert index_key(DOCS[:-1], base) != key and index_key(DOCS[::-1], base) != key
    assert index_key(["ab", "c"], base) != index_key(["a", "bc"], base)  # text boundaries count
    monkeypatch.setattr(bm25s, "__version__", "0.0.0")
    assert index_key(DOCS, base) != key


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"stemmer": True}, {"method": "bm25l", "stopwords": None}, {"stopwords": ["running", "with"], "k1": 0.9}],
    ids=["default", "stemmer", "bm25l", "word-list"],
)
def test_retriever_round_trip_scores_and_tokenizes_the_same(tmp_path, kwargs):
    if kwargs.get("stemmer"):
        pytest.importorskip("Stemmer")
    fresh = BM25Retriever(DOCS, **kwargs)
    BM25Retriever(DOCS, index_cache=tmp_path, **kwargs)
    cached = BM25Retriever(DOCS, index_cache=tmp_path, **kwargs)
    assert cached.index_info["cached"]
    assert cached.tokenize(QUERIES) == fresh.tokenize(QUERIES)
    assert cached.scores(QUERIES).tobytes() == fresh.scores(QUERIES).tobytes()
    assert cached.bm25.get_scores(["red"]).tobytes() == fresh.bm25.get_scores(["red"]).tobytes()
    restored = pickle.loads(pickle.dumps(cached))
    assert restored.scores(QUERIES).tobytes() == fresh.scores(QUERIES).tobytes()


def test_entries_are_plain_arrays_and_json(tmp_path):
    BM25Retriever(DOCS, index_cache=tmp_path)
    (folder,) = tmp_path.glob("bm25-*")
    assert sorted(p.name for p in folder.iterdir()) == ["arrays.npz", "meta.json"]
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temp folder left behind
    with np.load(folder / "arrays.npz", allow_pickle=False) as archive:
        assert all(archive[name].dtype != object for name in archive.files)
        assert archive["data"].dtype == np.float32
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["kind"] == "bm25" and meta["num_docs"] == len(DOCS) and meta["settings"]["k1"] == 1.5


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0x10
    path.write_bytes(bytes(raw))


def _out_of_range_ids(path):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["indices"] = arrays["indices"] + 1000  # a valid zip with an invalid index
    np.savez(path, **arrays)


def _wrong_vocabulary(path):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["vocab_values"] = arrays["vocab_values"][::-1].copy() * 0
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    ("file", "damage"),
    [
        ("arrays.npz", _truncate),
        ("arrays.npz", _flip_a_byte),
        ("arrays.npz", _out_of_range_ids),
        ("arrays.npz", _wrong_vocabulary),
        ("arrays.npz", lambda p: p.unlink()),
        ("meta.json", _truncate),
        ("meta.json", lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "num_docs": 3}))),
    ],
    ids=["truncated", "flipped-byte", "bad-ids", "bad-vocab", "missing", "truncated-meta", "wrong-meta"],
)
def test_a_damaged_entry_warns_and_is_rebuilt(tmp_path, file, damage):
    docs = DOCS * 40  # big enough that the arrays span many bytes
    fresh = BM25Retriever(docs, index_cache=tmp_path)
    (folder,) = tmp_path.glob("bm25-*")
    damage(folder / file)
    with pytest.warns(UserWarning, match="unreadable BM25 index cache entry"):
        rebuilt = BM25Retriever(docs, index_cache=tmp_path)
    assert not rebuilt.index_info["cached"]
    assert rebuilt.scores(QUERIES).tobytes() == fresh.scores(QUERIES).tobytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuild rewrote the entry: no warning now
        again = BM25Retriever(docs, index_cache=tmp_path)
    assert again.index_info["cached"] and index_state(again) == index_state(fresh)


def test_a_damaged_entry_in_the_env_is_rebuilt_with_the_same_rewards(tmp_path):
    fresh = esci(tmp_path)
    (folder,) = tmp_path.glob("bm25-*")
    _truncate(folder / "arrays.npz")
    with pytest.warns(UserWarning, match="rebuilding it"):
        rebuilt = esci(tmp_path)
    assert probe(rebuilt)[0].tobytes() == probe(fresh)[0].tobytes()


def test_the_off_switches(tmp_path):
    env = esci(tmp_path, index_cache=False)
    assert not env.retriever.index_info["cached"] and entries(tmp_path) == []
    assert any(tmp_path.glob("esci-*"))  # the processed-data cache is still on
    hm(tmp_path / "hm", use_cache=False)  # use_cache=False: neither cache
    assert not (tmp_path / "hm").exists()
    assert entries(tmp_path) == [] and not esci(tmp_path, index_cache=False).retriever.index_info["cached"]


def test_an_unwritable_cache_warns_and_goes_on(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="could not write the BM25 index cache"):
        retriever = BM25Retriever(DOCS, index_cache=blocker / "cache")
    assert not retriever.index_info["cached"]
    assert retriever.scores(QUERIES).tobytes() == BM25Retriever(DOCS).scores(QUERIES).tobytes()


def test_a_vocabulary_that_can_not_be_packed_is_not_cached(tmp_path):
    with pytest.warns(UserWarning, match="not caching the BM25 index"):
        BM25Retriever(["a\x00b c"], token_pattern=r"[^ ]+", stopwords=None, index_cache=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cache_object_reports_no_entry_without_warning(tmp_path):
    import bm25s
    from bm25s.tokenization import Tokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not BM25IndexCache(tmp_path).load_index("0" * 64, 3, bm25s.BM25(), Tokenizer())
