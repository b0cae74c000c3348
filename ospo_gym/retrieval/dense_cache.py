"""The dense retriever's on-disk cache: document embeddings (``.npy``) and HNSW indexes (``.faiss``).

A file's name hashes everything that decides its content (:func:`cache_key`: the model's module stack,
settings, tokenizer and every weight; the documents; ``normalize``). A file that can not be read or does not
match is reported with a warning and rebuilt by the caller; files are written through a temporary file and
renamed, and a folder that can not be written only warns.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ospo_gym.output_files import OutputPathError, write_atomic

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["cache_key", "embedding_dim", "load_embeddings", "load_hnsw", "save_atomic", "slug"]

# Bumped when the cache layout or the meaning of a cached file changes.
_CACHE_FORMAT = 1


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_.")[-60:] or "model"


def embedding_dim(model: SentenceTransformer) -> int | None:
    for name in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
        method = getattr(model, name, None)
        if callable(method):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                return method()
    return None


def _model_fingerprint(model: SentenceTransformer) -> str:
    """sha256 of everything that decides a model's embeddings: module stack, settings, tokenizer, weights.

    Hashing the weights costs about a second per GB; it makes the key right for a model passed as an object
    or re-saved at the same path.
    """
    st = importlib.import_module("sentence_transformers")
    h = hashlib.sha256()
    settings = {
        "modules": repr(model),
        "sentence_transformers": st.__version__.split(".")[0],
        "max_seq_length": getattr(model, "max_seq_length", None),
        "prompts": getattr(model, "prompts", None),
        "default_prompt_name": getattr(model, "default_prompt_name", None),
        "truncate_dim": getattr(model, "truncate_dim", None),
    }
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    tokenizer = getattr(model, "tokenizer", None)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    elif callable(getattr(tokenizer, "get_vocab", None)):
        h.update(json.dumps(sorted(tokenizer.get_vocab().items()), default=str).encode())
    import torch

    for name, tensor in model.state_dict().items():
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        h.update(tensor.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_key(model: SentenceTransformer, docs: list[str], normalize: bool) -> str:
    docs_hash = hashlib.sha256()
    for doc in docs:
        raw = doc.encode("utf-8", "surrogatepass")
        docs_hash.update(len(raw).to_bytes(8, "little"))
        docs_hash.update(raw)
    key = {
        "format": _CACHE_FORMAT,
        "model": _model_fingerprint(model),
        "docs": docs_hash.hexdigest(),
        "normalize": normalize,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def load_embeddings(path: Path, num_docs: int, dim: int | None) -> np.ndarray | None:
    """The cached embeddings, or None (with a warning unless the file is simply absent) if unusable."""
    if not path.exists():
        return None
    try:
        emb = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        reason = f"unreadable ({type(err).__name__}: {err})"
    else:
        if not isinstance(emb, np.ndarray):
            reason = "not a .npy array"
        elif emb.dtype != np.float32 or emb.ndim != 2 or emb.shape[0] != num_docs or emb.shape[1] < 1:
            reason = (
                f"a {emb.dtype} array of shape {emb.shape}, expected float32 ({num_docs}, {dim or 'dim'})"
            )
        elif dim is not None and emb.shape[1] != dim:
            reason = f"of dimension {emb.shape[1]}, the model gives {dim}"
        elif not np.isfinite(emb).all():
            reason = "holding non-finite values"
        else:
            return emb
    warnings.warn(
        f"embedding cache {path} is {reason}; re-encoding the documents", RuntimeWarning, stacklevel=3
    )
    return None


def load_hnsw(faiss: Any, path: Path, num_docs: int, dim: int) -> Any | None:
    if not path.exists():
        return None
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as err:
        reason = f"unreadable ({str(err).splitlines()[0][:200]})"
    else:
        if (
            isinstance(index, faiss.IndexHNSWFlat)
            and index.ntotal == num_docs
            and index.d == dim
            and index.metric_type == faiss.METRIC_INNER_PRODUCT
        ):
            return index
        reason = f"a different index ({type(index).__name__}, {index.ntotal} x {index.d})"
    warnings.warn(f"HNSW cache {path} is {reason}; rebuilding the index", RuntimeWarning, stacklevel=3)
    return None


def save_atomic(path: Path, write: Any) -> None:
    """Write a cache file with :func:`ospo_gym.output_files.write_atomic` (temporary file + rename: a reader
    never sees half a file; a link or special file at ``path`` is not written through); ``write(handle)`` gets
    the open binary file. A cache that cannot be written only warns: loading still works without it."""

    def fill(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            write(handle)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, fill, what="cache file")
    except (OSError, OutputPathError) as err:
        warnings.warn(f"could not write cache file {path}: {err}", RuntimeWarning, stacklevel=3)
