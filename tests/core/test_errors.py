"""``ospo_gym.errors.one_line``: the one helper every layer uses to put an error (or a quoted value) on one line."""

from __future__ import annotations

from ospo_gym.errors import one_line


def test_wrapped_messages_become_one_line():
    assert one_line(RuntimeError("value cannot be converted\n  to type float\twithout overflow ")) == (
        "value cannot be converted to type float without overflow"
    )


def test_an_exception_without_a_message_gives_its_type():
    assert one_line(ValueError()) == "ValueError"
    assert one_line(OSError("  \n")) == "OSError"


def test_values_are_quoted_as_text_and_may_be_empty():
    assert one_line({"size": "a\nb"}) == "{'size': 'a\\nb'}"
    assert one_line("two\nlines") == "two lines"
    assert one_line("") == ""  # a value, not an error: no type name is made up
