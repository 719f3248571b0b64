"""What an attempt at a job means for it (`storage/job_policy.py`): a table of outcomes and attempt counts."""

from __future__ import annotations

import random

import pytest

from service.storage.job_policy import REASON_MAX, Decision, Done, Fail, Outcome, Policy, Retry, Skip, abandoned, decide
from service.storage.statuses import JobStatus

POLICY = Policy(max_attempts=3, base_s=10.0, cap_s=25.0)


@pytest.mark.parametrize(
    ("outcome", "attempts", "status", "reason"),
    [
        (Done(), 1, JobStatus.DONE, None),
        (Done(), 3, JobStatus.DONE, None),
        (Skip("12 words"), 1, JobStatus.SKIPPED, "12 words"),
        (Fail("HTTP 400: bad"), 1, JobStatus.FAILED, "HTTP 400: bad"),
        (Retry("HTTP 429"), 1, JobStatus.PENDING, "HTTP 429"),
        (Retry("HTTP 503"), 2, JobStatus.PENDING, "HTTP 503"),
        (Retry("HTTP 503"), 3, JobStatus.FAILED, "gave up after 3 attempts: HTTP 503"),
        (Retry("HTTP 503"), 9, JobStatus.FAILED, "gave up after 9 attempts: HTTP 503"),
    ],
)
def test_an_outcome_decides_the_jobs_status_and_reason(
    outcome: Outcome, attempts: int, status: JobStatus, reason: str | None
) -> None:
    decision = decide(outcome, attempts, POLICY, random.Random(1))
    assert (decision.status, decision.reason) == (status, reason)
    assert (decision.retry_in_s is not None) == (status == JobStatus.PENDING)


@pytest.mark.parametrize(("attempts", "ceiling"), [(1, 10.0), (2, 20.0), (3, 25.0), (30, 25.0)])
def test_a_retry_waits_full_jitter_up_to_a_doubling_ceiling_capped(attempts: int, ceiling: float) -> None:
    """Retry.backoff: uniform in [0, min(cap, base * 2**(n-1))], so many jobs that failed together spread out."""
    policy = Policy(max_attempts=100, base_s=10.0, cap_s=25.0)
    delays = [decide(Retry("x"), attempts, policy, random.Random(seed)).retry_in_s for seed in range(200)]
    assert all(delay is not None and 0.0 <= delay <= ceiling for delay in delays)
    assert max(delay or 0.0 for delay in delays) > ceiling * 0.9  # the whole range is used


def test_a_reason_is_kept_short() -> None:
    decision = decide(Fail("x" * 5000), 1, POLICY, random.Random(1))
    assert decision.reason == "x" * REASON_MAX


@pytest.mark.parametrize(("attempts", "gives_up"), [(1, False), (3, False), (4, True), (10, True)])
def test_claims_past_the_budget_fail_the_job(attempts: int, gives_up: bool) -> None:
    """A claim beyond max_attempts: every earlier one ended without an answer (a process that died)."""
    decision = abandoned(attempts, POLICY)
    assert (decision is not None) == gives_up
    if decision is not None:
        assert decision == Decision(JobStatus.FAILED, decision.reason, None)
        assert str(decision.reason).startswith("gave up after 3 attempts")
