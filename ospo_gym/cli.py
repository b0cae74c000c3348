"""The ``ospo-gym`` command line: ``envs`` lists the environments, ``credit`` shows segment credit for a text.

Errors in what the user typed exit with status 2 and a one-line message, never a traceback.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Sequence

import numpy as np

from ospo_gym.registration import ENV_IDS


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


def _parse_kwargs(pairs: Sequence[str]) -> dict[str, object]:
    kwargs: dict[str, object] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"--env-arg expects NAME=VALUE, got {pair!r}")
        name, raw = pair.split("=", 1)
        try:
            kwargs[name] = json.loads(raw)
        except json.JSONDecodeError:
            kwargs[name] = raw
    return kwargs


def cmd_credit(args: argparse.Namespace) -> int:
    import gymnasium as gym

    from ospo_gym.credit import owen_estimate, sample_coalitions

    if args.env not in ENV_IDS:
        raise UsageError(f"unknown env {args.env!r}; known: {', '.join(ENV_IDS)}")
    try:
        env = gym.make(args.env, **_parse_kwargs(args.env_arg)).unwrapped
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
    print(f"prompt: {env.prompt(prompt_id)}")
    print(f"reward: {float(env.rewards([prompt_id], [text])[0]):.4f}   segments: {len(spans)}   coalitions: {len(coalitions)}")
    scale = max(float(np.abs(credit).max()) if len(credit) else 0.0, 1e-12)
    for j, (start, end) in enumerate(spans):
        bar = ("+" if credit[j] >= 0 else "-") * int(round(10 * abs(credit[j]) / scale))
        extra = f"  exact {exact[j]:+.4f}" if exact is not None else ""
        print(f"  {credit[j]:+.4f}{extra}  {bar:<10}  {text[start:end]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ospo-gym", description=__doc__)
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
    credit.set_defaults(func=cmd_credit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as err:
        print(f"ospo-gym: error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # bad values that only the library could check (spans, sizes, ...)
        print(f"ospo-gym: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
