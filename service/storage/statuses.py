"""The closed sets the database stores as text (pure: no sqlalchemy, so the payload builders stay pure too).

The strings are the stored values: renaming a member's value needs a migration.
"""

from __future__ import annotations

import enum


class CallStatus(enum.StrEnum):
    """`calls.status`: on (streaming, or answered by /voice and waiting for its stream), ended, or never streamed."""

    ACTIVE = "active"
    COMPLETED = "completed"
    NOT_STREAMED = "not_streamed"  # /voice answered it, and no stream of it ever started: `NotStreamed` says why


class NotStreamed(enum.StrEnum):
    """`calls.ended_by` of a call whose stream never started (status `not_streamed`)."""

    NO_STREAM = "no_stream"  # /voice answered with a <Stream>, and none started within STREAM_START_TIMEOUT_S
    BUSY = "busy"  # /voice answered without one: at MAX_CALLS, or shutting down


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
    CALL_NOT_STREAMED = "call.not_streamed"


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


class AuditAction(enum.StrEnum):
    """`audit.action`: what a request changed (`audit.py`)."""

    PAUSE = "pause"  # a call's transcription paused (POST /api/calls/{sid}/pause)
    RESUME = "resume"  # resumed by request (POST /api/calls/{sid}/resume)
    AUTO_RESUME = "auto_resume"  # resumed by the pause's maximum length running out
    DELETE_CALL = "delete_call"  # one call deleted (DELETE /api/calls/{sid})
    ERASE_NUMBER = "erase_number"  # every call to or from a number erased (calls erase, DELETE /api/numbers/{n})
