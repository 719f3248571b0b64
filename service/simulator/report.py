"""Simulator, pure part: what a simulated call's result says, for a person and for an exit code."""

from __future__ import annotations

from service import mulaw
from service.simulator.messages import DEFAULT_TRACK_SETTING, CallResult


def failure_reason(result: CallResult) -> str | None:
    """Why the call did not complete as a streamed call, or None when it did."""
    if not result.replayed and not 200 <= result.voice_status < 300:
        return f"POST /voice answered HTTP {result.voice_status}"
    if result.stream_url is None:
        return "the TwiML started no <Stream> (the service may be at MAX_CALLS or shutting down)"
    if result.upgrade_status is not None:
        return f"the WebSocket upgrade was refused with HTTP {result.upgrade_status}"
    if not result.all_sent:
        return f"the server closed the stream early: {result.close_code} {result.close_reason or ''}".rstrip()
    if result.close_code not in (1000, 1001):
        return f"the stream closed abnormally: {result.close_code} {result.close_reason or ''}".rstrip()
    return None


def summarize(result: CallResult, elapsed_s: float, speed: float) -> str:
    """A short human summary of the call."""
    voice = "no /voice: a replayed upgrade" if result.replayed else f"POST /voice: HTTP {result.voice_status}"
    lines = [f"call      {result.spec_call_sid}  ({voice})"]
    if result.stream_url is not None:
        params = ", ".join(sorted(result.stream_params)) or "none"  # names only: values may be tokens
        track = result.track_setting or f"{DEFAULT_TRACK_SETTING} (default)"
        lines.append(f"stream    {result.stream_sid}  {result.stream_url}  track={track}  parameters: {params}")
    for track, count in result.frames_sent.items():
        lines.append(
            f"sent      {track}: {count} frame{'' if count == 1 else 's'} ({count * mulaw.FRAME_S:.2f} s of audio)"
        )
    lines.append(f"duration  {elapsed_s:.2f} s wall clock at speed {speed:g}")
    lines.append(f"closed    {_describe_close(result)}")
    return "\n".join(lines)


def _describe_close(result: CallResult) -> str:
    if result.upgrade_status is not None:
        return f"never opened: upgrade refused with HTTP {result.upgrade_status}"
    if result.closed_by is None:
        return "no stream was opened"
    reason = f" {result.close_reason!r}" if result.close_reason else ""
    how = "after everything was sent" if result.all_sent else "before everything was sent"
    return f"by the {result.closed_by}, code {result.close_code}{reason}, {how}"
