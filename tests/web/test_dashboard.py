"""The page's login, sessions and CSRF through the real service: no session, a bad, expired or too long-lived one
never sees a call; the cookie is Secure, HttpOnly and SameSite; the forms need their CSRF token, bound to what the
server signed; login attempts are limited per address; the feed takes the session."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pydantic
import pytest

from service.calls.events import CallStarted
from service.calls.transcript import Transcript
from service.refusals import REFUSAL_BURST
from service.settings import ANALYSIS_FEATURES, SESSION_SECRET_FILE, describe_error
from service.storage import queries
from service.storage.schema import Analysis
from service.web import login_tokens
from service.web.dashboard import CSRF_COOKIE, SESSION_COOKIE
from tests.helpers.callsdb import insert, make_call, make_utterance
from tests.helpers.clock import Clock
from tests.helpers.fakes.deepgram_server import FakeDeepgram
from tests.helpers.logs import LogLines
from tests.helpers.service import RunningService, make_settings, running_service
from tests.helpers.waiting import eventually

PASSWORD = "dash-passw0rd"
API_TOKEN = "api-t0ken"
SECRET = "0123456789abcdef" * 4
KEYS = login_tokens.page_keys(SECRET.encode(), PASSWORD.encode())  # what the service signs with
CALL = "CA0123456789abcdef0123456789abcdef"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def service(deepgram: FakeDeepgram, clock: Clock) -> AsyncIterator[RunningService]:
    settings = make_settings(deepgram, dashboard_password=PASSWORD, api_token=API_TOKEN, session_secret=SECRET)
    async with running_service(settings, login_clock=clock) as running:
        yield running


def cookies(**values: str) -> dict[str, str]:
    # httpx keeps Secure cookies for https only; the service is plain http here, so they are sent by hand.
    return {"Cookie": "; ".join(f"{name}={value}" for name, value in values.items())}


async def login_form(client: httpx.AsyncClient, url: str, **headers: str) -> tuple[str, str]:
    """The login page's CSRF cookie and the token its form carries."""
    page = await client.get(f"{url}/login", headers=headers)
    cookie = re.search(rf"{CSRF_COOKIE}=([0-9a-f]+\.[0-9a-f]+)", page.headers["set-cookie"])
    token = form_token(page)
    assert cookie is not None
    return cookie[1], token


def form_token(page: httpx.Response) -> str:
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert token is not None
    return token[1]


async def log_in(
    client: httpx.AsyncClient, url: str, password: str = PASSWORD, address: str | None = None
) -> httpx.Response:
    """A login as a browser makes it: the form, then the POST (from `address`, as the proxy reports it)."""
    csrf_cookie, token = await login_form(client, url)
    forwarded = {"X-Forwarded-For": address} if address else {}
    return await client.post(
        f"{url}/login",
        data={"password": password, "csrf": token},
        headers=cookies(**{CSRF_COOKIE: csrf_cookie}) | forwarded,
    )


def session_of(response: httpx.Response) -> str:
    found = re.search(rf"{SESSION_COOKIE}=([^;]+)", response.headers.get("set-cookie", ""))
    assert found is not None, response.headers
    return found[1]


async def with_a_call(service: RunningService) -> None:
    """A stored call with a known SID, so a page that leaked it would show it."""
    async with httpx.AsyncClient() as client:
        await client.get(f"{service.url}/login")  # the first answer comes once the app has started
    service.service.store.call_started(
        CallStarted(
            call_sid=CALL, stream_sid="MZ1", account_sid="AC1", from_number="+15005550199", to_number="+1",
            direction="inbound", tracks=("inbound",), custom_parameters={},
            started_at=datetime.datetime.now(datetime.UTC),
        )
    )  # fmt: skip

    async def stored() -> Any:
        return await queries.get_call(service.service.store.engine, CALL)

    await eventually(stored)


async def test_logging_in_gives_a_secure_httponly_samesite_cookie_with_an_expiry(service: RunningService) -> None:
    """The right password: 303 to /, and the session cookie has every attribute that keeps it to this site."""
    async with httpx.AsyncClient() as client:
        response = await log_in(client, service.url)
    assert (response.status_code, response.headers["location"]) == (303, "/")
    cookie = response.headers["set-cookie"].lower()
    for attribute in ("secure", "httponly", "samesite=lax", "max-age=43200", "path=/"):
        assert attribute in cookie, attribute


@pytest.mark.parametrize("path", ["/", f"/calls/{CALL}", f"/calls/{CALL}/transcript.txt"])
async def test_no_bad_or_expired_session_gets_the_login_page_never_a_call(service: RunningService, path: str) -> None:
    """Without a cookie, with a forged one or an expired one: a redirect to /login, and nothing of the call."""
    await with_a_call(service)
    expired = login_tokens.issue_session(KEYS, now=time.time() - 7200, lifetime_s=3600)
    other_secret = login_tokens.page_keys(b"other-secret" * 4, PASSWORD.encode())
    other_key = login_tokens.issue_session(other_secret, now=time.time(), lifetime_s=3600)
    async with httpx.AsyncClient() as client:
        for headers in ({}, cookies(**{SESSION_COOKIE: "1.2.3"}), cookies(**{SESSION_COOKIE: expired}),
                        cookies(**{SESSION_COOKIE: other_key})):  # fmt: skip
            response = await client.get(f"{service.url}{path}", headers=headers)
            assert (response.status_code, response.headers["location"]) == (303, "/login"), headers
            assert CALL not in response.text
            assert "+15005550199" not in response.text
        signed_in = await client.get(f"{service.url}{path}", headers=cookies(**{SESSION_COOKIE: session_of(
            await log_in(client, service.url))}))  # fmt: skip
    assert signed_in.status_code == 200
    assert "+15005550199" in signed_in.text or path.endswith(".txt")


async def test_a_wrong_password_or_a_missing_csrf_token_is_refused(service: RunningService) -> None:
    """Wrong password, API_TOKEN when DASHBOARD_PASSWORD is set, or no CSRF token: 401 and no session cookie."""
    async with httpx.AsyncClient() as client:
        wrong = await log_in(client, service.url, password="guess")
        token_instead = await log_in(client, service.url, password=API_TOKEN)
        csrf_cookie, _ = await login_form(client, service.url)
        no_token = await client.post(
            f"{service.url}/login", data={"password": PASSWORD}, headers=cookies(**{CSRF_COOKIE: csrf_cookie})
        )
        _, token = await login_form(client, service.url)
        no_cookie = await client.post(f"{service.url}/login", data={"password": PASSWORD, "csrf": token})
    for response in (wrong, token_instead, no_token, no_cookie):
        assert response.status_code == 401
        assert SESSION_COOKIE not in response.headers.get("set-cookie", "")


async def test_logging_out_needs_the_forms_token_and_clears_the_cookie(service: RunningService) -> None:
    """A logout POST without its session's CSRF token (a made-up one, or another session's) is 403; with it, 303
    to /login and the cookie removed."""
    async with httpx.AsyncClient() as client:
        session = session_of(await log_in(client, service.url))
        other = session_of(await log_in(client, service.url))
        token = form_token(await client.get(f"{service.url}/", headers=cookies(**{SESSION_COOKIE: session})))
        other_token = form_token(await client.get(f"{service.url}/", headers=cookies(**{SESSION_COOKIE: other})))
        refused = [
            await client.post(
                f"{service.url}/logout", data={"csrf": forged}, headers=cookies(**{SESSION_COOKIE: session})
            )
            for forged in ("0" * 64, other_token)
        ]
        out = await client.post(
            f"{service.url}/logout", data={"csrf": token}, headers=cookies(**{SESSION_COOKIE: session})
        )
    assert [response.status_code for response in refused] == [403, 403]
    assert (out.status_code, out.headers["location"]) == (303, "/login")
    assert f'{SESSION_COOKIE}=""' in out.headers["set-cookie"] or "max-age=0" in out.headers["set-cookie"].lower()


async def test_the_feed_takes_the_session_but_not_an_expired_one(service: RunningService) -> None:
    """The page's EventSource sends the cookie: a valid session opens /api/live, an expired one is 401."""
    expired = login_tokens.issue_session(KEYS, now=time.time() - 7200, lifetime_s=3600)
    async with httpx.AsyncClient() as client:
        session = session_of(await log_in(client, service.url))
        refused = await client.get(f"{service.url}/api/live", headers=cookies(**{SESSION_COOKIE: expired}))
        async with client.stream(
            "GET", f"{service.url}/api/live", headers=cookies(**{SESSION_COOKIE: session})
        ) as opened:
            status = opened.status_code
    assert refused.status_code == 401
    assert status == 200


async def test_a_login_page_reached_over_plain_http_from_another_host_says_why_a_login_cannot_work(
    service: RunningService, log_lines: LogLines
) -> None:
    """Over plain http at a LAN address the browser drops the Secure cookies: the form says so before a login,
    and a login posted without the form's cookie is told that again (403), not "Wrong password"; over https (the
    proxy's word) or on a loopback host there is no such notice. Every cookie stays Secure."""
    lan = "192.168.1.20:5001"
    async with httpx.AsyncClient() as client:
        form = await client.get(f"{service.url}/login", headers={"Host": lan})
        posted = await client.post(
            f"{service.url}/login", data={"password": PASSWORD, "csrf": form_token(form)}, headers={"Host": lan}
        )
        stale = await client.post(
            f"{service.url}/login", data={"password": PASSWORD, "csrf": "0" * 64},
            headers={"Host": lan} | cookies(**{CSRF_COOKIE: "a.b"}),
        )  # fmt: skip
        fine = [
            await client.get(f"{service.url}/login", headers=headers)
            for headers in ({}, {"Host": f"localhost:{service.port}"}, {"Host": lan, "X-Forwarded-Proto": "https"})
        ]
    assert form.status_code == 200
    assert 'id="login-insecure"' in form.text
    assert "plain http at\n    <code>192.168.1.20:5001</code>" in form.text
    assert 'href="http://localhost:5001/"' in form.text
    assert "Secure" in form.headers["set-cookie"]
    assert posted.status_code == 403
    assert 'id="login-insecure"' in posted.text
    assert "did not send the login back" in posted.text
    assert "Wrong password" not in posted.text
    assert SESSION_COOKIE not in posted.headers.get("set-cookie", "")
    [refused] = [line for line in log_lines.events("dashboard.refused") if "plain http" in line["why"]]
    assert refused["why"].startswith("login over plain http at 192.168.1.20:5001: the browser dropped")
    assert stale.status_code == 401  # a cookie came back, so it was kept: a form too old, as before
    assert "Wrong password" in stale.text
    assert [page.status_code for page in fine[:2]] == [200, 200]
    assert fine[2].status_code in (200, 308)  # behind a proxy on https (the redirect rule is the proxy's own)
    assert all('id="login-insecure"' not in page.text for page in fine)


async def test_the_icon_is_served_and_linked_from_every_page(service: RunningService) -> None:
    """`/favicon.ico` answers with the icon (no 404 in every tab's log), and the pages link the same file."""
    async with httpx.AsyncClient() as client:
        icon = await client.get(f"{service.url}/favicon.ico")
        page = await client.get(f"{service.url}/login")
        link = re.search(r'<link rel="icon" type="image/svg\+xml" href="([^"]+)">', page.text)
        assert link is not None
        linked = await client.get(f"{service.url}{link[1]}")
    assert (icon.status_code, icon.headers["content-type"]) == (200, "image/svg+xml; charset=utf-8")
    assert icon.content.startswith(b"<svg")
    assert (linked.status_code, linked.content) == (200, icon.content)


async def test_the_pages_are_sent_with_a_strict_policy(service: RunningService) -> None:
    """Scripts and styles from this origin only, no framing, no caching."""
    async with httpx.AsyncClient() as client:
        page = await client.get(f"{service.url}/login")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"


async def test_without_any_password_the_page_says_what_to_set(deepgram: FakeDeepgram) -> None:
    """Neither DASHBOARD_PASSWORD nor API_TOKEN: the login page says so (503) and no login succeeds."""
    async with running_service(make_settings(deepgram)) as service, httpx.AsyncClient() as client:
        page = await client.get(f"{service.url}/login")
        listing = await client.get(f"{service.url}/")
    assert page.status_code == 503
    assert "DASHBOARD_PASSWORD" in page.text
    assert listing.status_code == 303


async def test_the_list_searches_by_words_number_and_date(service: RunningService) -> None:
    """The search form's words, number and dates list the matching calls; a bad date says what is wrong."""
    await with_a_call(service)
    store = service.service.store
    store.transcript(
        Transcript(
            call_sid=CALL, stream_sid="MZ1", track="inbound", is_final=True, speech_final=True, from_finalize=False,
            text="I want a refund for order 4711.", start=0.5, end=2.0, confidence=0.9, words=(), request_id=None,
        )
    )  # fmt: skip

    async def stored() -> Any:
        return await queries.get_utterances(store.engine, CALL)

    await eventually(stored)
    async with httpx.AsyncClient() as client:
        headers = cookies(**{SESSION_COOKIE: session_of(await log_in(client, service.url))})

        async def search(**params: str) -> httpx.Response:
            return await client.get(f"{service.url}/", params=params, headers=headers)

        found = await search(q="Refund 4711", number="+15005550199")
        missed = await search(q="refund", until="2020-01-01")
        bad = await search(since="yesterday")
    results = found.text.split('role="search"')[1]  # the call is on now too: look below the search form only
    assert f'href="/calls/{CALL}"' in results
    assert "Found" in results
    assert f'href="/calls/{CALL}"' not in missed.text.split('role="search"')[1]
    assert 'id="no-results"' in missed.text
    assert "since: must be an ISO 8601 date" in bad.text


async def test_a_session_signed_with_the_real_key_but_living_too_long_is_refused(service: RunningService) -> None:
    """Sessions a key holder could forge: a year-long one, and an expiry of 4000 digits (10^4000 once got in), are
    sent to the login page like any bad session, without an error."""
    year = login_tokens.issue_session(KEYS, now=time.time(), lifetime_s=365 * 86400)
    huge = "9" * 4000
    mac = hmac.new(KEYS.session, f"{huge}.n".encode(), hashlib.sha256).hexdigest()
    async with httpx.AsyncClient() as client:
        for forged in (year, f"{huge}.n.{mac}"):
            page = await client.get(f"{service.url}/", headers=cookies(**{SESSION_COOKIE: forged}))
            assert (page.status_code, page.headers["location"]) == (303, "/login")
            feed = await client.get(f"{service.url}/api/live", headers=cookies(**{SESSION_COOKIE: forged}))
            assert feed.status_code == 401


async def test_a_csrf_cookie_the_client_chose_is_never_used(service: RunningService) -> None:
    """A login page asked with a made-up `csrf` cookie sets a signed one of its own; the made-up cookie with that
    page's token, or with a token made as the old scheme made it from the right password, logs nobody in."""
    chosen = "a" * 32
    async with httpx.AsyncClient() as client:
        given, token = await login_form(client, service.url, **cookies(**{CSRF_COOKIE: chosen}))
        old_key = hmac.new(PASSWORD.encode(), b"callscribe dashboard session v1", hashlib.sha256).digest()
        old_token = hmac.new(old_key, b"csrf:" + chosen.encode(), hashlib.sha256).hexdigest()
        attempts = [
            await client.post(
                f"{service.url}/login",
                data={"password": PASSWORD, "csrf": guess},
                headers=cookies(**{CSRF_COOKIE: chosen}),
            )
            for guess in (token, old_token)
        ]
    assert given != chosen
    for response in attempts:
        assert response.status_code == 401
        assert SESSION_COOKIE not in response.headers.get("set-cookie", "")


async def test_the_eleventh_wrong_password_in_a_minute_gets_429(
    service: RunningService, clock: Clock, log_lines: LogLines
) -> None:
    """Ten wrong passwords from an address are 401; then even the right one is 429 with Retry-After, until a minute
    has passed; another address is not locked; each failure and refusal is logged with its address."""
    attacker, other = "203.0.113.9", "198.51.100.7"
    async with httpx.AsyncClient() as client:
        wrong = [(await log_in(client, service.url, "wrong-passw0rd", attacker)).status_code for _ in range(10)]
        eleventh = await log_in(client, service.url, "wrong-passw0rd", attacker)
        right_but_locked = await log_in(client, service.url, PASSWORD, attacker)
        elsewhere = await log_in(client, service.url, PASSWORD, other)
        clock.now += 60
        after = await log_in(client, service.url, PASSWORD, attacker)
    assert wrong == [401] * 10
    for refused in (eleventh, right_but_locked):
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert SESSION_COOKIE not in refused.headers.get("set-cookie", "")
        assert "Too many login attempts" in refused.text
    assert (elsewhere.status_code, after.status_code) == (303, 303)
    failed = log_lines.events("dashboard.login_failed")
    limited = log_lines.events("dashboard.login_limited")
    # Ten failures from one address: the first REFUSAL_BURST logged one by one, the rest counted (logs.py).
    assert [line["address"] for line in failed] == [attacker] * REFUSAL_BURST
    assert [line["address"] for line in limited] == [attacker] * 2


async def test_without_session_secret_a_local_run_makes_one_and_keeps_it(deepgram: FakeDeepgram) -> None:
    """No SESSION_SECRET: the first start writes a secret file only its owner can read, and a session from that
    run is still good after a restart, which reads the same file."""
    settings = make_settings(deepgram, dashboard_password=PASSWORD)
    async with running_service(settings) as first, httpx.AsyncClient() as client:
        session = session_of(await log_in(client, first.url))
    kept = Path.cwd() / SESSION_SECRET_FILE  # beside DB_JOURNAL_PATH, in the working directory by default
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    secret = kept.read_bytes()
    async with running_service(settings) as second, httpx.AsyncClient() as client:
        page = await client.get(f"{second.url}/", headers=cookies(**{SESSION_COOKIE: session}))
    assert page.status_code == 200
    assert kept.read_bytes() == secret


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [("dashboard_password", "short-pass1", "at least 12"), ("session_secret", "x" * 31, "at least 32")],
)
def test_a_short_password_or_secret_stops_start_up(name: str, value: str, message: str) -> None:
    """DASHBOARD_PASSWORD under 12 characters or SESSION_SECRET under 32 is a settings error naming the variable
    and the bound, never the value."""
    with pytest.raises(pydantic.ValidationError) as raised:
        make_settings(**{name: value})
    said = describe_error(raised.value)
    assert f"{name.upper()}: Value error, must be {message} characters" in said
    assert value not in said


async def test_an_analysed_call_shows_its_summary_tags_and_sentiment_and_the_list_its_summary(
    service: RunningService,
) -> None:
    """The call's page: the summary at the top, topics and intents as tags, sentiment overall, per speaker and per
    utterance; the list: the summary under the call. A call not analysed says why."""
    async with httpx.AsyncClient() as client:
        await client.get(f"{service.url}/login")  # the first answer comes once the app has started (and migrated)
    engine = service.service.store.engine
    sentiment = {
        "overall": {"sentiment": "negative", "score": -0.4},
        "speakers": {"caller": {"sentiment": "negative", "score": -0.7},
                     "agent": {"sentiment": "positive", "score": 0.5}},
        "utterances": [{"start": 0.5, "track": "inbound", "speaker": "caller", "sentiment": "negative", "score": -0.7}],
    }  # fmt: skip
    await insert(engine, [
        make_call("CA1", started_at=datetime.datetime.now(datetime.UTC)),
        make_utterance("CA1", "inbound", 0.5, 2.0, "My order is late and broken."),
        make_utterance("CA1", "outbound", 2.5, 4.0, "Sorry, I can help with that."),
        Analysis(call_sid="CA1", version="v1", status="done", features=list(ANALYSIS_FEATURES), words=12,
                 summary="The caller reports a late, broken order.",
                 topics=[{"topic": "Order issue", "confidence": 0.9}],
                 intents=[{"intent": "Report a problem", "confidence": 0.8}], sentiment=sentiment,
                 analyzed_at=datetime.datetime.now(datetime.UTC)),
        make_call("CA2", started_at=datetime.datetime.now(datetime.UTC)),
        Analysis(call_sid="CA2", version="v1", status="skipped", reason="3 words: fewer than the 50 an analysis needs",
                 features=["summary"], words=3, analyzed_at=datetime.datetime.now(datetime.UTC)),
    ])  # fmt: skip
    async with httpx.AsyncClient() as client:
        headers = cookies(**{SESSION_COOKIE: session_of(await log_in(client, service.url))})
        page = (await client.get(f"{service.url}/calls/CA1", headers=headers)).text
        skipped = (await client.get(f"{service.url}/calls/CA2", headers=headers)).text
        listing = (await client.get(f"{service.url}/", headers=headers)).text
    assert page.index('id="summary"') < page.index('id="lanes"')  # the summary above the transcript
    assert '<p class="summary" id="summary">The caller reports a late, broken order.</p>' in page
    assert '<li class="tag topic" title="topic, confidence 0.90">Order issue</li>' in page
    assert '<li class="tag intent" title="intent, confidence 0.80">Report a problem</li>' in page
    assert "overall negative (-0.40)" in page
    assert "caller negative (-0.70)" in page
    assert "agent positive (+0.50)" in page
    caller_line = page.split('data-key="inbound:500"')[1].split("</li>")[0]
    assert '<span class="sentiment sentiment-negative" title="sentiment -0.70">negative</span>' in caller_line
    assert "sentiment" not in page.split('data-key="outbound:2500"')[1].split("</li>")[0]
    assert "Not analysed: 3 words: fewer than the 50 an analysis needs" in skipped
    row = listing.split('data-call-sid="CA1"')[1].split("</tr>")[0]
    assert '<div class="summary-line">The caller reports a late, broken order.</div>' in row
    assert "summary-line" not in listing.split('data-call-sid="CA2"')[1].split("</tr>")[0]
