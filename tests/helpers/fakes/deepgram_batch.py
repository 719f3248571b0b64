"""Test support: the fake Deepgram pre-recorded API (`POST /v1/listen`), text intelligence (`POST /v1/read`) and
`GET /v1/projects`, which is the stand-in's (`service/standin/rest.py`), so the tests and `python -m service
standin` cannot drift apart."""

from __future__ import annotations

from service.standin.rest import (
    PROJECTS_PATH,
    FakeDeepgramBatch,
    listen_response,
    read_response,
    silent_api,
    summary_for,
)

__all__ = ["PROJECTS_PATH", "FakeDeepgramBatch", "listen_response", "read_response", "silent_api", "summary_for"]
