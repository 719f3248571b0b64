"""Harness process: N clients of the service's live feed (`GET /api/live`), open for the whole run.

`python -m benchmarks.subscribers --url http://127.0.0.1:PORT --count N --token API_TOKEN --ready-file F --out F`
opens N Server-Sent Events streams, writes the ready file once every one of them is open, then reads them all
(counting events, parsing nothing else) until SIGTERM, when it writes the record: events per subscriber, its own
CPU. It runs on the harness core, so what the service spends on N open pages is the difference in the service's
CPU (the runner's `--subscribers N` against none).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path

import httpx

from benchmarks.records import own_cpu_seconds, write_atomically


class Feeds:
    """N open feeds and the events each has read."""

    def __init__(self, url: str, token: str, count: int) -> None:
        self.url, self.token, self.count = url, token, count
        self.events = [0] * count
        self.open = 0
        self.all_open = asyncio.Event()

    async def read(self, client: httpx.AsyncClient, index: int) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with client.stream("GET", f"{self.url}/api/live", headers=headers) as response:
            response.raise_for_status()
            self.open += 1
            if self.open == self.count:
                self.all_open.set()
            async for line in response.aiter_lines():
                if line.startswith("id: "):
                    self.events[index] += 1


async def run(url: str, count: int, token: str, ready_file: Path, out: Path) -> None:
    feeds, stop = Feeds(url, token, count), asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    limits = httpx.Limits(max_connections=count + 1, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None), limits=limits) as client:
        tasks = [asyncio.create_task(feeds.read(client, n)) for n in range(count)]
        await feeds.all_open.wait()
        write_atomically(ready_file, str(count))
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    write_atomically(out, json.dumps({"cpu_s": own_cpu_seconds(), "events": feeds.events}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.subscribers", description=__doc__)
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--token", required=True, help="the service's API_TOKEN")
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    asyncio.run(run(args.url, args.count, args.token, args.ready_file, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
