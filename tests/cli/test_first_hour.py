"""The command line's wrong turns a newcomer meets in the first hour, run as they run them (a real process, the
checkout's Makefile and Procfile): each answered in one line that says what to do, never a traceback."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT
from tests.helpers.processes import web_command

GROUPS = {
    "calls": ("list", "show"),
    "spool": ("list", "retry"),
    "db": ("upgrade", "current", "purge"),
    "twilio": ("configure", "restore"),
}


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


@pytest.mark.parametrize("where", ["checkout", "elsewhere"])
def test_an_interpreter_without_the_dependencies_is_told_which_one_to_use(tmp_path: Path, where: str) -> None:
    """The README's `python -m service doctor` typed with a Python that lacks the project's packages (here the
    venv's own, with -S: no site-packages) says in one line to run `.venv/bin/python -m service doctor`."""
    cwd = ROOT if where == "checkout" else tmp_path
    env = environment(tmp_path, PYTHONPATH=str(ROOT))
    done = run([sys.executable, "-S", "-m", "service", "doctor", "--number", "+14155550100"], cwd=cwd, env=env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    [line] = done.stderr.splitlines()
    venv_python = ".venv/bin/python" if where == "checkout" else str(ROOT / ".venv" / "bin" / "python")
    assert f"`{venv_python} -m service doctor --number +14155550100`" in line
    assert "make setup" in line
    assert "No module named" not in line
    assert "is missing callscribe's packages (sqlalchemy" in line


def test_the_readme_gives_every_command_with_the_python_that_runs_it() -> None:
    """A newcomer copies the README's commands: none is a bare `python -m service COMMAND` (outside the venv that
    is the system's Python, without the packages); each names `.venv/bin/python`, or `heroku run python`."""
    readme = (ROOT / "README.md").read_text()
    assert re.findall(r"`python -m service [a-z]", readme) == []
    assert "`.venv/bin/python -m service doctor --number +1...`" in readme


@pytest.mark.parametrize("group", GROUPS)
def test_a_command_group_alone_lists_its_commands(tmp_path: Path, group: str) -> None:
    """`python -m service calls` (or spool, db, twilio) alone: its commands' help, not "required: calls_command"."""
    done = run([sys.executable, "-m", "service", group], cwd=ROOT, env=environment(tmp_path))
    assert done.returncode == 2
    assert f"{group}_command" not in done.stderr
    assert done.stderr.startswith(f"usage: python -m service {group} ")
    for command in GROUPS[group]:
        assert f"\n    {command} " in done.stderr, done.stderr


def test_the_command_alone_lists_every_command(tmp_path: Path) -> None:
    """`python -m service` alone: every command with its one-line help."""
    done = run([sys.executable, "-m", "service"], cwd=ROOT, env=environment(tmp_path))
    assert done.returncode == 2
    assert "required: command" not in done.stderr
    for command in ("serve", "demo", "doctor", *GROUPS):
        assert f"\n    {command} " in done.stderr, done.stderr


def test_a_command_of_a_group_still_runs_its_own_handler(tmp_path: Path) -> None:
    """The group's help is only for the group alone: `spool list` lists the spool."""
    done = run([sys.executable, "-m", "service", "spool", "list"], cwd=ROOT, env=environment(tmp_path))
    assert (done.returncode, done.stdout) == (0, "spool is empty\n")
