"""callscribe: live transcripts of Twilio calls, Twilio Media Streams in, Deepgram live speech-to-text out.

The package is in layers; a module imports only its own layer and those below it (docs/architecture.md):

    cli                       python -m service: try, serve, standin, simulate, demo, spool, calls, ...
    web                       the Quart app: /voice, /media, /api, /api/live, the page, /healthz, /readyz, /metrics
    webhooks | live           signed delivery from the database's outbox | the live feed
    spool | storage           audio waiting for batch transcription | the database
    alerts                    ALERT_RULES against every call's finals: the alerts raised
    calls | deepgram          one CallSession per stream, one TrackStream per track | the engines behind the seam
    twilio | stt | redaction  Media Streams, signatures, TwiML | the speech-to-text seam | what transcripts hide
    root modules              settings, alert_rules, errors, times, mulaw, retry, files, logs, refusals, metrics, ...

`simulator` (Twilio's stand-in) and `standin` (Deepgram's) stand apart: they import nothing of the server but
`service.mulaw` (and, for `standin`, `service.spool.wav`).
"""
