"""The public URLs Twilio signs and connects to, from PUBLIC_URL or from the proxy-corrected request."""

from __future__ import annotations

import pytest

from service.twilio.urls import MEDIA_PATH, public_host, stream_url, webhook_url
from tests.helpers.service import make_settings


@pytest.mark.parametrize(
    ("public_url", "host_header", "host"),
    [
        (None, "calls.example.org", "calls.example.org"),
        (None, "calls.example.org:8443", "calls.example.org:8443"),
        (None, "calls.example.org, proxy.internal", "calls.example.org"),  # the first of a forwarded list
        (None, " calls.example.org ,proxy.internal", "calls.example.org"),
        ("https://public.example.net", "127.0.0.1:5001", "public.example.net"),  # PUBLIC_URL wins
        ("http://public.example.net:8080", "ignored", "public.example.net:8080"),
    ],
)
def test_public_host(public_url: str | None, host_header: str, host: str) -> None:
    assert public_host(make_settings(public_url=public_url), host_header) == host


@pytest.mark.parametrize(
    ("public_url", "scheme", "host_header", "query", "url"),
    [
        (None, "https", "calls.example.org", "", "https://calls.example.org/voice"),
        (None, "http", "calls.example.org, proxy", "a=1&b=2", "http://calls.example.org/voice?a=1&b=2"),
        ("https://public.example.net", "http", "127.0.0.1", "", "https://public.example.net/voice"),
        ("https://public.example.net/", "http", "127.0.0.1", "x=%20", "https://public.example.net/voice?x=%20"),
    ],
)
def test_webhook_url(public_url: str | None, scheme: str, host_header: str, query: str, url: str) -> None:
    settings = make_settings(public_url=public_url)
    assert webhook_url(settings, scheme=scheme, host_header=host_header, path="/voice", query=query) == url


@pytest.mark.parametrize(
    ("public_url", "host_header", "url"),
    [
        (None, "calls.example.org", "wss://calls.example.org/media"),
        ("http://public.example.net", "127.0.0.1", "wss://public.example.net/media"),  # Twilio only speaks wss
    ],
)
def test_stream_url(public_url: str | None, host_header: str, url: str) -> None:
    assert stream_url(make_settings(public_url=public_url), host_header) == url
    assert url.endswith(MEDIA_PATH)
