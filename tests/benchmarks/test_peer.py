"""The peer's mixer and the load generator's ringing: the parts of the harness that shape what is sent."""

from __future__ import annotations

import json

from benchmarks.loadgen import ringing
from benchmarks.peer import SEND_BYTES, Mixer
from service.simulator.messages import CallSpec, new_stream_sid, plan_messages


def test_the_mixer_interleaves_whole_chunks_of_both_tracks() -> None:
    """Channel 0 is inbound, channel 1 outbound, sample by sample, 0.4 s of each per message."""
    mixer = Mixer()
    for slot in range(25):  # 0.5 s of each track
        mixer.add("inbound", slot * 20, b"\x01" * 160)
        mixer.add("outbound", slot * 20, b"\x02" * 160)
    [chunk] = mixer.ready()
    assert len(chunk) == 2 * SEND_BYTES
    assert chunk[0::2] == b"\x01" * SEND_BYTES
    assert chunk[1::2] == b"\x02" * SEND_BYTES
    assert mixer.ready() == [], "the remaining 0.1 s waits for more"


def test_a_track_that_starts_late_stalls_both_then_is_filled_with_silence() -> None:
    """The outbound silent for 1 s (a <Dial> ringing): nothing goes until it starts, then its gap is 0xFF."""
    mixer = Mixer()
    for slot in range(50):
        mixer.add("inbound", slot * 20, b"\x01" * 160)
    assert mixer.ready() == [], "the sample's design: no send until both tracks have 0.4 s"
    mixer.add("outbound", 1000, b"\x02" * 160)
    chunks = mixer.ready()
    assert len(chunks) == 2
    assert chunks[0][1::2] == b"\xff" * SEND_BYTES
    assert chunks[1][1::2] == b"\xff" * SEND_BYTES, "a whole second of silence before its first frame"


def test_ringing_leaves_out_the_outbound_start_and_renumbers() -> None:
    """The outbound's first frames are not sent; sequence numbers stay gapless; its chunks count from 1."""
    spec = CallSpec(inbound=b"\x01" * 800, outbound=b"\x02" * 800)
    texts = [message.text for message in plan_messages(spec, new_stream_sid(), ["inbound", "outbound"], {})]
    kept = [json.loads(text) for text in ringing(texts, silent_frames=2)]
    media = [message["media"] for message in kept if message["event"] == "media"]
    assert [(m["track"], m["chunk"], m["timestamp"]) for m in media if m["track"] == "outbound"] == [
        ("outbound", "1", "40"),
        ("outbound", "2", "60"),
        ("outbound", "3", "80"),
    ]
    assert len(media) == 5 + 3
    assert [int(message["sequenceNumber"]) for message in kept[1:]] == list(range(1, len(kept)))
