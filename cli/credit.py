"""``ospo-gym credit``: the segment credit of one completion for one prompt of an env, estimated with sampled
coalitions through the env's oracle (optionally beside the exact Shapley values), printed and optionally drawn
(:mod:`ospo_gym.cli.credit_view`). For a multi-turn env (``ospo/ConvSearch-v0``) the episode's turns
(``--turn``, repeated) get the two-level Owen credit of ``ospo_turn``: turns as unions, their segments as players
(optionally beside the exact Owen values, with ``--env-arg exact_credit=True``)."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ospo_gym.cli import credit_view
from ospo_gym.cli.options import DeprecatedFlag, UsageError, parse_kwargs
from ospo_gym.credit import CREDIT_VARIANTS, sample_coalitions, segment_credit
from ospo_gym.credit.defaults import DEFAULT_MAX_COALITIONS, DEFAULT_W_MAX
from ospo_gym.credit.owen import two_level_coalitions, two_level_credit, union_sums
from ospo_gym.output_files import check_output_file, write_atomic
from ospo_gym.registration import ALL_ENV_IDS, ENV_IDS, MULTI_TURN_ENV_IDS


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default=ENV_IDS[0], help=f"env id (default {ENV_IDS[0]})")
    parser.add_argument("--env-arg", action="append", default=[], metavar="NAME=VALUE", help="constructor argument")
    parser.add_argument("--prompt-id", default=None, help="prompt id (default: the first)")
    parser.add_argument("--text", default=None, help="the completion to explain (single-turn envs)")
    parser.add_argument(
        "--turn", action="append", default=[], metavar="TEXT",
        help="one policy turn of the episode to explain, in order (multi-turn envs; repeat it)",
    )  # fmt: skip
    parser.add_argument("--w-max", type=int, default=DEFAULT_W_MAX, help="widest coalition window")
    parser.add_argument("--max-coalitions", type=int, default=DEFAULT_MAX_COALITIONS, help="coalition budget M")
    variant = dict(choices=CREDIT_VARIANTS, dest="credit_variant")  # the variants AgentConfig accepts: one tuple
    parser.add_argument(
        "--credit-variant", default="owen", help="variant of ospo_gym.credit.segment_credit (default owen)", **variant
    )
    parser.add_argument("--estimator", help=argparse.SUPPRESS, action=DeprecatedFlag, replacement="--credit-variant",
                        **variant)  # fmt: skip
    parser.add_argument("--exact", action="store_true", help="also print exact Shapley values")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--html", default=None, metavar="PATH", help="also write a self-contained HTML heat-map")
    parser.add_argument("--png", default=None, metavar="PATH", help="also write a PNG bar chart (needs matplotlib)")
    parser.add_argument(
        "--no-color", action="store_true", help="no ANSI colours (also when NO_COLOR is set or stdout is not a tty)"
    )


def cmd_credit(args: argparse.Namespace) -> int:
    import gymnasium as gym

    if args.env not in ALL_ENV_IDS:
        raise UsageError(f"unknown env {args.env!r}; known: {', '.join(ALL_ENV_IDS)}")
    multi_turn = args.env in MULTI_TURN_ENV_IDS
    if multi_turn and (args.text is not None or not args.turn):
        raise UsageError(f"{args.env} is multi-turn: give the episode's turns with --turn TEXT (repeated), not --text")
    if not multi_turn and (args.turn or args.text is None):
        raise UsageError(f"{args.env} is single-turn: give the completion with --text TEXT (--turn is for multi-turn envs)")
    if multi_turn and args.credit_variant != "owen":
        raise UsageError("multi-turn credit is the two-level Owen value; --credit-variant applies to single-turn envs")
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
    if multi_turn:
        return _credit_turns(args, env, prompt_id)
    text = args.text
    spans = env.oracle.segment(text)
    coalitions = sample_coalitions(len(spans), args.w_max, args.max_coalitions, rng=args.seed)
    values = env.oracle.values(prompt_id, text, spans, coalitions)
    credit = segment_credit(coalitions, values, len(spans), variant=args.credit_variant)
    exact = env.ground_truth_credit(prompt_id, text) if args.exact else None
    reward = float(env.rewards([prompt_id], [text])[0])
    print(f"prompt: {env.prompt(prompt_id)}")
    print(f"reward: {reward:.4f}   segments: {len(spans)}   coalitions: {len(coalitions)}")
    colour = credit_view.use_colour(sys.stdout, no_color=args.no_color)
    if len(spans):
        print(credit_view.credit_terminal(text, spans, credit, exact=exact, colour=colour))
    title = f"{args.env} · prompt {prompt_id}"
    note = f"prompt: {env.prompt(prompt_id)} | reward {reward:.4f} | {len(coalitions)} coalitions, {args.credit_variant}"
    _write_views(args, text, spans, credit, exact, title, note)
    return 0


def _write_views(args: argparse.Namespace, text: str, spans, credit, exact, title: str, note: str) -> None:
    """The ``--html`` and ``--png`` files of a credit view (a bad path or a missing matplotlib: one line)."""

    def write_html(path: str):
        return write_atomic(path, credit_view.credit_html(text, spans, credit, title=title, exact=exact, note=note))

    def write_png(path: str):
        return credit_view.save_credit_png(path, text, spans, credit, exact, title=title)

    for path, write in ((args.html, write_html), (args.png, write_png)):
        if path is None:
            continue
        try:
            print(f"wrote {write(path)}")
        except ImportError as err:
            raise UsageError(str(err)) from None
        except OSError as err:
            raise UsageError(f"cannot write {path}: {err.strerror or err}") from None


def _credit_turns(args: argparse.Namespace, env, prompt_id) -> int:
    """Two-level Owen credit of an episode's turns (unions) and their segments (players), one oracle call."""
    turns = list(args.turn)
    spans = env.oracle.segment_turns(turns)
    sizes = [len(s) for s in spans]
    coalitions = two_level_coalitions(sizes, args.w_max, args.max_coalitions, rng=args.seed) if sum(sizes) else []
    credit = two_level_credit(coalitions, env.oracle.values(prompt_id, turns, spans, coalitions), sizes) if coalitions else np.zeros(0)
    exact = None
    if args.exact:
        try:
            exact = env.ground_truth_credit(prompt_id, turns)
        except ValueError as err:
            raise UsageError(f"--exact: {err}") from None
    reward = float(env.replay_returns([prompt_id], [[(t, t) for t in turns]])[0])
    print(f"prompt: {env.prompt(prompt_id)}")
    print(f"return: {reward:.4f}   turns: {len(turns)}   segments: {sum(sizes)}   coalitions: {len(coalitions)}")
    colour = credit_view.use_colour(sys.stdout, no_color=args.no_color)
    per_turn = union_sums(credit, sizes) if len(credit) else np.zeros(len(turns))
    exact_turns = union_sums(exact, sizes) if exact is not None else None
    start = 0
    for t, (turn, turn_spans) in enumerate(zip(turns, spans, strict=True)):
        stop = start + len(turn_spans)
        line = f"turn {t + 1}: credit {per_turn[t]:+.4f}"
        print(line + (f"   exact {exact_turns[t]:+.4f}" if exact_turns is not None else ""))
        if turn_spans:
            part = None if exact is None else exact[start:stop]
            print(credit_view.credit_terminal(turn, turn_spans, credit[start:stop], exact=part, colour=colour))
        start = stop
    if sum(sizes):  # one view of the whole episode: the turns on their own lines
        text = "\n".join(turns)
        starts = np.cumsum([0] + [len(t) + 1 for t in turns[:-1]])
        flat = [(int(o + a), int(o + b)) for o, turn_spans in zip(starts, spans, strict=True) for a, b in turn_spans]
        title = f"{args.env} · prompt {prompt_id}"
        note = f"prompt: {env.prompt(prompt_id)} | return {reward:.4f} | {len(coalitions)} coalitions, two-level Owen"
        _write_views(args, text, flat, credit, exact, title, note)
    return 0
