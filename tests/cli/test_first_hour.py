"""The command line's wrong turns a newcomer meets in the first hour, run as they run them (a real process, the
checkout's Makefile and Procfile): each answered in one line that says what to do, never a traceback."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.paths import ROOT
from tests.helpers.processes import web_command


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No callscribe setting but where its files go (the test's directory, never the checkout)."""
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'callscribe.sqlite3'}",
        "DB_JOURNAL_PATH": str(tmp_path / "journal.jsonl"),
        "SPOOL_DIR": str(tmp_path / "spool"),
        **extra,
    }


def run(argv: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`argv` to its end; its whole process group killed if it is still running after 60 s (a server that
    started serving instead of refusing must not outlive the test)."""
    process = subprocess.Popen(  # noqa: S603 - our own commands
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


@contextlib.contextmanager
def taken_port() -> Iterator[int]:
    """A port another process listens on, on every address, as a second `make run` would."""
    with socket.socket() as other:
        other.bind(("0.0.0.0", 0))  # noqa: S104 - as `serve` binds by default
        other.listen()
        yield int(other.getsockname()[1])


def test_the_procfile_web_line_on_a_taken_port_says_so_in_one_line_before_anything_else(tmp_path: Path) -> None:
    """`python -m service serve --port $PORT` with the port taken: exit 1, one line naming the port and what to
    do, and no start-up block saying callscribe is serving (it never was) and no traceback."""
    with taken_port() as port:
        done = run(["bash", "-c", f"exec {web_command()}"], cwd=ROOT, env=environment(tmp_path, PORT=str(port)))
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"cannot serve: another process is on port {port}. Stop it, or serve on another port: "
        f"make run PORT={port + 1} (or set PORT={port + 1})"
    ]
    assert done.stdout == "", "nothing announced: not service.ready, not the next steps"
    assert not (tmp_path / "callscribe.sqlite3").exists(), "nothing started: not even the migration"


def test_make_run_on_a_taken_port_prints_no_serving_banner_and_no_traceback(tmp_path: Path) -> None:
    """`make run PORT=N` with N taken: make's own lines and the one line, never "callscribe is serving"."""
    with taken_port() as port:
        done = run(["make", "--no-print-directory", "run", f"PORT={port}"], cwd=ROOT, env=environment(tmp_path))
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"cannot serve: another process is on port {port}." in done.stderr
    assert "serving, but" not in output
    assert "Now: make demo" not in output
    assert "Traceback" not in output
