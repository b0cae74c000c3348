"""Running the ``ospo-gym`` entry point in-process, for tests of several packages."""

from __future__ import annotations

from ospo_gym.cli import main


def run_main(args: list[str], capsys) -> tuple[int, str, str]:
    """``main(args)`` in-process as ``(exit status, stdout, stderr)``; argparse's own errors arrive as SystemExit."""
    try:
        code = main(args)
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err
