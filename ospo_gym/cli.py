"""The ``ospo-gym`` command line: ``envs`` lists the environments, ``credit`` shows segment credit for a text,
``data`` downloads or checks the real datasets, ``cache`` lists and cleans the on-disk caches, ``train`` /
``eval`` / ``bench`` train, score and compare agents.

Errors in what the user typed exit with status 2 and a one-line message, never a traceback.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import typing
from collections.abc import Sequence

from ospo_gym.cache_cli import add_cache_command
from ospo_gym.output_files import check_output_file, check_output_folder
from ospo_gym.registration import ENV_IDS
from ospo_gym.train_cli import add_agent_commands, exit_usage_error, parse_kwargs


class UsageError(Exception):
    """A problem with the user's input: reported in one line, exit status 2."""


def _env_knobs(env_id: str) -> dict[str, str]:
    import gymnasium as gym

    spec = gym.spec(env_id)
    module_name, class_name = spec.entry_point.split(":")
    env_class = getattr(__import__(module_name, fromlist=[class_name]), class_name)
    params = inspect.signature(env_class.__init__).parameters
    return {
        name: repr(p.default)
        for name, p in params.items()
        if name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD
    }


def cmd_envs(args: argparse.Namespace) -> int:
    listing = {env_id: _env_knobs(env_id) for env_id in ENV_IDS}
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    for env_id, knobs in listing.items():
        print(env_id)
        for name, default in knobs.items():
            print(f"    {name} = {default}")
    return 0


def cmd_credit(args: argparse.Namespace) -> int:
    import gymnasium as gym

    from ospo_gym import credit_view
    from ospo_gym.credit import owen_estimate, sample_coalitions

    if args.env not in ENV_IDS:
        raise UsageError(f"unknown env {args.env!r}; known: {', '.join(ENV_IDS)}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    for flag, path in (("--html", args.html), ("--png", args.png)):
        if path is not None:  # before the credit is computed: a bad path is reported at once
            check_output_file(path, what=flag)
    env_kwargs = parse_kwargs(args.env_arg)
    try:
        env = gym.make(args.env, **env_kwargs).unwrapped
    except (TypeError, ValueError) as err:
        raise UsageError(f"cannot build {args.env}: {err}") from None
    prompt_id = env.prompt_ids[0] if args.prompt_id is None else args.prompt_id
    if prompt_id not in env.prompt_ids:  # ids typed on a command line arrive as strings
        matches = [p for p in env.prompt_ids if str(p) == str(prompt_id)]
        if not matches:
            raise UsageError(f"unknown prompt id {prompt_id!r}; e.g. {env.prompt_ids[:5]}")
        prompt_id = matches[0]
    text = args.text
    spans = env.oracle.segment(text)
    coalitions = sample_coalitions(len(spans), args.w_max, args.max_coalitions, rng=args.seed)
    values = env.oracle.values(prompt_id, text, spans, coalitions)
    credit = owen_estimate(coalitions, values, len(spans), estimator=args.estimator)
    exact = env.ground_truth_credit(prompt_id, text) if args.exact else None
    reward = float(env.rewards([prompt_id], [text])[0])
    print(f"prompt: {env.prompt(prompt_id)}")
    print(f"reward: {reward:.4f}   segments: {len(spans)}   coalitions: {len(coalitions)}")
    colour = credit_view.use_colour(sys.stdout, no_color=args.no_color)
    if len(spans):
        print(credit_view.credit_terminal(text, spans, credit, exact=exact, colour=colour))
    title = f"{args.env} · prompt {prompt_id}"
    note = f"prompt: {env.prompt(prompt_id)} | reward {reward:.4f} | {len(coalitions)} coalitions, {args.estimator}"

    def write_html(path: str):
        page = credit_view.credit_html(text, spans, credit, title=title, exact=exact, note=note)
        return credit_view.write_atomic(path, page)

    def write_png(path: str):
        return credit_view.save_credit_png(path, text, spans, credit, exact, title=title)

    writers = [(args.html, write_html), (args.png, write_png)]
    for path, write in writers:
        if path is None:
            continue
        try:
            print(f"wrote {write(path)}")
        except ImportError as err:
            raise UsageError(str(err)) from None
        except OSError as err:
            raise UsageError(f"cannot write {path}: {err.strerror or err}") from None
    return 0


def cmd_data_esci(args: argparse.Namespace) -> int:
    from ospo_gym.data.download import ESCI_URL_BASE, download_esci
    from ospo_gym.data.paths import data_root

    dest = check_output_folder(args.dest, what="--dest") if args.dest else data_root()[0] / "esci"
    url_base = args.url_base or ESCI_URL_BASE
    try:
        paths = download_esci(dest, url_base=url_base, force=args.force, progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"ospo-gym: interrupted; rerun the same command to resume (partial files in {dest})", file=sys.stderr)
        return 130
    for path in paths:
        print(f"ok  {path}")
    hint = f'data_dir="{dest}"' if args.dest else "no data_dir needed (the default location)"
    print(f'Use it: gym.make("ospo/ESCI-v0", ...) with {hint}.')
    return 0


def cmd_data_hm(args: argparse.Namespace) -> int:
    from ospo_gym.data.hm import KAGGLE_STEPS, verify_hm
    from ospo_gym.data.paths import data_root

    if args.verify is None:
        print(KAGGLE_STEPS.replace("DEST", str(data_root()[0] / "hm")))
        return 0
    summary = verify_hm(args.verify)
    print(f"ok  {summary['folder']}")
    print(
        f"    {summary['articles']} articles, {summary['customers']} customers, {summary['transactions']} "
        f"transactions from {summary['first_day']} to {summary['last_day']}"
    )
    return 0


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse with errors in one line (the error and a pointer to ``--help``, no usage block); its subparsers
    are of this class too (``add_subparsers`` uses the parent's class)."""

    def error(self, message: str) -> typing.NoReturn:
        exit_usage_error(self, message)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="ospo-gym", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    envs = sub.add_parser("envs", help="list environment ids and their constructor arguments")
    envs.add_argument("--json", action="store_true", help="machine-readable output")
    envs.set_defaults(func=cmd_envs)
    credit = sub.add_parser("credit", help="segment credit of a text for one prompt")
    credit.add_argument("--env", default=ENV_IDS[0], help=f"env id (default {ENV_IDS[0]})")
    credit.add_argument("--env-arg", action="append", default=[], metavar="NAME=VALUE", help="constructor argument")
    credit.add_argument("--prompt-id", default=None, help="prompt id (default: the first)")
    credit.add_argument("--text", required=True, help="the completion to explain")
    credit.add_argument("--w-max", type=int, default=8, help="widest coalition window")
    credit.add_argument("--max-coalitions", type=int, default=96, help="coalition budget M")
    credit.add_argument("--estimator", choices=["owen", "released"], default="owen")
    credit.add_argument("--exact", action="store_true", help="also print exact Shapley values")
    credit.add_argument("--seed", type=int, default=0)
    credit.add_argument("--html", default=None, metavar="PATH", help="also write a self-contained HTML heat-map")
    credit.add_argument("--png", default=None, metavar="PATH", help="also write a PNG bar chart (needs matplotlib)")
    credit.add_argument(
        "--no-color", action="store_true", help="no ANSI colours (also when NO_COLOR is set or stdout is not a tty)"
    )
    credit.set_defaults(func=cmd_credit)
    data = sub.add_parser("data", help="download (ESCI) or check (H&M) the real datasets")
    data_sub = data.add_subparsers(dest="dataset", required=True)
    esci = data_sub.add_parser("esci", help="download the two ESCI parquet files (resumable, checksum-verified)")
    esci.add_argument("--dest", default=None, help="target folder (default: <$OSPO_GYM_DATA or ~/.cache/ospo-gym>/esci)")
    esci.add_argument(
        "--url-base",
        default=None,
        help="folder URL holding the files (default: the amazon-science/esci-data repository on GitHub)",
    )
    esci.add_argument("--force", action="store_true", help="download again even if verified files are there")
    esci.add_argument("--quiet", action="store_true", help="no progress bar")
    esci.set_defaults(func=cmd_data_esci)
    hm = data_sub.add_parser("hm", help="print the Kaggle download steps for H&M, or check downloaded files")
    hm.add_argument("--verify", default=None, metavar="DIR", help="check the three CSV files in DIR")
    hm.set_defaults(func=cmd_data_hm)
    add_cache_command(sub)  # cache dir|info|list|remove|purge (ospo_gym.cache_cli)
    add_agent_commands(sub)  # train, eval, bench (ospo_gym.train_cli; torch only when one of them runs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, ValueError) as err:  # ValueError: bad values only the library could check (spans, ...)
        print(f"ospo-gym: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ospo-gym ... | head` closed our stdout: stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not raise again
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by the signal


def _one_line(err: BaseException) -> str:
    """An error message on one line: library messages may wrap (e.g. torch's)."""
    return " ".join(str(err).split("\n")).strip()


if __name__ == "__main__":
    sys.exit(main())
