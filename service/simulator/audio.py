"""Pure layer: WAV to Twilio's μ-law (8 kHz mono, 20 ms frames), for the call simulator.

No I/O beyond the bytes handed in. The conversion is the standard library's `audioop`; on Python >= 3.13 the
`audioop-lts` package provides the same module (pyproject.toml pins it there).
"""

from __future__ import annotations

import io
import struct
import warnings
import wave

with warnings.catch_warnings():
    # Python 3.11/3.12 warn on import that audioop leaves the stdlib in 3.13 (audioop-lts continues it there);
    # pytest runs with filterwarnings=error, so ignore exactly that warning, only around this import.
    warnings.filterwarnings("ignore", message="'audioop' is deprecated", category=DeprecationWarning)
    import audioop

from service import mulaw

# Rates outside this range are a garbled header, not audio; refusing them also keeps ratecv's output bounded.
_MIN_RATE_HZ = 1_000
_MAX_RATE_HZ = 768_000
_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


class AudioFormatError(ValueError):
    """The bytes are not a PCM WAV this module can convert (compressed, float, garbled, too many channels)."""


def wav_to_mulaw(wav: bytes) -> bytes:
    """8 kHz mono μ-law from any integer PCM WAV (8/16/24/32-bit, any rate, mono or stereo)."""
    channels, width, rate, pcm = _read_pcm(wav)
    linear16 = _to_mono16(pcm, width, channels)
    resampled, _ = audioop.ratecv(linear16, 2, 1, rate, mulaw.SAMPLE_RATE, None)
    return audioop.lin2ulaw(resampled, 2)


def frames(audio: bytes, frame_bytes: int = mulaw.FRAME_BYTES) -> list[bytes]:
    """μ-law `audio` in frames of `frame_bytes`; the last one padded with silence, as Twilio's are all full."""
    if frame_bytes <= 0:
        raise ValueError(f"frame_bytes must be positive, got {frame_bytes}")
    cut = [audio[i : i + frame_bytes] for i in range(0, len(audio), frame_bytes)]
    if cut and len(cut[-1]) < frame_bytes:
        cut[-1] = cut[-1].ljust(frame_bytes, bytes([mulaw.SILENCE]))
    return cut


def mulaw_silence(seconds: float) -> bytes:
    """`seconds` of 8 kHz μ-law silence (rounded to whole samples)."""
    if seconds < 0:
        raise ValueError(f"seconds must not be negative, got {seconds}")
    return bytes([mulaw.SILENCE]) * round(seconds * mulaw.SAMPLE_RATE)


def _read_pcm(wav: bytes) -> tuple[int, int, int, bytes]:
    """(channels, sample width in bytes, rate, whole frames of samples) of a PCM WAV, or AudioFormatError."""
    try:
        with wave.open(io.BytesIO(_plain_pcm_header(wav)), "rb") as reader:
            channels, width, rate = reader.getnchannels(), reader.getsampwidth(), reader.getframerate()
            pcm = reader.readframes(reader.getnframes())
    except (wave.Error, EOFError, RuntimeError) as exc:  # wave raises a bare RuntimeError on a bad chunk size
        raise AudioFormatError(f"not a PCM WAV file ({str(exc) or 'cut short'})") from exc
    if channels not in (1, 2):
        raise AudioFormatError(f"{channels} channels: only mono and stereo WAVs are supported")
    if width not in (1, 2, 3, 4):
        raise AudioFormatError(f"{width * 8}-bit samples: only 8, 16, 24 and 32-bit integer PCM is supported")
    if not _MIN_RATE_HZ <= rate <= _MAX_RATE_HZ:
        raise AudioFormatError(f"implausible sample rate {rate} Hz")
    # A file cut short mid-frame still converts: drop the partial frame rather than fail on it.
    frame_size = channels * width
    return channels, width, rate, pcm[: len(pcm) - len(pcm) % frame_size]


def _to_mono16(pcm: bytes, width: int, channels: int) -> bytes:
    """Signed 16-bit mono samples from `pcm`: 16 bits is ample before μ-law's ~14-bit resolution."""
    if width == 1:
        pcm = audioop.bias(pcm, 1, -128)  # 8-bit WAV is unsigned; audioop expects signed samples
    linear16 = audioop.lin2lin(pcm, width, 2)
    if channels == 2:
        linear16 = audioop.tomono(linear16, 2, 0.5, 0.5)
    return linear16


def _plain_pcm_header(wav: bytes) -> bytes:
    """`wav` with a WAVE_FORMAT_EXTENSIBLE PCM `fmt ` tag rewritten as plain PCM.

    sox and others write EXTENSIBLE for 24/32-bit or multichannel PCM; `wave` only reads it from Python 3.12.
    The sample data is the same either way, so the tag alone is rewritten. Anything else is returned as is.
    """
    if len(wav) < 12 or wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        return wav
    offset = 12
    while offset + 8 <= len(wav):
        chunk_id, size = wav[offset : offset + 4], struct.unpack_from("<I", wav, offset + 4)[0]
        if chunk_id == b"fmt ":
            return _rewrite_extensible_tag(wav, offset + 8, size)
        offset += 8 + size + size % 2  # chunks are word-aligned
    return wav


def _rewrite_extensible_tag(wav: bytes, body: int, size: int) -> bytes:
    """Rewrite the `fmt ` chunk at `body` from EXTENSIBLE to PCM when its sub-format GUID says PCM."""
    if size < 40 or body + 26 > len(wav):
        return wav
    (tag,) = struct.unpack_from("<H", wav, body)
    (sub_format,) = struct.unpack_from("<H", wav, body + 24)  # first two bytes of the sub-format GUID
    if tag != _WAVE_FORMAT_EXTENSIBLE or sub_format != _WAVE_FORMAT_PCM:
        return wav
    return wav[:body] + struct.pack("<H", _WAVE_FORMAT_PCM) + wav[body + 2 :]
