"""`python -m service try` and `python -m service standin` when their port is taken: one line saying what to do,
exit 1, no traceback, and nothing left running; and what `try` hands the service (its environment)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.cli.try_it import Secrets, another_call, service_env
from tests.helpers.paths import ROOT


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield int(listener.getsockname()[1])


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
        [sys.executable, "-m", "service", *args], cwd=cwd, env={"PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_try_on_a_busy_service_port_says_so(taken_port: int, tmp_path: Path) -> None:
    done = run("try", "--port", str(taken_port), "--standin-port", "0", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith(f"try: the service's port {taken_port} is busy")
    assert "make try PORT=" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1


def test_try_on_a_busy_standin_port_says_so(taken_port: int, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = int(probe.getsockname()[1])
    done = run("try", "--port", str(free), "--standin-port", str(taken_port), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith(f"try: the Deepgram stand-in cannot listen on port {taken_port}")
    assert "--standin-port" in done.stderr
    assert "Traceback" not in done.stderr


def test_standin_on_a_busy_port_says_so(taken_port: int, tmp_path: Path) -> None:
    done = run("standin", "--port", str(taken_port), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == (f"standin: port {taken_port} is busy: stop what uses it, or pick another with --port\n")


def test_the_service_gets_the_runs_secrets_and_its_own_data_never_the_users(tmp_path: Path) -> None:
    """The run's secrets, database and spool override what the environment has; the stand-in's URL and a key only
    when there is a stand-in (with DEEPGRAM_API_KEY set, the user's Deepgram is used as it is)."""
    made = Secrets.generate()
    user = {"DATABASE_URL": "postgresql://prod/calls", "DEEPGRAM_API_KEY": "real", "PATH": "/bin"}
    with_standin = service_env(user, made, deepgram_url="http://127.0.0.1:5002", workdir=tmp_path)
    assert with_standin["DATABASE_URL"] == f"sqlite+aiosqlite:///{tmp_path / 'callscribe.sqlite3'}"
    assert with_standin["SPOOL_DIR"] == str(tmp_path / "spool")
    assert with_standin["DEEPGRAM_URL"] == "http://127.0.0.1:5002"
    assert with_standin["DEEPGRAM_API_KEY"] == made.deepgram_api_key
    assert with_standin["DASHBOARD_PASSWORD"] == made.dashboard_password
    assert len(made.dashboard_password) >= 12
    assert with_standin["PYTHONPATH"] == str(ROOT)
    real = service_env(user, made, deepgram_url=None, workdir=tmp_path)
    assert real["DEEPGRAM_API_KEY"] == "real"
    assert "DEEPGRAM_URL" not in real
    assert Secrets.generate() != made, "new secrets every run"
    line = another_call("http://127.0.0.1:5001", made, "http://127.0.0.1:5002")
    assert f"TWILIO_AUTH_TOKEN={made.twilio_auth_token} API_TOKEN={made.api_token}" in line
    assert "DEEPGRAM_URL=http://127.0.0.1:5002" in line
