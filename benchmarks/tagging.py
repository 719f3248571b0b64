"""Pure layer: the tag that identifies each 20 ms audio frame end to end (load generator -> service -> stand-in).

The service forwards Twilio's 160-byte μ-law frames to Deepgram unchanged, possibly several concatenated into
one send (AUDIO_BATCH_MS), so a frame's first bytes can say which call, track and frame it is. The rest of the
frame is μ-law silence (0xFF), so the audio stays harmless whatever a reader makes of it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

FRAME_BYTES = 160  # 20 ms of 8 kHz μ-law, the payload of one Twilio media message
MAGIC = b"CB"
# magic, call index (0..65535), track index (0 inbound, 1 outbound), frame sequence number (from 0)
_TAG = struct.Struct("<2sHBI")
TAG_BYTES = _TAG.size
_FILLER = b"\xff" * (FRAME_BYTES - TAG_BYTES)


def pack_frame(call: int, track: int, seq: int) -> bytes:
    """One 160-byte frame carrying the tag (call, track, seq), silence after it."""
    return _TAG.pack(MAGIC, call, track, seq) + _FILLER


def unpack_frame(frame: bytes) -> tuple[int, int, int] | None:
    """(call, track, seq) of a tagged frame; None when the frame carries no tag."""
    if len(frame) < TAG_BYTES or frame[:2] != MAGIC:
        return None
    _, call, track, seq = _TAG.unpack_from(frame)
    return call, track, seq


def frame_keys(audio: bytes) -> Iterator[bytes]:
    """The tag bytes after the magic (a cheap hashable key) of each 160-byte frame in `audio`; b"" if untagged.

    `audio` is one binary message to Deepgram: one frame or several whole frames back to back.
    """
    for offset in range(0, len(audio), FRAME_BYTES):
        if audio[offset : offset + 2] == MAGIC:
            yield audio[offset + 2 : offset + TAG_BYTES]
        else:
            yield b""


def key_fields(key: bytes) -> tuple[int, int, int]:
    """(call, track, seq) of a key from `frame_keys`."""
    _, call, track, seq = _TAG.unpack(MAGIC + key)
    return call, track, seq
