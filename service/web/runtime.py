"""Wiring layer: what one process needs to take calls, and its life from start-up to shutdown.

`Runtime` builds the parts (the store, the open calls, the Deepgram client, the spool, the signature check),
starts them when Hypercorn starts serving (`announce`), finishes every call on SIGTERM or at Hypercorn's
shutdown (`finish_calls`), then stops the background work (`shutdown`). The routes only use the parts.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import multiprocessing
import os
import resource
import signal
import socket
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from service.alerts.watch import AlertWatch
from service.calls.events import CallObserver
from service.calls.handover.passing import Handover
from service.calls.observers import Fanout
from service.calls.pausing import PauseWatch
from service.calls.pipeline.engines import LiveEngines
from service.calls.redacting import RedactingObserver
from service.calls.registry import Calls
from service.calls.stream.admission import StreamGate
from service.calls.transcript import speaker_for
from service.deepgram.engines import (
    batch_engines,
    ignored_options,
    live_engine,
    setting_problems,
)
from service.deepgram.environment import fallback_address
from service.deepgram.keys import DEEPGRAM_CLOUD, standin_note
from service.deepgram.text import DeepgramText
from service.live.hub import LiveHub, LiveObserver, LocalPublisher, Publish
from service.metrics import worker_stopped
from service.refusals import flush_refusals
from service.settings import Settings, masked_url, rest_base
from service.spool.directory import Spool
from service.spool.worker import BatchWorker
from service.storage import migrate
from service.storage.analyses import AnalysisWorker
from service.storage.controls import DatabaseControls
from service.storage.spool_segments import AudioStore, DatabaseSpool, is_postgresql
from service.storage.streams import DatabaseStreamClaims
from service.storage.writer import TranscriptStore
from service.times import utc_now
from service.twilio.credentials import rest_credentials
from service.twilio.signatures import TwilioSignatures, stream_token_key
from service.twilio.urls import MEDIA_PATH, stream_url
from service.web.erasing import Eraser
from service.web.live import RETRY_MS
from service.web.next_steps import next_steps
from service.web.stream_watch import StreamWatch
from service.webhooks.sender import WebhookSender

if TYPE_CHECKING:
    from service.live.redis_stream import RedisFeed

log = structlog.get_logger("callscribe.app")
LIVE_FLUSH_TIMEOUT_S = 2.0  # for Redis to take the live events still queued at shutdown
FEEDS_END_TIMEOUT_S = 1.0  # for the feeds' responses to send their last event at shutdown
SHARE_SPOOL_TIMEOUT_S = 3.0  # for the spooled audio to reach the shared spool at shutdown
MIN_DRAIN_S = 2.0  # however long the hand-overs took, Deepgram's last finals get this long
STORE_STOP_TIMEOUT_S = 3.0  # for the database to take the last writes at shutdown; the rest goes to the journal
REFUSAL_SUMMARY_EVERY_S = 10.0  # how late a `<event>.suppressed` line may come after its window ends
WEBHOOK_STOP_TIMEOUT_S = 2.0  # for the delivery in flight at shutdown; one cut short is given back to the outbox


async def _summarise_refusals_forever() -> None:
    """The counts of refusals held back (refusals.log_refusal), said once their window ends even if no refusal
    follows."""
    while True:
        await asyncio.sleep(REFUSAL_SUMMARY_EVERY_S)
        flush_refusals(log)


class BackgroundTasks:
    """Tasks that run beside the calls until they finish or shutdown cancels them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[None]] = set()

    def start(self, work: Coroutine[Any, Any, None]) -> None:
        # asyncio keeps only weak references to tasks; these must live until they finish.
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _redis_feed(settings: Settings, hub: LiveHub) -> RedisFeed | None:
    """The Redis side of the live feed with REDIS_URL; without it redis-py is not even imported (0.2 s, memory)."""
    if settings.redis_url is None:
        return None
    from service.live.redis_stream import RedisFeed  # noqa: PLC0415 - only a process that uses Redis loads it

    return RedisFeed(settings, hub)


def start_up_problems(settings: Settings) -> list[tuple[str, str]]:
    """Settings each valid alone that this process cannot serve with, (variable, why) for `load_settings`: the
    options the Deepgram API that DEEPGRAM_MODEL picks would refuse on every call (`deepgram/engines.py`)."""
    return setting_problems(settings)


class Runtime:
    """One process's parts (settings, the Deepgram client, the open calls, the sink) and their life."""

    def __init__(
        self,
        settings: Settings,
        observers: Sequence[CallObserver],
        *,
        handle_sigterm: bool,
        stop_server: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = TranscriptStore(settings)
        self.live = LiveHub(
            window_s=settings.live_replay_s, max_events=settings.live_replay_max_events,
            queue_bound=settings.live_subscriber_queue, max_subscribers=settings.live_max_subscribers,
            floor=(time.time_ns() // 1_000_000, 0),
        )  # fmt: skip
        # With REDIS_URL every process's events go through the stream, this one's too: one order, one set of ids.
        self.redis = _redis_feed(settings, self.live)
        publish: Publish = self.redis.publish if self.redis is not None else LocalPublisher(self.live).publish
        feed = LiveObserver(publish)
        # Alerts last: a `call.alert` follows, on the feed and in the store, the final that raised it; but first at a
        # stream's end, so that an alert decided then is in the call's `call.completed`.
        alerts = AlertWatch(settings.alert_rules, [self.store, feed], speakers=functools.partial(speaker_for, settings))
        fanout = Fanout([*observers, self.store, feed], deciders=[alerts] if settings.alert_rules else [])
        # REDACT: every output below the redactor (log, database, feed, webhooks, alerts) gets the same redacted words.
        self.redactor = RedactingObserver(fanout) if settings.redact else None
        self.observer: CallObserver = self.redactor if self.redactor is not None else fanout
        self.calls = Calls(settings.max_calls)
        # Pauses asked of any process (`POST /api/calls/{sid}/pause`), applied to the calls this one holds.
        self.pauses = PauseWatch(
            lambda: self.calls.sessions, DatabaseControls(lambda: self.store.engine), clock=utc_now
        )
        # The live engines: the primary, and DEEPGRAM_FALLBACK_URL's when set, with the failover every call shares.
        # Each is the engine DEEPGRAM_MODEL picks (`deepgram/engines.py`): Deepgram v1 or Flux.
        fallback = fallback_address(settings)
        self.stt = LiveEngines(
            settings, live_engine(settings), live_engine(settings, fallback) if fallback is not None else None
        )
        self.spool = Spool(settings.spool_dir)
        self.signatures = TwilioSignatures(settings)
        self.token_key = stream_token_key(settings)  # /voice issues stream tokens with it, the gate checks them
        self.records = self._claims = DatabaseStreamClaims(lambda: self.store.engine)
        self.handover, self._handover_off = self._make_handover()
        self.gate = StreamGate(settings, key=self.token_key, claims=self._claims)
        self.tasks = BackgroundTasks()
        # /voice's streamed calls whose stream never came: checked once STREAM_START_TIMEOUT_S has passed, and
        # recorded as not streamed through the store.
        self.stream_watch = StreamWatch(
            lambda: self.store.engine, wait_s=settings.stream_start_timeout_s, spawn=self.tasks.start,
            record=self.store.call_not_streamed,
        )  # fmt: skip
        self.spool_audio: AudioStore | None = None  # the shared spool's audio outside the database (S3)
        self.shared_spool = self._make_shared_spool()
        # Erasures (DELETE /api/calls/{sid}, /api/numbers/{number}) reach this process's spool, feed and Redis too.
        self.eraser = Eraser(
            lambda: self.store.engine, spool=self.spool, hub=self.live,
            stream=self.redis.forget if self.redis is not None else None, audio=self.spool_audio,
        )  # fmt: skip
        self._batch = BatchWorker(
            settings, self.spool, self.observer.transcript, self.shared_spool, engines=batch_engines,
            order=self.stt.failover.engines_in_order, outcomes=self.observer.spool_outcome,
        )  # fmt: skip
        self._webhooks = (
            WebhookSender(settings, lambda: self.store.engine) if settings.transcript_webhook_url is not None else None
        )
        # ANALYSIS: the calls' post-call analysis, claimed from the database's jobs by whichever process looks first.
        self.analysis = (
            AnalysisWorker(settings, lambda: self.store.engine, lambda: DeepgramText(settings))
            if settings.analysis
            else None
        )
        self._handle_sigterm = handle_sigterm
        self._stop_server = stop_server  # `serve` in-process: how the drain, once done, stops Hypercorn
        self._standin: asyncio.Future[str | None] | None = None  # `standin`'s one question
        self._stopping = False
        self._draining: asyncio.Future[None] | None = None
        self.schema_at_head = False  # once seen at head it stays there: /readyz stops asking

    def _make_shared_spool(self) -> DatabaseSpool | None:
        """The spool every process shares: its audio in S3 with SPOOL_URL (its claims in the database, PostgreSQL
        for every dyno, SQLite for this machine's processes), else in the database when it is one every process
        shares (PostgreSQL)."""
        settings = self.settings
        if settings.spool_url is None and not is_postgresql(settings.database_url):
            return None
        audio = None
        if settings.spool_url is not None:
            # aiobotocore (and aiohttp) only where SPOOL_URL asks for S3: 0.2 s of start-up CPU otherwise.
            from service.storage.spool_objects import S3Audio  # noqa: PLC0415

            audio = self.spool_audio = S3Audio(settings)
        return DatabaseSpool(
            lambda: self.store.engine, owner=f"{socket.gethostname()[:40]}:{os.getpid()}",
            max_bytes=settings.spool_shared_max_mb * 1024 * 1024, lease_s=settings.spool_claim_lease_s,
            retention_days=settings.spool_retention_days, audio=audio,
        )  # fmt: skip

    def _make_handover(self) -> tuple[Handover | None, str]:
        """The hand-over at SIGTERM, or None and why it is off."""
        settings = self.settings
        if settings.handover == "off":
            return None, "HANDOVER=off"
        if settings.twilio_account_sid is None:
            return None, "TWILIO_ACCOUNT_SID is unset: Twilio's REST API cannot be asked for a new stream"
        credentials = rest_credentials(settings)
        if credentials is None:
            return None, "no REST credentials: set TWILIO_AUTH_TOKEN, or TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET"
        if self.token_key is None:
            return None, "no TWILIO_AUTH_TOKEN or STREAM_TOKEN_SECRET to issue hand-over tokens with"
        # twilio's REST client and aiohttp (0.25 s of CPU) where hand-over is on, at start-up rather than at SIGTERM:
        # loaded then, they would hold every call's audio while the hand-overs wait for them.
        from service.twilio.stream_api import StreamApi  # noqa: PLC0415

        api = StreamApi(credentials, api_url=settings.twilio_api_url)
        return Handover(api, self._claims, key=self.token_key, timeout_s=settings.handover_timeout_s), ""

    async def announce(self) -> None:
        """Start-up (Hypercorn's before_serving): say what is configured, migrate SQLite, start the store."""
        self._log_ready()
        await self._migrate_sqlite()
        self._log_next_steps()
        await self.store.start()  # replays a journal an earlier process left; never waits for the database
        self._start_workers()
        # Everything built so far (the SDK's, pydantic's and SQLAlchemy's ~120k objects) lives as long as the
        # process. Frozen, the collector stops walking it: a full collection took ~50 ms of the event loop,
        # every call's audio included (docs/benchmarks.md). No collection first: it took 70-90 ms of start-up
        # to find 80 objects of garbage (1,800 after a migration), which now stay, frozen.
        gc.freeze()
        if self._handle_sigterm:
            # Installed after the server's own handlers (Hypercorn's in a worker, `serve_here`'s in-process: both
            # are set before the lifespan starts): on SIGTERM we first finish every call, then let Hypercorn's
            # graceful shutdown run.
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self._on_sigterm)

    def _log_ready(self) -> None:
        settings = self.settings
        log.info(
            "service.ready",
            deepgram_url=masked_url(settings.deepgram_url),
            **(
                {"deepgram_fallback_url": masked_url(settings.deepgram_fallback_url)}
                if settings.deepgram_fallback_url
                else {}
            ),
            model=settings.deepgram_model,
            stream_track=settings.stream_track,
            max_calls=settings.max_calls,
            deepgram_key="set" if self.stt.configured else "MISSING (calls go to the spool, not to live transcription)",
            twilio_auth_token=self.signatures.token_state(),
            stream_tokens=settings.stream_tokens,
            twilio_account_sid="set" if settings.twilio_account_sid else "unset (any account's streams are let in)",
            handover="on" if self.handover is not None else "off",
            analysis=",".join(settings.analysis) or "off",
            shared_spool=self._shared_spool_where(),
            open_files_limit=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        )
        if self.handover is None:
            log.info(
                "service.handover_off", why=self._handover_off, action="at SIGTERM calls are drained, not handed over"
            )
        for name, why in ignored_options(settings):
            log.warning("settings.option_ignored", option=name, why=why)
        if settings.deepgram_connections == "per_call" and self.stt.max_channels == 1:  # as `shares_a_connection`
            log.warning(
                "settings.per_call_unavailable",
                model=settings.deepgram_model,
                why="Flux takes one channel a connection: DEEPGRAM_CONNECTIONS=per_call falls back to one connection "
                "per track (a both-track call takes two streams of the Deepgram plan's limit)",
            )
        if settings.stream_tokens == "off":
            log.warning(
                "settings.stream_tokens_off",
                why="STREAM_TOKENS=off: a stream without a token is let in, so anyone who once saw a Twilio upgrade "
                "can open streams (the account check and one live stream per call still apply)",
            )

    def _shared_spool_where(self) -> str:
        """Where spooled audio goes, for the ready line: the bucket and prefix, never a credential."""
        settings = self.settings
        if settings.spool_url is not None:
            host = masked_url(settings.spool_s3_endpoint_url) if settings.spool_s3_endpoint_url else "AWS"
            return f"{masked_url(settings.spool_url)} at {host}, claims in the database"
        return "PostgreSQL (spool_chunks)" if self.shared_spool is not None else "off (SPOOL_DIR only)"

    async def _migrate_sqlite(self) -> None:
        """A SQLite file is this process's own: bring it to head here, so serving needs no `db upgrade` first.

        PostgreSQL keeps the release phase (`db upgrade`), where a failed migration stops the deploy; /readyz
        says so when it was skipped. A failure here is logged and the service serves on, into the journal.
        """
        url = self.settings.database_url
        if migrate.sqlite_file(url) is None:
            return
        logging.getLogger("alembic").setLevel(logging.WARNING)  # its "Running upgrade" lines, once per revision
        try:
            moved = await migrate.upgrade_sqlite(url)
        except Exception as exc:  # noqa: BLE001 - the type says what failed; the URL is never logged
            log.error(  # noqa: TRY400 - no traceback: it could quote the database path
                "store.migrate_failed", error=type(exc).__name__, fix="run `python -m service db upgrade`"
            )
            return
        self.schema_at_head = True
        if moved is not None:
            log.info("store.migrated", revision_before=moved[0] or "empty", revision=moved[1])

    def _log_next_steps(self) -> None:
        steps = next_steps(self.settings, twilio_usable=self.signatures.usable, deepgram_configured=self.stt.configured)
        if steps is None:
            return
        # A WARNING only while a local call cannot be transcribed; API_TOKEN and PUBLIC_URL are optional locally.
        say = log.info if steps.ready else log.warning
        say("service.next_steps", missing=steps.missing, lines=steps.lines)

    def _start_workers(self) -> None:
        if self._webhooks is not None:
            self.tasks.start(self._webhooks.run_forever())
        if self.analysis is not None:
            self.tasks.start(self.analysis.run_forever())
        recovered = self.spool.recover()
        if recovered:
            log.warning("spool.recovered", entries=len(recovered), why="audio left by a process that crashed")
        self.tasks.start(self._batch.run_forever())
        # The watches an earlier process lost (a restart, a crash), from the calls' rows.
        self.tasks.start(self.stream_watch.resume(_stream_url_here(self.settings)))
        self.tasks.start(self.stt.probe_forever())  # one probe per process, while the primary is down
        self.tasks.start(self.calls.meter_forever())
        self.tasks.start(self.pauses.run_forever())
        if self.redis is not None:
            self.tasks.start(self.redis.run_publisher())
            self.tasks.start(self.redis.run_reader())
        self.tasks.start(_summarise_refusals_forever())

    async def standin(self) -> str | None:
        """What the transcripts are when DEEPGRAM_URL is the Deepgram stand-in (`make try`): placeholder words, not
        speech recognition, which the page says; None for Deepgram. Asked once, when a page first needs it: asked
        at start-up, it would be a request to every Deepgram the service is pointed at, tests' fakes included."""
        if self._standin is None:
            self._standin = asyncio.ensure_future(self._ask_if_standin())
        return await asyncio.shield(self._standin)

    async def _ask_if_standin(self) -> str | None:
        base = rest_base(self.settings.deepgram_url)
        if base == DEEPGRAM_CLOUD:
            return None
        note = await standin_note(base, timeout_s=1.0)
        if note is not None:
            log.warning("service.standin", deepgram_url=masked_url(base), transcripts=note)
        return note

    def _on_sigterm(self) -> None:
        if not self._stopping:
            self._stopping = True
            log.info("service.stopping", signal="SIGTERM", calls=len(self.calls.sessions))
            self.tasks.start(self._stop_then_exit())

    async def _stop_then_exit(self) -> None:
        await self.finish_calls()
        if self._stop_server is not None:  # `serve` with one worker: its Hypercorn stops gracefully
            self._stop_server()
        elif multiprocessing.parent_process() is None:
            # The `hypercorn` command serving this process: its SIGINT handler stops it gracefully.
            signal.raise_signal(signal.SIGINT)
        # A spawned worker stops when Hypercorn's parent, which got the dyno's SIGTERM too, tells it to.

    async def finish_calls(self) -> None:
        """Finish every call within SHUTDOWN_TIMEOUT_S (Heroku allows 30 s after SIGTERM), spooling the rest.

        SIGTERM and Hypercorn's lifespan shutdown both call this, in either order: both wait for one drain.
        """
        if self._draining is None:
            self._draining = asyncio.ensure_future(self._drain())
        await asyncio.shield(self._draining)

    async def _drain(self) -> None:
        self.stream_watch.stop()  # a call that has not started by now will not start here
        calls = len(self.calls.sessions)
        started = asyncio.get_running_loop().time()
        self.calls.accepting = False  # a hand-over's new stream must land elsewhere, not here
        if self.handover is not None:
            await self.handover.hand_over_all(list(self.calls.sessions))
        else:
            self._say_why_not_handed_over()
        # SHUTDOWN_TIMEOUT_S counts from SIGTERM: what the hand-overs took is not given again to the drain.
        left_s = self.settings.shutdown_timeout_s - (asyncio.get_running_loop().time() - started)
        spooled = await self.calls.drain(max(left_s, MIN_DRAIN_S))
        if self.redactor is not None:
            self.redactor.flush()  # finals still waiting for their track's next go now, before the store stops
        await self._claims.settle()  # claims the database did not answer in time let go of their connections
        await self._share_spool()
        # The calls' last writes (call_ended, late finals) are queued now; what the database cannot take in time
        # goes to the journal. Inside Hypercorn's graceful_timeout (SHUTDOWN_TIMEOUT_S + 5 s).
        await self.store.stop(STORE_STOP_TIMEOUT_S)
        if self.redis is not None:
            await self.redis.flush(LIVE_FLUSH_TIMEOUT_S)  # the calls' last events, for the other processes' feeds
        # The feeds end before the process stops serving (an open feed would hold Hypercorn's graceful shutdown for
        # its whole timeout): each page is told to reconnect, to another process or to this one once it is back.
        self.live.close("the service is stopping; reconnect with Last-Event-ID", RETRY_MS)
        if not await self.live.wait_ended(FEEDS_END_TIMEOUT_S):
            log.info("live.not_ended", why=f"a client did not read its last event within {FEEDS_END_TIMEOUT_S:g} s")
        log.info("service.stopped", calls=calls, calls_spooled=spooled, spool_waiting=len(self.spool.entries()))

    async def _share_spool(self) -> None:
        """What the calls spooled goes to the shared spool before the dyno (and its disk) goes."""
        if self.shared_spool is None:
            return
        try:
            shared = await asyncio.wait_for(self._batch.share_local(), SHARE_SPOOL_TIMEOUT_S)
        except TimeoutError:
            log.warning(
                "spool.not_shared", why=f"the database took over {SHARE_SPOOL_TIMEOUT_S:g} s", action="kept here"
            )
            return
        if shared:
            log.info("spool.shared", entries=shared, why="stopping: another process transcribes them")

    def _say_why_not_handed_over(self) -> None:
        for session in self.calls.sessions:
            if session.call is not None:
                log.info(
                    "handover.skipped", call_sid=session.call.call_sid, stream_sid=session.call.stream_sid,
                    why=self._handover_off, action="draining the stream as without hand-over",
                )  # fmt: skip

    async def shutdown(self) -> None:
        """Hypercorn's after_serving: the calls finished (or spooled), then the background work stopped."""
        await self.finish_calls()
        if self._webhooks is not None and not await self._webhooks.stop(WEBHOOK_STOP_TIMEOUT_S):
            log.info("webhooks.stop_cut_short", why=f"a delivery took over {WEBHOOK_STOP_TIMEOUT_S:g} s")
        if self.analysis is not None and not await self.analysis.stop(WEBHOOK_STOP_TIMEOUT_S):
            log.info("analysis.stop_cut_short", why="an analysis in flight: its job goes back to the database")
        await self.tasks.cancel_all()
        if self.redis is not None:
            await self.redis.close()
        worker_stopped()


def _stream_url_here(settings: Settings) -> str:
    """The `<Stream url>` /voice gave, for the calls a restart watches again: PUBLIC_URL's, when set (otherwise
    each request's host made it, which the rows do not keep)."""
    return stream_url(settings, "") if settings.public_url else f"wss://<this service's host>{MEDIA_PATH}"
