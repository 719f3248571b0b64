"""μ-law WAV files: what the spool writes reads back byte for byte, and nothing else reads as μ-law."""

from __future__ import annotations

import contextlib
import io
import struct
import wave

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.spool.wav import (
    HEADER_BYTES,
    UNKNOWN_SIZE,
    WAVE_FORMAT_MULAW,
    WavFormatError,
    header_data_size,
    mulaw_wav,
    mulaw_wav_header,
    parse_mulaw_wav,
    read_mulaw_wav,
)

channel_counts = st.integers(min_value=1, max_value=4)


@st.composite
def audio_and_channels(draw: st.DrawFn) -> tuple[bytes, int]:
    channels = draw(channel_counts)
    frames = draw(st.integers(min_value=0, max_value=600))
    return draw(st.binary(min_size=frames * channels, max_size=frames * channels)), channels


@given(audio_and_channels(), st.sampled_from([8000, 16000, 44100, 1]))
def test_round_trip(sample: tuple[bytes, int], rate: int) -> None:
    """Any whole frames of μ-law, at any rate and channel count, read back exactly as written."""
    audio, channels = sample
    wav = parse_mulaw_wav(mulaw_wav(audio, sample_rate=rate, channels=channels))
    assert (wav.samples, wav.sample_rate, wav.channels) == (audio, rate, channels)


@given(st.binary(max_size=300))
def test_riff_sizes_and_word_alignment(audio: bytes) -> None:
    """The RIFF size covers the file, odd data gets one pad byte, and `fact` counts the samples."""
    data = mulaw_wav(audio)
    assert len(data) % 2 == 0
    assert struct.unpack_from("<I", data, 4)[0] == len(data) - 8
    assert data[38:42] == b"fact"
    assert struct.unpack_from("<I", data, 46)[0] == len(audio)
    assert header_data_size(data[:HEADER_BYTES]) == len(audio)


@given(st.binary(min_size=1, max_size=200), st.data())
def test_a_file_cut_short_is_refused(audio: bytes, data: st.DataObject) -> None:
    """Any cut inside the header or the samples is a WavFormatError, never short audio."""
    whole = mulaw_wav(audio)
    cut = data.draw(st.integers(min_value=0, max_value=HEADER_BYTES + len(audio) - 1))
    with pytest.raises(WavFormatError):
        read_mulaw_wav(whole[:cut])


def damaged(audio: bytes, at: int, junk: bytes) -> bytes:
    """A valid WAV of `audio` with `junk` written over it at byte `at`."""
    valid = mulaw_wav(audio)
    return valid[:at] + junk + valid[at + len(junk) :]


riff_like = st.one_of(
    st.binary(max_size=200),
    st.binary(min_size=4, max_size=200).map(lambda rest: b"RIFF" + rest[:4] + b"WAVE" + rest[4:]),
    st.builds(damaged, st.binary(max_size=64), st.integers(0, 70), st.binary(min_size=1, max_size=8)),
)


@given(riff_like)
def test_only_wav_format_errors_escape(garbage: bytes) -> None:
    """Arbitrary bytes, RIFF-looking bytes and damaged WAVs either parse or raise WavFormatError, nothing else."""
    with contextlib.suppress(WavFormatError):
        read_mulaw_wav(garbage)


def test_the_header_is_what_the_standard_says() -> None:
    """fmt is tag 7, 8 bits, 18 bytes with cbSize 0; a `fact` chunk follows; the header is HEADER_BYTES long."""
    data = mulaw_wav(b"\x01\x02\x03\x04", sample_rate=8000, channels=1)
    assert data[:4] == b"RIFF"
    assert data[8:16] == b"WAVEfmt "
    assert struct.unpack_from("<I", data, 16)[0] == 18
    assert struct.unpack_from("<HHIIHHH", data, 20) == (WAVE_FORMAT_MULAW, 1, 8000, 8000, 1, 8, 0)
    assert data[HEADER_BYTES - 8 : HEADER_BYTES] == b"data" + struct.pack("<I", 4)
    assert data[HEADER_BYTES:] == b"\x01\x02\x03\x04"


def test_a_pcm_wav_is_refused_by_name() -> None:
    """A PCM WAV (what Python's `wave` writes) is refused with the format it has."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(b"\x00\x00" * 10)
    with pytest.raises(WavFormatError, match="0x0001 is not μ-law"):
        read_mulaw_wav(buffer.getvalue())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a RIFF/WAVE file"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", "not a RIFF/WAVE file"),
        (b"RIFF\x04\x00\x00\x00WAVE", "no fmt chunk"),
        (mulaw_wav(b"ab")[:38], "no data chunk"),  # RIFF and fmt only
        (mulaw_wav(b"ab")[:30], "fmt .* cut short"),
    ],
)
def test_what_is_missing_is_said(data: bytes, message: str) -> None:
    """A file with no RIFF header, fmt chunk or data chunk says which."""
    with pytest.raises(WavFormatError, match=message):
        read_mulaw_wav(data)


def test_an_unknown_chunk_before_the_data_is_skipped() -> None:
    """Chunks other writers add (LIST, with a pad byte) are stepped over."""
    plain = mulaw_wav(b"xyz")
    extra = b"LIST" + struct.pack("<I", 3) + b"abc\x00"
    data = plain[:38] + extra + plain[38:]
    assert read_mulaw_wav(data) == b"xyz"


def test_a_header_still_being_written_says_so() -> None:
    """The spool's placeholder header has an unknown data size until the segment closes."""
    assert header_data_size(mulaw_wav_header(UNKNOWN_SIZE)) is None
    with pytest.raises(WavFormatError):
        header_data_size(b"RIFF")


def test_impossible_headers_are_refused() -> None:
    """Partial frames, no channels and rates a header cannot hold are ValueErrors when writing."""
    with pytest.raises(ValueError, match="whole number"):
        mulaw_wav(b"abc", channels=2)
    with pytest.raises(ValueError, match="channels"):
        mulaw_wav(b"", channels=0)
    with pytest.raises(ValueError, match="sample rate"):
        mulaw_wav(b"", sample_rate=0)


def riff(*chunks: tuple[bytes, bytes]) -> bytes:
    """A RIFF/WAVE file of exactly these (id, body) chunks, word-aligned, with no checks of its own."""
    body = b"".join(struct.pack("<4sI", cid, len(data)) + data + b"\x00" * (len(data) % 2) for cid, data in chunks)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def fmt(tag: int = WAVE_FORMAT_MULAW, channels: int = 1, rate: int = 8000, bits: int = 8) -> bytes:
    return struct.pack("<HHIIHHH", tag, channels, rate, rate * channels, channels, bits, 0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (riff((b"data", b"ab"), (b"fmt ", fmt())), "data chunk before the fmt chunk"),
        (riff((b"fmt ", fmt()[:14]), (b"data", b"ab")), "fmt chunk of 14 bytes is too short"),
        (riff((b"fmt ", fmt(channels=2)), (b"data", b"abc")), "not a whole number of 2-channel sample frames"),
        (riff((b"fmt ", fmt(bits=16)), (b"data", b"ab")), "implausible .* 16 bits per sample"),
        (riff((b"fmt ", fmt(channels=0)), (b"data", b"")), "implausible .* 0 channels"),
        (riff((b"fmt ", fmt(rate=0)), (b"data", b"")), "implausible .* 0 Hz"),
        (riff((b"fmt ", fmt()[:12] + struct.pack("<H", 2) + fmt()[14:]), (b"data", b"ab")), "block align 2"),
        (riff((b"fmt ", fmt()[:8] + struct.pack("<I", 16000) + fmt()[12:]), (b"data", b"ab")), "byte rate 16000"),
    ],
)
def test_a_damaged_format_is_refused_by_what_is_wrong(data: bytes, message: str) -> None:
    """Chunks out of order, a short or implausible fmt, and a partial last frame each say what is wrong."""
    with pytest.raises(WavFormatError, match=message):
        parse_mulaw_wav(data)


def test_a_hand_built_mulaw_wav_reads_like_ours() -> None:
    """The test's own RIFF builder agrees with the reader, so the refusals above are about the one damage each."""
    assert parse_mulaw_wav(riff((b"fmt ", fmt(channels=2, rate=16000)), (b"data", b"abcd"))) == (
        parse_mulaw_wav(mulaw_wav(b"abcd", sample_rate=16000, channels=2))
    )


def test_more_audio_than_a_wav_can_hold_is_refused() -> None:
    """The RIFF size is 32 bits: a header for more (but not the UNKNOWN_SIZE placeholder) is a ValueError."""
    with pytest.raises(ValueError, match="more than a WAV file can hold"):
        mulaw_wav_header(UNKNOWN_SIZE - 1)
    assert header_data_size(mulaw_wav_header(UNKNOWN_SIZE - HEADER_BYTES)) == UNKNOWN_SIZE - HEADER_BYTES
