"""Pure layer (no I/O): G.711 μ-law audio in a WAV (RIFF) container, written and read back.

The spool keeps Twilio's μ-law bytes as they came, in a WAV that Deepgram's pre-recorded API reads by its header
(so no `encoding`/`sample_rate` need to travel with it). Python's `wave` module writes and reads PCM only, so the
container is built here: a `fmt ` chunk with WAVE_FORMAT_MULAW (tag 7, 8 bits per sample, `cbSize` 0) and the
`fact` chunk that every non-PCM WAV must carry (sample frames per channel).
Layout: https://www.mmsp.ece.mcgill.ca/Documents/AudioFormats/WAVE/WAVE.html
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from service import mulaw

WAVE_FORMAT_MULAW = 0x0007
HEADER_BYTES = 58  # RIFF header 12 + `fmt ` 8+18 + `fact` 8+4 + `data` header 8: fixed, so a spool file can be patched
UNKNOWN_SIZE = 0xFFFFFFFF  # the data size of a WAV still being written (the spool's temp files)
# RIFF chunks are word-aligned: an odd-sized data chunk is followed by one pad byte, not counted in its size. μ-law
# silence rather than the customary 0, so a reader that wrongly plays the pad hears nothing (0x00 is full scale).
PAD_BYTE = bytes([mulaw.SILENCE])

_FMT_BODY = struct.Struct("<HHIIHHH")  # tag, channels, rate, byte rate, block align, bits per sample, cbSize
_CHUNK_HEADER = struct.Struct("<4sI")
_MAX_U32 = 0xFFFFFFFF


class WavFormatError(ValueError):
    """The bytes are not a μ-law WAV this module can read (not RIFF/WAVE, another format, cut short, garbled)."""


@dataclass(frozen=True, slots=True)
class MulawWav:
    """A μ-law WAV's samples (channels interleaved) and how to play them."""

    samples: bytes
    sample_rate: int
    channels: int


def mulaw_wav(audio: bytes, sample_rate: int = mulaw.SAMPLE_RATE, channels: int = 1) -> bytes:
    """A complete μ-law WAV file holding `audio` (one byte per sample, channels interleaved)."""
    pad = PAD_BYTE if len(audio) % 2 else b""
    return mulaw_wav_header(len(audio), sample_rate, channels) + audio + pad


def mulaw_wav_header(data_bytes: int, sample_rate: int = mulaw.SAMPLE_RATE, channels: int = 1) -> bytes:
    """The HEADER_BYTES that precede `data_bytes` of μ-law audio; UNKNOWN_SIZE for a file still being written."""
    if channels < 1 or channels > 0xFFFF:
        raise ValueError(f"channels must be 1 to 65535, got {channels}")
    if sample_rate < 1 or sample_rate * channels > _MAX_U32:
        raise ValueError(f"sample rate {sample_rate} Hz x{channels} does not fit a WAV header")
    if data_bytes == UNKNOWN_SIZE:
        riff_size = frames = UNKNOWN_SIZE
    else:
        if data_bytes < 0 or data_bytes % channels:
            raise ValueError(f"{data_bytes} bytes is not a whole number of {channels}-channel sample frames")
        riff_size = HEADER_BYTES - 8 + data_bytes + data_bytes % 2
        if riff_size > _MAX_U32:
            raise ValueError(f"{data_bytes} bytes of audio is more than a WAV file can hold")
        frames = data_bytes // channels
    fmt = _FMT_BODY.pack(WAVE_FORMAT_MULAW, channels, sample_rate, sample_rate * channels, channels, 8, 0)
    return b"".join(
        (
            _CHUNK_HEADER.pack(b"RIFF", riff_size),
            b"WAVE",
            _CHUNK_HEADER.pack(b"fmt ", len(fmt)),
            fmt,
            _CHUNK_HEADER.pack(b"fact", 4),
            struct.pack("<I", frames),
            _CHUNK_HEADER.pack(b"data", data_bytes),
        )
    )


def header_data_size(header: bytes) -> int | None:
    """The data size written in a header made by `mulaw_wav_header`; None when it says UNKNOWN_SIZE."""
    if len(header) < HEADER_BYTES or header[:4] != b"RIFF" or header[HEADER_BYTES - 8 : HEADER_BYTES - 4] != b"data":
        raise WavFormatError("not a header written by callscribe's spool")
    (size,) = struct.unpack_from("<I", header, HEADER_BYTES - 4)
    return None if size == UNKNOWN_SIZE else int(size)


def read_mulaw_wav(data: bytes) -> bytes:
    """The μ-law samples of a μ-law WAV file; WavFormatError for anything else."""
    return parse_mulaw_wav(data).samples


def parse_mulaw_wav(data: bytes) -> MulawWav:
    """Samples, rate and channels of a μ-law WAV file; WavFormatError for anything else."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavFormatError("not a RIFF/WAVE file")
    fmt: tuple[int, ...] | None = None
    for chunk_id, body in _chunks(data):
        if chunk_id == b"fmt ":
            fmt = _read_fmt(body)
        elif chunk_id == b"data":
            if fmt is None:
                raise WavFormatError("data chunk before the fmt chunk")
            _tag, channels, rate = fmt[:3]
            if len(body) % channels:
                raise WavFormatError(f"data is not a whole number of {channels}-channel sample frames")
            return MulawWav(samples=body, sample_rate=rate, channels=channels)
    raise WavFormatError("no fmt chunk" if fmt is None else "no data chunk")


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(id, body) of each chunk after the RIFF header, up to and including the first `data` chunk."""
    chunks: list[tuple[bytes, bytes]] = []
    offset = 12
    while offset + _CHUNK_HEADER.size <= len(data):
        chunk_id, size = _CHUNK_HEADER.unpack_from(data, offset)
        body = data[offset + 8 : offset + 8 + size]
        if len(body) < size:
            raise WavFormatError(f"{chunk_id!r} chunk cut short: {len(body)} of {size} bytes")
        chunks.append((chunk_id, body))
        if chunk_id == b"data":
            break
        offset += 8 + size + size % 2
    return chunks


def _read_fmt(body: bytes) -> tuple[int, ...]:
    """(tag, channels, rate) of a `fmt ` chunk body, checked to be 8-bit μ-law."""
    if len(body) < 16:
        raise WavFormatError(f"fmt chunk of {len(body)} bytes is too short")
    tag, channels, rate, byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", body)
    if tag != WAVE_FORMAT_MULAW:
        raise WavFormatError(f"format tag {tag:#06x} is not μ-law ({WAVE_FORMAT_MULAW:#06x})")
    if channels < 1 or rate < 1 or bits != 8:
        raise WavFormatError(f"implausible μ-law format: {channels} channels, {rate} Hz, {bits} bits per sample")
    if block_align != channels or byte_rate != rate * channels:
        raise WavFormatError(f"inconsistent μ-law format: block align {block_align}, byte rate {byte_rate}")
    return tag, channels, rate
