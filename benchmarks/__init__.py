"""Benchmark harness: N simulated Twilio calls through the real service, against a cheap Deepgram stand-in.

`python -m benchmarks.run` (`make bench`) orchestrates; `loadgen` and `standin` are the two harness processes;
`stats` and `tagging` are pure. Results land in docs/benchmarks.json and docs/benchmarks.md.
"""
