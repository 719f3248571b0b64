"""The busy answer /voice, /media and /readyz share: shutting down, or at MAX_CALLS."""

from __future__ import annotations

from typing import Any

import pytest

from service.calls.registry import Calls
from service.metrics import CALLS_ACTIVE
from service.web.readiness import Readiness, busy_reason
from tests.helpers.service import make_settings


@pytest.mark.parametrize(
    ("accepting", "started_calls", "waiting", "busy"),
    [
        (True, 0, 0, None),
        (True, 1, 0, None),
        (True, 2, 0, "callscribe is at MAX_CALLS (2)"),
        (True, 1, 3, None),  # sockets that have not started take no call's place
        (False, 0, 0, "shutting down"),
        (False, 2, 0, "shutting down"),  # shutting down says more than being full
    ],
)
def test_busy_reason(accepting: bool, started_calls: int, waiting: int, busy: str | None) -> None:
    calls = Calls(max_calls=2)
    calls.accepting = accepting
    fake_sessions: list[Any] = [object() for _ in range(started_calls + waiting)]
    for session in fake_sessions:
        calls.add(session)
    try:
        for session in fake_sessions[:started_calls]:
            calls.started(session)
        assert calls.waiting == waiting
        assert busy_reason(calls, make_settings(max_calls=2)) == busy
    finally:
        CALLS_ACTIVE.dec(len(fake_sessions))  # `add` counted them in the process-wide gauge


@pytest.mark.parametrize(
    ("checks", "ready"),
    [
        ({}, True),
        ({"calls": "ok", "database": "ok"}, True),
        ({"calls": "ok", "database": "unreachable (OSError)"}, False),
    ],
)
def test_ready_only_when_every_check_is_ok(checks: dict[str, str], ready: bool) -> None:
    assert Readiness(checks).ready is ready
