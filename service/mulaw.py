"""Facts (no I/O): the audio Twilio streams and Deepgram is asked to read, 8 kHz mono G.711 μ-law.

One byte per sample, so a byte count is a time: 8,000 bytes are one second. Twilio's media messages carry
20 ms each (160 bytes); Twilio does not document the size, but every observed stream uses it
(https://www.twilio.com/docs/voice/media-streams/websocket-messages).
"""

from __future__ import annotations

SAMPLE_RATE = 8000  # samples a second
BYTES_PER_SECOND = SAMPLE_RATE  # one byte per sample
FRAME_MS = 20  # audio per Twilio media message
FRAME_BYTES = BYTES_PER_SECOND * FRAME_MS // 1000  # 160
FRAME_S = FRAME_MS / 1000
SILENCE = 0xFF  # μ-law encodes linear 0 as 0xFF (and 0x7F)
