"""Wiring layer: the one typed settings object, read from the environment and an optional `.env`.

Every setting is documented in `.env.example`. Secrets are `SecretStr`, so they never appear in a repr,
a log line or an error message. A bad value stops start-up with a message that names the variable and
what it accepts (`describe_error`).
"""

from __future__ import annotations

import re
import sys
import urllib.parse
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service import mulaw

StreamTrack = Literal["inbound_track", "outbound_track", "both_tracks"]
LogFormat = Literal["text", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

# E.164 numbers, or SIP URIs / client identities, which <Dial> also takes.
_DIAL_TARGET = re.compile(r"^(\+[1-9]\d{6,14}|sip:\S+|client:\S+)$")


class Settings(BaseSettings):
    """Everything callscribe can be told; field names are the environment variables, upper-cased."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # --- Deepgram -----------------------------------------------------------------------------------
    deepgram_api_key: SecretStr | None = None
    deepgram_url: str = "https://api.deepgram.com"
    deepgram_model: str = "nova-3"
    deepgram_language: str = "en-US"
    deepgram_interim_results: bool = True
    deepgram_punctuate: bool = True
    deepgram_smart_format: bool = True
    deepgram_endpointing_ms: int = Field(default=300, ge=0)  # 0 turns endpointing off
    deepgram_utterance_end_ms: int = Field(default=1000, ge=0)  # 0 turns UtteranceEnd off
    deepgram_vad_events: bool = False
    # Deepgram diarization on single-track calls: finals are split per voice, labelled "speaker 1", "speaker 2"...
    deepgram_diarize: bool = False
    deepgram_keyterms: Annotated[tuple[str, ...], NoDecode] = ()
    # Any other live option, as a query string: "diarize=true&redact=pci&tag=support".
    deepgram_options: str = ""
    deepgram_keepalive_s: float = Field(default=4.0, gt=0, le=8)  # Deepgram closes after 10 s of nothing
    deepgram_close_timeout_s: float = Field(default=5.0, gt=0, le=25)
    deepgram_connect_timeout_s: float = Field(default=10.0, gt=0, le=30)
    # Deepgram silent this long while audio waits for results: treat the connection as dead and reconnect.
    deepgram_result_timeout_s: float = Field(default=15.0, gt=0, le=120)
    # Frames are grouped into one send of this many ms; 20 sends each frame as it comes.
    audio_batch_ms: int = Field(default=mulaw.FRAME_MS, ge=mulaw.FRAME_MS, le=100)
    # Audio held for a track while Deepgram is slow, connecting or reconnecting (not yet final), in seconds.
    audio_buffer_s: float = Field(default=30.0, gt=0, le=600)
    # Reconnect backoff (full jitter) and how long Deepgram may stay unreachable before audio goes to the spool.
    deepgram_backoff_initial_s: float = Field(default=0.25, gt=0, le=10)
    deepgram_backoff_max_s: float = Field(default=8.0, gt=0, le=120)
    deepgram_outage_s: float = Field(default=20.0, gt=0, le=600)
    # Pre-recorded (batch) API for spooled audio; defaults to DEEPGRAM_URL's host.
    deepgram_batch_url: str | None = None

    # Bound on finishing calls after SIGTERM; Heroku kills the process 30 s after it.
    shutdown_timeout_s: float = Field(default=20.0, gt=0, le=120)

    # --- Spool: audio live transcription could not cover, transcribed later in batch -----------------------
    spool_dir: Path = Path("spool")
    spool_retry_s: float = Field(default=30.0, gt=0, le=3600)

    # --- Twilio ---------------------------------------------------------------------------------------
    twilio_auth_token: SecretStr | None = None
    callscribe_insecure_dev: bool = False
    public_url: str | None = None
    forward_to: str | None = None
    greeting: str = "This call is being transcribed."
    pause_s: int = Field(default=3600, ge=1, le=14400)  # Twilio ends every call after 4 hours
    stream_track: StreamTrack = "inbound_track"
    max_message_bytes: int = Field(default=64 * 1024, ge=1024)
    max_calls: int = Field(default=100, ge=1)

    # --- Transcripts as data ----------------------------------------------------------------------------
    # SQLite file by default; Heroku's postgres:// URLs are accepted as they are.
    database_url: str = "sqlite+aiosqlite:///callscribe.sqlite3"
    # Writes wait here (in memory) while the database is slow or down; past it they go to the journal file.
    db_queue_max: int = Field(default=10_000, ge=10)
    db_journal_path: Path = Path("callscribe-journal.jsonl")
    retention_days: int | None = Field(default=None, ge=1)
    speaker_inbound: str = Field(default="caller", min_length=1, max_length=64)
    speaker_outbound: str = Field(default="agent", min_length=1, max_length=64)
    # The /api bearer token; without it the API answers 503 saying it is off.
    api_token: SecretStr | None = None
    transcript_webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    # /metrics takes this bearer token, so a scraper need not hold API_TOKEN (which reads transcripts);
    # unset, /metrics takes API_TOKEN.
    metrics_token: SecretStr | None = None

    # --- Serving and logs -----------------------------------------------------------------------------
    port: int = Field(default=5001, ge=1, le=65535)
    log_level: LogLevel = "INFO"
    log_format: LogFormat = "text"

    @field_validator(
        "deepgram_api_key", "twilio_auth_token", "api_token", "webhook_secret", "metrics_token", mode="before"
    )
    @classmethod
    def _blank_secret_is_unset(cls, value: object) -> object:
        # `DEEPGRAM_API_KEY=` in a .env means "not set", not "a key that Deepgram will refuse".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme.split("+", 1)[0] not in {"sqlite", "postgres", "postgresql"}:
            raise ValueError("must be a sqlite:/// or postgres:// URL, such as postgres://user:pass@host:5432/db")
        return value

    @field_validator("transcript_webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError("must be an absolute http(s):// URL")
        return value

    @model_validator(mode="after")
    def _webhook_needs_a_secret(self) -> Settings:
        if self.transcript_webhook_url and self.webhook_secret is None:
            raise ValueError(
                "WEBHOOK_SECRET is required with TRANSCRIPT_WEBHOOK_URL, so receivers can verify deliveries"
            )
        return self

    @field_validator("deepgram_url")
    @classmethod
    def _deepgram_url(cls, value: str) -> str:
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in {"http", "https", "ws", "wss"} or not parts.netloc:
            raise ValueError("must be an absolute http(s):// or ws(s):// URL such as https://api.deepgram.com")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query string or fragment")
        return value.rstrip("/")

    @field_validator("deepgram_batch_url")
    @classmethod
    def _batch_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc or parts.query or parts.fragment:
            raise ValueError("must be an absolute http(s):// base URL such as https://api.deepgram.com")
        return value.rstrip("/")

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError("must be the service's public https:// base URL, such as https://calls.example.com")
        if parts.path not in {"", "/"} or parts.query or parts.fragment:
            raise ValueError("must be a bare base URL with no path or query, such as https://calls.example.com")
        return f"{parts.scheme}://{parts.netloc}"

    @field_validator("forward_to")
    @classmethod
    def _forward_to(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not _DIAL_TARGET.match(value):
            raise ValueError("must be an E.164 number such as +14155550100, or a sip: or client: address")
        return value

    @field_validator("deepgram_keyterms", mode="before")
    @classmethod
    def _keyterms(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(term.strip() for term in value.split(",") if term.strip())
        return value

    @field_validator("deepgram_options")
    @classmethod
    def _options(cls, value: str) -> str:
        try:
            urllib.parse.parse_qsl(value, keep_blank_values=True, strict_parsing=bool(value))
        except ValueError as exc:
            raise ValueError("must be a query string such as diarize=true&redact=pci") from exc
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def deepgram_extra_options(self) -> list[tuple[str, str]]:
        """The pass-through live options, in the order given."""
        return urllib.parse.parse_qsl(self.deepgram_options, keep_blank_values=True)

    @property
    def deepgram_live_url(self) -> str:
        """The live socket's base: the same host as DEEPGRAM_URL with ws/wss (the SDK appends /v1/listen)."""
        parts = urllib.parse.urlsplit(self.deepgram_url)
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
        return urllib.parse.urlunsplit((scheme, parts.netloc, parts.path, "", ""))

    @property
    def deepgram_rest_url(self) -> str:
        """The REST base (pre-recorded API): DEEPGRAM_BATCH_URL, else DEEPGRAM_URL's host with http/https."""
        if self.deepgram_batch_url:
            return self.deepgram_batch_url
        parts = urllib.parse.urlsplit(self.deepgram_url)
        scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
        return urllib.parse.urlunsplit((scheme, parts.netloc, parts.path, "", ""))


def describe_error(error: ValidationError) -> str:
    """Turn a settings validation error into lines that name each variable and what it accepts."""
    lines = ["callscribe cannot start: bad configuration"]
    for problem in error.errors(include_input=False, include_url=False):
        variable = str(problem["loc"][0]).upper() if problem["loc"] else "(settings)"
        lines.append(f"  {variable}: {problem['msg']}")
    return "\n".join(lines)


def load_settings() -> Settings:
    """Settings from the environment and .env; a bad value exits 2 with a message naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        sys.stderr.write(describe_error(exc) + "\n")
        raise SystemExit(2) from None
