"""callscribe: live transcripts of Twilio calls, Twilio Media Streams in, Deepgram live speech-to-text out.

The package is in layers; a module imports only its own layer and those below it (docs/architecture.md):

    cli                  python -m service: serve, simulate, spool, calls, db, settings
    web                  the Quart app: /voice, /media, /api, /healthz, /readyz, /metrics
    webhooks             signed delivery from the database's outbox
    spool | storage      audio waiting for batch transcription | the database
    alerts               ALERT_RULES against every call's finals: the alerts raised
    calls                one CallSession per stream, one TrackStream per track
    deepgram | twilio    deepgram-sdk's adapter and Deepgram's protocol | Media Streams, signatures, TwiML
    root modules         settings, alert_rules, errors, times, mulaw, retry, files, logs, refusals, metrics,
                         captions, settings_docs

`simulator` stands apart: it imports nothing of the server but `service.mulaw`.
"""
