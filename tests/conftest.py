"""Shared fixtures: a clean environment, the fake Deepgram, the service's log lines, a service factory.

Only fixtures live here; what they are built from (and what tests import) is in tests/helpers/.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import structlog

from service import logs, refusals
from service.settings import Settings
from tests.helpers.credentials import DEEPGRAM_FALLBACK_KEY, DEEPGRAM_KEY
from tests.helpers.fakes.deepgram_server import FakeDeepgram
from tests.helpers.logs import LogLines
from tests.helpers.service import RunningService, running_service


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Settings come only from what each test passes: no stray variables, no .env from the checkout."""
    for name in list(os.environ):
        if name.upper() in {field.upper() for field in Settings.model_fields}:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _fresh_refusal_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no refusals counted: the summary is the process's, and the tests share one process."""
    monkeypatch.setattr(refusals, "summary", refusals.RefusalSummary())


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    """Every log line the service writes, as parsed JSON (LOG_FORMAT=json, the real renderer)."""
    buffer = io.StringIO()
    logs.configure("DEBUG", "json", stream=buffer)
    yield LogLines(buffer)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    logging.getLogger().handlers.clear()


@pytest.fixture
async def deepgram() -> AsyncIterator[FakeDeepgram]:
    async with FakeDeepgram(api_key=DEEPGRAM_KEY) as fake:
        yield fake


@pytest.fixture
async def deepgram_fallback() -> AsyncIterator[FakeDeepgram]:
    """A second fake Deepgram, with a key of its own: DEEPGRAM_FALLBACK_URL and DEEPGRAM_FALLBACK_API_KEY."""
    async with FakeDeepgram(api_key=DEEPGRAM_FALLBACK_KEY) as fake:
        yield fake


@pytest.fixture
def service_factory() -> Callable[[Settings], contextlib.AbstractAsyncContextManager[RunningService]]:
    return running_service
