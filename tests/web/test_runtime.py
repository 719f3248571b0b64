"""The runtime: its background tasks, kept referenced while they run and cancelled together at shutdown, and
the start-up line."""

from __future__ import annotations

import asyncio

from service.web.runtime import BackgroundTasks
from tests.helpers.logs import LogLines
from tests.helpers.service import make_settings, running_service


async def test_a_started_task_runs_to_its_end() -> None:
    tasks = BackgroundTasks()
    finished = asyncio.Event()

    async def work() -> None:
        await asyncio.sleep(0.01)
        finished.set()

    tasks.start(work())
    await asyncio.wait_for(finished.wait(), timeout=2)


async def test_cancel_all_stops_what_still_runs_and_waits_for_it() -> None:
    tasks = BackgroundTasks()
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def quick() -> None:
        return None

    tasks.start(forever())
    tasks.start(quick())
    await asyncio.sleep(0)
    await tasks.cancel_all()
    assert cancelled.is_set()


async def test_the_ready_line_shows_deepgram_url_without_its_credentials(log_lines: LogLines) -> None:
    """service.ready names DEEPGRAM_URL's host, with `***` where its user and password were."""
    settings = make_settings(deepgram_url="http://dg-user:dg-pass-9b2e@127.0.0.1:9")
    async with running_service(settings):
        ready = await log_lines.wait_for("service.ready")
    assert ready["deepgram_url"] == "http://***@127.0.0.1:9"
    assert "deepgram_fallback_url" not in ready  # none set: nothing to show
    assert "dg-pass-9b2e" not in log_lines.text()
    assert "dg-user" not in log_lines.text()


async def test_the_ready_line_shows_the_fallback_url_without_its_credentials(log_lines: LogLines) -> None:
    """DEEPGRAM_FALLBACK_URL (a self-hosted Deepgram behind basic auth, say) is shown like DEEPGRAM_URL."""
    settings = make_settings(deepgram_fallback_url="https://eu-user:eu-pass-41c7@dg.example.eu/base")
    async with running_service(settings):
        ready = await log_lines.wait_for("service.ready")
    assert ready["deepgram_fallback_url"] == "https://***@dg.example.eu/base"
    for secret in ("eu-pass-41c7", "eu-user"):
        assert secret not in log_lines.text()
