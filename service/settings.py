"""Wiring layer: the one typed settings object, read from the environment and an optional `.env`.

Every setting is documented here and only here: its description, its group and what it accepts sit on its
field, and `make docs` renders docs/configuration.md and .env.example from them. Secrets are `SecretStr`, so
they never appear in a repr, a log line or an error message. A bad value stops start-up with a message that
names the variable and what it accepts (`describe_error`).
"""

from __future__ import annotations

import re
import sys
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.config import JsonDict
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service import mulaw
from service.alert_rules import AlertRule, parse_rules

# What ANALYSIS may ask Deepgram's text intelligence for, in the order they are shown.
ANALYSIS_FEATURES: Final = ("summary", "topics", "intents", "sentiment")
StreamTrack = Literal["inbound_track", "outbound_track", "both_tracks"]
BatchMs = Annotated[int, Field(ge=mulaw.FRAME_MS, le=400)]  # AUDIO_BATCH_MS as a number: whole frames, up to 400 ms
LogFormat = Literal["text", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]

MIN_PASSWORD_LENGTH: Final = 12  # DASHBOARD_PASSWORD: scrypt slows each guess, length makes them many
MIN_SECRET_LENGTH: Final = 32  # SESSION_SECRET: Heroku's generator makes 64 hex digits
FLUX_EOT_THRESHOLD: Final = 0.7  # Flux's own eot_threshold when none is sent
SESSION_SECRET_FILE: Final = "callscribe-session-secret"  # noqa: S105 - a file name, not a secret

# E.164 numbers, or SIP URIs / client identities, which <Dial> also takes.
_DIAL_TARGET = re.compile(r"^(\+[1-9]\d{6,14}|sip:\S+|client:\S+)$")
_ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
_API_KEY_SID = re.compile(r"^SK[0-9a-fA-F]{32}$")


@dataclass(frozen=True, slots=True)
class SettingGroup:
    """A heading of the configuration reference: the settings whose `group` is `key`, and a note on them
    (Markdown; links are relative to docs/, where the reference is)."""

    key: str
    title: str
    note: str = ""


# The order of the reference (docs/configuration.md, .env.example); each field names one of these keys.
SETTING_GROUPS: Final = (
    SettingGroup(
        "deepgram",
        "Deepgram: what to ask for",
        "callscribe always sends `encoding=mulaw`, `sample_rate=8000` and `channels=1`, because that is Twilio's "
        "audio (both tracks on one connection, with `DEEPGRAM_CONNECTIONS=per_call`: `multichannel=true&channels=2`). "
        "With `diarize=true` in `DEEPGRAM_OPTIONS`, Deepgram labels each word with a speaker, but the log "
        "lines show only the text (`DEEPGRAM_DIARIZE` splits finals per voice instead).",
    ),
    SettingGroup(
        "deepgram_connection",
        "Deepgram: connection and recovery",
        "How each track's live connection is kept, timed out and recovered; [docs/failures.md](failures.md) tells "
        "the whole story.",
    ),
    SettingGroup("spool", "Spool", "Audio that live transcription could not cover, transcribed later in batch."),
    SettingGroup("twilio", "Twilio", "How `/voice` answers Twilio and what `/media` accepts."),
    SettingGroup(
        "data",
        "Transcripts as data",
        "Calls and their final transcripts in a database, the API that reads them and the webhooks that push them "
        "([docs/storage-and-api.md](storage-and-api.md)).",
    ),
    SettingGroup(
        "live",
        "The live feed and the page",
        "`GET /api/live` streams every call event as Server-Sent Events, with replay by `Last-Event-ID`, and `GET /` "
        "is the page that shows them ([docs/live.md](live.md)). One process needs nothing more; with several "
        "workers or dynos, `REDIS_URL` carries every process's events to every other.",
    ),
    SettingGroup(
        "serving",
        "Serving and logs",
        "`WEB_CONCURRENCY` is not a callscribe setting: `python -m service serve` reads it to choose the number of "
        "Hypercorn worker processes (1 if unset; `--workers` overrides it).",
    ),
)


def _doc(
    group: str,
    *,
    accepts: str = "",
    example: str = "",
    default: str = "",
    fill_in: bool = False,
    heroku: JsonDict | None = None,
) -> JsonDict:
    """A field's documentation beyond its description: its `group` (a SETTING_GROUPS key), and optionally
    what it `accepts` where the type does not say it, an `example` value for .env.example when there is no
    default, the `default` in words when the value alone would mislead, `fill_in` for the secrets
    .env.example leaves as an empty line to fill in, and `heroku` for the settings a Heroku user would set:
    app.json lists them, with what the dict adds to the entry (`required`, a `value`, a `generator`)."""
    extra: JsonDict = {"group": group}
    for key, value in (("accepts", accepts), ("example", example), ("default", default)):
        if value:
            extra[key] = value
    if fill_in:
        extra["fill_in"] = True
    if heroku is not None:
        extra["heroku"] = heroku
    return extra


class Settings(BaseSettings):
    """Everything callscribe can be told; field names are the environment variables, upper-cased.

    Each field's description and `_doc` are its documentation: `make docs` renders them into
    docs/configuration.md and .env.example (service/settings_docs.py), and a test fails when those differ.
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # --- Deepgram -----------------------------------------------------------------------------------
    deepgram_api_key: SecretStr | None = Field(
        default=None,
        description="Deepgram API key. Unset or empty: no live connection is made, and every call's audio goes "
        "to the spool.",
        json_schema_extra=_doc("deepgram", fill_in=True, heroku={"required": True}),
    )
    deepgram_url: str = Field(
        default="https://api.deepgram.com",
        description="Deepgram's base URL. The live socket uses the same host with `ws`/`wss`, and the SDK appends "
        "`/v1/listen` (`/v2/listen` for Flux). Point it at a self-hosted Deepgram here.",
        json_schema_extra=_doc("deepgram", accepts="an `http(s)://` or `ws(s)://` URL, no query string"),
    )
    deepgram_model: str = Field(
        default="nova-3",
        description="Deepgram's `model`: any model your Deepgram account can use. A Flux model (`flux-general-en`, "
        "`flux-general-multi`) streams to Flux (`/v2/listen`), which ends results at turns; start-up refuses the "
        "options Flux does not take ([docs/flux.md](flux.md)).",
        json_schema_extra=_doc("deepgram", heroku={}),
    )
    deepgram_language: str = Field(
        default="en-US",
        description=(
            "Deepgram's `language`. `multi` (Nova-3) transcribes a call that switches languages and keeps each "
            "word's and each utterance's language (docs/storage-and-api.md, Languages)."
        ),
        json_schema_extra=_doc("deepgram", heroku={}),
    )
    deepgram_interim_results: bool = Field(
        default=True,
        description="Interim results (`[INTERIM]` lines). `DEEPGRAM_UTTERANCE_END_MS` needs these.",
        json_schema_extra=_doc("deepgram"),
    )
    deepgram_punctuate: bool = Field(
        default=True, description="Deepgram's `punctuate`.", json_schema_extra=_doc("deepgram")
    )
    deepgram_smart_format: bool = Field(
        default=True, description="Deepgram's `smart_format`.", json_schema_extra=_doc("deepgram")
    )
    deepgram_endpointing_ms: int = Field(
        default=300,
        ge=0,
        description="Milliseconds of silence before Deepgram marks `speech_final`. `0` sends `endpointing=false`.",
        json_schema_extra=_doc("deepgram"),
    )
    deepgram_utterance_end_ms: int = Field(
        default=1000,
        ge=0,
        description="Deepgram's `utterance_end_ms`, sent only when it is above 0 and interim results are on. This "
        "release does not log `UtteranceEnd` messages.",
        json_schema_extra=_doc("deepgram"),
    )
    deepgram_vad_events: bool = Field(
        default=False,
        description="Sends `vad_events=true` (`SpeechStarted` messages, which this release does not log).",
        json_schema_extra=_doc("deepgram"),
    )
    deepgram_diarize: bool = Field(
        default=False,
        description="On calls streamed as one track, asks Deepgram to separate voices: finals are split per voice "
        "and labelled `speaker 1`, `speaker 2`, ... Not asked for with `both_tracks`, where each track is one side "
        "already.",
        json_schema_extra=_doc("deepgram"),
    )
    deepgram_keyterms: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Terms to listen for, each sent as a `keyterm` (Nova-3 models).",
        json_schema_extra=_doc("deepgram", accepts="comma-separated terms", example="Acme,Zed Pro", heroku={}),
    )
    analysis: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Post-call analysis by Deepgram's text intelligence (`/v1/read`, English only) on each "
        "completed call's final transcript: any of `summary`, `topics`, `intents`, `sentiment`, or `on` for all "
        "four. Empty: off. Delivered as `call.analyzed` and shown on the call's page (docs/storage-and-api.md).",
        json_schema_extra=_doc(
            "deepgram",
            accepts="`on`, or comma-separated `summary`, `topics`, `intents`, `sentiment`",
            example="on",
            heroku={},
        ),
    )
    deepgram_eot_threshold: float | None = Field(
        default=None,
        ge=0.5,
        le=1.0,
        description="Flux models only (`DEEPGRAM_MODEL=flux-...`): how confident Flux must be that a speaker is done "
        "before it ends the turn (`eot_threshold`); higher ends turns later and cuts fewer sentences.",
        json_schema_extra=_doc("deepgram", accepts="0.5 to 1.0", default="(Deepgram's, 0.7)"),
    )
    deepgram_eager_eot_threshold: float | None = Field(
        default=None,
        ge=0.3,
        le=0.9,
        description="Flux models only: the confidence at which Flux says a turn has probably ended "
        "(`EagerEndOfTurn`, and `TurnResumed` when the speaker goes on), ahead of its end. Off unless set; no "
        "higher than `DEEPGRAM_EOT_THRESHOLD`.",
        json_schema_extra=_doc("deepgram", accepts="0.3 to 0.9", default="(off)"),
    )
    deepgram_eot_timeout_ms: int | None = Field(
        default=None,
        ge=500,
        le=60_000,
        description="Flux models only: milliseconds of silence after speech after which Flux ends the turn however "
        "unsure it is (`eot_timeout_ms`).",
        json_schema_extra=_doc("deepgram", accepts="500 to 60000", default="(Deepgram's, 5000)"),
    )
    deepgram_language_hint: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="`flux-general-multi` only: the languages the calls are likely in, each sent as a "
        "`language_hint`; Flux still detects others.",
        json_schema_extra=_doc("deepgram", accepts="comma-separated language codes", example="en,es"),
    )
    deepgram_batch_model: str | None = Field(
        default=None,
        description="The pre-recorded model that transcribes spooled audio. Flux is live only, so a Flux setup "
        "needs a pre-recorded one.",
        json_schema_extra=_doc(
            "deepgram", accepts="a pre-recorded model", default="(`DEEPGRAM_MODEL`; `nova-3` when that is Flux)"
        ),
    )
    deepgram_options: str = Field(
        default="",
        description="Any other live option (`diarize`, `redact`, `numerals`, `tag`, ...). A name repeated in the "
        "string is sent repeated. callscribe drops, with a `settings.option_ignored` warning at start-up, any name "
        "it sets itself: `model`, `language`, `encoding`, `sample_rate`, `channels` and `multichannel` (which "
        "`DEEPGRAM_CONNECTIONS` decides), `interim_results`, `punctuate`, `smart_format`, `endpointing`, and "
        "`utterance_end_ms`/`vad_events`/`keyterm` when the settings above send them. A malformed query string "
        "stops start-up.",
        json_schema_extra=_doc(
            "deepgram", accepts="a query string", example="diarize=true&redact=pci&tag=support", heroku={}
        ),
    )
    deepgram_mip_opt_out: bool = Field(
        default=True,
        description="Sends `mip_opt_out=true` with every request (live, Flux and batch): Deepgram then keeps the audio "
        "and transcript only while it processes the request, instead of retaining them for its Model Improvement "
        "Program, which it does by default. On by default because callers' words are personal data that callscribe "
        "keeps itself, under your retention; set `false` only if your Deepgram agreement wants the program.",
        json_schema_extra=_doc("data"),
    )
    redact: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Redaction, in every output. Each name is sent to Deepgram as `redact` where the model takes it "
        "(v1 and batch all of them, Flux `numbers` only), and with any name set callscribe's own redactor also "
        "runs on every interim and final before the log, the database, the live feed or a webhook sees it: card "
        "numbers (also spoken as words, or split across two finals), their expiry and code, and social security "
        "numbers become `[card]`, `[expiry]`, `[cvv]`, `[ssn]` ([docs/compliance.md](compliance.md)).",
        json_schema_extra=_doc(
            "data",
            accepts="comma-separated: `pci`, `ssn`, `numbers`, `pii`, `phi` or Deepgram entity types",
            default="(off)",
            example="pci,ssn",
        ),
    )
    transcription_pause_max_s: int = Field(
        default=300,
        ge=0,
        le=14400,
        description="How long a pause of a call's transcription (`POST /api/calls/{sid}/pause`) lasts at most when "
        "the request names no `max_s`: then it resumes by itself, and the audit log says so. A forgotten pause "
        "otherwise silences the rest of the call; reading out a card takes well under a minute. `0`: no limit.",
        json_schema_extra=_doc("data", accepts="seconds, 0 to 14400 (0: none)"),
    )
    deepgram_keepalive_s: float = Field(
        default=4.0,
        gt=0,
        le=8,
        description="Sends `KeepAlive` after this many seconds without sending audio. Deepgram closes a "
        "connection after 10 s of neither. Flux has no `KeepAlive`: it gets 100 ms of silence instead.",
        json_schema_extra=_doc("deepgram_connection"),
    )
    deepgram_close_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=25,
        description="After `CloseStream`, how many seconds to wait for the last finals. Audio that is still not "
        "final is then replayed on a new connection.",
        json_schema_extra=_doc("deepgram_connection"),
    )
    deepgram_connect_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=30,
        description="Limit, in seconds, on opening a connection. Past it, the attempt counts as failed and is retried.",
        json_schema_extra=_doc("deepgram_connection"),
    )
    deepgram_result_timeout_s: float = Field(
        default=15.0,
        gt=0,
        le=120,
        description="If Deepgram sends nothing for this many seconds while sent audio still waits for finals, "
        "callscribe treats the connection as dead, reconnects and replays.",
        json_schema_extra=_doc("deepgram_connection"),
    )
    audio_batch_ms: BatchMs | Literal["auto"] = Field(
        default=mulaw.FRAME_MS,
        description="Groups Twilio's 20 ms frames into sends of this many milliseconds (whole frames). `20` sends "
        "each frame as it arrives; more trades latency (a frame waits up to the batch's length) for fewer sends "
        "and less CPU. `400` is what Deepgram's own Twilio sample sends. `auto` sends each frame as it arrives "
        "while the process keeps up, and the frames that queued while it was busy together (up to 250 ms a send): "
        "latency rises only under load.",
        json_schema_extra=_doc("deepgram_connection"),
    )
    audio_buffer_s: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Per track, the most audio (seconds) held in memory that is not yet final, while Deepgram is "
        "slow, connecting or reconnecting. Past it, the rest of that track goes to the spool.",
        json_schema_extra=_doc("deepgram_connection"),
    )
    deepgram_backoff_initial_s: float = Field(
        default=0.25,
        gt=0,
        le=10,
        description="Reconnect backoff with full jitter: retry n waits a random time between 0 and "
        "min(`DEEPGRAM_BACKOFF_MAX_S`, initial * 2^(n-1)) seconds.",
        json_schema_extra=_doc("deepgram_connection"),
    )
    deepgram_backoff_max_s: float = Field(
        default=8.0,
        gt=0,
        le=120,
        description="Upper bound, in seconds, of one backoff wait.",
        json_schema_extra=_doc("deepgram_connection"),
    )
    deepgram_outage_s: float = Field(
        default=20.0,
        gt=0,
        le=600,
        description="How many seconds a track's connection may keep failing before the rest of the track goes to "
        "the spool. A connection that lasted 5 s, or returned a final, ends the outage.",
        json_schema_extra=_doc("deepgram_connection"),
    )
    deepgram_connections: Literal["per_track", "per_call"] = Field(
        default="per_track",
        description="How a call streamed with `both_tracks` reaches Deepgram: `per_track`, one connection per "
        "track; `per_call`, both tracks on one connection (`multichannel=true&channels=2`, the tracks interleaved "
        "sample by sample on Twilio's timestamps, results mapped back to track and speaker by channel), which "
        "halves the concurrent streams a call takes from a Deepgram plan's limit. Single-track calls always use "
        "one connection. Flux takes one channel a connection, so on Flux `per_call` falls back to `per_track` (and "
        "start-up says so).",
        json_schema_extra=_doc("deepgram_connection", heroku={"required": False}),
    )
    deepgram_channel_lag_ms: int = Field(
        default=200,
        ge=20,
        le=2000,
        description="With `DEEPGRAM_CONNECTIONS=per_call`: how many milliseconds one track may fall behind the "
        "other (an outbound track with nothing playing, a `<Dial>` still ringing) before it is padded with "
        "silence so the other goes on to Deepgram. Audio that then arrives for the padded stretch is cut and "
        "counted as lost.",
        json_schema_extra=_doc("deepgram_connection"),
    )
    deepgram_batch_url: str | None = Field(
        default=None,
        description="Base URL of Deepgram's pre-recorded API, used for spooled audio.",
        json_schema_extra=_doc(
            "deepgram_connection",
            accepts="an `http(s)://` URL, no query string",
            example="https://api.deepgram.com",
            default="(`DEEPGRAM_URL`, as http/https)",
        ),
    )

    deepgram_fallback_url: str | None = Field(
        default=None,
        description="A second Deepgram to fail over to mid-call: Deepgram's EU endpoint, another region or a "
        "self-hosted Deepgram, in `DEEPGRAM_URL`'s form (its pre-recorded API at the same host, with http/https). "
        "When the primary refuses the key or the account (HTTP 401, 402, 403), cannot be reached, or keeps failing "
        "for `DEEPGRAM_FAILOVER_AFTER_S`, a track moves here and replays what was not final; while the primary is "
        "down, new calls start here and it is probed every `DEEPGRAM_PROBE_S`. Unset: one Deepgram, as before.",
        json_schema_extra=_doc(
            "deepgram_connection",
            accepts="an `http(s)://` or `ws(s)://` URL, no query string",
            example="https://api.eu.deepgram.com",
            heroku={"required": False},
        ),
    )
    deepgram_fallback_api_key: SecretStr | None = Field(
        default=None,
        description="The API key for `DEEPGRAM_FALLBACK_URL`, when it is not `DEEPGRAM_API_KEY` (another project, a "
        "self-hosted Deepgram's key).",
        json_schema_extra=_doc("deepgram_connection", default="(`DEEPGRAM_API_KEY`)", heroku={"required": False}),
    )
    deepgram_failover_after_s: float = Field(
        default=3.0,
        gt=0,
        le=600,
        description="With `DEEPGRAM_FALLBACK_URL`: how many seconds a track's connection to the primary may keep "
        "failing (drops, closes, silence; refusals and failed connects move at once) before the primary counts as "
        "down and the track moves to the fallback. Must be below `DEEPGRAM_OUTAGE_S`.",
        json_schema_extra=_doc("deepgram_connection"),
    )
    deepgram_probe_s: float = Field(
        default=10.0,
        ge=0.1,
        le=600,
        description="With `DEEPGRAM_FALLBACK_URL`, while the primary is down: how often one probe per process opens "
        "a connection to the primary and closes it at once (no audio). When it answers, new connections go to the "
        "primary again; calls already on the fallback stay there.",
        json_schema_extra=_doc("deepgram_connection"),
    )

    shutdown_timeout_s: float = Field(
        default=20.0,
        gt=0,
        le=120,
        description="After SIGTERM, how many seconds open calls get to receive Deepgram's last finals before "
        "whatever is not final is spooled. Heroku kills a process 30 s after SIGTERM.",
        json_schema_extra=_doc("deepgram_connection"),
    )

    # --- Spool: audio live transcription could not cover, transcribed later in batch -----------------------
    spool_dir: Path = Field(
        default=Path("spool"),
        description="Where audio that live transcription could not cover is kept until it is transcribed in "
        "batch. On Heroku it lives only as long as the dyno.",
        json_schema_extra=_doc("spool", accepts="a directory, relative to the working directory unless absolute"),
    )
    spool_retry_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Seconds between passes that transcribe spooled audio in batch (the first pass runs at start-up).",
        json_schema_extra=_doc("spool"),
    )

    spool_shared_max_mb: int = Field(
        default=1024,
        ge=1,
        description="With PostgreSQL as `DATABASE_URL` (or with `SPOOL_URL`), spooled audio goes to the database "
        "(or the bucket), where every process (every dyno) can transcribe it, so it outlives the dyno that spooled "
        "it. Past this many megabytes waiting there, new entries stay on the local disk (`SPOOL_DIR`) and are "
        "transcribed by the process that spooled them, as without a shared spool.",
        json_schema_extra=_doc("spool"),
    )
    spool_retention_days: int = Field(
        default=7,
        ge=1,
        description="Shared spool entries (PostgreSQL or `SPOOL_URL`) older than this many days are deleted, "
        "their objects with them, each logged as "
        "`spool.expired`: audio that Deepgram's pre-recorded API refused for that long is given up.",
        json_schema_extra=_doc("spool"),
    )
    spool_url: str | None = Field(
        default=None,
        description="Where the shared spool keeps its audio: `s3://bucket/prefix` puts each spooled segment in an "
        "object of that S3-compatible bucket (AWS S3, MinIO, Cloudflare R2, Heroku's bucket add-ons), and its claim "
        "in the database (`DATABASE_URL`), so with PostgreSQL every dyno shares it, and with SQLite every process "
        "on this machine does. Unset: the audio goes to PostgreSQL's `spool_chunks` when `DATABASE_URL` is "
        "PostgreSQL, else it stays on the local disk (`SPOOL_DIR`).",
        json_schema_extra=_doc(
            "spool", accepts="an `s3://bucket` or `s3://bucket/prefix` URL", default="(unset)", heroku={}
        ),
    )
    spool_s3_endpoint_url: str | None = Field(
        default=None,
        description="The S3 API's URL for a server that is not AWS (MinIO, R2's "
        "`https://<account>.r2.cloudflarestorage.com`, a bucket add-on's endpoint). Unset: AWS S3 in `AWS_REGION`.",
        json_schema_extra=_doc("spool", accepts="an `http(s)://` URL", default="(unset: AWS)", heroku={}),
    )
    aws_access_key_id: SecretStr | None = Field(
        default=None,
        description="The access key of the bucket in `SPOOL_URL`. Unset: botocore's usual chain (its own "
        "environment variables, `~/.aws`, an instance role).",
        json_schema_extra=_doc("spool", fill_in=True, heroku={}),
    )
    aws_secret_access_key: SecretStr | None = Field(
        default=None,
        description="The secret of `AWS_ACCESS_KEY_ID`.",
        json_schema_extra=_doc("spool", fill_in=True, heroku={}),
    )
    aws_region: str | None = Field(
        default=None,
        description="The bucket's region (`us-east-1`, `eu-west-1`; `auto` for R2).",
        json_schema_extra=_doc("spool", example="us-east-1", default="(unset: us-east-1)", heroku={}),
    )
    spool_claim_lease_s: float = Field(
        default=600.0,
        gt=0,
        le=86400,
        description="A process transcribing a shared spool entry holds it this long; if it dies meanwhile, another "
        "process takes the entry once the lease has run out. Longer than the batch transcription of the longest "
        "entry takes.",
        json_schema_extra=_doc("spool"),
    )

    # --- Twilio ---------------------------------------------------------------------------------------
    twilio_auth_token: SecretStr | None = Field(
        default=None,
        description="Auth Token of the Twilio account that owns the number. Checks `X-Twilio-Signature` on "
        "`/voice` and on the `/media` upgrade. Unset or empty: every request is refused with 403. For local "
        "simulation any value works: `make simulate` signs with the same one.",
        json_schema_extra=_doc("twilio", fill_in=True, heroku={"required": True}),
    )
    callscribe_insecure_dev: bool = Field(
        default=False,
        description="With `true` **and** no `TWILIO_AUTH_TOKEN`, signatures are not checked, and each request "
        "logs a `signature.unchecked` warning. Use it only on your own machine. When a token is set, signatures "
        "are always checked.",
        json_schema_extra=_doc("twilio"),
    )
    public_url: str | None = Field(
        default=None,
        description="The base URL Twilio uses to reach you. When it is set, signatures are checked against it and "
        "the `<Stream>` URL uses its host. When it is unset, both come from the request: its `Host` header (which "
        "Heroku's router and ngrok route by) and the one proxy hop's `X-Forwarded-Proto`; `X-Forwarded-Host` is "
        "never trusted, since any client can set it. Set it when clients can reach the service without such a "
        "router in front, behind more hops, or under another host name.",
        json_schema_extra=_doc(
            "twilio",
            accepts="an `http(s)://` scheme and host, no path or query",
            example="https://calls.example.com",
            heroku={},
        ),
    )
    forward_to: str | None = Field(
        default=None,
        description="When set, `/voice` connects the call here with `<Dial>` after starting the stream, instead of "
        "`GREETING` and `PAUSE_S`. `sip:` and `client:` addresses become the nested `<Sip>`/`<Client>` nouns "
        "Twilio expects.",
        json_schema_extra=_doc(
            "twilio",
            accepts="an E.164 number, or a `sip:` or `client:` address",
            example="+14155550100",
            heroku={},
        ),
    )
    greeting: str = Field(
        default="This call is being transcribed.",
        description="The `<Say>` text when `FORWARD_TO` is unset.",
        json_schema_extra=_doc("twilio", heroku={}),
    )
    pause_s: int = Field(
        default=3600,
        ge=1,
        le=14400,
        description="The `<Pause length>` in seconds after the greeting. The call ends when the pause runs out. "
        "Twilio ends every call after 4 hours.",
        json_schema_extra=_doc("twilio"),
    )
    stream_track: StreamTrack = Field(
        default="inbound_track",
        description="`inbound_track` (the caller), `outbound_track` (what Twilio plays to the caller, which with "
        "`FORWARD_TO` is the other party) or `both_tracks`. With `both_tracks`, `DEEPGRAM_CONNECTIONS` says "
        "whether each track gets a Deepgram connection of its own.",
        json_schema_extra=_doc("twilio", heroku={}),
    )
    max_message_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Largest WebSocket message accepted from Twilio, in bytes. A larger one closes the stream "
        "with 1009.",
        json_schema_extra=_doc("twilio"),
    )
    max_calls: int = Field(
        default=100,
        ge=1,
        description="Streams one process takes at once; more calls go on untranscribed. With several Hypercorn "
        "workers, each worker has its own limit. Sockets that have not sent `start` yet do not count: they have a "
        "bound of their own (twice MAX_CALLS), so they can never keep real calls out.",
        json_schema_extra=_doc("twilio", heroku={}),
    )
    twilio_account_sid: str | None = Field(
        default=None,
        description="The Twilio account's SID (`AC` and 32 hex digits). When set, a stream whose `start` names "
        "another account is refused with close 1008, and `python -m service doctor --number` and `twilio configure` "
        "can ask Twilio's REST API about the number as this account.",
        json_schema_extra=_doc("twilio", example="AC0123456789abcdef0123456789abcdef", heroku={}),
    )
    twilio_api_url: str = Field(
        default="https://api.twilio.com",
        description="Base URL of Twilio's REST API, which `python -m service doctor` asks for the number's voice "
        "configuration. Change it only to point at a stand-in (tests).",
        json_schema_extra=_doc("twilio", accepts="an `http(s)://` scheme and host, no path or query"),
    )
    twilio_api_key_sid: str | None = Field(
        default=None,
        description="A Twilio API key's SID (`SK` and 32 hex digits), with `TWILIO_API_KEY_SECRET`, for Twilio's "
        "REST API (`python -m service doctor`). Unset: the REST API is called with `TWILIO_ACCOUNT_SID` and "
        "`TWILIO_AUTH_TOKEN`.",
        # No example: one would need its secret beside it to validate, and a secret's example is a leak waiting.
        json_schema_extra=_doc("twilio", accepts="`SK` and 32 hex digits"),
    )
    twilio_api_key_secret: SecretStr | None = Field(
        default=None,
        description="The secret of `TWILIO_API_KEY_SID`. Both or neither.",
        json_schema_extra=_doc("twilio"),
    )
    stream_tokens: Literal["required", "off"] = Field(
        default="required",
        description="`required`: `/voice` gives each stream a token bound to its call (a `<Parameter>`), and "
        "`/media` refuses a stream without a valid one (close 1008), because Twilio's upgrade signature is the same "
        "for every call. `off`: for TwiML Bins, which cannot compute a token (see twiml/README.md); streams without "
        "a token are let in with a warning, and the account check and one live stream per call still apply.",
        json_schema_extra=_doc("twilio"),
    )
    stream_token_secret: SecretStr | None = Field(
        default=None,
        description="The secret stream tokens are made with. Unset: a key derived from `TWILIO_AUTH_TOKEN`. Set it "
        "(the same on every dyno and worker) to rotate tokens apart from the auth token.",
        json_schema_extra=_doc("twilio"),
    )
    stream_token_ttl_s: float = Field(
        default=300.0,
        gt=0,
        le=3600,
        description="How long a stream token is good for between `/voice` answering and the stream's `start` "
        "(Twilio starts the stream within a second or two).",
        json_schema_extra=_doc("twilio"),
    )
    stream_start_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=120,
        description="A `/media` socket that sends no `start` within this many seconds is closed with 1008. Also "
        "how long after `/voice` answers a call a stream of it must have started, or `voice.no_stream` says so and "
        "the call is recorded as not streamed (a `call.not_streamed` webhook event).",
        json_schema_extra=_doc("twilio"),
    )
    handover: Literal["on", "off"] | None = Field(
        default=None,
        description="On SIGTERM (a deploy, a scale-down, the daily restart), ask Twilio's REST API to start a new "
        "stream on each call in progress, which the router sends to another process (another dyno, or the new "
        "release's with Heroku's preboot), and keep transcribing the old one until the new one is live, so no word "
        "of the call is lost. Needs `TWILIO_ACCOUNT_SID` with `TWILIO_AUTH_TOKEN` or an API key pair, a database "
        "all processes share, and `PUBLIC_URL` (the `wss://` host Twilio connects the new stream to). `off`: the "
        "calls are drained and their streams closed, as before.",
        json_schema_extra=_doc(
            "twilio",
            accepts="`on` or `off`",
            default="(`on` when `TWILIO_ACCOUNT_SID` and REST credentials are set, else `off`)",
            heroku={},
        ),
    )
    handover_timeout_s: float = Field(
        default=8.0,
        gt=0,
        le=25,
        description="After SIGTERM, how long a call's old stream waits for the new stream Twilio was asked for to "
        "be let in by another process; past it, the call is drained as without hand-over (and the log says why). "
        "With `SHUTDOWN_TIMEOUT_S` it must fit in Heroku's 30 s.",
        json_schema_extra=_doc("twilio"),
    )
    stream_idle_timeout_s: float = Field(
        default=30.0,
        ge=1,
        le=3600,
        description="A started stream that sends nothing for this many seconds is closed and finished as if Twilio "
        "had hung up (Twilio sends a frame every 20 ms for the whole call).",
        json_schema_extra=_doc("twilio"),
    )

    # --- Transcripts as data ----------------------------------------------------------------------------
    database_url: str = Field(
        default="sqlite+aiosqlite:///callscribe.sqlite3",
        description="Where calls and final utterances are kept: a SQLite file (by default in the working "
        "directory), or PostgreSQL, including Heroku's `postgres://user:pass@host:5432/db` form. A SQLite file "
        "is migrated by the service as it starts; apply PostgreSQL's schema with `python -m service db upgrade` "
        "(the Procfile's `release:` line does).",
        json_schema_extra=_doc("data", accepts="a `sqlite:///` or `postgres(ql)://` URL, with an optional `+driver`"),
    )
    db_queue_max: int = Field(
        default=10_000,
        ge=10,
        description="Writes held in memory while the database is slow or down; past this many they go to the "
        "journal file and are replayed, in order, once it is back.",
        json_schema_extra=_doc("data"),
    )
    db_journal_path: Path = Field(
        default=Path("callscribe-journal.jsonl"),
        description="The journal: writes the database could not take yet. Each Hypercorn worker uses its own file "
        "next to it (`<name>.1.jsonl`, ...) and adopts what a dead one left. On Heroku the file system is lost with "
        "the dyno: keep `DB_QUEUE_MAX` large enough to ride out a database restart in memory.",
        json_schema_extra=_doc("data", accepts="a file path"),
    )
    retention_days: int | None = Field(
        default=None,
        ge=1,
        description="Calls that started more than this many days ago are deleted with everything kept of them "
        "(the erasure's cascade, docs/compliance.md): at start and every hour, or now with "
        "`python -m service db purge`.",
        json_schema_extra=_doc("data", example="90", default="(unset, which keeps everything)", heroku={}),
    )
    speaker_inbound: str = Field(
        default="caller",
        min_length=1,
        max_length=64,
        description="Speaker label of Twilio's inbound track.",
        json_schema_extra=_doc("data"),
    )
    speaker_outbound: str = Field(
        default="agent",
        min_length=1,
        max_length=64,
        description="Speaker label of Twilio's outbound track.",
        json_schema_extra=_doc("data"),
    )
    alert_rules: Annotated[tuple[AlertRule, ...], NoDecode] = Field(
        default=(),
        description="Live alerts: rules whose phrases raise a `call.alert` (on the live feed, as a webhook, stored "
        "with the call) the moment a final transcript completes one, matched on whole words, case and punctuation "
        "aside. Each rule has a `name`, its `phrases`, optionally a `speaker` (`caller` or `agent`) and "
        "`absent_within_s` (the rule fires when none of its phrases was said within that many seconds of the "
        "call's start). A rule that cannot work stops start-up ([docs/alerts.md](alerts.md)).",
        json_schema_extra=_doc(
            "data",
            accepts="a JSON list of rules, or the path of a file holding one",
            example='[{"name":"cancel","phrases":["cancel my account"],"speaker":"caller"}]',
            default="(none)",
        ),
    )
    api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for everything under `/api` (calls, transcripts as JSON, text, SRT or WebVTT). "
        "Unset: the API answers 503 `api_disabled`.",
        json_schema_extra=_doc("data", fill_in=True, heroku={"generator": "secret"}),
    )
    transcript_webhook_url: str | None = Field(
        default=None,
        description="Where each final utterance (`utterance.final`) and each finished call (`call.completed`) is "
        "POSTed, signed with `WEBHOOK_SECRET`.",
        json_schema_extra=_doc(
            "data",
            accepts="an absolute `http(s)://` URL",
            example="https://example.com/callscribe-events",
            heroku={},
        ),
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Key of the HMAC-SHA256 signature on every webhook delivery, over `{timestamp}.{body}` "
        "(headers `Callscribe-Timestamp` and `Callscribe-Signature: v1=<hex>`). Required with "
        "`TRANSCRIPT_WEBHOOK_URL`.",
        json_schema_extra=_doc("data", fill_in=True, heroku={"generator": "secret"}),
    )
    # --- The live feed ----------------------------------------------------------------------------------
    live_replay_s: float = Field(
        default=300.0,
        ge=10.0,
        le=3600.0,
        description="How long the live feed keeps events for a client that reconnects with `Last-Event-ID`. A "
        "client away longer gets `feed.behind` and reads the rest from `/api/calls`.",
        json_schema_extra=_doc("live", accepts="seconds, 10 to 3600"),
    )
    live_replay_max_events: int = Field(
        default=20000,
        ge=100,
        le=1_000_000,
        description="At most this many events are kept for replay, however long `LIVE_REPLAY_S` is. An event "
        "holds about 2.5 KB until a client reads it, 0.3 KB after, so the default bounds the buffer near 50 MB "
        "(40 calls make about 16 000 events in 5 minutes).",
        json_schema_extra=_doc("live"),
    )
    live_subscriber_queue: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Events that may wait for one feed client. A client that falls further behind (slow or stuck) "
        "is dropped with a `feed.dropped` event saying why, counted in `callscribe_live_subscribers_dropped`; "
        "it can reconnect with `Last-Event-ID`. Calls never wait for a client.",
        json_schema_extra=_doc("live"),
    )
    live_max_subscribers: int = Field(
        default=200,
        ge=1,
        le=100_000,
        description="Clients that may read the live feed at once, per process (each open page is one, as is each "
        "integration's `GET /api/live`). One more gets 503 `feed_full` with `Retry-After`, counted in "
        "`callscribe_live_subscribers_refused` and logged as `live.refused` with its address.",
        json_schema_extra=_doc("live"),
    )
    live_heartbeat_s: float = Field(
        default=15.0,
        gt=0.0,
        le=50.0,
        description="A comment line goes to every feed client after this long without an event, so proxies keep "
        "the connection open (Heroku's router closes one idle for 55 s).",
        json_schema_extra=_doc("live", accepts="seconds, at most 50"),
    )
    dashboard_password: SecretStr | None = Field(
        default=None,
        description="Password of the page at `/` (active and recent calls, live transcripts). Unset, the page "
        "takes `API_TOKEN`; with neither, it says so and shows nothing. Login attempts are limited per address and "
        "overall ([docs/live.md](live.md)).",
        json_schema_extra=_doc("live", accepts=f"text, at least {MIN_PASSWORD_LENGTH} characters", fill_in=True),
    )
    dashboard_session_hours: float = Field(
        default=12.0,
        gt=0.0,
        le=720.0,
        description="How long a login to the page lasts, at most: a session whose expiry is further away is "
        "refused. The session cookie is `Secure`, `HttpOnly` and `SameSite=Lax`; changing the password or "
        "`SESSION_SECRET` ends every session.",
        json_schema_extra=_doc("live"),
    )
    session_secret: SecretStr | None = Field(
        default=None,
        description="The server's secret the page's sessions and forms are signed with (never the password, so "
        "nothing the page hands out lets anyone test a guessed password). Set the same on every dyno and worker; "
        "a new value ends every session. Unset: the service makes a random one and keeps it in "
        f"`{SESSION_SECRET_FILE}` beside `DB_JOURNAL_PATH` (mode 0600), which every worker on that machine shares.",
        json_schema_extra=_doc(
            "live",
            accepts=f"text, at least {MIN_SECRET_LENGTH} characters",
            default="(unset: made once and kept in a file)",
            heroku={"generator": "secret"},
        ),
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="Redis for the live feed across worker processes and dynos (Heroku Key-Value Store sets it). "
        "Each process adds its call events to a Redis Stream and every process serves all of them, with the same "
        "ids. `rediss://` is TLS without certificate verification, as Heroku's self-signed certificates need. "
        "Unset: the feed shows this process's calls only.",
        json_schema_extra=_doc(
            "live", accepts="a `redis://` or `rediss://` URL", example="rediss://:password@host:6379/0"
        ),
    )
    live_redis_stream: str = Field(
        default="callscribe:live",
        min_length=1,
        max_length=200,
        description="The Redis Stream key the live feed uses; processes that share it share their calls.",
        json_schema_extra=_doc("live"),
    )
    live_redis_maxlen: int = Field(
        default=100_000,
        ge=1000,
        le=10_000_000,
        description="About how many events the Redis Stream keeps (`XADD ... MAXLEN ~`): replay reaches back "
        "this far at most.",
        json_schema_extra=_doc("live"),
    )
    live_redis_queue: int = Field(
        default=10_000,
        ge=10,
        le=1_000_000,
        description="Events that may wait in a process for Redis while it is slow or down; past it they are "
        "counted in `callscribe_live_events_unpublished` and not sent (calls, storage and webhooks go on).",
        json_schema_extra=_doc("live"),
    )

    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for `/metrics`, so a Prometheus scraper does not need `API_TOKEN` (which reads "
        "transcripts). Unset, `/metrics` takes `API_TOKEN`; with neither, it answers 503.",
        json_schema_extra=_doc("serving", heroku={}),
    )

    # --- Serving and logs -----------------------------------------------------------------------------
    port: int = Field(
        default=5001,
        ge=1,
        le=65535,
        description="Port for `python -m service serve` when `--port` is not given. `make run` binds make's "
        "`PORT` (`make run PORT=8080`); the Procfile binds `$PORT`.",
        json_schema_extra=_doc("serving"),
    )
    http_body_timeout_s: float = Field(
        default=10.0,
        ge=1.0,
        le=60.0,
        description="A request's body must arrive whole within this long, or the request is answered 408 and its "
        "connection closed (a body sent a byte every few seconds would hold a connection forever). Twilio and "
        "browsers send the few KB callscribe reads at once.",
        json_schema_extra=_doc("serving", accepts="seconds, 1 to 60"),
    )
    http_max_in_progress: int = Field(
        default=256,
        ge=8,
        le=100_000,
        description="HTTP requests one process serves at once, `/voice` apart (the page, the API, the live feed's "
        "open connections, health checks); past it the answer is 503 with `Retry-After`. `/voice` has a bound of its "
        "own (twice `MAX_CALLS`) and `/media` its own (`MAX_CALLS`), so a flood of other requests never keeps a call "
        "out.",
        json_schema_extra=_doc("serving"),
    )
    log_level: LogLevel = Field(
        default="INFO",
        description="Transcripts are logged at `INFO`, so `WARNING` and `ERROR` hide them.",
        json_schema_extra=_doc("serving", accepts="`DEBUG`, `INFO`, `WARNING` or `ERROR`, in any case", heroku={}),
    )
    log_format: LogFormat = Field(
        default="text",
        description="`text` (lines a person can follow) or `json` (one object per line, for log drains).",
        json_schema_extra=_doc("serving", heroku={"value": "json"}),
    )

    @field_validator(
        "deepgram_api_key",
        "deepgram_fallback_api_key",
        "twilio_auth_token",
        "api_token",
        "dashboard_password",
        "session_secret",
        "redis_url",
        "webhook_secret",
        "metrics_token",
        "stream_token_secret",
        "twilio_api_key_secret",
        "aws_access_key_id",
        "aws_secret_access_key",
        mode="before",
    )
    @classmethod
    def _blank_secret_is_unset(cls, value: object) -> object:
        # `DEEPGRAM_API_KEY=` in a .env means "not set", not "a key that Deepgram will refuse".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("dashboard_password")
    @classmethod
    def _password_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_PASSWORD_LENGTH:
            raise ValueError(f"must be at least {MIN_PASSWORD_LENGTH} characters")  # a secret: never quoted
        return value

    @field_validator("session_secret")
    @classmethod
    def _secret_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"must be at least {MIN_SECRET_LENGTH} characters, such as the output of "
                "`python -c 'import secrets; print(secrets.token_hex(32))'`"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme.split("+", 1)[0] not in {"sqlite", "postgres", "postgresql"}:
            raise ValueError("must be a sqlite:/// or postgres:// URL, such as postgres://user:pass@host:5432/db")
        return value

    @field_validator("spool_url")
    @classmethod
    def _spool_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith("s3://") or not value[5:].split("/", 1)[0]:
            raise ValueError("must be an s3://bucket or s3://bucket/prefix URL, such as s3://my-bucket/spool")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("redis://", "rediss://")):
            raise ValueError("must be a redis:// or rediss:// URL")  # the value is a secret: never quoted
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
        return _deepgram_base(value, example="https://api.deepgram.com")

    @field_validator("deepgram_fallback_url")
    @classmethod
    def _fallback_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        return _deepgram_base(value, example="https://api.eu.deepgram.com")

    @model_validator(mode="after")
    def _failover_before_outage(self) -> Settings:
        # A track spools at DEEPGRAM_OUTAGE_S: a bound past it would never fail over a primary that keeps failing.
        if self.deepgram_fallback_url and self.deepgram_failover_after_s >= self.deepgram_outage_s:
            raise ValueError(
                f"DEEPGRAM_FAILOVER_AFTER_S ({self.deepgram_failover_after_s:g}) must be below DEEPGRAM_OUTAGE_S "
                f"({self.deepgram_outage_s:g}), or a track spools before it fails over"
            )
        return self

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

    @field_validator("twilio_account_sid")
    @classmethod
    def _account_sid(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not _ACCOUNT_SID.match(value):
            raise ValueError("must be a Twilio account SID: AC and 32 hex digits, as the Twilio console shows it")
        return value

    @field_validator("twilio_api_url")
    @classmethod
    def _twilio_api_url(cls, value: str) -> str:
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError("must be an absolute http(s):// base URL such as https://api.twilio.com")
        if parts.path not in {"", "/"} or parts.query or parts.fragment:
            raise ValueError("must be a bare base URL with no path or query, such as https://api.twilio.com")
        return f"{parts.scheme}://{parts.netloc}"

    @field_validator("twilio_api_key_sid")
    @classmethod
    def _api_key_sid(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not _API_KEY_SID.match(value):
            raise ValueError("must be a Twilio API key SID: SK and 32 hex digits, as the Twilio console shows it")
        return value

    @model_validator(mode="after")
    def _api_key_in_pairs(self) -> Settings:
        if (self.twilio_api_key_sid is None) != (self.twilio_api_key_secret is None):
            raise ValueError("TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET go together: set both or neither")
        return self

    @field_validator("forward_to")
    @classmethod
    def _forward_to(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not _DIAL_TARGET.match(value):
            raise ValueError("must be an E.164 number such as +14155550100, or a sip: or client: address")
        return value

    @field_validator("redact", mode="before")
    @classmethod
    def _redact(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        names = tuple(name.strip().lower() for name in value.split(",") if name.strip())
        for name in names:
            if not re.fullmatch(r"[a-z][a-z_]*", name):
                raise ValueError(f"{name!r} is not a redaction name: use pci, ssn, numbers, pii, phi or an entity type")
        return names

    @field_validator("alert_rules", mode="before")
    @classmethod
    def _alert_rules(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        text = value
        if value.strip() and value.lstrip()[0] not in "[{":  # not JSON: the path of a file holding it
            try:
                text = Path(value.strip()).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"cannot read the rules file {value.strip()}: {exc.__class__.__name__}") from None
        return parse_rules(text)

    @field_validator("deepgram_keyterms", "deepgram_language_hint", mode="before")
    @classmethod
    def _keyterms(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(term.strip() for term in value.split(",") if term.strip())
        return value

    @field_validator("analysis", mode="before")
    @classmethod
    def _analysis(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        names = [name.strip().lower() for name in value.split(",") if name.strip()]
        if names in (["on"], ["all"]):
            return ANALYSIS_FEATURES
        if names in ([], ["off"]):
            return ()
        unknown = [name for name in names if name not in ANALYSIS_FEATURES]
        if unknown:
            raise ValueError(
                f"unknown analysis {', '.join(repr(name) for name in unknown)}: use on, off, or any of "
                + ", ".join(ANALYSIS_FEATURES)
            )
        return tuple(feature for feature in ANALYSIS_FEATURES if feature in names)  # one order, no repeats

    @model_validator(mode="after")
    def _eager_before_end(self) -> Settings:
        eager, end = self.deepgram_eager_eot_threshold, self.deepgram_eot_threshold
        if eager is not None and eager > (end if end is not None else FLUX_EOT_THRESHOLD):
            raise ValueError(
                f"DEEPGRAM_EAGER_EOT_THRESHOLD ({eager:g}) must not be above DEEPGRAM_EOT_THRESHOLD "
                f"({end if end is not None else FLUX_EOT_THRESHOLD:g}): the eager end of a turn comes before its end"
            )
        return self

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
    def max_unstarted_streams(self) -> int:
        """Sockets that may wait for `start` at once: their own bound, so they cannot hold real calls' slots."""
        return 2 * self.max_calls

    @property
    def deepgram_extra_options(self) -> list[tuple[str, str]]:
        """The pass-through live options, in the order given."""
        return urllib.parse.parse_qsl(self.deepgram_options, keep_blank_values=True)

    @property
    def deepgram_live_url(self) -> str:
        """The live socket's base: the same host as DEEPGRAM_URL with ws/wss (the SDK appends /v1/listen)."""
        return live_base(self.deepgram_url)

    @property
    def deepgram_rest_url(self) -> str:
        """The REST base (pre-recorded API): DEEPGRAM_BATCH_URL, else DEEPGRAM_URL's host with http/https."""
        if self.deepgram_batch_url:
            return self.deepgram_batch_url
        return rest_base(self.deepgram_url)

    @property
    def deepgram_fallback_key(self) -> SecretStr | None:
        """DEEPGRAM_FALLBACK_API_KEY, else DEEPGRAM_API_KEY."""
        return self.deepgram_fallback_api_key or self.deepgram_api_key


def _deepgram_base(value: str, *, example: str) -> str:
    """A Deepgram base URL (DEEPGRAM_URL, DEEPGRAM_FALLBACK_URL), checked, without a trailing slash."""
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in {"http", "https", "ws", "wss"} or not parts.netloc:
        raise ValueError(f"must be an absolute http(s):// or ws(s):// URL such as {example}")
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query string or fragment")
    return value.rstrip("/")


def live_base(url: str) -> str:
    """A Deepgram base URL as its live socket's base: the same host with ws/wss."""
    parts = urllib.parse.urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urllib.parse.urlunsplit((scheme, parts.netloc, parts.path, "", ""))


def rest_base(url: str) -> str:
    """A Deepgram base URL as its REST (pre-recorded API) base: the same host with http/https."""
    parts = urllib.parse.urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urllib.parse.urlunsplit((scheme, parts.netloc, parts.path, "", ""))


URL_MASK: Final = "***"


def masked_url(text: str) -> str:
    """`text` fit to print when it is a URL: any user and password as one `***` (https://***@dg.example.com),
    each query value as `***` with its key kept (a webhook's `?token=`), a fragment as `***`; other text unchanged.

    The one way a URL setting is shown (the start-up line, the doctor): DEEPGRAM_URL, DATABASE_URL, PUBLIC_URL or
    TRANSCRIPT_WEBHOOK_URL may carry a credential in any of those places, and the host, port and path that stay
    are what a person needs to recognise the setting. Pure string work: nothing is resolved or fetched.
    """
    if "://" not in text:
        return text
    scheme = text.split("://", 1)[0]
    try:
        parts = urllib.parse.urlsplit(text)
        _ = parts.port  # a port that is not a number: a password with an unencoded `/` or `?` cut the netloc short
    except ValueError:
        return f"{scheme}://{URL_MASK}"  # not a URL we can take apart: nothing of it is shown but the scheme
    _userinfo, at, host = parts.netloc.rpartition("@")
    if not at and "@" in text.split("://", 1)[1]:
        return f"{scheme}://{URL_MASK}"  # an `@` past the host: likely a password with a raw `/`, `?` or `#`
    shown = f"{scheme}://{URL_MASK}@{host}" if at else f"{scheme}://{host}"
    shown += parts.path
    if parts.query:
        shown += "?" + "&".join(_masked_pair(pair) for pair in parts.query.split("&"))
    if parts.fragment:
        shown += "#" + URL_MASK
    return shown


def _masked_pair(pair: str) -> str:
    """`key=***`; a pair without `=` may itself be the secret (`?s3cret`), so all of it is masked."""
    key, equals, _value = pair.partition("=")
    return f"{key}={URL_MASK}" if equals else (URL_MASK if pair else "")


def describe_error(error: ValidationError) -> str:
    """Turn a settings validation error into lines that name each variable and what it accepts."""
    problems = []
    for problem in error.errors(include_input=False, include_url=False):
        variable = str(problem["loc"][0]).upper() if problem["loc"] else "(settings)"
        problems.append((variable, problem["msg"]))
    return describe_problems(problems)


def describe_problems(problems: list[tuple[str, str]]) -> str:
    """(variable, what is wrong) pairs as the lines start-up prints before it stops."""
    lines = ["callscribe cannot start: bad configuration"]
    lines += [f"  {variable}: {message}" for variable, message in problems]
    return "\n".join(lines)


# A check of settings that are each valid alone but that a part of the service cannot use together (the
# Deepgram API that DEEPGRAM_MODEL picks, and the options it refuses): (variable, what is wrong) for each.
SettingsCheck = Callable[["Settings"], list[tuple[str, str]]]


def load_settings(*checks: SettingsCheck) -> Settings:
    """Settings from the environment and .env; a bad value, or a problem one of `checks` finds, exits 2 with a
    message naming the variable."""
    try:
        settings = Settings()
    except ValidationError as exc:
        sys.stderr.write(describe_error(exc) + "\n")
        raise SystemExit(2) from None
    problems = [problem for check in checks for problem in check(settings)]
    if problems:
        sys.stderr.write(describe_problems(problems) + "\n")
        raise SystemExit(2)
    return settings
