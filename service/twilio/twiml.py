"""Protocol layer (no I/O): the TwiML `/voice` answers, built with the `twilio` package's `VoiceResponse`.

`<Start><Stream>` forks the call's audio to `/media` and Twilio goes straight on to the next verb, so one
must follow: `<Dial>` to FORWARD_TO, or a `<Say>` greeting and a `<Pause>` long enough to talk
(https://www.twilio.com/docs/voice/twiml/stream).

A call may have at most FORKS_PER_CALL forked streams at once, and each track a stream carries is one fork (same
page: "There are a maximum of 4 forked streams allowed per call. Each track, inbound or outbound, is a forked
stream"); `<Siprec>` takes two by default. A hand-over opens a second stream like the first before it closes the
first, so for that moment a call needs twice `forks(STREAM_TRACK)`.
"""

from __future__ import annotations

from collections.abc import Mapping

from twilio.twiml.voice_response import Dial, Start, VoiceResponse

from service.settings import Settings
from service.twilio.stream_tokens import FROM, TO

STREAM_NAME = "callscribe"
FORKS_PER_CALL = 4
# What the transcript needs later, carried to /media as <Parameter>s (start.customParameters). The stream token
# covers `from` and `to` (stream_tokens.numbers), so a `start` cannot show other numbers than /voice was given.
FORWARDED_FIELDS = {"From": FROM, "To": TO, "Direction": "direction"}


def forks(track: str) -> int:
    """How many of a call's FORKS_PER_CALL a stream with this `track` setting takes: `both_tracks` two, else one."""
    return 2 if track == "both_tracks" else 1


def stream_parameters(form: Mapping[str, str]) -> dict[str, str]:
    """The webhook's fields that ride along with the stream; Twilio caps name plus value under 500 characters."""
    return {name: form[field][:400] for field, name in FORWARDED_FIELDS.items() if form.get(field)}


def voice_response(settings: Settings, *, stream_url: str | None, parameters: Mapping[str, str]) -> str:
    """The TwiML for one call. `stream_url` None answers without a stream (the call still goes on)."""
    response = VoiceResponse()
    if stream_url is not None:
        start = Start()
        stream = start.stream(url=stream_url, track=settings.stream_track, name=STREAM_NAME)
        for name, value in parameters.items():
            stream.parameter(name=name, value=value)
        response.append(start)
    if settings.forward_to:
        response.append(_dial(settings.forward_to))
    else:
        response.say(settings.greeting)
        response.pause(length=settings.pause_s)
    return str(response)


def _dial(target: str) -> Dial:
    """<Dial> a number as its text; SIP and client targets are nested nouns (<Sip>, <Client>) in TwiML."""
    if target.startswith("sip:"):
        dial = Dial()
        dial.sip(target)
        return dial
    if target.startswith("client:"):
        dial = Dial()
        dial.client(target.removeprefix("client:"))
        return dial
    return Dial(target)
