"""Whether Deepgram takes an API key (layer: deepgram, adapter): one cheap authenticated request.

`GET {REST base}/v1/projects` with `Authorization: Token <key>` lists the key's projects: Deepgram answers 200
for a key it knows and 401 (or 403) for one it does not, and the request costs nothing. Plain httpx rather
than deepgram-sdk: the answer wanted is the status alone, and a short timeout must bound the whole request.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

PROJECTS_PATH = "/v1/projects"


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
