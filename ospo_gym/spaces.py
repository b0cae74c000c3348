"""A text space for prompts and completions that accepts any Python string, and its shared-memory layout.

Gymnasium's ``AsyncVectorEnv`` passes observations back through shared memory by default. Its ``Text`` layout
stores each character as an index into the space's ``charset`` and cannot hold a character outside it (a prompt's
":" raised ``KeyError``), so :class:`UnicodeText` registers its own: one slot of ``max_length + 1`` int32 per
sub-env holding the length and then the Unicode code points. :class:`SharedTexts` reads the slots on access.
"""

from __future__ import annotations

import multiprocessing as mp
import string
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any, overload

import numpy as np
from gymnasium.spaces import Text
from gymnasium.vector.utils import create_shared_memory, read_from_shared_memory, write_to_shared_memory

# What ``sample()`` draws from: ASCII letters, digits, space and a few non-ASCII letters, so that random actions
# contain several words and exercise the es/jp code paths.
SAMPLE_CHARSET = string.ascii_lowercase + string.digits + "     " + "éñüアイ中"
# Code points go through UTF-32; "surrogatepass" keeps a lone surrogate (a valid ``str`` character) as it is.
_ENCODING = ("utf-32-le", "surrogatepass")
_CODE = np.dtype("<u4")


class UnicodeText(Text):
    """``gymnasium.spaces.Text`` whose ``contains`` accepts every ``str``: any length, any Unicode.

    ``max_length`` bounds what :meth:`sample` draws and how many characters a shared-memory slot of
    ``AsyncVectorEnv`` holds: an env's observation space has the length of its longest prompt. Generative-search
    envs accept arbitrary completions (non-ASCII locales, emoji, very long text — which the env truncates by a
    documented rule), so a membership test narrower than ``isinstance(x, str)`` would reject actions the env
    handles.
    """

    def __init__(
        self,
        max_length: int = 64,
        *,
        min_length: int = 0,
        charset: str = SAMPLE_CHARSET,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        super().__init__(max_length, min_length=min_length, charset=charset, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str)

    def __repr__(self) -> str:
        return f"UnicodeText(any str; samples {self.min_length}..{self.max_length} chars)"


class SharedTexts(Sequence[str]):
    """The observations of an ``AsyncVectorEnv`` over a :class:`UnicodeText` space, decoded from shared memory
    on access (so they follow every reset and step, as Gymnasium's shared arrays do).

    ``AsyncVectorEnv(copy=True)``, the default, hands out ``copy.deepcopy`` of this: a ``tuple`` of ``str``, the
    type the sync and native vector envs return.
    """

    def __init__(self, slots: np.ndarray) -> None:
        self._slots = slots  # (n, 1 + max_length) int32: length, then code points

    def __len__(self) -> int:
        return len(self._slots)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...

    def __getitem__(self, index: int | slice) -> str | tuple[str, ...]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(len(self))[index])
        slot = self._slots[index]
        length = int(slot[0])
        return slot[1 : 1 + length].astype(_CODE).tobytes().decode(*_ENCODING)

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    def __deepcopy__(self, memo: dict[int, Any]) -> tuple[str, ...]:
        return tuple(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (SharedTexts, tuple)) and tuple(self) == tuple(other)

    __hash__ = None  # a live view of shared memory: equal now, maybe not after the next step
    def __repr__(self) -> str:
        return f"SharedTexts({tuple(self)!r})"


def _slot_size(space: UnicodeText) -> int:
    return space.max_length + 1


@create_shared_memory.register(UnicodeText)
def _create_unicode_text_memory(space: UnicodeText, n: int = 1, ctx: ModuleType = mp) -> Any:
    return ctx.Array(np.dtype(np.int32).char, n * _slot_size(space))


@read_from_shared_memory.register(UnicodeText)
def _read_unicode_text_memory(space: UnicodeText, shared_memory: Any, n: int = 1) -> SharedTexts:
    return SharedTexts(np.frombuffer(shared_memory.get_obj(), dtype=np.int32).reshape(n, _slot_size(space)))


@write_to_shared_memory.register(UnicodeText)
def _write_unicode_text_memory(space: UnicodeText, index: int, value: str, shared_memory: Any) -> None:
    codes = np.frombuffer(value.encode(*_ENCODING), dtype=_CODE)
    if len(codes) > space.max_length:
        raise ValueError(
            f"an observation of {len(codes)} characters does not fit the shared memory of {space!r}, which holds "
            f"max_length={space.max_length}; give the env's observation_space a larger max_length, or pass "
            "vector_kwargs={'shared_memory': False} to gym.make_vec"
        )
    size = _slot_size(space)
    slot = np.frombuffer(shared_memory.get_obj(), dtype=np.int32)[index * size : (index + 1) * size]
    slot[0] = len(codes)
    slot[1 : 1 + len(codes)] = codes
