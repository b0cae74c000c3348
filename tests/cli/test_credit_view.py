"""Credit views: terminal colours, the HTML heat-map, the PNG chart, and `ospo-gym credit --html/--png/--no-color`."""

from __future__ import annotations

import html
import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ospo_gym.cli import credit_view, main
from ospo_gym.cli.credit_view import (
    NEGATIVE_RGB,
    POSITIVE_RGB,
    ZERO_RGB,
    credit_html,
    credit_rgb,
    credit_terminal,
    save_credit_png,
    use_colour,
)
from ospo_gym.output_files import OutputPathError, write_atomic

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEGMENTS = ["good", '<script>alert("x")</script>', "&", "bad,", "zero", "$5 off"]
TEXT = " ".join(SEGMENTS)
SPANS = [(TEXT.index(s), TEXT.index(s) + len(s)) for s in SEGMENTS]
CREDIT = np.array([0.5, -0.25, 0.1, -1.0, 0.0, 0.3])
# prompt 0 of the default AdditiveKeywords-v0 wants "bafa bidepi" and avoids "stafazu pire"
CLI_ARGS = ["credit", "--env", "ospo/AdditiveKeywords-v0", "--prompt-id", "0"]
CLI_TEXT = "bafa bidepi stafazu pire <b>bold</b>"
ESCAPE = "\x1b["


def test_credit_rgb_known_answers():
    assert credit_rgb(0.0, 1.0) == ZERO_RGB
    assert credit_rgb(2.0, 2.0) == POSITIVE_RGB and credit_rgb(-2.0, 2.0) == NEGATIVE_RGB
    assert credit_rgb(-5.0, 2.0) == NEGATIVE_RGB  # clipped at full intensity
    assert credit_rgb(float("nan"), 1.0) == ZERO_RGB
    half = credit_rgb(0.5, 1.0)
    assert all(min(z, p) <= h <= max(z, p) for z, p, h in zip(ZERO_RGB, POSITIVE_RGB, half, strict=True))


def test_html_escapes_every_segment_and_is_self_contained():
    page = credit_html(TEXT, SPANS, CREDIT, title="<t> & title")
    for segment in SEGMENTS:
        assert html.escape(segment) in page
    assert "<script>" not in page and "alert(&quot;x&quot;)" in page
    assert "&lt;t&gt; &amp; title" in page
    assert "<style>" in page and "src=" not in page and "http" not in page
    assert page.count('class="seg"') == len(SPANS)


def test_html_colour_sign_matches_credit_sign():
    exact = CREDIT * 0.9
    page = credit_html(TEXT, SPANS, CREDIT, title="t", exact=exact)
    found = re.findall(r'class="seg" style="background:#(\w\w)(\w\w)(\w\w)" title="([^"]*)" data-credit="([^"]*)"', page)
    assert len(found) == len(SPANS)
    for (r, g, b, tip, value), credit, ex in zip(found, CREDIT, exact, strict=True):
        r, g = int(r, 16), int(g, 16)
        assert float(value) == pytest.approx(credit, abs=1e-5)
        assert f"credit {credit:+.4f}" in tip and f"exact {ex:+.4f}" in tip
        if credit > 0:
            assert g > r
        elif credit < 0:
            assert r > g
        else:
            assert (r, g, int(b, 16)) == ZERO_RGB
    assert "+1.0000" in page and "-1.0000" in page  # legend spans -max|credit| .. +max|credit|


@pytest.mark.parametrize("exact", [None, CREDIT[::-1]])
def test_terminal_view_escape_codes_only_with_colour(exact):
    plain = credit_terminal(TEXT, SPANS, CREDIT, exact=exact, colour=False)
    coloured = credit_terminal(TEXT, SPANS, CREDIT, exact=exact, colour=True)
    assert ESCAPE not in plain and ESCAPE in coloured
    assert len(plain.splitlines()) == len(SPANS) and len(coloured.splitlines()) == len(SPANS) + 1
    assert all(segment in plain for segment in SEGMENTS)
    assert ("exact" in plain) == (exact is not None)
    assert plain.splitlines()[3].lstrip().startswith("-1.0000") and "----------  bad," in plain.splitlines()[3]


@pytest.mark.parametrize("colorterm", ["", "truecolor"])
def test_terminal_colours_follow_sign(monkeypatch, colorterm):
    monkeypatch.setenv("COLORTERM", colorterm)
    lines = credit_terminal("up down flat", [(0, 2), (3, 7), (8, 12)], [1.0, -1.0, 0.0], colour=True).splitlines()
    codes = [re.findall(r"\x1b\[48;([\d;]+)m", line) for line in lines[1:]]
    assert len(codes[0]) == len(codes[1]) == 1 and codes[0] != codes[1] and codes[2] == []  # zero: no background
    if colorterm:
        assert codes[0] == ["2;{};{};{}".format(*POSITIVE_RGB)] and codes[1] == ["2;{};{};{}".format(*NEGATIVE_RGB)]


class _Stream:
    def __init__(self, tty: bool):
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_use_colour_needs_a_tty_and_respects_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert use_colour(_Stream(True)) and not use_colour(_Stream(False))
    assert not use_colour(_Stream(True), no_color=True)
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_colour(_Stream(True))


def test_mismatched_lengths_raise_value_error():
    with pytest.raises(ValueError, match="one value per span"):
        credit_html(TEXT, SPANS, CREDIT[:-1], title="t")
    with pytest.raises(ValueError, match="len\\(text\\)"):
        credit_terminal("ab", [(0, 5)], [1.0])


@pytest.mark.parametrize("exact", [None, CREDIT * 0.5])
def test_png_is_a_valid_non_empty_png(tmp_path, exact):
    text = TEXT + " " + "long " * 20  # a label to cut
    spans, credit = [*SPANS, (len(TEXT) + 1, len(text))], np.append(CREDIT, 0.2)
    path = save_credit_png(tmp_path / "credit.png", text, spans, credit, None if exact is None else np.append(exact, 0.1))
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 2000
    assert [p.name for p in tmp_path.iterdir()] == ["credit.png"]  # no temporary file left


def test_png_of_no_segments(tmp_path):
    assert save_credit_png(tmp_path / "empty.png", "", [], []).read_bytes()[:8] == PNG_MAGIC


def test_png_without_matplotlib_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        save_credit_png(tmp_path / "x.png", TEXT, SPANS, CREDIT)


def test_write_atomic_leaves_no_temporary_file_on_failure(tmp_path):
    def broken(tmp):
        tmp.write_text("half a page")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(tmp_path / "page.html", broken)
    assert list(tmp_path.iterdir()) == []


def test_write_atomic_replaces_a_regular_file(tmp_path):
    path = tmp_path / "page.html"
    path.write_text("old")
    assert write_atomic(path, "new ü") == path and path.read_text(encoding="utf-8") == "new ü"
    assert [p.name for p in tmp_path.iterdir()] == ["page.html"]


SPECIAL_KINDS = {
    "link": "symbolic link",
    "dangling link": "symbolic link",
    "fifo": "named pipe",
    "char device": "character device",
    "directory": "directory",
}


def _make_special(kind: str, path: Path) -> Callable[[], bool]:
    """Put a non-regular file of ``kind`` at ``path``; return a check that it is still there, untouched."""
    if kind == "link":
        target = path.with_name("target.txt")
        target.write_text("keep me")
        path.symlink_to(target)
        return lambda: path.is_symlink() and target.read_text() == "keep me"
    if kind == "dangling link":
        path.symlink_to(path.with_name("nowhere"))
        return lambda: path.is_symlink() and not path.with_name("nowhere").exists()
    if kind == "fifo":
        os.mkfifo(path)
        return lambda: stat.S_ISFIFO(os.lstat(path).st_mode)
    if kind == "char device":
        try:  # a second /dev/null: harmless if it were written to, but it must stay a device
            os.mknod(path, stat.S_IFCHR | 0o600, os.stat("/dev/null").st_rdev)
        except OSError:
            pytest.skip("creating a device node needs root")
        return lambda: stat.S_ISCHR(os.lstat(path).st_mode)
    path.mkdir()
    return lambda: path.is_dir() and not list(path.iterdir())


@pytest.mark.parametrize("kind", SPECIAL_KINDS)
def test_write_atomic_refuses_what_is_not_a_regular_file(tmp_path, kind):
    path = tmp_path / "out.html"
    untouched = _make_special(kind, path)
    with pytest.raises(OutputPathError, match=SPECIAL_KINDS[kind]):
        write_atomic(path, "page")
    assert untouched()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("flag", ["--html", "--png"])
@pytest.mark.parametrize("kind", SPECIAL_KINDS)
def test_cli_refuses_to_replace_a_link_pipe_or_device(tmp_path, capsys, flag, kind):
    path = tmp_path / "out"
    untouched = _make_special(kind, path)
    assert main([*CLI_ARGS, "--text", CLI_TEXT, flag, str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{flag} {path} is a {SPECIAL_KINDS[kind]}" in err and len(err.strip().splitlines()) == 1
    assert untouched()


def test_cli_refuses_a_fifo_through_the_entry_point(tmp_path):
    path = tmp_path / "credit.html"
    untouched = _make_special("fifo", path)
    result = subprocess.run(
        [sys.executable, "-m", "ospo_gym.cli", *CLI_ARGS, "--text", CLI_TEXT, "--html", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "named pipe (FIFO)" in result.stderr
    assert untouched()


def test_cli_writes_html_and_png(tmp_path, capsys):
    html_path, png_path = tmp_path / "credit.html", tmp_path / "credit.png"
    assert main([*CLI_ARGS, "--text", CLI_TEXT, "--exact", "--html", str(html_path), "--png", str(png_path)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {html_path}" in out and f"wrote {png_path}" in out and ESCAPE not in out
    page = html_path.read_text(encoding="utf-8")
    for segment in ["bafa", "bidepi", "stafazu", "pire", "&lt;b&gt;bold&lt;/b&gt;"]:
        assert segment in page
    assert "<b>" not in page and "exact +" in page
    signs = [float(v) for v in re.findall(r'data-credit="([^"]*)"', page)]
    assert signs[0] > 0 and signs[1] > 0 and signs[2] < 0 and signs[3] < 0
    assert png_path.read_bytes()[:8] == PNG_MAGIC and png_path.stat().st_size > 2000


@pytest.mark.parametrize(
    ("no_color", "env", "coloured"), [(False, {}, True), (True, {}, False), (False, {"NO_COLOR": "1"}, False)]
)
def test_cli_colours_only_on_a_tty_without_no_color(capsys, monkeypatch, no_color, env, coloured):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(credit_view, "use_colour", lambda stream, no_color=False: use_colour(_Stream(True), no_color))
    assert main([*CLI_ARGS, "--text", CLI_TEXT, *(["--no-color"] if no_color else [])]) == 0
    assert (ESCAPE in capsys.readouterr().out) == coloured


@pytest.mark.parametrize("flag", ["--html", "--png"])
@pytest.mark.parametrize(
    ("target", "message"), [("missing/out", "cannot write"), (".", "is a directory, not a regular file")]
)
def test_cli_unwritable_path_exits_2_with_one_line(tmp_path, capsys, flag, target, message):
    path = tmp_path / target
    assert main([*CLI_ARGS, "--text", CLI_TEXT, flag, str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ospo-gym: error: ") and message in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert not list(tmp_path.glob("**/*.tmp")) and not list(tmp_path.glob(".*.tmp"))
