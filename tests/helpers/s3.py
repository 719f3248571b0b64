"""A real S3-compatible server for the spool's tests: moto's server mode on 127.0.0.1 (a port of its own),
which a test can stop (an outage: connections refused) and start again on the same port, its buckets kept, as
S3's are. Each test makes a bucket of its own; `s3_settings` are the settings that point the service at it.

moto takes any credentials unless told to check them (`check_credentials`, once the test made its bucket):
then only keys its IAM made pass, and any other is refused as AWS refuses it (InvalidAccessKeyId).
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import settings as moto_settings
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

ACCESS_KEY = "AKIACALLSCRIBETEST01"
SECRET_KEY = "callscribe-test-secret-never-logged"
REGION = "eu-west-1"


class OneServerHeader(MotoRequestHandler):
    """moto's request handler, sending one `Server` header where it sends two (the HTTP server's and moto's own).

    S3 sends one; aiohttp's parser refuses a response with two when asyncio's debug mode is on (as `.ci/run`
    runs the tests), which would fail every request of the service's S3 client against this stand-in.
    """

    def send_response(self, code: int, message: str | None = None) -> None:
        self._server_header_sent = False
        super().send_response(code, message)

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() == "server":
            if getattr(self, "_server_header_sent", False):
                return
            self._server_header_sent = True
        super().send_header(keyword, value)


class S3Server:
    """moto's S3 in a thread of the test process."""

    def __init__(self) -> None:
        self.port = 0
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        # The server's own lines (every request's headers, at DEBUG) are not the service's: keep them out of the
        # log the tests read, where a test looks for credentials the service must never write.
        for name in ("moto", "werkzeug"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # moto's own server (ThreadedMotoServer) with one change: a single Server header (`OneServerHeader`).
        app = DomainDispatcherApplication(create_backend_app)
        server = make_server("127.0.0.1", self.port, app, threaded=True, request_handler=OneServerHeader)
        self.port = server.server_port
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        self._server = server

    def stop(self) -> None:
        """An outage: the listening socket is closed, so connections are refused (the buckets are kept)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def client(self) -> Any:
        return boto3.client(
            "s3", endpoint_url=self.url, region_name=REGION, aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )  # fmt: skip

    def new_bucket(self) -> str:
        name = f"callscribe-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
        return name

    def keys(self, bucket: str) -> list[str]:
        """Every object's key in `bucket`, sorted."""
        answer = self.client().list_objects_v2(Bucket=bucket)
        return sorted(item["Key"] for item in answer.get("Contents", []))


@pytest.fixture
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server, stopped at the end."""
    server = S3Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def check_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on (until the test ends) moto checks every request's access key against its IAM, which knows
    none: every key is refused."""
    monkeypatch.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)


def s3_settings(server: S3Server, bucket: str, prefix: str = "spool") -> dict[str, str]:
    """SPOOL_URL and the rest, as a Heroku user sets them (as environment variable names)."""
    return {
        "SPOOL_URL": f"s3://{bucket}/{prefix}",
        "SPOOL_S3_ENDPOINT_URL": server.url,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": REGION,
    }
