"""The option framework of the ``ospo-gym`` commands: options generated from dataclasses, YAML config files,
``NAME=VALUE`` arguments, and user errors reported in one line.

A dataclass field becomes one option, documented once by the docstring under it (``learning_rate`` becomes
``--learning-rate``, booleans get ``--x/--no-x``, ``None`` is typed ``none``); the same names are the keys of the
YAML file given with ``--config``, and flags typed on the command line win over the file
(:func:`add_dataclass_options`, :func:`load_yaml`, :func:`resolve_options`).

Every error in what the user typed is a :class:`UsageError` or an argparse error: one line on stderr, exit status
2, no traceback (:func:`ospo_gym.errors.one_line`). Only the standard library and that core module are
imported here (PyYAML when a ``--config`` is read).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import re
import shlex
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ospo_gym.errors import one_line

ENV_ARG = {"flag": "--env-arg", "metavar": "NAME=VALUE"}
"""Field metadata of an env-arguments field (``dict``): a repeatable ``--env-arg NAME=VALUE`` option."""


class UsageError(ValueError):
    """Bad user input: one line on stderr, exit status 2 (:func:`ospo_gym.cli.main` reports every ``ValueError``
    that way)."""


def exit_usage_error(parser: argparse.ArgumentParser, message: str) -> typing.NoReturn:
    """Exit with status 2 and argparse's error as one line on stderr, pointing at ``--help`` (argparse's own
    ``error`` prints the whole usage block first, which buries the one line that matters)."""
    parser.exit(2, f"{parser.prog}: error: {one_line(message)} (see {parser.prog} --help)\n")


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse with errors in one line (the error and a pointer to ``--help``, no usage block); its subparsers
    are of this class too (``add_subparsers`` uses the parent's class)."""

    def error(self, message: str) -> typing.NoReturn:
        exit_usage_error(self, message)


class DeprecatedFlag(argparse.Action):
    """The old spelling of an option (hidden from ``--help``): parses as the new one, into the same ``dest``, and
    says on stderr to use ``replacement`` instead."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, replacement: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.replacement = replacement

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:  # fmt: skip
        _deprecated(parser.prog, f"{option_string} is", self.replacement)
        setattr(namespace, self.dest, values)


def _deprecated(prog: str, old: str, new: str) -> None:
    # stderr, not a DeprecationWarning: Python's default filters hide those outside __main__
    print(f"{prog}: warning: {old} deprecated and will be removed in the next version; use {new}", file=sys.stderr)


# -- dataclass -> argparse -------------------------------------------------------------------------------------
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (``name: type = default`` then ``\"\"\"doc\"\"\"``)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):  # no source (frozen app): options without help
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, after in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = plain_text(after.value.value)
    return docs


def plain_text(doc: str) -> str:
    """A docstring as one line of terminal text: reST roles and double backticks dropped."""
    doc = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", doc)
    return " ".join(doc.replace("``", "").split())


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """``(base type, accepts None)`` of a field's type hint."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return (args[0] if len(args) == 1 else str), len(args) < len(typing.get_args(hint))
    return hint, False


def _scalar_parser(base: Any, optional: bool) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if optional and text.lower() in ("none", "null"):
            return None
        return base(text)

    parse.__name__ = getattr(base, "__name__", "value") + (" or none" if optional else "")
    return parse


_METAVARS = {int: "INT", float: "FLOAT", str: "TEXT"}


def add_dataclass_options(
    parser: argparse.ArgumentParser, cls: type, *, exclude: Sequence[str] = (), title: str | None = None
) -> None:
    """One option per field of ``cls`` (minus ``exclude``): ``--field-name``, typed from the annotation, help from
    the field's docstring. Defaults are *not* stored (``argparse.SUPPRESS``): only what was typed reaches the
    namespace, so a YAML file can fill the rest (:func:`resolve_options`). A field's ``renamed_from`` metadata (its
    old name) adds the old flag as a hidden :class:`DeprecatedFlag`."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    summary = plain_text((cls.__doc__ or "").split("\n\n")[0]) or None
    group = parser.add_argument_group(title or cls.__name__, summary.replace("%", "%%") if summary else None)
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = docs.get(f.name, "").replace("%", "%%")
        base, optional = _unwrap(hints[f.name])
        origin = typing.get_origin(base)
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        if f.metadata.get("positional"):
            group.add_argument(f.name, help=help_text)
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
            help_text += f" [default: {'on' if default else 'off'}]"
        elif origin is dict:
            kwargs.update(action="append", metavar=f.metadata.get("metavar", "NAME=VALUE"))
        elif origin is list:
            kwargs.update(nargs="+", metavar=f.name.rstrip("s").upper())
            help_text += f" [default: {default}]" if default is not None else ""
        else:
            kwargs.update(
                type=_scalar_parser(base, optional),
                metavar=_METAVARS.get(base, "VALUE") + ("|none" if optional else ""),
            )
            help_text += f" [default: {default}]"
        group.add_argument(flag, help=help_text, **kwargs)
        old = f.metadata.get("renamed_from")
        if old is not None and "action" not in kwargs:  # scalar options only: a flag that takes a value
            group.add_argument(
                "--" + old.replace("_", "-"), **kwargs, help=argparse.SUPPRESS, action=DeprecatedFlag, replacement=flag
            )


def known_keys(*classes: type, exclude: Sequence[str] = ()) -> set[str]:
    """The YAML keys of the fields of ``classes`` (minus ``exclude``), a renamed field's old name included."""
    keys = set()
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.name not in exclude:
                keys.update(filter(None, (f.name, f.metadata.get("renamed_from"))))
    return keys


def load_yaml(path: str | None, allowed: set[str]) -> dict[str, Any]:
    """The mapping in a YAML file (``yaml.safe_load``), checked against the allowed keys."""
    if path is None:
        return {}
    try:
        import yaml
    except ImportError:
        raise UsageError("--config needs PyYAML: pip install pyyaml") from None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise UsageError(f"cannot read --config {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise UsageError(f"--config {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UsageError(f"--config {path} is not valid YAML: {one_line(err)}") from None
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise UsageError(
            f"--config {path} is nested too deeply to read; a config is a flat mapping of option names to values"
        ) from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise UsageError(
            f"--config {path} must hold a mapping of option names to values, got {type(data).__name__}"
        )
    unknown = sorted(set(map(str, data)) - allowed)
    if unknown:
        raise UsageError(f"unknown keys {unknown} in --config {path}; known: {', '.join(sorted(allowed))}")
    return data


def resolve_options(cls: type, args: argparse.Namespace, from_yaml: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``cls`` that the YAML file or the command line set (command line wins); dict-typed fields
    merge (``NAME=VALUE`` pairs parsed over the file's mapping). A renamed field's old key is read as the new one,
    with a warning on stderr."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        typed = getattr(args, f.name, dataclasses.MISSING)
        in_file = from_yaml.get(f.name, dataclasses.MISSING)
        old = f.metadata.get("renamed_from")
        if old is not None and old in from_yaml:
            if in_file is not dataclasses.MISSING:
                raise UsageError(f"--config gives both {f.name} and its deprecated old name {old}; keep {f.name}")
            _deprecated("ospo-gym", f"the --config key {old} is", f.name)
            in_file = from_yaml[old]
        if f.metadata.get("flag") or typing.get_origin(typing.get_type_hints(cls)[f.name]) is dict:
            merged: dict[str, Any] = {}
            if in_file is not dataclasses.MISSING:
                if not isinstance(in_file, dict):
                    raise UsageError(f"{f.name} in --config must be a mapping, got {in_file!r}")
                merged.update(in_file)
            if typed is not dataclasses.MISSING:
                merged.update(parse_kwargs(typed, f.metadata.get("flag", "--" + f.name)))
            if merged or in_file is not dataclasses.MISSING:
                values[f.name] = merged
        elif typed is not dataclasses.MISSING:
            values[f.name] = typed
        elif in_file is not dataclasses.MISSING:
            values[f.name] = _coerce(f.name, in_file, typing.get_type_hints(cls)[f.name])
    return values


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """A YAML value as the field's type, as the command line would parse it (YAML reads ``1e-3`` as a string)."""
    base, optional = _unwrap(hint)
    if value is None:
        if optional:
            return None
    elif base is bool:
        if isinstance(value, bool):
            return value
    elif typing.get_origin(base) is list:
        if isinstance(value, list):
            return [str(v) for v in value]
        if isinstance(value, str | int):
            return [str(value)]
    elif base in (int, float) and not isinstance(value, bool):
        if isinstance(value, int | float) and (base is float or isinstance(value, int)):
            return base(value)
        if isinstance(value, str):
            try:
                return base(value)
            except ValueError:
                pass
    elif base is str:
        if isinstance(value, str):
            return value
    else:
        return value
    expected = getattr(base, "__name__", str(base)) + (" or null" if optional else "")
    raise UsageError(f"{name} in --config must be {expected}, got {value!r}")


def parse_kwargs(pairs: Sequence[str], flag: str = "--env-arg") -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``; values are JSON when they parse, else strings."""
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"{flag} expects NAME=VALUE, got {pair!r}")
        try:
            kwargs[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            kwargs[name.strip()] = raw
        except RecursionError:  # json recurses once per nesting level
            raise UsageError(f"{flag} {name.strip()}=...: the JSON value is nested too deeply") from None
    return kwargs


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``--config YAML``: a file of option values for the options :func:`add_dataclass_options` added."""
    parser.add_argument(
        "--config",
        default=None,
        metavar="YAML",
        help="YAML file of option values (keys: the option names with underscores); flags typed here win",
    )


def command_line(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The command as typed, rebuilt from ``parser`` (a command's parser, ``prog`` ``"ospo-gym <command>"``) and
    the namespace it parsed: only typed options are in it (the dataclass options' defaults are suppressed)."""
    words = parser.prog.split()
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if (
            action.dest == "help"
            or isinstance(action, DeprecatedFlag)  # its value is the new option's, rebuilt under the new name
            or value is None
            or (action.dest != "config" and action.default is not argparse.SUPPRESS)
        ):
            continue
        flag = action.option_strings[0] if action.option_strings else None
        if isinstance(action, argparse.BooleanOptionalAction):
            words.append(flag if value else "--no-" + flag[2:])
        elif action.nargs == "+":
            words += [flag, *map(str, value)]
        elif isinstance(action, argparse._AppendAction):
            for item in value:
                words += [flag, item]
        elif flag is None:
            words.append(str(value))
        else:
            words += [flag, str(value)]
    return " ".join(shlex.quote(w) for w in words)
