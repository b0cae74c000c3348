"""``ospo-gym data``: the ESCI download (local HTTP server, resume, checksums) and the H&M steps/verification."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import subprocess
import sys
import threading

import pytest
from fixtures_real import esci_dir, hm_dir

from ospo_gym.cli import main
from ospo_gym.data import DataError
from ospo_gym.data.download import CHECKSUMS_FILE, KnownFile, download_esci, download_file
from ospo_gym.data.esci import load_esci
from ospo_gym.data.esci_schema import EXAMPLES_FILE, PRODUCTS_FILE


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with ``Range: bytes=N-`` support; records requests; can cut a response short."""

    requests: list[tuple[str, str | None]] = []
    honour_range = True
    cut_after: int | None = None  # send only this many body bytes, then close

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        path = self.translate_path(self.path)
        self.requests.append((self.path, self.headers.get("Range")))
        try:
            data = open(path, "rb").read()
        except OSError:
            self.send_error(404)
            return
        start = 0
        header = self.headers.get("Range")
        if header and self.honour_range:
            start = int(header.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.cut_after is not None:
            body = body[: self.cut_after]
            self.close_connection = True
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    for name in (EXAMPLES_FILE, PRODUCTS_FILE):
        (served / name).write_bytes((esci_dir() / name).read_bytes())
    handler = type("Handler", (RangeHandler,), {"requests": [], "honour_range": True, "cut_after": None})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler, served
    httpd.shutdown()
    httpd.server_close()


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_verifies_records_and_loads(server, tmp_path):
    url, handler, served = server
    dest = tmp_path / "dest"
    paths = download_esci(dest, url_base=url + "/", progress=False)
    assert [p.name for p in paths] == [EXAMPLES_FILE, PRODUCTS_FILE]
    assert all(sha(p) == sha(served / p.name) for p in paths)
    recorded = json.loads((dest / CHECKSUMS_FILE).read_text())
    assert recorded[PRODUCTS_FILE]["sha256"] == sha(served / PRODUCTS_FILE)
    assert not list(dest.glob("*.part"))
    assert load_esci(dest, use_cache=False).product_ids  # the files load
    handler.requests.clear()
    download_esci(dest, url_base=url, progress=False)  # second run: verified on disk, nothing fetched
    assert handler.requests == []
    (dest / PRODUCTS_FILE).write_bytes(b"tampered")
    with pytest.raises(DataError, match="does not match its checksum"):
        download_esci(dest, url_base=url, progress=False)
    download_esci(dest, url_base=url, progress=False, force=True)
    assert sha(dest / PRODUCTS_FILE) == sha(served / PRODUCTS_FILE)


def test_resume_from_a_truncated_partial_file(server, tmp_path):
    url, handler, served = server
    full = (served / PRODUCTS_FILE).read_bytes()
    part = tmp_path / (PRODUCTS_FILE + ".part")
    part.write_bytes(full[:1000])
    expected = KnownFile(len(full), sha(served / PRODUCTS_FILE))
    digest = download_file(f"{url}/{PRODUCTS_FILE}", tmp_path / PRODUCTS_FILE, expected=expected, progress=False)
    assert digest == expected.sha256 and (tmp_path / PRODUCTS_FILE).read_bytes() == full
    assert handler.requests == [(f"/{PRODUCTS_FILE}", "bytes=1000-")]


def test_an_interrupted_download_keeps_its_part_and_a_rerun_finishes(server, tmp_path):
    url, handler, served = server
    handler.cut_after = 700
    with pytest.raises(DataError, match="rerun to resume"):
        download_file(f"{url}/{PRODUCTS_FILE}", tmp_path / PRODUCTS_FILE, progress=False)
    assert (tmp_path / (PRODUCTS_FILE + ".part")).stat().st_size == 700
    handler.cut_after = None
    download_file(f"{url}/{PRODUCTS_FILE}", tmp_path / PRODUCTS_FILE, progress=False)
    assert sha(tmp_path / PRODUCTS_FILE) == sha(served / PRODUCTS_FILE)
    assert handler.requests[-1][1] == "bytes=700-"


def test_a_server_without_range_support_restarts_the_file(server, tmp_path):
    url, handler, served = server
    handler.honour_range = False
    part = tmp_path / (EXAMPLES_FILE + ".part")
    part.write_bytes(b"x" * 50)  # garbage that must not survive
    download_file(f"{url}/{EXAMPLES_FILE}", tmp_path / EXAMPLES_FILE, progress=False)
    assert sha(tmp_path / EXAMPLES_FILE) == sha(served / EXAMPLES_FILE)


def test_a_checksum_mismatch_deletes_the_download(server, tmp_path):
    url, _, served = server
    size = (served / EXAMPLES_FILE).stat().st_size
    with pytest.raises(DataError, match="does not match the published file"):
        download_file(f"{url}/{EXAMPLES_FILE}", tmp_path / EXAMPLES_FILE, expected=KnownFile(size, "0" * 64), progress=False)
    assert not (tmp_path / EXAMPLES_FILE).exists() and not (tmp_path / (EXAMPLES_FILE + ".part")).exists()


def test_missing_url_is_a_data_error(server, tmp_path):
    url, _, _ = server
    with pytest.raises(DataError, match="HTTP 404"):
        download_esci(tmp_path, url_base=url + "/nowhere", progress=False)


# --- the command line --------------------------------------------------------------------------------------


def test_cli_data_esci(server, tmp_path, capsys):
    url, _, served = server
    assert main(["data", "esci", "--dest", str(tmp_path / "d"), "--url-base", url, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"ok  {tmp_path / 'd' / PRODUCTS_FILE}" in out and "ospo/ESCI-v0" in out
    assert sha(tmp_path / "d" / EXAMPLES_FILE) == sha(served / EXAMPLES_FILE)


def test_cli_data_esci_failure_exits_2_without_traceback(tmp_path):
    # Port 9 on 127.0.0.1 (discard) is closed: the connection is refused at once.
    result = subprocess.run(
        [sys.executable, "-m", "ospo_gym.cli", "data", "esci", "--dest", str(tmp_path), "--url-base", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("ospo-gym: error: downloading") and "Traceback" not in result.stderr


def test_cli_data_hm_prints_the_kaggle_steps(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("OSPO_GYM_DATA", str(tmp_path))
    assert main(["data", "hm"]) == 0
    out = capsys.readouterr().out
    assert "kaggle competitions download -c h-and-m-personalized-fashion-recommendations -f transactions_train.csv" in out
    assert str(tmp_path / "hm") in out and "--verify" in out


def test_cli_data_hm_verify(capsys, tmp_path):
    assert main(["data", "hm", "--verify", str(hm_dir())]) == 0
    assert "300 articles, 60 customers" in capsys.readouterr().out
    result = subprocess.run(
        [sys.executable, "-m", "ospo_gym.cli", "data", "hm", "--verify", str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "articles.csv" in result.stderr and "ospo-gym data hm" in result.stderr


def test_cli_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "nope"])
    assert exit_info.value.code == 2
