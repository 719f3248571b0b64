"""The failover policy: which engine a new connection uses, when a track moves, and when the probe is due."""

from __future__ import annotations

import pytest

from service.calls.pipeline.failover import FALLBACK, PRIMARY, Failover, Move, TrackChoice, Why, judge
from service.errors import SttError, SttFailure, SttRejected, SttUnavailable
from tests.helpers.clock import Clock

REFUSED_KEY = SttRejected("Deepgram rejected the API key (HTTP 401)", status=401)
BAD_OPTIONS = SttRejected("Deepgram refused the request (HTTP 400)", status=400)
DROPPED = SttUnavailable("Deepgram dropped the connection (no close frame)", close_code=1006)
UNREACHABLE = SttUnavailable("cannot reach Deepgram", failure=SttFailure.UNREACHABLE)


def failover(clock: Clock, changes: list[tuple[bool, Why]] | None = None, *, has_fallback: bool = True) -> Failover:
    record = changes if changes is not None else []
    return Failover(
        has_fallback=has_fallback, after_s=3.0, probe_every_s=10.0, clock=clock,
        on_change=lambda down, why: record.append((down, why)),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("error", "opened", "failing_for_s", "expected"),
    [
        (REFUSED_KEY, False, 0.0, Why.REFUSED),
        (SttRejected("out of credit", status=402), False, 0.0, Why.REFUSED),
        (SttRejected("no access to the model", status=403), False, 0.0, Why.REFUSED),
        (SttRejected("DEEPGRAM_API_KEY is not set", failure=SttFailure.NO_KEY), False, 0.0, Why.REFUSED),
        (BAD_OPTIONS, False, 0.0, None),  # the same request, refused the same at any Deepgram
        (SttRejected("Deepgram close 1008 DATA-0000", close_code=1008), True, 0.0, None),
        (UNREACHABLE, False, 0.0, Why.UNREACHABLE),
        (SttUnavailable("Deepgram answered HTTP 503 at the upgrade", status=503), False, 0.0, Why.UNREACHABLE),
        (DROPPED, True, 2.9, None),  # a drop under the bound: reconnect to the same engine
        (DROPPED, True, 3.0, Why.FAILING),
    ],
)
def test_judge_moves_only_for_what_another_deepgram_may_fix(
    error: SttError, opened: bool, failing_for_s: float, expected: Why | None
) -> None:
    assert judge(error, opened=opened, failing_for_s=failing_for_s, after_s=3.0) == expected


def test_without_a_fallback_the_primary_is_always_chosen_and_never_marked_down() -> None:
    clock, changes = Clock(), []
    policy = failover(clock, changes, has_fallback=False)
    choice = TrackChoice(policy)
    assert choice.next() == (PRIMARY, None)
    assert not choice.failed(PRIMARY, UNREACHABLE, opened=False, failing_for_s=0.0)
    assert (policy.primary_down, policy.preferred(), changes) == (False, PRIMARY, [])
    assert policy.engines_in_order() == (PRIMARY,)
    assert choice.next() == (PRIMARY, None)


def test_a_refusal_moves_the_track_at_once_and_new_calls_go_straight_to_the_fallback() -> None:
    clock, changes = Clock(), []
    policy = failover(clock, changes)
    first = TrackChoice(policy)
    assert first.next() == (PRIMARY, None)
    assert first.failed(PRIMARY, REFUSED_KEY, opened=False, failing_for_s=0.0)
    assert first.next() == (FALLBACK, Move(PRIMARY, FALLBACK, Why.REFUSED))
    assert changes == [(True, Why.REFUSED)]
    assert policy.engines_in_order() == (FALLBACK, PRIMARY)  # batch asks the fallback first too
    # A call that starts now never tries the primary: its first connection is no move.
    assert TrackChoice(policy).next() == (FALLBACK, None)


def test_an_unreachable_primary_is_left_at_once() -> None:
    policy = failover(Clock())
    choice = TrackChoice(policy)
    choice.next()
    assert choice.failed(PRIMARY, UNREACHABLE, opened=False, failing_for_s=0.0)
    assert choice.next() == (FALLBACK, Move(PRIMARY, FALLBACK, Why.UNREACHABLE))


def test_a_primary_that_keeps_failing_is_left_only_past_the_bound() -> None:
    policy = failover(Clock())
    choice = TrackChoice(policy)
    choice.next()
    assert not choice.failed(PRIMARY, DROPPED, opened=True, failing_for_s=1.0)
    assert choice.next() == (PRIMARY, None)  # backoff, then the primary again
    assert not policy.primary_down
    assert choice.failed(PRIMARY, DROPPED, opened=True, failing_for_s=3.5)
    assert choice.next() == (FALLBACK, Move(PRIMARY, FALLBACK, Why.FAILING))


def test_a_refusal_of_what_was_asked_moves_nothing() -> None:
    policy = failover(Clock())
    choice = TrackChoice(policy)
    choice.next()
    assert not choice.failed(PRIMARY, BAD_OPTIONS, opened=False, failing_for_s=0.0)
    assert (policy.primary_down, choice.refused) == (False, set())


def test_failures_on_the_fallback_retry_it_while_the_primary_is_down() -> None:
    policy = failover(Clock())
    choice = TrackChoice(policy)
    choice.next()
    choice.failed(PRIMARY, UNREACHABLE, opened=False, failing_for_s=0.0)
    choice.next()
    assert not choice.failed(FALLBACK, UNREACHABLE, opened=False, failing_for_s=0.1)
    assert not choice.failed(FALLBACK, DROPPED, opened=True, failing_for_s=9.0)
    assert choice.next() == (FALLBACK, None)


def test_a_fallback_that_refuses_sends_the_track_back_to_the_primary_even_while_it_is_down() -> None:
    """A wrong fallback key must not spool calls the primary could take."""
    policy = failover(Clock())
    choice = TrackChoice(policy)
    choice.next()
    choice.failed(PRIMARY, UNREACHABLE, opened=False, failing_for_s=0.0)
    choice.next()
    assert choice.failed(FALLBACK, REFUSED_KEY, opened=False, failing_for_s=0.5)
    assert choice.next() == (PRIMARY, Move(FALLBACK, PRIMARY, Why.REFUSED))
    assert policy.primary_down  # for other calls, the process still prefers the fallback


def test_a_track_refused_by_both_engines_gives_up() -> None:
    policy = failover(Clock())
    choice = TrackChoice(policy)
    choice.next()
    assert choice.failed(PRIMARY, REFUSED_KEY, opened=False, failing_for_s=0.0)
    choice.next()
    assert not choice.failed(FALLBACK, REFUSED_KEY, opened=False, failing_for_s=0.0)
    assert choice.refused == {PRIMARY, FALLBACK}
    assert choice.next() == (FALLBACK, None)  # never asked for in practice: the track spools instead


def test_a_track_refused_by_the_primary_stays_on_the_fallback_after_the_primary_answers() -> None:
    clock = Clock()
    policy = failover(clock)
    choice = TrackChoice(policy)
    choice.next()
    choice.failed(PRIMARY, REFUSED_KEY, opened=False, failing_for_s=0.0)
    choice.next()
    clock.now += 10.0
    policy.probed(answered=True)
    assert not choice.failed(FALLBACK, DROPPED, opened=True, failing_for_s=0.2)
    assert choice.next() == (FALLBACK, None)


def test_the_probe_is_due_every_period_while_down_and_brings_new_connections_back() -> None:
    clock, changes = Clock(), []
    policy = failover(clock, changes)
    assert not policy.probe_due()  # up: nothing to probe
    assert policy.probed(answered=True) == 0.0  # a probe while up changes nothing
    choice = TrackChoice(policy)
    choice.next()
    choice.failed(PRIMARY, UNREACHABLE, opened=False, failing_for_s=0.0)
    choice.next()
    clock.now += 9.9
    assert not policy.probe_due()
    clock.now += 0.1
    assert policy.probe_due()
    assert policy.probed(answered=False) == 0.0
    assert policy.primary_down
    assert not policy.probe_due()  # the period counts from the last probe
    clock.now += 10.0
    assert policy.probe_due()
    assert policy.probed(answered=True) == 20.0
    assert (policy.primary_down, policy.preferred(), policy.why) == (False, PRIMARY, Why.PRIMARY_ANSWERED)
    assert changes == [(True, Why.UNREACHABLE), (False, Why.PRIMARY_ANSWERED)]
    # A track on the fallback moves back on its next connection (after a failure there), and says why.
    assert not choice.failed(FALLBACK, DROPPED, opened=True, failing_for_s=0.1)
    assert choice.next() == (PRIMARY, Move(FALLBACK, PRIMARY, Why.PRIMARY_ANSWERED))
    assert TrackChoice(policy).next() == (PRIMARY, None)


def test_a_track_that_backs_off_on_the_primary_follows_another_calls_verdict() -> None:
    """One track's drop under the bound, another's failed connect: the first reconnects to the fallback, and the
    move says why the process left the primary."""
    policy = failover(Clock())
    patient, judged = TrackChoice(policy), TrackChoice(policy)
    patient.next()
    judged.next()
    assert not patient.failed(PRIMARY, DROPPED, opened=True, failing_for_s=0.5)
    judged.failed(PRIMARY, UNREACHABLE, opened=False, failing_for_s=0.0)
    assert patient.next() == (FALLBACK, Move(PRIMARY, FALLBACK, Why.UNREACHABLE))


def test_the_primary_is_marked_down_once_and_failures_of_other_tracks_keep_its_first_reason() -> None:
    clock, changes = Clock(), []
    policy = failover(clock, changes)
    for error in (UNREACHABLE, REFUSED_KEY):
        choice = TrackChoice(policy)
        choice.next()
        choice.failed(PRIMARY, error, opened=False, failing_for_s=0.0)
    assert changes == [(True, Why.UNREACHABLE)]
    assert (policy.down_since, policy.why) == (clock.now, Why.UNREACHABLE)


def test_without_a_change_hook_the_policy_still_works() -> None:
    policy = Failover(has_fallback=True, after_s=1.0, probe_every_s=1.0, clock=Clock())
    policy.primary_failed(Why.UNREACHABLE)
    assert policy.preferred() == FALLBACK
