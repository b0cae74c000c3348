"""Download the published ESCI files: resumable (HTTP ``Range``), checksum-verified, with a progress bar.

The two parquet files are stored with Git LFS in https://github.com/amazon-science/esci-data; GitHub's
``/raw/`` URL redirects to the LFS object. Their SHA-256 and sizes are those of the LFS pointers
(``shopping_queries_dataset/*.parquet`` at commit 7e0e307), and are checked when downloading from the default
URL base. From another base (a mirror), the SHA-256 of the first complete download is recorded in
``<dest>/ospo_gym_checksums.json`` and checked on every later run.

A download goes to ``<file>.part`` and is renamed into place only after the check passes; an interrupted
download resumes from the partial file when the server honours ``Range`` (else it restarts).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ospo_gym.data import DataError
from ospo_gym.data.esci_schema import EXAMPLES_FILE, PRODUCTS_FILE
from ospo_gym.output_files import check_output_file, check_output_folder, write_atomic

__all__ = ["ESCI_FILES", "ESCI_URL_BASE", "KnownFile", "download_esci", "download_file", "sha256_of"]

ESCI_URL_BASE = "https://github.com/amazon-science/esci-data/raw/main/shopping_queries_dataset"
CHECKSUMS_FILE = "ospo_gym_checksums.json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class KnownFile:
    """A published file's size in bytes and SHA-256."""

    size: int
    sha256: str


ESCI_FILES: dict[str, KnownFile] = {
    EXAMPLES_FILE: KnownFile(51_286_808, "4a735b693b4a424a6fc67f5be6e4c811495c488bbf66d02a602d308b2744263a"),
    PRODUCTS_FILE: KnownFile(1_108_857_465, "25124442d064d64b26f74082d6fa09438d679efc0c183cf28d19064a2b65a265"),
}


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    expected: KnownFile | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> str:
    """Download ``url`` to ``dest`` (resuming ``dest.part``) and return the file's SHA-256.

    Raises:
        DataError: the server or network failed (the partial file is kept, so a rerun resumes), or the
            result does not match ``expected`` (the partial file is deleted).
        OutputPathError: ``dest`` or ``dest.part`` exists and is not a regular file (a link, a pipe, ...).
    """
    from tqdm import tqdm

    dest = check_output_file(dest, what="download target")
    part = check_output_file(dest.with_name(dest.name + ".part"), what="partial download")  # opened to append
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    if expected is not None and offset > expected.size:
        part.unlink()
        offset = 0
    if expected is None or offset < expected.size:
        request = urllib.request.Request(url, headers={"User-Agent": "ospo-gym", **({"Range": f"bytes={offset}-"} if offset else {})})
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as err:
            if err.code == 416 and offset:  # nothing after `offset`: the partial file is complete
                response = None
            else:
                raise DataError(f"downloading {url} failed: HTTP {err.code} {err.reason}. Check --url-base.") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            reason = getattr(err, "reason", err)
            raise DataError(f"downloading {url} failed: {reason}. Rerun to resume.") from None
        if response is not None:
            with response:
                if offset and response.status != 206:  # the server ignored Range: start over
                    offset = 0
                length = response.headers.get("Content-Length")
                total = offset + int(length) if length is not None else (expected.size if expected else None)
                mode = "ab" if offset else "wb"
                try:
                    with part.open(mode) as handle, tqdm(
                        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                        desc=dest.name, disable=not progress, leave=True,
                    ) as bar:  # fmt: skip
                        for block in iter(lambda: response.read(_CHUNK), b""):
                            handle.write(block)
                            bar.update(len(block))
                except (OSError, http.client.HTTPException, ValueError) as err:
                    raise DataError(
                        f"downloading {url} was interrupted ({type(err).__name__}: {err}); "
                        f"{part.stat().st_size if part.exists() else 0} bytes are kept in {part}: rerun to resume."
                    ) from None
                if total is not None and part.stat().st_size < total:
                    raise DataError(
                        f"downloading {url} stopped at {part.stat().st_size} of {total} bytes; "
                        f"the partial file {part} is kept: rerun to resume."
                    )
    digest = sha256_of(part)
    if expected is not None and (digest != expected.sha256 or part.stat().st_size != expected.size):
        size = part.stat().st_size
        part.unlink()
        raise DataError(
            f"{url} does not match the published file: got {size} bytes with SHA-256 {digest}, expected "
            f"{expected.size} bytes with SHA-256 {expected.sha256}. The partial download was deleted; rerun, "
            "or check the URL base."
        )
    check_output_file(dest, what="download target")  # a link or a device that appeared meanwhile is not replaced
    os.replace(part, dest)
    return digest


def download_esci(
    dest: str | os.PathLike,
    *,
    url_base: str = ESCI_URL_BASE,
    checksums: Mapping[str, KnownFile] | None = None,
    force: bool = False,
    progress: bool = True,
    timeout: float = 60.0,
) -> list[Path]:
    """Download ESCI's two parquet files into ``dest`` (skipping files already there and verified).

    Args:
        dest: target folder (created).
        url_base: URL of the folder holding the files; the files are ``<url_base>/<name>``.
        checksums: expected size and SHA-256 per file name; None: :data:`ESCI_FILES` for the default URL base,
            else the checksums recorded by an earlier run (or none, and this run records them).
        force: download again even when a verified file is there.
        progress: show a tqdm progress bar per file.

    Returns:
        The paths of the two files.

    Raises:
        DataError: a download failed, or a file (new or already there) does not match its checksum.
        OutputPathError: ``dest`` is not a folder, or one of the files there is a link, a pipe, a device ...
            (:mod:`ospo_gym.output_files`).
    """
    dest = check_output_folder(dest, what="ESCI download folder")
    names = (EXAMPLES_FILE, PRODUCTS_FILE)
    for name in (*names, *(n + ".part" for n in names), CHECKSUMS_FILE):  # nothing read or written through a link
        check_output_file(dest / name, what="ESCI download file")
    dest.mkdir(parents=True, exist_ok=True)
    url_base = url_base.rstrip("/")
    recorded_path = dest / CHECKSUMS_FILE
    recorded = _read_recorded(recorded_path)
    if checksums is None:
        checksums = ESCI_FILES if url_base == ESCI_URL_BASE else {}
    out = []
    for name in names:
        path = dest / name
        expected = checksums.get(name)
        if expected is None and name in recorded and recorded[name].get("url_base") == url_base:
            expected = KnownFile(int(recorded[name]["size"]), recorded[name]["sha256"])
        if path.exists() and not force:
            digest = sha256_of(path)
            if expected is not None and (digest != expected.sha256 or path.stat().st_size != expected.size):
                raise DataError(
                    f"{path} is there but does not match its checksum (SHA-256 {digest}, expected "
                    f"{expected.sha256}); delete it or rerun with --force to download it again."
                )
        else:
            if force and path.exists():
                path.unlink()
            digest = download_file(f"{url_base}/{name}", path, expected=expected, progress=progress, timeout=timeout)
        recorded[name] = {"sha256": digest, "size": path.stat().st_size, "url_base": url_base}
        out.append(path)
    write_atomic(recorded_path, json.dumps(recorded, indent=1, sort_keys=True))
    return out


def _read_recorded(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
