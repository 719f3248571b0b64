"""The closed sets the database stores as text (pure: no sqlalchemy, so the payload builders stay pure too).

The strings are the stored values: renaming a member's value needs a migration.
"""

from __future__ import annotations

import enum


class CallStatus(enum.StrEnum):
    """`calls.status`: streaming still, or ended."""

    ACTIVE = "active"
    COMPLETED = "completed"


class DeliveryStatus(enum.StrEnum):
    """`webhook_deliveries.status`: waiting for (another) attempt, received, or given up on."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class EventType(enum.StrEnum):
    """`webhook_deliveries.event_type`, and the `type` of the event TRANSCRIPT_WEBHOOK_URL receives."""

    UTTERANCE_FINAL = "utterance.final"
    CALL_COMPLETED = "call.completed"
    CALL_ALERT = "call.alert"
    CALL_ANALYZED = "call.analyzed"


class JobStatus(enum.StrEnum):
    """`jobs.status`: waiting for (another) attempt, or finished one of three ways."""

    PENDING = "pending"
    DONE = "done"
    SKIPPED = "skipped"  # nothing to do, with its reason: never tried again
    FAILED = "failed"  # a permanent failure, or too many attempts: never tried again


class AnalysisStatus(enum.StrEnum):
    """`analyses.status`: analysed, or why not."""

    DONE = "done"
    SKIPPED = "skipped"  # what cannot be analysed: off, not English, too few words
    FAILED = "failed"  # Deepgram refused it, or kept failing
