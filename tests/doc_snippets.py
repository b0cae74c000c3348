"""Shared helpers of the tests that run the code blocks of Markdown pages (README.md, docs/*.md) as a reader would.

``fenced_blocks`` reads a page's fenced code blocks, ``section`` cuts a page at its headings, ``run_blocks`` runs
Python blocks in one namespace, and ``working_folder`` keeps what they write in a temporary folder.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path


def repo_root() -> Path:
    """The folder holding pyproject.toml, wherever the caller sits under tests/."""
    here = Path(__file__).resolve()
    return next(parent for parent in here.parents if (parent / "pyproject.toml").is_file())


def fenced_blocks(markdown: str) -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block of ``markdown`` that names its language, in page order."""
    return re.findall(r"^```(\w+)\n(.*?)^```", markdown, flags=re.M | re.S)


def section(markdown: str, heading: str) -> str:
    """The text under the heading ``heading`` (any level), up to the next heading of the same or a higher level.

    Raises:
        ValueError: the page has no such heading, or has it twice.
    """
    text = re.sub(r"```.*?```", lambda m: m.group(0).replace("#", "\0"), markdown, flags=re.S)  # '#' in code
    found = [m for m in re.finditer(r"^(#+) (.+?)\s*$", text, flags=re.M) if m.group(2) == heading]
    if len(found) != 1:
        raise ValueError(f"expected one heading {heading!r} in the page, found {len(found)}")
    start, level = found[0].end(), len(found[0].group(1))
    after = re.search(rf"^#{{1,{level}}} ", text[start:], flags=re.M)
    end = start + after.start() if after else len(text)
    return markdown[start:end]


@contextlib.contextmanager
def working_folder(folder: Path):
    """Run in ``folder`` (the examples write tiny-policy/, runs/, checkpoint/ where they run); restored after."""
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def run_blocks(blocks: list[str], namespace: dict, source: str = "README.md") -> list[tuple[str, dict]]:
    """Execute Python blocks of the page ``source`` in ``namespace``; returns, per block, what it printed and the
    names as they were after it (a later block may rebind ``info`` or ``terminated``). A block that prints nothing
    fails: every example is meant to show its result."""
    results = []
    for number, code in enumerate(blocks):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"{source} python block {number}", "exec"), namespace)
        assert out.getvalue().strip(), f"{source} block prints nothing:\n{code}"
        results.append((out.getvalue(), dict(namespace)))
    return results
