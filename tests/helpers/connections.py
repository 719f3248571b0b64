"""The ways a fault test runs a call: one track on its own connection, or both tracks over one multichannel
connection (DEEPGRAM_CONNECTIONS=per_call), or one track on Deepgram Flux, with what each track sends and what
Deepgram should then hear."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from service.simulator.audio import frames
from service.simulator.messages import CallSpec, track_audio
from tests.helpers.audio import call_audio, turn_audio

OUTBOUND_SEED = 5000  # the agent's audio: another seed than any caller's, so its words differ


def padded(audio: bytes) -> bytes:
    """What the simulator sends: the audio with its last 20 ms frame filled up with mu-law silence."""
    return b"".join(frames(audio))


def interleaved(first: bytes, second: bytes) -> bytes:
    """Two equally long tracks as one two-channel stream, sample by sample (channel 0 first)."""
    mixed = bytearray(2 * len(first))
    mixed[0::2], mixed[1::2] = first, second
    return bytes(mixed)


@dataclass(frozen=True)
class Layout:
    """How a test's call reaches Deepgram: `per_track` is the inbound track alone (one connection, as every
    single-track call has), `per_call` both tracks interleaved on one connection; `model` a Flux model for the
    call on Flux (`/v2/listen`, one track a connection)."""

    connections: str  # DEEPGRAM_CONNECTIONS
    model: str = "nova-3"  # DEEPGRAM_MODEL

    @property
    def flux(self) -> bool:
        return self.model.startswith("flux-")

    @property
    def channels(self) -> int:
        """Channels on the one connection: a fault set in bytes of it is this many times the audio's."""
        return 2 if self.connections == "per_call" else 1

    @property
    def tracks(self) -> tuple[str, ...]:
        return ("inbound", "outbound") if self.channels == 2 else ("inbound",)

    def spec(self, seed: int, seconds: float, **fields: Any) -> CallSpec:
        """A call of `seconds` on each track (the agent's as long as the caller's, other words)."""
        if self.channels == 2:
            fields["outbound"] = call_audio(seed + OUTBOUND_SEED, seconds)
        # Flux's turns end at pauses: a call on Flux has them, where a v1 final would end anyway (`turn_audio`).
        return CallSpec(inbound=(turn_audio if self.flux else call_audio)(seed, seconds), **fields)

    def settings(self) -> dict[str, Any]:
        """The settings that make the service stream the call this way."""
        if self.flux:
            return {"deepgram_model": self.model}
        if self.channels == 1:
            return {}
        return {"stream_track": "both_tracks", "deepgram_connections": "per_call"}

    def env(self) -> dict[str, str]:
        """`settings` as a process's environment."""
        return {name.upper(): value for name, value in self.settings().items()}

    def sent(self, spec: CallSpec) -> dict[str, bytes]:
        """Each track's audio as the simulator sends it."""
        return {track: padded(track_audio(spec, track)) for track in self.tracks}

    def heard(self, spec: CallSpec, start_s: float = 0.0) -> bytes:
        """What the one connection carries of the call from `start_s` (each track's second in turn, if two)."""
        at = int(start_s * 8000)
        tracks = [audio[at:] for audio in self.sent(spec).values()]
        return tracks[0] if len(tracks) == 1 else interleaved(*tracks)

    def split(self, heard: bytes) -> dict[str, bytes]:
        """What one connection carried, back as each track's audio (whole samples of every channel)."""
        count = len(self.tracks)
        whole = heard[: len(heard) - len(heard) % count]
        return {track: whole[channel::count] for channel, track in enumerate(self.tracks)}


LAYOUTS = [Layout("per_track"), Layout("per_call")]
layouts = pytest.mark.parametrize("layout", LAYOUTS, ids=[layout.connections for layout in LAYOUTS])
FLUX = Layout("per_track", model="flux-general-en")
# The fault tests: each way of reaching Deepgram v1, and Flux.
layouts_and_flux = pytest.mark.parametrize(
    "layout", [*LAYOUTS, FLUX], ids=[*(layout.connections for layout in LAYOUTS), "flux"]
)
