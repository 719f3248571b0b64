"""`eventually`: it returns as soon as the condition holds, and otherwise fails saying what it last saw."""

from __future__ import annotations

import pytest

from tests.helpers.waiting import eventually


async def test_the_first_truthy_value_is_returned() -> None:
    values = iter([None, [], 0, ["ready"], ["later"]])
    assert await eventually(lambda: next(values), interval=0) == ["ready"]


async def test_an_async_condition_is_awaited() -> None:
    checks: list[int] = []

    async def third_time() -> int | None:
        checks.append(1)
        return len(checks) if len(checks) == 3 else None

    assert await eventually(third_time, interval=0) == 3


async def test_an_assertion_counts_as_not_yet() -> None:
    checks: list[int] = []

    def second_time() -> bool:
        checks.append(1)
        assert len(checks) == 2, "not yet"
        return True

    assert await eventually(second_time, interval=0) is True


async def test_a_timeout_fails_with_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"not true within 0.05 s; last: \[\]"):
        await eventually(list, timeout=0.05)


async def test_a_timeout_fails_with_the_last_assertion_as_its_cause() -> None:
    def never() -> bool:
        raise AssertionError("still 3 rows")

    with pytest.raises(AssertionError, match="still 3 rows") as failure:
        await eventually(never, timeout=0.05)
    assert isinstance(failure.value.__cause__, AssertionError)


async def test_the_conditions_own_timeout_error_is_not_taken_for_ours() -> None:
    def broken() -> bool:
        raise TimeoutError("the condition's own")

    with pytest.raises(TimeoutError, match="the condition's own"):
        await eventually(broken, timeout=5)
