"""Redis for the live feed's tests: the server CALLSCRIBE_TEST_REDIS_URL names (`.ci/run` starts one with
`.ci/redis`), a stream key of each test's own on it, and a private server a test may stop and start again.

Without that variable the Redis cases skip, unless CI is set: then they fail, so CI cannot skip them silently.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT

REDIS_URL_VARIABLE = "CALLSCRIBE_TEST_REDIS_URL"


def redis_server_url() -> str:
    url = os.environ.get(REDIS_URL_VARIABLE, "")
    if url:
        return url
    if os.environ.get("CI", "").lower() not in {"", "0", "false", "no"}:
        pytest.fail(f"{REDIS_URL_VARIABLE} is not set: CI must run the Redis tests (see .ci/run)")
    pytest.skip(f"{REDIS_URL_VARIABLE} is not set: no Redis server to test against")


def stream_key() -> str:
    """A stream of this test's own on the shared server."""
    return f"callscribe-test:{secrets.token_hex(8)}"


class PrivateRedis:
    """A redis-server of one test's own (`.ci/redis`), which it can stop and start again on the same port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.url = ""

    async def start(self) -> str:
        port = self.url.rsplit(":", 1)[1].split("/")[0] if self.url else ""
        self.url = await _ci_redis("start", str(self.directory), *([port] if port else []))
        return self.url

    async def stop(self) -> None:
        await _ci_redis("stop", str(self.directory))


async def _ci_redis(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        str(ROOT / ".ci" / "redis"), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode().strip()
