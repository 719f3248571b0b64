"""The busy answer /voice, /media and /readyz share: shutting down, or at MAX_CALLS."""

from __future__ import annotations

from typing import Any

import pytest

from service.calls.registry import Calls
from service.web.readiness import Readiness, busy_reason
from tests.helpers.service import make_settings


@pytest.mark.parametrize(
    ("accepting", "open_calls", "busy"),
    [
        (True, 0, None),
        (True, 1, None),
        (True, 2, "callscribe is at MAX_CALLS (2)"),
        (False, 0, "shutting down"),
        (False, 2, "shutting down"),  # shutting down says more than being full
    ],
)
def test_busy_reason(accepting: bool, open_calls: int, busy: str | None) -> None:
    calls = Calls(max_calls=2)
    calls.accepting = accepting
    fake_sessions: set[Any] = {object() for _ in range(open_calls)}
    calls.sessions = fake_sessions
    assert busy_reason(calls, make_settings(max_calls=2)) == busy


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
