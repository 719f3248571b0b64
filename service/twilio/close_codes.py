"""WebSocket close codes callscribe uses towards Twilio (RFC 6455 §7.4.1), named for what they mean here."""

NORMAL = 1000
GOING_AWAY = 1001  # the process is stopping (SIGTERM)
UNSUPPORTED_DATA = 1003  # a media format other than mu-law 8 kHz mono
INVALID_PAYLOAD = 1007  # malformed JSON, a bad field, bad base64
POLICY_VIOLATION = 1008  # a message the stream's state forbids (media before start, a second start)
MESSAGE_TOO_BIG = 1009  # over MAX_MESSAGE_BYTES
TRY_AGAIN_LATER = 1013  # MAX_CALLS streams already open, or this process is shutting down
INTERNAL_ERROR = 1011  # a bug in callscribe while handling this stream (it ends that call only)
