"""Waiting in tests: re-check a condition until it holds, instead of sleeping a fixed time and hoping.

A fixed sleep is either too short on a loaded machine (a flaky test) or longer than needed (a slow one);
`eventually` returns as soon as the condition holds and, when it never does, fails with what it last saw.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")


# The value returned is truthy, so never None: a condition typed `X | None` gives an X.
@overload
async def eventually(
    condition: Callable[[], Awaitable[T | None]], *, timeout: float = ..., interval: float = ...
) -> T: ...


@overload
async def eventually(condition: Callable[[], T | None], *, timeout: float = ..., interval: float = ...) -> T: ...


async def eventually(condition: Callable[[], object], *, timeout: float = 10.0, interval: float = 0.02) -> object:
    """The first truthy value of `condition()` (awaited if it is a coroutine), re-checked every `interval` s.

    An AssertionError from `condition` counts as "not yet". After `timeout` s this fails with an AssertionError
    that shows the last value, chained to the last assertion, so a broken service says what it was doing.
    """
    last: object = "nothing: the first check did not finish"
    scope = asyncio.timeout(timeout)
    try:
        async with scope:
            while True:
                try:
                    value = condition()
                    if inspect.isawaitable(value):
                        value = await value
                except AssertionError as error:
                    last = error
                else:
                    if value:
                        return value
                    last = value
                await asyncio.sleep(interval)
    except TimeoutError:
        if not scope.expired():
            raise  # the condition's own TimeoutError, not ours
        cause = last if isinstance(last, AssertionError) else None
        raise AssertionError(f"not true within {timeout} s; last: {last!r}") from cause
