"""Dependencies point one way: core (``ospo_gym/``) <- envs <- agents <- the CLI; integrations sit on agents.

Every ``.py`` file of the four source folders is parsed with :mod:`ast` (nothing is imported), and every import
in it — at module level or inside a function — is mapped to the layer it names. An import that points up (the
core naming ``ospo_gym.agents``, an agent naming ``ospo_gym.cli``, ...) fails the test with ``file:line`` and the
import. The core and the envs must also stay light: no module-level import of torch or another heavy
dependency there (inside a function, behind an optional extra, is fine).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

LAYERS = ("core", "envs", "agents", "cli", "integrations")
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "envs": {"core", "envs"},
    "agents": {"core", "envs", "agents"},
    "cli": {"core", "envs", "agents", "cli"},
    "integrations": {"core", "envs", "agents", "integrations"},
}
"""What each layer may import. The CLI and the integrations are both top layers: neither imports the other."""

HEAVY = ("torch", "transformers", "sentence_transformers", "faiss", "vllm", "peft", "trl")
"""Packages the core and the envs may import only inside functions (optional extras, slow to import)."""
LIGHT_LAYERS = ("core", "envs")

# (folder under the repository root, the package it is installed as); the longest prefix wins in _layer_of_module
SOURCES = (("ospo_gym", "ospo_gym"), ("envs", "ospo_gym.envs"), ("agents", "ospo_gym.agents"), ("cli", "ospo_gym.cli"))
SUBPACKAGE_LAYERS = {
    "ospo_gym.envs": "envs",
    "ospo_gym.agents": "agents",
    "ospo_gym.cli": "cli",
    "ospo_gym.integrations": "integrations",
}

KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()
"""``(file relative to the root, imported module)`` pairs tolerated for now; each must name the issue that removes
it. Empty: none is tolerated."""


def _layer_of_module(module: str) -> str | None:
    """The layer of a dotted module name, or None when it is not part of ospo-gym."""
    if module != "ospo_gym" and not module.startswith("ospo_gym."):
        return None
    for package, layer in SUBPACKAGE_LAYERS.items():
        if module == package or module.startswith(package + "."):
            return layer
    return "core"


def _module_of_file(root: Path, path: Path) -> tuple[str, str]:
    """``(dotted module name as installed, layer)`` of a source file."""
    folder, package = next((f, p) for f, p in SOURCES if path.is_relative_to(root / f))
    parts = list(path.relative_to(root / folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    module = ".".join([package, *parts])
    return module, _layer_of_module(module) or "core"


def _source_files(root: Path) -> list[Path]:
    files: list[Path] = []
    for folder, _ in SOURCES:
        if (root / folder).is_dir():
            files += sorted(p for p in (root / folder).rglob("*.py") if "__pycache__" not in p.parts)
    return files


class _Imports(ast.NodeVisitor):
    """``(line, imported module, text, at module level)`` of every import of one file."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.module, self.is_package = module, is_package
        self.found: list[tuple[int, str, str, bool]] = []
        self._depth = 0  # > 0 inside a function body or an ``if TYPE_CHECKING:`` block: not run at import

    def _nested(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _nested

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
        if name == "TYPE_CHECKING":
            self._nested(node)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((node.lineno, alias.name, f"import {alias.name}", self._depth == 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:  # relative: resolved against this file's package
            package = self.module.split(".")
            package = package if self.is_package else package[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join(package + ([base] if base else []))
        text = f"from {'.' * node.level}{node.module or ''} import {', '.join(a.name for a in node.names)}"
        # ``from ospo_gym import agents`` names the subpackage: each imported name counts as ``base.name``
        targets = [f"{base}.{a.name}" for a in node.names if a.name != "*"] or [base]
        for target in targets:
            named = target if _layer_of_module(target) != "core" else base
            self.found.append((node.lineno, named, text, self._depth == 0))


def layer_violations(root: str | Path) -> list[str]:
    """Every upward import and every module-level heavy import under ``root`` (a checkout of the repository),
    as ``"file:line: ..."`` lines; ``[]`` when the layering holds."""
    root = Path(root).resolve()
    problems: list[str] = []
    for path in _source_files(root):
        module, layer = _module_of_file(root, path)
        relative = path.relative_to(root).as_posix()
        visitor = _Imports(module, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        for line, imported, text, module_level in visitor.found:
            target = _layer_of_module(imported)
            if (relative, imported) in KNOWN_EXCEPTIONS:
                continue
            if target is not None and target not in ALLOWED[layer]:
                problems.append(f"{relative}:{line}: `{text}`: the {layer} layer imports the {target} layer")
            top = imported.split(".")[0]
            if module_level and layer in LIGHT_LAYERS and top in HEAVY:
                problems.append(
                    f"{relative}:{line}: `{text}`: {top} imported at module level in the {layer} layer "
                    "(import it inside the function that needs it)"
                )
    return list(dict.fromkeys(problems))  # ``from m import a, b``: one line per statement, not per name


def test_imports_point_only_down():
    problems = layer_violations(REPO)
    assert not problems, "imports that break the layering:\n" + "\n".join(problems)


def test_known_exceptions_are_still_needed():
    """A tolerated exception that the code no longer has must leave the list."""
    saved = set(KNOWN_EXCEPTIONS)
    try:
        KNOWN_EXCEPTIONS.clear()
        problems = layer_violations(REPO)
    finally:
        KNOWN_EXCEPTIONS.update(saved)
    stale = sorted(f"{f} -> {m}" for f, m in saved if not any(p.startswith(f + ":") and m in p for p in problems))
    assert not stale, f"no longer needed, remove from KNOWN_EXCEPTIONS: {stale}"


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.mark.parametrize(
    ("relative", "source", "expected"),
    [
        ("ospo_gym/x.py", "def f():\n    from ospo_gym.agents import Agent\n", "ospo_gym/x.py:2: `from ospo_gym.agents"),
        ("ospo_gym/x.py", "from ospo_gym import cli\n", "the core layer imports the cli layer"),
        ("ospo_gym/data/x.py", "from ..envs import base\n", "the core layer imports the envs layer"),
        ("envs/x.py", "import ospo_gym.agents.loss\n", "the envs layer imports the agents layer"),
        ("agents/x.py", "from ospo_gym.cli.options import UsageError\n", "the agents layer imports the cli layer"),
        ("agents/x.py", "from ospo_gym.integrations import trl\n", "imports the integrations layer"),
        ("cli/x.py", "from ospo_gym.integrations import trl\n", "the cli layer imports the integrations layer"),
        ("ospo_gym/integrations/x.py", "from ospo_gym.cli import main\n", "integrations layer imports the cli"),
        ("ospo_gym/x.py", "import numpy as np\nimport torch\n", "ospo_gym/x.py:2: `import torch`: torch imported"),
        ("envs/x.py", "try:\n    from transformers import AutoModel\nexcept ImportError:\n    pass\n", "transformers"),
    ],
)
def test_the_check_finds_each_kind_of_upward_import(tmp_path, relative, source, expected):
    _write(tmp_path, relative, source)
    problems = layer_violations(tmp_path)
    assert len(problems) == 1 and expected in problems[0], problems


@pytest.mark.parametrize(
    ("relative", "source"),
    [
        ("ospo_gym/x.py", "def f():\n    import torch\n"),  # heavy, but only when called
        ("ospo_gym/x.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n"),
        ("ospo_gym/x.py", "from ospo_gym import metrics\nfrom ospo_gym.credit import segment_credit\n"),
        ("envs/x.py", "from ospo_gym.envs import base\nfrom . import base\nfrom ospo_gym import oracle\n"),
        ("agents/x.py", "import torch\nfrom ospo_gym.envs import base\n"),
        ("cli/x.py", "from ospo_gym.agents import Agent\nfrom . import options\n"),
        ("ospo_gym/integrations/x.py", "import trl\nfrom ospo_gym.agents import Agent\n"),
    ],
)
def test_the_check_accepts_downward_imports(tmp_path, relative, source):
    _write(tmp_path, relative, source)
    assert layer_violations(tmp_path) == []
