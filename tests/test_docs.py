"""The docs stay true: env cards match the docstrings, the README stays a short user guide, links and names resolve.

Nothing here imports torch: module and attribute names are resolved from the source files (through pyproject's
package-dir table), not by importing them.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest

from ospo_gym.envs.cards import SECTIONS, env_card, env_cards_markdown
from ospo_gym.registration import ALL_ENV_IDS, ENV_IDS


def _repo_root() -> Path:
    """The folder holding pyproject.toml, wherever this file sits under tests/."""
    here = Path(__file__).resolve()
    return next(parent for parent in here.parents if (parent / "pyproject.toml").is_file())


ROOT = _repo_root()
README = ROOT / "README.md"
TEST_COMMAND = (
    'python -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -e ".[dev]" '
    "&& python -m pytest -q"
)
MAIN_JOB_COMMAND = (
    'python -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -e ".[dev]" '
    "&& ospo-gym bench"
)
REGENERATE = "run `ospo-gym envs --markdown > docs/envs.md`"


def doc_files() -> list[Path]:
    """Every Markdown page a user reads: the README, docs/, the results pages."""
    pages = [README, ROOT / "benchmarks" / "RESULTS.md", ROOT / "benchmarks" / "results" / "headtohead" / "README.md"]
    return pages + sorted((ROOT / "docs").glob("*.md"))


# -- env cards ------------------------------------------------------------------------------------------------------


def test_docs_envs_md_is_up_to_date():
    path = ROOT / "docs" / "envs.md"
    assert path.is_file(), f"docs/envs.md is missing: {REGENERATE}"
    assert path.read_text(encoding="utf-8") == env_cards_markdown(), (
        f"docs/envs.md is out of date with the env docstrings: {REGENERATE}"
    )


def test_the_regenerate_command_writes_docs_envs_md():
    result = subprocess.run(
        [sys.executable, "-m", "ospo_gym.cli", "envs", "--markdown"], capture_output=True, text=True, check=False
    )
    if result.returncode == 2 and "--markdown" in result.stderr:
        pytest.skip("`ospo-gym envs --markdown` is not wired yet (it prints env_cards_markdown())")
    assert result.returncode == 0, result.stderr
    assert result.stdout == env_cards_markdown()


def test_every_registered_id_has_a_card_with_every_section():
    markdown = env_cards_markdown()
    cards = re.split(r"^## ", markdown, flags=re.M)[1:]
    titled = {card.splitlines()[0].strip("` "): card for card in cards}
    assert set(ALL_ENV_IDS) <= set(titled)
    for env_id in ALL_ENV_IDS:
        headings = re.findall(r"^### (.+)$", titled[env_id], flags=re.M)
        assert headings == [*SECTIONS, "Example"], env_id
        assert ">>> " in titled[env_id] and "gym.make" in titled[env_id]


def test_cards_turn_rest_markup_into_markdown():
    prose = re.sub(r"```.*?```", "", env_cards_markdown(), flags=re.S)  # the examples' fences are Markdown
    assert "``" not in prose and ":meth:`" not in prose and ":class:`" not in prose


def test_an_env_docstring_without_its_sections_is_refused():
    class BareEnv(gym.Env):
        """A summary line.

        ## Description
        Only a description.
        """

    with pytest.raises(ValueError, match=r"BareEnv .*Action Space.*Version History.*'>>>' example"):
        env_card(ENV_IDS[0], BareEnv)


# -- the README is a user guide ---------------------------------------------------------------------------------------


def test_readme_is_at_most_10_kb():
    size = len(README.read_bytes())
    assert size <= 10 * 1024, f"README.md is {size} bytes; keep it a user guide (provenance: benchmarks/RESULTS.md)"


def test_readme_gives_the_main_job_and_the_test_command_verbatim():
    text = README.read_text(encoding="utf-8")
    assert MAIN_JOB_COMMAND in text
    assert TEST_COMMAND in text  # CI runs exactly this command


def test_readme_env_table_lists_every_registered_id():
    rows = re.findall(r"^\| `(ospo/[\w-]+)` \|", README.read_text(encoding="utf-8"), flags=re.M)
    assert sorted(rows) == sorted(ALL_ENV_IDS)


def test_readme_points_to_the_results_the_cards_and_the_license():
    text = README.read_text(encoding="utf-8")
    for target in ("benchmarks/RESULTS.md", "docs/envs.md", "LICENSE"):
        assert f"]({target})" in text, target
    assert "register_estimator" in text
    assert "Apache License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Version 2.0" in (ROOT / "LICENSE").read_text(encoding="utf-8")


# -- links, module names and test paths resolve ---------------------------------------------------------------------


def github_anchor(heading: str) -> str:
    """GitHub's id for a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)  # '#' in code is no heading
    return {github_anchor(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("page", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    text = page.read_text(encoding="utf-8")
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to missing files or headings: {broken}"


def package_dirs() -> dict[str, Path]:
    """pyproject's ``[tool.setuptools.package-dir]``: dotted package -> its folder."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[tool.setuptools.package-dir]", 1)[1].split("\n[", 1)[0]
    return {name: ROOT / folder for name, folder in re.findall(r'"([\w.]+)"\s*=\s*"([^"]+)"', section)}


def module_source(dotted: str, roots: dict[str, Path]) -> Path | None:
    """The file (module, package ``__init__.py``) or folder (namespace package) of a dotted module name."""
    base = max((name for name in roots if dotted == name or dotted.startswith(name + ".")), key=len, default=None)
    if base is None:
        return None
    folder = roots[base]
    rest = dotted[len(base) :].lstrip(".").split(".") if dotted != base else []
    for i, part in enumerate(rest):
        if i == len(rest) - 1 and (folder / f"{part}.py").is_file():
            return folder / f"{part}.py"
        folder = folder / part
    if (folder / "__init__.py").is_file():
        return folder / "__init__.py"
    return folder if folder.is_dir() else None


def top_level_names(source: Path) -> set[str]:
    """Names a module defines or imports (anywhere in it: lenient on purpose), and a package's submodules."""
    if source.is_dir():
        return {p.stem for p in source.iterdir()}
    tree = ast.parse(source.read_text(encoding="utf-8"))
    names = {p.stem for p in source.parent.iterdir()} if source.name == "__init__.py" else set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def resolves(dotted: str, roots: dict[str, Path]) -> bool:
    """``dotted`` is a module, or a module followed by a name it defines (deeper attributes are not checked)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        source = module_source(".".join(parts[:cut]), roots)
        if source is not None:
            return cut == len(parts) or parts[cut] in top_level_names(source)
    return False


def named_in(text: str) -> set[str]:
    """Dotted ``ospo_gym...`` names a page mentions, with ``from M import a, b`` read as ``M.a`` and ``M.b``."""
    names = set(re.findall(r"\bospo_gym(?:\.[A-Za-z_]\w*)+", text))
    for module, imported in re.findall(r"from (ospo_gym[\w.]*) import ([\w, ]+)", text):
        names.update(f"{module}.{name.strip()}" for name in imported.split(",") if name.strip())
    return names


@pytest.mark.parametrize("page", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_names_and_test_files_in_the_docs_exist(page):
    text = page.read_text(encoding="utf-8")
    roots = package_dirs()
    stale = sorted(name for name in named_in(text) if not resolves(name, roots))
    missing = sorted({path for path in re.findall(r"\b(tests/[\w/]+\.py)", text) if not (ROOT / path).is_file()})
    where = "the env docstrings (then regenerate it)" if page.name == "envs.md" and page.parent.name == "docs" else "it"
    assert not stale and not missing, (
        f"{page.relative_to(ROOT)} names modules or tests that do not exist (update {where}): {stale + missing}"
    )
