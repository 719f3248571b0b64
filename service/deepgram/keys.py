"""Whether Deepgram takes an API key, and whether it is Deepgram at all (layer: deepgram, adapter): one cheap
request each.

`GET {REST base}/v1/projects` with `Authorization: Token <key>` lists the key's projects: Deepgram answers 200
for a key it knows and 401 (or 403) for one it does not, and the request costs nothing. Plain httpx rather
than deepgram-sdk: the answer wanted is the status alone, and a short timeout must bound the whole request.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

PROJECTS_PATH = "/v1/projects"
DEEPGRAM_CLOUD = (
    "https://api.deepgram.com"  # DEEPGRAM_URL's default (as a REST base): Deepgram itself, never the stand-in
)
# The header every REST answer of the Deepgram stand-in carries (`service/standin/server.py`, which may not import
# this module: tests/standin/test_server.py checks the two agree), its value what its words are.
STANDIN_HEADER = "callscribe-standin"


@dataclass(frozen=True, slots=True)
class KeyAnswer:
    """Deepgram's status for the key (0 when nothing answered), and why nothing did."""

    status: int
    failure: str = ""  # the error's type when Deepgram could not be reached

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300

    @property
    def refused(self) -> bool:
        return self.status in {401, 403}


def ask_about_key(rest_url: str, api_key: str, *, timeout_s: float = 5.0) -> KeyAnswer:
    """Deepgram's answer to the key, through `rest_url` (DEEPGRAM_URL's REST base)."""
    try:
        response = httpx.get(
            f"{rest_url.rstrip('/')}{PROJECTS_PATH}",
            headers={"Authorization": f"Token {api_key}"},
            timeout=timeout_s,
        )
    except httpx.HTTPError as exc:
        return KeyAnswer(status=0, failure=type(exc).__name__)
    return KeyAnswer(status=response.status_code)


async def standin_note(rest_url: str, *, timeout_s: float = 2.0) -> str | None:
    """When `rest_url` (DEEPGRAM_URL's REST base) answers as the Deepgram stand-in, what its transcripts are
    (placeholder words, not speech recognition); None for Deepgram, or when nothing answers. No key is sent: the
    stand-in's header is on every answer, a 401 included."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.get(f"{rest_url.rstrip('/')}{PROJECTS_PATH}")
    except httpx.HTTPError:
        return None
    return response.headers.get(STANDIN_HEADER) or None
