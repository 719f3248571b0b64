"""Protocol layer (no I/O): the audio of one track, placed on the call's timeline and tracked until final.

Every byte Twilio sends has a position on the call's timeline (its byte offset; mu-law is 8000 bytes a
second). A byte is *pending* until it is sent to Deepgram, *unacknowledged* until a final result covers it,
then *acknowledged* and forgotten. When a connection dies, its unacknowledged bytes go back to the front
of the pending queue and the next connection starts at the first unacknowledged byte, so its timestamps
are shifted by exactly that offset and no stretch is transcribed twice or skipped
(https://developers.deepgram.com/docs/recovering-from-connection-errors-and-timeouts-when-live-streaming-audio).
"""

from __future__ import annotations

import collections

from service import mulaw


class AudioLedger:
    def __init__(self, *, channels: int = 1) -> None:
        # Interleaved channels: a second is `channels` times the bytes, and positions stay on whole frames
        # (one sample of every channel), so a cut never splits a frame.
        self.channels = channels
        self.bytes_per_second = mulaw.BYTES_PER_SECOND * channels
        self.received = 0  # call bytes received from Twilio: the position of the next byte
        self.acknowledged = 0  # call bytes covered by Deepgram's finals
        self.connection_base = 0  # call position of the current connection's first byte
        self.connection_sent = 0  # bytes sent on the current connection
        self._pending: collections.deque[bytes] = collections.deque()
        self._pending_bytes = 0
        # (call position, chunk) sent on the current connection and not yet covered by a final.
        self._unacknowledged: collections.deque[tuple[int, bytes]] = collections.deque()
        self._unacknowledged_bytes = 0

    # --- Twilio side ----------------------------------------------------------------------------------

    def receive(self, payload: bytes) -> None:
        self._pending.append(payload)
        self._pending_bytes += len(payload)
        self.received += len(payload)

    def skip(self, size: int) -> None:
        """Audio that goes elsewhere (the spool) still takes its place on the timeline."""
        self.received += size

    # --- Deepgram side --------------------------------------------------------------------------------

    @property
    def pending_chunks(self) -> int:
        return len(self._pending)

    @property
    def waiting_bytes(self) -> int:
        """Audio held in memory for Deepgram: pending plus sent-but-not-final."""
        return self._pending_bytes + self._unacknowledged_bytes

    @property
    def unacknowledged_bytes(self) -> int:
        return self._unacknowledged_bytes

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def take(self, max_bytes: int) -> bytes:
        """The next audio to send: queued chunks joined up to `max_bytes` (always at least one chunk, whole), and
        remembered until acknowledged."""
        pending = self._pending
        chunk = pending.popleft()
        if pending and len(chunk) + len(pending[0]) <= max_bytes:  # a backlog: one message carries several
            parts, size = [chunk], len(chunk)
            while pending and size + len(pending[0]) <= max_bytes:
                part = pending.popleft()
                parts.append(part)
                size += len(part)
            chunk = b"".join(parts)
        self._pending_bytes -= len(chunk)
        self._unacknowledged.append((self.connection_base + self.connection_sent, chunk))
        self._unacknowledged_bytes += len(chunk)
        self.connection_sent += len(chunk)
        return chunk

    def acknowledge(self, connection_end_s: float) -> None:
        """A final covers the current connection's audio up to `connection_end_s`."""
        frames = round(connection_end_s * mulaw.SAMPLE_RATE)
        covered = self.connection_base + min(frames * self.channels, self.connection_sent)
        self.acknowledged = max(self.acknowledged, covered)
        unacknowledged = self._unacknowledged
        while unacknowledged and unacknowledged[0][0] + len(unacknowledged[0][1]) <= self.acknowledged:
            self._unacknowledged_bytes -= len(unacknowledged.popleft()[1])

    def call_time(self, connection_s: float) -> float:
        """A time on the current connection's timeline, on the call's timeline instead."""
        return connection_s + self.connection_base / self.bytes_per_second

    def restart(self) -> None:
        """A new connection: resend from the first unacknowledged byte, ahead of what is still pending."""
        replay = self._unsent_from_acknowledged()
        self._pending.extendleft(reversed(replay))
        self._pending_bytes += sum(len(chunk) for chunk in replay)
        self.connection_base = self.acknowledged
        self.connection_sent = 0

    def release(self) -> tuple[float, bytes]:
        """Everything not yet final, in order, with its start on the call's timeline; the ledger is emptied."""
        start_s = self.acknowledged / self.bytes_per_second
        audio = b"".join([*self._unsent_from_acknowledged(), *self._pending])
        self._pending.clear()
        self._pending_bytes = 0
        self.acknowledged += len(audio)
        self.connection_base = self.acknowledged
        self.connection_sent = 0
        return start_s, audio

    def _unsent_from_acknowledged(self) -> list[bytes]:
        """The unacknowledged chunks, the first cut at the acknowledged position; clears them."""
        chunks = []
        for position, chunk in self._unacknowledged:
            cut = max(0, self.acknowledged - position)
            if cut < len(chunk):
                chunks.append(chunk[cut:])
        self._unacknowledged.clear()
        self._unacknowledged_bytes = 0
        return chunks
