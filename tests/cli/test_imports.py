"""The command line loads only what a command needs: `db upgrade` (the release phase) loads no SDK and no app."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers.paths import ROOT

# The coverage arithmetic is pure (no event loop, no SDK): the database's read side sums a call's coverage with it.
PURE = ("service.calls", "service.calls.coverage")
HEAVY = ("deepgram", "quart", "hypercorn", "httpx", "websockets", "prometheus_client", "service.web", "service.calls")

PROBE = """
import json, sys
from service.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted({name for name in sys.modules if name.startswith(%r) and name not in %r})))
"""


def loaded_by(*argv: str, tmp_path) -> list[str]:
    """The heavy modules in sys.modules after `python -m service ARGV` has run, in a fresh interpreter."""
    probe = PROBE % (HEAVY, PURE)
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cli.sqlite3"}
    process = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", probe, *argv], cwd=ROOT, env=env, capture_output=True, timeout=60, check=True
    )
    return json.loads(process.stdout.decode().splitlines()[-1])


def test_db_upgrade_loads_no_sdk_no_web_framework_and_no_call_code(tmp_path) -> None:
    """The Procfile's release phase runs `db upgrade` on every deploy: it needs the database and nothing else."""
    assert loaded_by("db", "upgrade", tmp_path=tmp_path) == []


def test_listing_commands_load_no_sdk_and_no_web_framework(tmp_path) -> None:
    """`calls list` and `spool list` read the database or the spool directory only."""
    assert loaded_by("calls", "list", tmp_path=tmp_path) == []
    assert loaded_by("spool", "list", tmp_path=tmp_path) == []


OPTIONAL = ("alembic", "aiohttp", "aiobotocore", "botocore", "twilio.rest", "twilio.http", "redis")

APP_PROBE = """
import json, sys
from service.web.asgi import create
create()
print(json.dumps(sorted({name.split(".")[0] if not name.startswith("twilio.") else ".".join(name.split(".")[:2])
                         for name in sys.modules if name.startswith(%r)})))
"""


def loaded_by_the_app(tmp_path, **env: str) -> list[str]:
    """The optional packages in sys.modules once the served app is built (as `serve` builds it) with `env`."""
    base = {"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/app.sqlite3",
            "SPOOL_DIR": str(tmp_path / "spool"), "DB_JOURNAL_PATH": str(tmp_path / "journal")}  # fmt: skip
    process = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", APP_PROBE % (OPTIONAL,)], cwd=ROOT, env={**base, **env}, capture_output=True,
        timeout=60, check=True,
    )  # fmt: skip
    return json.loads(process.stdout.decode().splitlines()[-1])


def test_the_app_loads_the_rest_client_and_the_s3_client_only_where_they_are_used(tmp_path) -> None:
    """Hand-over (twilio's REST client, aiohttp) and an S3 spool (aiobotocore) are a quarter of a second of CPU
    each at start-up: a process configured for neither does not load them, nor Alembic or redis."""
    assert loaded_by_the_app(tmp_path) == []
    account = {"TWILIO_ACCOUNT_SID": "AC" + "1" * 32, "TWILIO_AUTH_TOKEN": "t0ken"}
    assert loaded_by_the_app(tmp_path, **account) == ["aiohttp", "aiohttp_retry", "twilio.http", "twilio.rest"]
    s3 = {"SPOOL_URL": "s3://bucket/spool", "AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret"}
    assert {"aiobotocore", "botocore"} <= set(loaded_by_the_app(tmp_path, **s3))
