"""The speech-to-text seam (vendor-neutral): what `calls/` and `spool/` ask of an engine, and what it answers.

`events.py` holds the answers (results with their words, turn boundaries, how far the engine has settled its
results, its last word on a stream), `engine.py` the interfaces a live or batch engine implements. The
adapters behind them live in `service/deepgram/` (Deepgram's v1 live API, Flux, and the pre-recorded API);
nothing here imports an SDK.
"""
