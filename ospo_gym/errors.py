"""Error text shared by every layer: the core, the agents and the command line report errors in one line."""

from __future__ import annotations


def one_line(value: object) -> str:
    """``str(value)`` on one line: every run of whitespace (newlines included) becomes one space.

    For a library's error message that wraps (torch's, PyYAML's) or a value quoted in a message. An exception
    without a message gives its type's name, so that a report never ends in an empty reason.
    """
    text = " ".join(str(value).split())
    if not text and isinstance(value, BaseException):
        return type(value).__name__
    return text
