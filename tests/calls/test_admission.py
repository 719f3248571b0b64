"""The stream gate: a start is believed only with the right account, a token for its own call, and no stream
before it, in this process or (through the claims port) in another; anything else is refused, never raised."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.calls.stream.admission import AdmissionRefused, ClaimOutcome, StreamGate, without_token
from service.twilio.protocol import MediaFormat, Start
from service.twilio.stream_tokens import PARAMETER, Claim, Purpose, derive_key, issue, numbers
from tests.helpers.service import make_settings

ACCOUNT = "AC" + "a" * 32
CALL = "CA" + "1" * 32
NOW = 1_760_000_000.0
KEY = derive_key("twilio-test-token")


CALLER = "+14155550100"


def token(call_sid: str = CALL, *, purpose: Purpose = Purpose.VOICE, track: str = "inbound_track",
          issued_at: float = NOW, account_sid: str = ACCOUNT, from_number: str = "",
          to_number: str = "") -> str:  # fmt: skip
    claim = Claim(purpose, account_sid, call_sid, track, int(issued_at), from_number=from_number, to_number=to_number)
    return issue(KEY, claim)


def start(*, call_sid: str = CALL, stream_sid: str = "MZ" + "1" * 32, account_sid: str = ACCOUNT,
          tracks: tuple[str, ...] = ("inbound",), parameters: dict[str, str] | None = None) -> Start:  # fmt: skip
    params = {PARAMETER: token(call_sid, from_number=CALLER), "from": CALLER} if parameters is None else parameters
    return Start(1, stream_sid, account_sid, call_sid, tracks, params, MediaFormat("audio/x-mulaw", 8000, 1))


class Claims:
    """A stand-in for the database's record of streams: answers what it is told, remembers what it was asked."""

    def __init__(self, outcome: ClaimOutcome = ClaimOutcome.CLAIMED) -> None:
        self.outcome = outcome
        self.asked: list[dict[str, Any]] = []

    async def claim(self, **fields: Any) -> ClaimOutcome:
        self.asked.append(fields)
        return self.outcome


def gate(claims: Claims | None = None, *, key: bytes | None = KEY, now: list[float] | None = None,
         **settings: Any) -> StreamGate:  # fmt: skip
    clock = now if now is not None else [NOW + 2]
    return StreamGate(make_settings(**settings), key=key, claims=claims or Claims(), clock=lambda: clock[0])


def refusal(check: StreamGate, event: Start) -> str:
    with pytest.raises(AdmissionRefused) as refused:
        check.check(event)
    return str(refused.value)


def test_a_start_with_its_own_token_is_let_in_without_the_token() -> None:
    """The token is checked and then dropped: it is never kept, logged or passed on with the parameters."""
    admission = gate().check(start())
    assert admission.purpose is Purpose.VOICE
    assert admission.first_stream
    assert admission.parameters == {"from": CALLER}


@pytest.mark.parametrize(
    ("event", "said"),
    [
        (start(parameters={"from": "+1"}), "no callscribe_token parameter"),
        (start(parameters={PARAMETER: "v9.voice.1.x"}), "not one this service issues"),
        (start(parameters={PARAMETER: "v1.voice.1.x"}), "earlier version (v1)"),
        (start(parameters={PARAMETER: token("CA" + "2" * 32)}), "issued for another call"),
        (start(parameters={PARAMETER: token(track="both_tracks")}), "issued for another call"),
        (start(tracks=("inbound", "outbound")), "issued for another call"),
        (start(parameters={PARAMETER: token(issued_at=NOW - 301)}), "expired"),
        (start(parameters={PARAMETER: token(account_sid="AC" + "b" * 32)}), "issued for another call"),
    ],
)
def test_a_start_without_a_good_token_is_refused_and_says_why(event: Start, said: str) -> None:
    """Missing, malformed, for another call or track setting, or stale: refused, naming which."""
    why = refusal(gate(), event)
    assert said in why
    assert event.custom_parameters.get(PARAMETER, "\x00") not in why


@pytest.mark.parametrize(
    "parameters",
    [
        {"from": "+19005550199"},  # another caller shown
        {},  # the caller left out
        {"from": CALLER, "to": "+19005550199"},  # a called number the token did not vouch for
        {"from": CALLER[:-1]},
    ],
)
def test_a_start_showing_other_numbers_than_its_token_vouches_for_is_refused(parameters: dict[str, str]) -> None:
    """`from` and `to` are under the token: a start whose numbers differ from what /voice was given is refused."""
    event = start(parameters={PARAMETER: token(from_number=CALLER), **parameters})
    assert "from/to numbers" in refusal(gate(), event)


def test_the_numbers_the_token_vouches_for_are_let_in_and_kept() -> None:
    """Both numbers as /voice forwarded them: admitted, and passed on as the call's parameters."""
    both = {"from": CALLER, "to": "+14155550111", "direction": "inbound"}
    event = start(parameters={PARAMETER: token(from_number=CALLER, to_number="+14155550111"), **both})
    assert gate().check(event).parameters == both


def test_the_account_must_be_twilio_account_sid_when_it_is_set() -> None:
    """A start for another account is refused, however good its token (made for that account)."""
    other = "AC" + "b" * 32
    event = start(account_sid=other, parameters={PARAMETER: token(account_sid=other)})
    assert "not TWILIO_ACCOUNT_SID" in refusal(gate(twilio_account_sid=ACCOUNT), event)
    assert gate().check(event).purpose is Purpose.VOICE  # unset: any account the token was made for


def test_a_second_start_for_a_live_stream_or_call_is_refused_in_the_same_process() -> None:
    """The same streamSid again, or a new stream of a call that already has one, is refused at once."""
    check = gate()
    check.check(start())
    assert "has already started" in refusal(check, start())
    assert "already has its stream" in refusal(check, start(stream_sid="MZ" + "9" * 32))


def test_a_hand_over_may_start_a_second_stream_of_a_call() -> None:
    """Only callscribe's own hand-over token opens another stream of a call that has its first."""
    check = gate()
    check.check(start())
    handover = {PARAMETER: token(purpose=Purpose.HANDOVER, from_number=CALLER), "from": CALLER}
    admission = check.check(start(stream_sid="MZ" + "9" * 32, parameters=handover))
    assert (admission.purpose, admission.first_stream) == (Purpose.HANDOVER, False)


def test_a_stream_is_remembered_as_long_as_its_token_could_be_fresh() -> None:
    """Past the token's life (plus clock skew) a repeat would fail the token check anyway, so it is forgotten."""
    now = [NOW + 2]
    check = gate(now=now)
    check.check(start())
    now[0] += 290  # still within the token's life
    assert "has already started" in refusal(check, start())
    now[0] += 100  # the token itself has expired by now
    assert "expired" in refusal(check, start())
    assert check.recent.refusal("MZ" + "1" * 32, CALL, first_stream=True) is None


def test_streams_without_a_token_are_let_in_only_with_stream_tokens_off() -> None:
    """STREAM_TOKENS=off lets a token-less stream in (TwiML Bins), but a bad token is still refused."""
    check = gate(stream_tokens="off")
    assert check.check(start(parameters={"from": "+1"})).purpose is None
    assert "issued for another call" in refusal(check, start(call_sid="CA" + "3" * 32, stream_sid="MZ3",
                                                           parameters={PARAMETER: token()}))  # fmt: skip


async def test_the_database_has_the_last_word_across_processes() -> None:
    """A stream another process started is refused, as is one whose call was recorded as not streamed (its stream
    came too late); an unanswered database lets the stream in on the rest."""
    for outcome, said in [
        (ClaimOutcome.STREAM_TAKEN, "has already started"),
        (ClaimOutcome.CALL_TAKEN, "already had"),
        (ClaimOutcome.NOT_STREAMED, "was recorded as not streamed: its stream did not start within"),
    ]:
        check = gate(Claims(outcome))
        event = start()
        admission = check.check(event)
        with pytest.raises(AdmissionRefused) as refused:
            await check.claim(event, admission)
        assert said in str(refused.value)
    claims = Claims(ClaimOutcome.UNCHECKED)
    check = gate(claims)
    event = start()
    await check.claim(event, check.check(event))
    assert claims.asked == [
        {"call_sid": CALL, "stream_sid": event.stream_sid, "purpose": "voice", "track": "inbound_track",
         "first_stream": True},
    ]  # fmt: skip


NAMES = st.one_of(st.sampled_from(["from", "to", "direction"]), st.text(max_size=20))


@given(parameters=st.dictionaries(NAMES, st.text(max_size=80), max_size=5), with_token=st.booleans())
def test_any_parameters_are_let_in_with_the_right_token_or_refused(
    parameters: dict[str, str], with_token: bool
) -> None:
    """Whatever `start.customParameters` holds, the gate admits it (the right token among them, for the numbers
    beside it) or refuses it."""
    if with_token:
        parameters = {**parameters, PARAMETER: token()}
    try:
        admission = gate().check(start(parameters=parameters))
    except AdmissionRefused:
        assert parameters.get(PARAMETER) != token() or numbers(parameters) != ("", "")
        return
    assert parameters[PARAMETER] == token()
    assert numbers(parameters) == ("", "")
    assert admission.parameters == without_token(parameters)


def test_the_track_setting_is_what_the_tracks_stand_for() -> None:
    """both_tracks streams arrive with both tracks, in either order."""
    both = {PARAMETER: token(track="both_tracks")}
    assert gate().check(start(tracks=("outbound", "inbound"), parameters=both)).track == "both_tracks"
    assert dataclasses.replace(start(), tracks=("inbound",)).tracks == ("inbound",)
