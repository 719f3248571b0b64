"""Protocol layer (pure: frames and Twilio timestamps in, two-channel μ-law out): both tracks on one connection.

With DEEPGRAM_CONNECTIONS=per_call a both-track call's `TrackStream` (`track.py`) carries both tracks through
one `Interleaver`, bounded by DEEPGRAM_CHANNEL_LAG_MS. With `multichannel=true&channels=2` Deepgram reads
8 kHz μ-law with the channels interleaved sample by sample; channel 0 is Twilio's inbound track, channel 1
the outbound, and each result's `channel_index` says which it is (`track_of`).

`Interleaver` places every frame of a track on the stream's clock by its media `timestamp` (ms since the
stream started, Twilio's own), so the two channels line up whatever order their messages come in:

- a gap in a track's timestamps (frames Twilio never sent) is filled with μ-law silence (0xFF);
- a track that falls more than `max_lag_ms` behind the other (an outbound track with nothing playing, a
  `<Dial>` still ringing) is padded with silence up to that bound, so it never holds the other back;
- a frame that comes after its place was padded over keeps only what is past the padding; the samples cut
  are counted per track (`late`), never silently dropped;
- `take` interleaves whatever both channels have; `flush` pads the shorter at the end of the stream.
"""

from __future__ import annotations

from service import mulaw

CHANNELS = ("inbound", "outbound")  # channel index -> Twilio track
SAMPLES_PER_MS = mulaw.SAMPLE_RATE // 1000
SILENCE = bytes([mulaw.SILENCE])


def track_of(channel_index: int) -> str:
    """The Twilio track of a multichannel result's `channel_index[0]`."""
    return CHANNELS[channel_index]


def interleave(first: bytes | bytearray, second: bytes | bytearray) -> bytes:
    """Two equally long channels, sample by sample (a slice assignment: C speed, no loop in Python)."""
    if len(first) != len(second):
        raise ValueError(f"channels of {len(first)} and {len(second)} samples cannot be interleaved")
    mixed = bytearray(2 * len(first))
    mixed[0::2] = first
    mixed[1::2] = second
    return bytes(mixed)


class Interleaver:
    """Both tracks of one stream, aligned on their timestamps, out as interleaved two-channel audio."""

    def __init__(self, *, max_lag_ms: int) -> None:
        self.max_lag_samples = max_lag_ms * SAMPLES_PER_MS
        self.late = [0, 0]  # per channel: samples cut because the track had been padded past them
        self.padded_samples = 0  # silence written for gaps and lagging tracks
        self._end = [0, 0]  # per channel: the stream position (in samples) its audio reaches
        self._pending = [bytearray(), bytearray()]  # per channel: placed, not yet interleaved
        self._taken = 0  # stream position up to which both channels were interleaved

    def add(self, track: str, timestamp_ms: int, payload: bytes) -> None:
        """One media message: its samples at `timestamp_ms` on the stream's clock."""
        channel = CHANNELS.index(track)
        start = timestamp_ms * SAMPLES_PER_MS
        end = self._end[channel]
        if start > end:
            self._pad(channel, start - end)
        elif start < end:  # its place was already padded over (or Twilio repeated it): keep what is new
            cut = min(end - start, len(payload))
            self.late[channel] += cut
            payload = payload[cut:]
        self._pending[channel] += payload
        self._end[channel] += len(payload)
        other = 1 - channel
        behind = self._end[channel] - self._end[other] - self.max_lag_samples
        if behind > 0:  # the other track lags too far: silence, so this one is not held back
            self._pad(other, behind)

    def take(self) -> bytes:
        """Every sample both channels have, interleaved; b"" when one of them has none."""
        count = min(len(self._pending[0]), len(self._pending[1]))
        if not count:
            return b""
        mixed = interleave(self._pending[0][:count], self._pending[1][:count])
        for pending in self._pending:
            del pending[:count]
        self._taken += count
        return mixed

    def flush(self) -> bytes:
        """The end of the stream: the shorter channel padded to the longer, and everything interleaved."""
        longest = max(self._end)
        for channel in (0, 1):
            self._pad(channel, longest - self._end[channel])
        return self.take()

    def take_late(self) -> list[int]:
        """`late` since the last call, per channel (then zero again), so each cut is counted once."""
        late, self.late = self.late, [0, 0]
        return late

    @property
    def position_s(self) -> float:
        """Stream time interleaved so far, in seconds (each channel's, not the bytes sent)."""
        return self._taken / mulaw.SAMPLE_RATE

    def _pad(self, channel: int, samples: int) -> None:
        if samples <= 0:
            return
        self._pending[channel] += SILENCE * samples
        self._end[channel] += samples
        self.padded_samples += samples
