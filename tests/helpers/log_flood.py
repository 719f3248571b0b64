"""One worker's share of a busy minute's log, as a process: `python -m tests.helpers.log_flood NAME LINES`.

Configures the log as the service does (JSON to stdout), waits for a byte on stdin (so every worker starts
writing at once), then logs LINES transcripts of 40 calls, each text starting with `NAME-<n>`; every 97th is
long (6 or 12 KiB), the rest a sentence or two, as Deepgram's results are.
"""

from __future__ import annotations

import sys

from service import logs
from service.calls.observers import log_transcript
from service.calls.transcript import Transcript

SENTENCE = "thanks for calling the billing line, how can I help you with your account today"
LONG_EVERY = 97


def text_of(name: str, n: int) -> str:
    words = SENTENCE.split()
    # Every LONG_EVERY-th over PIPE_BUF, and every other one of those over a buffered stdout's 8 KiB too.
    long_count = 1000 if n % (2 * LONG_EVERY) else 2000
    count = long_count if n % LONG_EVERY == 0 else 4 + n % 12
    return " ".join([f"{name}-{n}", *(words[i % len(words)] for i in range(count))])


def main(name: str, lines: int) -> None:
    logs.configure("INFO", "json")
    sys.stdin.read(1)
    for n in range(lines):
        log_transcript(
            Transcript(
                call_sid=f"CA{n % 40:032d}",
                stream_sid=f"MZ{n % 40:032d}",
                track=("inbound", "outbound")[n % 2],
                is_final=n % 3 == 0,
                speech_final=n % 3 == 0,
                from_finalize=False,
                text=text_of(name, n),
                start=n * 0.3,
                end=n * 0.3 + 1.2,
                confidence=0.97,
                words=(),
                request_id="req-1",
            )
        )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
