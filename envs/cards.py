"""Environment cards (``docs/envs.md``) generated from the env classes' docstrings, one card per registered id.

The docstrings are the documentation (Gymnasium style: Description, Action Space, Observation Space, Rewards,
Starting State, Episode End, Arguments, Version History, then one ``>>>`` example); this module only turns them
into Markdown, so a card is never written twice. Regenerate with ``ospo-gym envs --markdown > docs/envs.md``.
"""

from __future__ import annotations

import inspect
import re

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator

from ospo_gym.envs.base import GenerativeSearchEnv
from ospo_gym.registration import ALL_ENV_IDS, register_envs

SECTIONS = (
    "Description",
    "Action Space",
    "Observation Space",
    "Rewards",
    "Starting State",
    "Episode End",
    "Arguments",
    "Version History",
)
"""The sections every env docstring has, in this order (``## <name>`` headings in the docstring)."""

HEADER = """# Environments

Generated from the env classes' docstrings by `ospo_gym.envs.cards.env_cards_markdown()`; do not edit by hand:
run `ospo-gym envs --markdown > docs/envs.md` after changing a docstring (`tests/test_docs.py` checks this file).
Every id is registered by `import ospo_gym`; `gym.make(id, **kwargs)` takes the arguments listed on its card.
"""

# Sphinx roles (:meth:`x`, :class:`~a.b`) and reST literals (``x``) become Markdown code spans.
_ROLE = re.compile(r":(?:meth|class|func|mod|data|attr|obj):`~?([^`]+)`")
_LITERAL = re.compile(r"``(.+?)``")


def _markdown(text: str) -> str:
    """reST inline markup of a docstring as Markdown."""
    return _LITERAL.sub(r"`\1`", _ROLE.sub(r"``\1``", text))


def _parse(doc: str) -> tuple[str, dict[str, str], str]:
    """A cleaned docstring as (summary line, {section: body}, doctest example); the example is every line from the
    first ``>>>`` on."""
    lines = inspect.cleandoc(doc).splitlines()
    example_start = next((i for i, line in enumerate(lines) if line.startswith(">>>")), len(lines))
    example = "\n".join(lines[example_start:]).strip()
    summary, sections, current = lines[0].strip(), {}, None
    for line in lines[1:example_start]:
        heading = re.fullmatch(r"## (.+)", line.strip())
        if heading:
            current = heading.group(1).strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return summary, {name: "\n".join(body).strip() for name, body in sections.items()}, example


def env_card(env_id: str, env_class: type) -> str:
    """The Markdown card of one env: summary, where it lives, every docstring section and the example.

    Raises ``ValueError`` naming the class and the missing sections when its docstring lacks one of
    :data:`SECTIONS` or the ``>>>`` example, so an undocumented env cannot slip into the docs.
    """
    summary, sections, example = _parse(env_class.__doc__ or "(no docstring)")
    missing = [name for name in SECTIONS if not sections.get(name)]
    if not example:
        missing.append("a '>>>' example")
    if missing:
        raise ValueError(
            f"{env_class.__module__}.{env_class.__qualname__} (the env of {env_id}) has no {', '.join(missing)} in "
            f"its docstring; every env docstring has the sections {', '.join(SECTIONS)} and a '>>>' example"
        )
    spec = gym.spec(env_id)
    out = [
        f"## `{env_id}`",
        "",
        _markdown(summary),
        "",
        "| | |",
        "|---|---|",
        f'| make | `gym.make("{env_id}")` |',
        f"| class | `{spec.entry_point}` |",
        f"| vector class | `{spec.vector_entry_point}` |",
        "",
    ]
    for name in SECTIONS:
        out += [f"### {name}", "", _markdown(sections[name]), ""]
    out += ["### Example", "", "```python", example, "```", ""]
    return "\n".join(out)


def base_arguments_markdown() -> str:
    """The closing section the cards' "base-class arguments" refer to: the keyword arguments every env takes from
    :class:`GenerativeSearchEnv`, with their defaults read from its signature."""
    parameters = inspect.signature(GenerativeSearchEnv.__init__).parameters.values()
    names = ", ".join(
        f"`{p.name}={p.default!r}`" for p in parameters if p.default is not inspect.Parameter.empty
    )
    where = f"`{GenerativeSearchEnv.__module__}.{GenerativeSearchEnv.__qualname__}`"
    return f"## Base-class arguments\n\nEvery env above also takes, from {where}: {names}.\n"


def env_cards_markdown() -> str:
    """``docs/envs.md``: an index of every registered id, one card per id from the env docstrings, and the
    base-class arguments they share."""
    register_envs()
    classes = {env_id: load_env_creator(gym.spec(env_id).entry_point) for env_id in ALL_ENV_IDS}
    index = ["| id | summary |", "|---|---|"]
    for env_id, env_class in classes.items():
        summary = _markdown(_parse(env_class.__doc__ or "(no docstring)")[0]).replace("|", "\\|")
        anchor = re.sub(r"[^a-z0-9-]", "", env_id.lower())
        index.append(f"| [`{env_id}`](#{anchor}) | {summary} |")
    cards = [env_card(env_id, env_class) for env_id, env_class in classes.items()]
    return "\n".join([HEADER, *index, "", *cards, base_arguments_markdown()]).rstrip("\n") + "\n"
