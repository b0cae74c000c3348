"""The ``ospo-gym`` command line: ``envs`` lists the environments, ``credit`` shows segment credit for a text,
``data`` downloads or checks the real datasets, ``cache`` lists and cleans the on-disk caches, ``train`` /
``eval`` / ``bench`` train, score and compare agents.

Errors in what the user typed exit with status 2 and a one-line message, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ospo_gym.cli.options import OneLineErrorParser
from ospo_gym.errors import one_line


@dataclass(frozen=True)
class Command:
    """One command of ``ospo-gym``. Its module is named, not imported: it is imported when the command is chosen,
    so ``ospo-gym envs`` never loads what ``ospo-gym train`` needs (torch)."""

    help: str
    """One line for ``ospo-gym --help``."""
    options: str
    """``"module:function"`` that adds the command's options to its parser (run on the parser's first parse)."""
    body: str
    """``"module:function"`` run with the parsed namespace; returns the exit status."""
    example: str = ""
    """An example command line, shown by ``ospo-gym <command> --help``."""
    extra: str | None = None
    """The pip extra the command needs: a missing dependency is then reported as "pip install 'ospo-gym[extra]'"."""


COMMANDS: dict[str, Command] = {
    "envs": Command(
        "list environment ids and their constructor arguments",
        "ospo_gym.cli.envs:add_options",
        "ospo_gym.cli.envs:cmd_envs",
    ),
    "credit": Command(
        "segment credit of a text for one prompt",
        "ospo_gym.cli.credit:add_options",
        "ospo_gym.cli.credit:cmd_credit",
    ),
    "data": Command(
        "download (ESCI) or check (H&M) the real datasets",
        "ospo_gym.cli.data:add_options",
        "ospo_gym.cli.data:cmd_data",
    ),
    "cache": Command(
        "see and clean the on-disk caches (processed datasets, BM25 indexes)",
        "ospo_gym.cli.cache:add_options",
        "ospo_gym.cli.cache:cmd_cache",
        example="ospo-gym cache remove --unused-days 30",
    ),
    "train": Command(
        "train one agent on one env; writes a run folder with metrics.jsonl and a checkpoint",
        "ospo_gym.cli.train:add_train_options",
        "ospo_gym.cli.train:cmd_train",
        example="ospo-gym train --tiny --env ospo/AdditiveKeywords-v0 --env-arg shared_weights=true --steps 150",
        extra="agents",
    ),
    "eval": Command(
        "mean reward of a checkpoint on an env (optionally with other env arguments); prints JSON",
        "ospo_gym.cli.train:add_eval_options",
        "ospo_gym.cli.train:cmd_eval",
        example="ospo-gym eval runs/<run folder>/checkpoint --samples 16",
        extra="agents",
    ),
    "bench": Command(
        "head-to-head benchmark: agents x tasks x seeds with identical budgets; JSON, Markdown, PNG",
        "ospo_gym.cli.bench:add_options",
        "ospo_gym.cli.bench:cmd_bench",
        example="ospo-gym bench (the main job, about 4 min on 2 idle CPU cores); ospo-gym bench --preset width",
        extra="agents",
    ),
}
"""Every command, in the order ``ospo-gym --help`` lists them."""


def _load(dotted: str) -> Callable[..., Any]:
    """The function named ``"package.module:function"``, its module imported now."""
    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)


def _add_options_on_first_parse(parser: argparse.ArgumentParser, command: Command) -> None:
    """Give ``parser`` its command's options when it first parses — once the command was chosen — rather than
    when the CLI's parser is built. Arguments it does not know are reported by it, in one line."""
    parse_known_args = parser.parse_known_args
    ready = False

    def parse_with_options(
        args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        nonlocal ready
        if not ready:
            ready = True
            try:
                _load(command.options)(parser)
            except ImportError as err:
                if command.extra is None:
                    raise
                parser.error(
                    f"{one_line(err)} (this command needs the {command.extra} extra: "
                    f"pip install 'ospo-gym[{command.extra}]')"
                )
        namespace, extras = parse_known_args(args, namespace)
        if extras:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras

    parser.parse_known_args = parse_with_options  # type: ignore[method-assign]


def build_parser() -> argparse.ArgumentParser:
    """The ``ospo-gym`` parser: one subparser per command of :data:`COMMANDS`, none of their modules imported."""
    parser = OneLineErrorParser(prog="ospo-gym", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        description = f"{command.help}. Example: {command.example}" if command.example else command.help
        command_parser = sub.add_parser(name, help=command.help, description=description)
        # the body, by name; the parser, for a command that records how it was called (bench)
        command_parser.set_defaults(command_body=command.body, command_parser=command_parser)
        _add_options_on_first_parse(command_parser, command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ospo-gym`` with ``argv`` (default: the process's arguments); returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return _load(args.command_body)(args)
    except ValueError as err:  # UsageError, and bad values only the library could check (spans, ...)
        print(f"ospo-gym: error: {one_line(err)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ospo-gym ... | head` closed our stdout: stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not raise again
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by the signal
