"""``ospo-gym envs``: every registered environment id with its constructor arguments and their defaults."""

from __future__ import annotations

import argparse
import inspect
import json

from ospo_gym.registration import ALL_ENV_IDS


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--markdown", action="store_true", help="the env cards of docs/envs.md, generated from the env docstrings"
    )


def env_knobs(env_id: str) -> dict[str, str]:
    """The constructor arguments of ``env_id``'s class and the ``repr`` of their defaults (its entry point's
    class is imported, the env is not built)."""
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
    if args.markdown:
        from ospo_gym.envs.cards import env_cards_markdown

        print(env_cards_markdown(), end="")  # byte for byte what docs/envs.md holds
        return 0
    listing = {env_id: env_knobs(env_id) for env_id in ALL_ENV_IDS}
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    for env_id, knobs in listing.items():
        print(env_id)
        for name, default in knobs.items():
            print(f"    {name} = {default}")
    return 0
