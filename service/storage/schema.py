"""Storage layer: the database schema (SQLAlchemy 2) and the async engine for DATABASE_URL.

SQLite (aiosqlite) in the working directory by default, so `make run` needs nothing else; PostgreSQL
(asyncpg) when DATABASE_URL says so, including Heroku's `postgres://` form. The schema is managed by the
Alembic migrations in `service/storage/migrations/`; `metadata` here is what they are checked against.

Every row has a natural, idempotent key, so writing the same call or utterance twice (a retry, a journal
replay, a batch delivery after a crash) never makes two rows. The closed sets of values some columns hold are
the `StrEnum`s of `statuses.py`: their members are the very strings the database stores, so no migration
depends on them.
"""

from __future__ import annotations

import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    event,
    false,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from service.storage.statuses import CallStatus, DeliveryStatus, JobStatus

# Constraint names are fixed so migrations can name them on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[str]: JSON, list[dict[str, Any]]: JSON}


class Call(Base):
    """One call's stream: who, when, how it ended, and the counts from its summary line."""

    __tablename__ = "calls"

    call_sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    stream_sid: Mapped[str] = mapped_column(String(64))
    account_sid: Mapped[str] = mapped_column(String(64), default="")
    from_number: Mapped[str] = mapped_column(String(64), default="", index=True)
    to_number: Mapped[str] = mapped_column(String(64), default="", index=True)
    direction: Mapped[str] = mapped_column(String(32), default="")
    custom_parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tracks: Mapped[list[str]] = mapped_column(default=list)
    started_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True), index=True)
    ended_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    status: Mapped[str] = mapped_column(String(16), default=CallStatus.ACTIVE, index=True)  # a CallStatus
    ended_by: Mapped[str | None] = mapped_column(Text, default=None)
    deepgram_request_ids: Mapped[list[str]] = mapped_column(default=list)
    audio_s_inbound: Mapped[float] = mapped_column(Float, default=0.0)
    audio_s_outbound: Mapped[float] = mapped_column(Float, default=0.0)
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The call's stream moved to another process at least once (a hand-over at SIGTERM, calls/handover.py).
    handed_over: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Utterance(Base):
    """One final result: a stretch of one track, with its speaker, words and where it came from."""

    __tablename__ = "utterances"
    __table_args__ = (Index("ix_utterances_call_start", "call_sid", "start"),)

    # call/stream/track/start in milliseconds: one final per stretch of one stream's audio, whichever path (live
    # or batch) delivered it, so a second stream of the call never overwrites the first one's words. Rows stored
    # before streams were part of it keep their call/track/start keys (and an empty stream_sid).
    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), ForeignKey("calls.call_sid", ondelete="CASCADE"))
    stream_sid: Mapped[str] = mapped_column(String(64), default="", server_default="")
    track: Mapped[str] = mapped_column(String(16))
    speaker: Mapped[str] = mapped_column(String(64))
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    text: Mapped[str] = mapped_column(Text)
    confidence: Mapped[float] = mapped_column(Float, default=0.0)
    words: Mapped[list[dict[str, Any]]] = mapped_column(default=list)  # each with its `language` (null: not said)
    source: Mapped[str] = mapped_column(String(8), default="live")  # live | batch
    # BCP-47 tags, most words first (DEEPGRAM_LANGUAGE=multi); [] when the engine did not say.
    languages: Mapped[list[str]] = mapped_column(default=list, server_default="[]")
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))


class AlertRow(Base):
    """One live alert a call raised (`service/alerts/`): an ALERT_RULES rule, and the words that fired it or the
    window in which its phrases were missing. Keyed by the alert's stable id (call, rule, start), so the same
    alert raised twice (a retry, a second process) is one row."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_call_start", "call_sid", "start"),)

    alert_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), ForeignKey("calls.call_sid", ondelete="CASCADE"))
    rule: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))  # said | absent
    speaker: Mapped[str] = mapped_column(String(64))
    track: Mapped[str] = mapped_column(String(16))
    phrase: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    raised_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))


class Stream(Base):
    """One stream that was let in (`calls/admission.py`): the database's record of which streams have started,
    so a captured `start` replayed in another process is refused there too."""

    __tablename__ = "streams"
    # One first stream per call, whichever process admits it; hand-overs (first_stream false) may be many.
    __table_args__ = (
        Index(
            "uq_streams_first_stream_call_sid", "call_sid", unique=True,
            sqlite_where=text("first_stream"), postgresql_where=text("first_stream"),
        ),
    )  # fmt: skip

    stream_sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), index=True)
    purpose: Mapped[str] = mapped_column(String(16))  # "voice", "handover", or "" when let in without a token
    track: Mapped[str] = mapped_column(String(16))  # the <Stream track> setting: inbound_track, both_tracks, ...
    first_stream: Mapped[bool] = mapped_column(Boolean)
    started_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))
    # Written after the stream's last words: a hand-over's new stream holds its own words until then.
    ended_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class StreamedCall(Base):
    """A call that has had its first stream: the CallSid and when, nothing else. Neither deleting the call
    (`DELETE /api/calls/{sid}`) nor RETENTION_DAYS removes it, so the `/voice` request of a call, replayed
    after the call is gone (Twilio's signature never expires, and each answer mints a fresh stream token),
    can never store the call again (`storage/streams.py`)."""

    __tablename__ = "streamed_calls"

    call_sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    first_stream_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))


class SpoolSegment(Base):
    """One stretch of one track's audio waiting for batch transcription, in the spool every process shares
    (`spool/shared.py`), with the claim of the process transcribing it, if any."""

    __tablename__ = "spool_segments"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # the local entry's id: stable, keys batch finals
    call_sid: Mapped[str] = mapped_column(String(64))
    stream_sid: Mapped[str] = mapped_column(String(64))
    track: Mapped[str] = mapped_column(String(16))
    start_s: Mapped[float] = mapped_column(Float)  # on the call's timeline
    duration_s: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True), index=True)
    bytes: Mapped[int] = mapped_column(Integer)  # the WAV's size, all chunks together
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    claimed_by: Mapped[str | None] = mapped_column(String(64), default=None)
    claimed_until: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class SpoolChunk(Base):
    """A piece of a shared spool segment's WAV, in order (`seq`), so no row holds megabytes."""

    __tablename__ = "spool_chunks"

    segment_id: Mapped[str] = mapped_column(
        String(200), ForeignKey("spool_segments.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class NumberBackup(Base):
    """A Twilio number's voice webhook as it was before `python -m service twilio configure` changed it: one row
    per number, never overwritten (a second configure would save callscribe's own URL), deleted by `restore`."""

    __tablename__ = "number_backups"

    number_sid: Mapped[str] = mapped_column(String(64), primary_key=True)  # the number's PN... SID
    account_sid: Mapped[str] = mapped_column(String(64))
    phone_number: Mapped[str] = mapped_column(String(64), index=True)  # E.164
    voice_url: Mapped[str] = mapped_column(Text)  # "" when the number had none
    voice_method: Mapped[str] = mapped_column(String(8))
    saved_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))


class WebhookDelivery(Base):
    """One event for TRANSCRIPT_WEBHOOK_URL, kept until the receiver has it (survives restarts)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)  # idempotent: one per event
    event_type: Mapped[str] = mapped_column(String(32))  # an EventType
    call_sid: Mapped[str] = mapped_column(String(64), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)  # a DeliveryStatus
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class Job(Base):
    """One piece of work after a call (`jobs.py`): keyed by its kind and key, so asking twice adds one; claimed by
    one process at a time under a lease, retried with backoff, finished with its outcome and reason."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_due", "status", "run_after"),)

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)  # "analysis"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)  # e.g. "<call_sid>:<transcript version>"
    call_sid: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.PENDING)  # a JobStatus
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # claims so far, the one in progress included
    run_after: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))
    claimed_by: Mapped[str | None] = mapped_column(String(64), default=None)
    claimed_until: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)  # the last error, or why it was skipped
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class Analysis(Base):
    """A call's post-call analysis (ANALYSIS): the latest version of its transcript analysed, or why not."""

    __tablename__ = "analyses"

    call_sid: Mapped[str] = mapped_column(
        String(64), ForeignKey("calls.call_sid", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[str] = mapped_column(String(64))  # the transcript's digest (`stt/analysis.py` `version`)
    status: Mapped[str] = mapped_column(String(16))  # an AnalysisStatus
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    features: Mapped[list[str]] = mapped_column(default=list)
    words: Mapped[int] = mapped_column(Integer, default=0)
    summary: Mapped[str | None] = mapped_column(Text, default=None)
    topics: Mapped[list[dict[str, Any]]] = mapped_column(default=list)
    intents: Mapped[list[dict[str, Any]]] = mapped_column(default=list)
    sentiment: Mapped[dict[str, Any]] = mapped_column(default=dict)  # overall, per speaker, per utterance
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    analyzed_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))


class CoveragePart(Base):
    """Where a stretch of one stream's track went (`calls/coverage.py`'s `Part`): a category (live, replayed,
    paused), a lost reason (`lost:<reason>`), or one spool entry (`spool:<id>`, waiting until batch transcribes
    it or gives up on it). The call's coverage is the sum of its rows over all its streams; storing a stream's
    parts again (a journal replay, a retry) rewrites the same rows. No foreign key: batch may report an entry
    before the call row is written (its stream still on), as the webhook deliveries may outlive theirs."""

    __tablename__ = "coverage"

    call_sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    stream_sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    track: Mapped[str] = mapped_column(String(16), primary_key=True)
    part: Mapped[str] = mapped_column(String(200), primary_key=True)
    category: Mapped[str] = mapped_column(String(16))  # a coverage.Category
    ms: Mapped[int] = mapped_column(Integer)  # whole milliseconds of the track's audio: sums are exact
    reason: Mapped[str] = mapped_column(Text, default="")  # waiting: why it was spooled; lost: a coverage.Lost
    updated_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))


class AuditEntry(Base):
    """One request that changed what callscribe keeps or hears (`audit.py`): a pause, a resume, an erasure, a
    deletion; who asked, how, when, of what, and its counts. Never content: no words, and a number only masked."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True), index=True)
    action: Mapped[str] = mapped_column(String(32))  # an AuditAction
    actor: Mapped[str] = mapped_column(String(128))  # who asked, as they named themselves ("by"), else how
    via: Mapped[str] = mapped_column(String(128))  # "api 203.0.113.9", "page 203.0.113.9", "cli", "callscribe"
    subject: Mapped[str] = mapped_column(String(128), index=True)  # a CallSid, or a masked number
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)  # counts and times, never content


class CallControl(Base):
    """A call's transcription paused or not (`POST /api/calls/{sid}/pause|resume`), the one record every process
    reads: the process holding the call's stream applies it (`calls/pausing.py`), a hand-over's new stream starts
    in it. `version` grows with each change, so a process applies each once and a resume cannot undo a later
    pause; `applied_*` is the holding process's answer, which the API waits for."""

    __tablename__ = "call_controls"

    call_sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    paused: Mapped[bool] = mapped_column(Boolean)
    changed_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))
    changed_by: Mapped[str] = mapped_column(String(128))
    resume_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True), default=None)  # max length
    applied_version: Mapped[int] = mapped_column(Integer, default=0)
    applied_at_s: Mapped[float | None] = mapped_column(Float, default=None)  # on the call's timeline


def async_url(url: str) -> str:
    """DATABASE_URL as SQLAlchemy's async driver URL: Heroku's postgres:// included."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url.removeprefix("sqlite://")
    return url


# --- Transcript search (migration 0004) -------------------------------------------------------------------------
# SQLite: an FTS5 index of utterances.text, external content (the text is not stored twice), kept by triggers.
# PostgreSQL: a GIN index on to_tsvector('simple', text): words as said, no language's stemming. Neither is a
# table of the models; `search_object` names them so the schema checks and Alembic leave them be.
SEARCH_TABLE = "utterances_fts"
SEARCH_INDEX = "ix_utterances_text_search"
SQLITE_SEARCH_DDL = (
    "CREATE VIRTUAL TABLE utterances_fts USING fts5(text, content='utterances', content_rowid='rowid', "
    "tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER utterances_fts_ai AFTER INSERT ON utterances BEGIN "
    "INSERT INTO utterances_fts(rowid, text) VALUES (new.rowid, new.text); END",
    "CREATE TRIGGER utterances_fts_ad AFTER DELETE ON utterances BEGIN "
    "INSERT INTO utterances_fts(utterances_fts, rowid, text) VALUES ('delete', old.rowid, old.text); END",
    "CREATE TRIGGER utterances_fts_au AFTER UPDATE ON utterances BEGIN "
    "INSERT INTO utterances_fts(utterances_fts, rowid, text) VALUES ('delete', old.rowid, old.text); "
    "INSERT INTO utterances_fts(rowid, text) VALUES (new.rowid, new.text); END",
)
POSTGRES_SEARCH_DDL = ("CREATE INDEX ix_utterances_text_search ON utterances USING gin (to_tsvector('simple', text))",)


def search_object(name: str | None) -> bool:
    """Whether `name` is one of the search index's tables, triggers or indexes (not a model's)."""
    return name is not None and (name in {SEARCH_INDEX, SEARCH_TABLE} or name.startswith(SEARCH_TABLE + "_"))


def _create_search_index(target: Any, connection: Any, **_: Any) -> None:
    # create_all (the tests' databases) builds what migration 0004 builds: the same statements.
    ddl = SQLITE_SEARCH_DDL if connection.dialect.name == "sqlite" else POSTGRES_SEARCH_DDL
    for statement in ddl:
        connection.exec_driver_sql(statement)


event.listen(Utterance.__table__, "after_create", _create_search_index)


def create_engine(url: str) -> AsyncEngine:
    """The process's engine; SQLite gets foreign keys on (for ON DELETE CASCADE) on every connection."""
    engine = create_async_engine(async_url(url), pool_pre_ping=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _foreign_keys(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine
