"""Wiring layer: the Quart app. Routes validate and hand over; `session.py` does the work.

`create_app(settings)` builds everything a process needs (no module-level state), so tests build apps with
their own settings. `asgi_app(settings)` adds Hypercorn's ProxyFixMiddleware, trusting one proxy hop
(Heroku's router, ngrok) for X-Forwarded-Proto/-Host so the URLs we build and check are the public ones.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import signal
from collections.abc import Sequence
from typing import Final, cast

import structlog
from hypercorn.middleware import ProxyFixMiddleware
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope
from quart import Quart, Response, request

from service.calls.events import CallObserver
from service.calls.observers import Fanout, LogObserver
from service.calls.registry import Calls
from service.calls.session import CallSession
from service.deepgram.live import SttClient
from service.deepgram.protocol import ignored_options
from service.metrics import worker_stopped
from service.settings import Settings
from service.spool.directory import Spool
from service.spool.worker import BatchWorker
from service.storage.writer import TranscriptStore
from service.twilio import close_codes
from service.twilio.signatures import refusal, stream_url, webhook_url
from service.twilio.twiml import stream_parameters, voice_response
from service.web.api import api_blueprint
from service.web.media_socket import MediaRoute, TwilioSocket
from service.web.ops import Readiness, database_check, ops_blueprint
from service.webhooks.sender import WebhookSender

log = structlog.get_logger("callscribe.app")
STORE_STOP_TIMEOUT_S = 3.0  # for the database to take the last writes at shutdown; the rest goes to the journal


class Service:
    """What one process needs to take calls: settings, the Deepgram client, the open calls, the sink."""

    def __init__(self, settings: Settings, observers: Sequence[CallObserver], *, handle_sigterm: bool) -> None:
        self.settings = settings
        self.store = TranscriptStore(settings)
        self.observer = Fanout([*observers, self.store])
        self.calls = Calls(settings.max_calls)
        self.stt = SttClient(settings)
        self.spool = Spool(settings.spool_dir)
        self.batch = BatchWorker(settings, self.spool, self.observer.transcript)
        self._handle_sigterm = handle_sigterm
        self._stopping = False
        self._draining: asyncio.Future[None] | None = None
        self._token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None
        self._background: set[asyncio.Future[None]] = set()

    def twilio_refusal(self, url: str, params: dict[str, str], signature: str | None) -> str | None:
        if self._token is None and self.settings.callscribe_insecure_dev:
            log.warning("signature.unchecked", why="CALLSCRIBE_INSECURE_DEV=1 and no TWILIO_AUTH_TOKEN", url=url)
            return None
        return refusal(self._token, url, params, signature)

    async def announce(self) -> None:
        settings = self.settings
        if self._token:
            twilio_auth = "set"
        elif settings.callscribe_insecure_dev:
            twilio_auth = "MISSING (CALLSCRIBE_INSECURE_DEV=1: signatures unchecked)"
        else:
            twilio_auth = "MISSING (every Twilio request will be refused)"
        log.info(
            "service.ready",
            deepgram_url=settings.deepgram_url,
            model=settings.deepgram_model,
            stream_track=settings.stream_track,
            max_calls=settings.max_calls,
            deepgram_key="set" if self.stt.configured else "MISSING (calls go to the spool, not to live transcription)",
            twilio_auth_token=twilio_auth,
        )
        for name in ignored_options(settings):
            log.warning("settings.option_ignored", option=name, why="callscribe sets it itself")
        await self.store.start()  # replays a journal an earlier process left; never waits for the database
        if settings.transcript_webhook_url is not None:
            self._keep(asyncio.ensure_future(WebhookSender(settings, lambda: self.store.engine).run_forever()))
        recovered = self.spool.recover()
        if recovered:
            log.warning("spool.recovered", entries=len(recovered), why="audio left by a process that crashed")
        self._keep(asyncio.ensure_future(self.batch.run_forever()))
        self._keep(asyncio.ensure_future(self.calls.meter_forever()))
        # Everything built so far (the SDK's, pydantic's and SQLAlchemy's ~100k objects) lives as long as the
        # process. Frozen, the collector stops walking it: a full collection took ~50 ms of the event loop,
        # every call's audio included (docs/benchmarks.md).
        gc.collect()
        gc.freeze()
        if self._handle_sigterm:
            # Installed after Hypercorn's own handlers (it sets them before the lifespan starts): on SIGTERM we
            # first finish every call, then let Hypercorn's graceful shutdown run.
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self) -> None:
        if not self._stopping:
            self._stopping = True
            log.info("service.stopping", signal="SIGTERM", calls=len(self.calls.sessions))
            self._keep(asyncio.ensure_future(self._stop_then_exit()))

    async def _stop_then_exit(self) -> None:
        await self.finish_calls()
        if multiprocessing.parent_process() is None:
            # Hypercorn serving in this process (no worker processes): its SIGINT handler is still ours to use.
            signal.raise_signal(signal.SIGINT)
        # A spawned worker stops when Hypercorn's parent, which got the dyno's SIGTERM too, tells it to.

    def _keep(self, task: asyncio.Future[None]) -> None:
        # asyncio keeps only weak references to tasks; these must live until they finish.
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def voice(self) -> Response | tuple[str, int]:
        """Twilio's voice webhook: answer TwiML that streams the call to /media, then the next verb."""
        form = dict((await request.form).items()) if request.method == "POST" else {}
        url = webhook_url(
            self.settings,
            scheme=request.scheme,
            host_header=request.host,
            path=request.path,
            query=request.query_string.decode("latin-1"),
        )
        why = self.twilio_refusal(url, form, request.headers.get("X-Twilio-Signature"))
        if why is not None:
            log.warning("voice.refused", status=403, why=why)
            return "Forbidden: request not signed by Twilio\n", 403
        fields = form if request.method == "POST" else dict(request.args.items())
        stream: str | None = stream_url(self.settings, request.host)
        busy = self.busy_reason()
        if busy is not None:
            # The call goes on without a transcript rather than failing for the caller.
            log.warning("voice.not_streaming", call_sid=fields.get("CallSid", ""), why=busy)
            stream = None
        twiml = voice_response(self.settings, stream_url=stream, parameters=stream_parameters(fields))
        return Response(twiml, content_type="text/xml; charset=utf-8")

    async def readiness(self) -> Readiness:
        """Can this process take calls now? Each check says "ok" or what is wrong."""
        busy = self.busy_reason()
        checks = {
            "calls": busy or "ok",
            "twilio_auth_token": "ok" if self._token or self.settings.callscribe_insecure_dev else "not set",
            "deepgram_api_key": "ok" if self.stt.configured else "not set",
            "database": await database_check(lambda: self.store.engine),
        }
        return Readiness(checks)

    def busy_reason(self) -> str | None:
        if not self.calls.accepting:
            return "shutting down"
        if self.calls.full:
            return f"callscribe is at MAX_CALLS ({self.settings.max_calls})"
        return None

    async def media(self, socket: TwilioSocket) -> None:
        """The WebSocket Twilio streams the call's audio to (plain ASGI: see media_socket.py)."""
        why = self.twilio_refusal(stream_url(self.settings, socket.host), {}, socket.header("X-Twilio-Signature"))
        if why is not None:
            log.warning("media.refused", status=403, why=why)
            await socket.refuse(403, "Forbidden: stream not signed by Twilio\n")  # the upgrade fails
            return
        await socket.accept()
        busy = self.busy_reason()
        if busy is not None:
            log.warning("media.refused", close_code=close_codes.TRY_AGAIN_LATER, why=busy)
            await socket.close(close_codes.TRY_AGAIN_LATER, busy)
            return
        try:
            await self._stream(socket)
        except Exception:
            # A bug in one call's handling ends that call only, and says so (the process and other calls go on).
            log.exception("media.internal_error")
            await socket.close(close_codes.INTERNAL_ERROR, "callscribe internal error")

    async def _stream(self, socket: TwilioSocket) -> None:
        session = CallSession(
            settings=self.settings, stt=self.stt, spool=self.spool, observer=self.observer, close_twilio=socket.close
        )
        self.calls.add(session)
        self._keep(asyncio.ensure_future(self.calls.forget_when_finished(session)))
        try:
            while (message := await socket.receive()) is not None:
                reject = session.on_message(message)
                if reject is not None:
                    await socket.close(reject.code, reject.reason)
                    return
                await session.send_pushed()
                if session.ended_by is not None:
                    await socket.close(close_codes.NORMAL, "stream stopped")
                    return
        finally:
            # Also when Twilio hung up or the handler was cancelled: the session's own tasks finish Deepgram's side.
            session.twilio_ended()

    async def finish_calls(self) -> None:
        """Finish every call within SHUTDOWN_TIMEOUT_S (Heroku allows 30 s after SIGTERM), spooling the rest.

        SIGTERM and Hypercorn's lifespan shutdown both call this, in either order: both wait for one drain.
        """
        if self._draining is None:
            self._draining = asyncio.ensure_future(self._drain())
        await asyncio.shield(self._draining)

    async def _drain(self) -> None:
        calls = len(self.calls.sessions)
        spooled = await self.calls.drain(self.settings.shutdown_timeout_s)
        # The calls' last writes (call_ended, late finals) are queued now; what the database cannot take in time
        # goes to the journal. Inside Hypercorn's graceful_timeout (SHUTDOWN_TIMEOUT_S + 5 s).
        await self.store.stop(STORE_STOP_TIMEOUT_S)
        log.info("service.stopped", calls=calls, calls_spooled=spooled, spool_waiting=len(self.spool.entries()))

    async def shutdown(self) -> None:
        await self.finish_calls()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        worker_stopped()


def create_app(
    settings: Settings, *, observers: Sequence[CallObserver] | None = None, handle_sigterm: bool = False
) -> Quart:
    """The Quart app for `settings`; everything it holds hangs off `app.extensions["callscribe"]`."""
    app = Quart("callscribe")
    service = Service(settings, observers or [LogObserver()], handle_sigterm=handle_sigterm)
    app.extensions["callscribe"] = service
    app.before_serving(service.announce)
    app.after_serving(service.shutdown)
    app.add_url_rule("/voice", view_func=service.voice, methods=["POST", "GET"])
    # The engine is made at startup (before_serving), so the API asks for it per request.
    app.register_blueprint(api_blueprint(settings, lambda: service.store.engine))
    app.register_blueprint(ops_blueprint(settings, service.readiness))
    return app


class WebsocketSchemeFix:
    """Proxies say `X-Forwarded-Proto: https` for a wss:// connection, and ProxyFix copies that into the
    WebSocket scope; Werkzeug's routing then refuses the upgrade (400). Map it back to ws/wss."""

    _SCHEMES: Final = {"http": "ws", "https": "wss"}

    def __init__(self, app: ASGIFramework) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "websocket" and scope["scheme"] in self._SCHEMES:
            scope = {**scope, "scheme": self._SCHEMES[scope["scheme"]]}
        await self.app(scope, receive, send)


def asgi_app(settings: Settings, *, handle_sigterm: bool = False) -> ASGIFramework:
    """The app as Hypercorn serves it, trusting one proxy hop for the scheme and host."""
    quart_app = create_app(settings, handle_sigterm=handle_sigterm)
    service: Service = quart_app.extensions["callscribe"]
    routed = MediaRoute(WebsocketSchemeFix(cast(ASGIFramework, quart_app)), service.media)
    return ProxyFixMiddleware(routed, mode="legacy", trusted_hops=1)
