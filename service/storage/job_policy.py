"""Protocol layer (no I/O): what an attempt at a job (`jobs.py`) means for it: finished, skipped with its reason,
tried again after a backoff, or failed for good.

A job is tried at most `max_attempts` times, counting every claim: an attempt whose process died (its lease ran
out) counts too, so a job that kills its worker every time stops after that many, not never. A skip and a
permanent failure are final at once: what cannot work is recorded with its reason and never tried in a loop.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from service.retry import backoff
from service.storage.statuses import JobStatus

MAX_ATTEMPTS = 8  # with BACKOFF_CAP_S, about half an hour of trying
BACKOFF_BASE_S = 5.0
BACKOFF_CAP_S = 600.0
LEASE_S = 120.0  # longer than any one attempt may take (the analysis request's timeout is 60 s)
REASON_MAX = 500  # characters of a reason kept: an error's text is not a place for a transcript


@dataclass(frozen=True, slots=True)
class Done:
    """The work is done."""


@dataclass(frozen=True, slots=True)
class Skip:
    """There is nothing to do, and never will be for this job: why."""

    reason: str


@dataclass(frozen=True, slots=True)
class Retry:
    """It failed in a way that may pass (a 429, a 5xx, no answer): what happened."""

    error: str


@dataclass(frozen=True, slots=True)
class Fail:
    """It failed in a way that will not pass (a 4xx): what happened."""

    error: str


Outcome = Done | Skip | Retry | Fail


@dataclass(frozen=True, slots=True)
class Policy:
    """How often and how patiently a kind of job is tried."""

    max_attempts: int = MAX_ATTEMPTS
    base_s: float = BACKOFF_BASE_S
    cap_s: float = BACKOFF_CAP_S
    lease_s: float = LEASE_S


@dataclass(frozen=True, slots=True)
class Decision:
    """What becomes of the job: its status, the reason kept with it, and when it is due again (pending only)."""

    status: JobStatus
    reason: str | None
    retry_in_s: float | None


def decide(outcome: Outcome, attempts: int, policy: Policy, rng: random.Random) -> Decision:
    """The job after its `attempts`-th attempt ended with `outcome`."""
    if isinstance(outcome, Done):
        return Decision(JobStatus.DONE, None, None)
    if isinstance(outcome, Skip):
        return Decision(JobStatus.SKIPPED, outcome.reason[:REASON_MAX], None)
    if isinstance(outcome, Fail):
        return Decision(JobStatus.FAILED, outcome.error[:REASON_MAX], None)
    if attempts >= policy.max_attempts:
        return Decision(JobStatus.FAILED, f"gave up after {attempts} attempts: {outcome.error}"[:REASON_MAX], None)
    delay = backoff(attempts, base_s=policy.base_s, cap_s=policy.cap_s, rng=rng)
    return Decision(JobStatus.PENDING, outcome.error[:REASON_MAX], delay)


def abandoned(attempts: int, policy: Policy) -> Decision | None:
    """A job just claimed for its `attempts`-th time: failed for good when the attempts before it used up the
    budget without an answer (each ended with its process or its lease), else None: go on."""
    if attempts <= policy.max_attempts:
        return None
    return Decision(
        JobStatus.FAILED,
        f"gave up after {policy.max_attempts} attempts: the last ended without an answer (its process stopped "
        "or its lease ran out)",
        None,
    )
