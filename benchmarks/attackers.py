"""Harness process: N unauthenticated clients posting 15 MB forms to the service, for the whole run.

`python -m benchmarks.attackers --url http://127.0.0.1:PORT --count N --ready-file F --out F` runs N loops, each
POSTing an unsigned 15 MB `a=1&a=1&...` form (Content-Length, sent whole unless the server answers first) to
`/voice` and to `/login` in turn, as issue 19's outside probe did, until SIGTERM; then it writes the record: the
requests made, their statuses (0: the connection was reset before the answer could be read, as a server that
closes on a body it did not read may do), its own CPU. It runs on the harness core, so what the attack costs the
calls is the difference in their forward delays and in the service's CPU (the runner's `--attackers N` against
none).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import signal
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks.records import own_cpu_seconds, write_atomically

BODY_BYTES = 15_000_000  # under Quart's own 16 MB default, so the old service read and parsed all of it
PIECE = b"a=1&" * 16_384  # 64 KiB of the form at a time
PATHS = ("/voice", "/login")


async def attack(host: str, port: int, path: str) -> int:
    """One POST of the whole form; the status the server answered (0 when it answered nothing)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {BODY_BYTES}\r\n\r\n".encode()
        )
        answer = asyncio.ensure_future(reader.readline())
        with contextlib.suppress(OSError):  # the server closes the connection once it has answered
            for start in range(0, BODY_BYTES, len(PIECE)):
                if answer.done():
                    break
                writer.write(PIECE[: BODY_BYTES - start])  # exactly Content-Length, the last piece cut short
                await writer.drain()
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            status = (await asyncio.wait_for(answer, timeout=60)).split(b" ", 2)
            return int(status[1]) if len(status) > 1 and status[1].isdigit() else 0
        return 0
    finally:
        writer.close()


async def run(url: str, count: int, ready_file: Path, out: Path) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    statuses: collections.Counter[str] = collections.Counter()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async def loop(index: int) -> None:
        turn = index
        while not stop.is_set():
            path = PATHS[turn % len(PATHS)]
            statuses[f"{path} {await attack(host, port, path)}"] += 1
            turn += 1

    tasks = [asyncio.create_task(loop(n)) for n in range(count)]
    write_atomically(ready_file, str(count))
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    write_atomically(out, json.dumps({"cpu_s": own_cpu_seconds(), "statuses": dict(statuses)}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.attackers", description=__doc__)
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    asyncio.run(run(args.url, args.count, args.ready_file, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
