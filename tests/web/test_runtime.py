"""The runtime's background tasks: kept referenced while they run, cancelled together at shutdown."""

from __future__ import annotations

import asyncio

from service.web.runtime import BackgroundTasks


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
