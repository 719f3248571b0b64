"""Settings: read from the environment, validated, secrets masked, bad values named at start-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from service.deepgram.environment import addresses, primary_address
from service.deepgram.protocol import ignored_options, live_options
from service.settings import Settings, describe_error, masked_url
from tests.helpers.paths import ROOT


def test_defaults_match_the_documented_ones() -> None:
    """Without any variable: Deepgram's cloud, nova-3, en-US, inbound track, text logs."""
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.deepgram_url == "https://api.deepgram.com"
    assert settings.deepgram_model == "nova-3"
    assert settings.deepgram_language == "en-US"
    assert settings.stream_track == "inbound_track"
    assert settings.log_format == "text"
    assert settings.deepgram_api_key is None


def test_reads_the_environment_and_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Variables are read by name; the key and token never show in a repr."""
    monkeypatch.setenv("DEEPGRAM_API_KEY", "dg-secret-value")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "tw-secret-value")
    monkeypatch.setenv("DEEPGRAM_KEYTERMS", "callscribe, Twilio ,,nova")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.deepgram_api_key is not None
    assert settings.deepgram_api_key.get_secret_value() == "dg-secret-value"
    assert settings.deepgram_keyterms == ("callscribe", "Twilio", "nova")
    assert settings.log_level == "DEBUG"
    assert "secret-value" not in repr(settings)
    assert "secret-value" not in str(settings.model_dump())


def test_reads_a_dotenv_file(tmp_path: Path) -> None:
    """An optional .env in the working directory is read too."""
    env_file = tmp_path / ".env"
    env_file.write_text("DEEPGRAM_MODEL=nova-2-phonecall\nMAX_CALLS=7\n")
    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert settings.deepgram_model == "nova-2-phonecall"
    assert settings.max_calls == 7


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("STREAM_TRACK", "left_track", "STREAM_TRACK"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT"),
        ("MAX_CALLS", "zero", "MAX_CALLS"),
        ("MAX_CALLS", "0", "MAX_CALLS"),
        ("DEEPGRAM_URL", "api.deepgram.com", "http(s):// or ws(s)://"),
        ("PUBLIC_URL", "https://x.example.com/voice", "bare base URL"),
        ("FORWARD_TO", "555-0100", "E.164"),
        ("AUDIO_BATCH_MS", "500", "AUDIO_BATCH_MS"),
        ("DEEPGRAM_OPTIONS", "diarize", "query string"),
        ("TWILIO_API_URL", "https://api.twilio.com/2010-04-01", "bare base URL"),
        ("TWILIO_API_URL", "api.twilio.com", "http(s)://"),
        ("TWILIO_API_KEY_SID", "AC0123456789abcdef0123456789abcdef", "SK and 32 hex digits"),
        ("TWILIO_API_KEY_SECRET", "a-secret-without-its-key", "set both or neither"),
        ("DEEPGRAM_FALLBACK_URL", "api.eu.deepgram.com", "such as https://api.eu.deepgram.com"),
        ("DEEPGRAM_FALLBACK_URL", "https://api.eu.deepgram.com/?region=eu", "query string"),
        ("DEEPGRAM_FAILOVER_AFTER_S", "0", "DEEPGRAM_FAILOVER_AFTER_S"),
    ],
)
def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str) -> None:
    """Each bad value fails validation with a message naming the variable and what it accepts."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)  # type: ignore[call-arg]
    message = describe_error(caught.value)
    assert variable in message
    assert says in message


def test_start_up_with_a_bad_value_exits_with_the_message(tmp_path: Path) -> None:
    """The real entry point refuses to start and says which variable is wrong, without printing secrets."""
    env = {"PATH": "/usr/bin:/bin", "STREAM_TRACK": "sideways", "DEEPGRAM_API_KEY": "dg-secret-value"}
    result = subprocess.run(
        [sys.executable, "-c", "from service.web.asgi import create; create()"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "STREAM_TRACK" in result.stderr
    assert "inbound_track" in result.stderr
    assert "dg-secret-value" not in result.stderr + result.stdout


def test_deepgram_url_gives_the_live_and_rest_hosts() -> None:
    """DEEPGRAM_URL https://host becomes wss://host for the live socket and stays https for REST."""
    settings = Settings(_env_file=None, deepgram_url="https://dg.internal:8443/")  # type: ignore[call-arg]
    environment = primary_address(settings).environment()
    assert environment.production == "wss://dg.internal:8443"
    assert environment.base == "https://dg.internal:8443"
    local = Settings(_env_file=None, deepgram_url="http://127.0.0.1:8080")  # type: ignore[call-arg]
    assert primary_address(local).environment().production == "ws://127.0.0.1:8080"


def test_the_fallback_has_its_own_address_and_the_primary_key_unless_it_has_one() -> None:
    """DEEPGRAM_FALLBACK_URL gives the fallback's live and REST bases; its key is DEEPGRAM_API_KEY unless
    DEEPGRAM_FALLBACK_API_KEY is set (blank counts as unset); DEEPGRAM_BATCH_URL is the primary's alone."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, deepgram_api_key="primary-key", deepgram_fallback_url="https://api.eu.deepgram.com/",
        deepgram_batch_url="http://127.0.0.1:9", deepgram_fallback_api_key=" ",
    )  # fmt: skip
    primary, fallback = addresses(settings).values()
    assert (primary.name, primary.rest_url) == ("primary", "http://127.0.0.1:9")
    assert (fallback.name, fallback.live_url, fallback.rest_url) == (
        "fallback", "wss://api.eu.deepgram.com", "https://api.eu.deepgram.com",
    )  # fmt: skip
    assert fallback.api_key == SecretStr("primary-key")
    own = settings.model_copy(update={"deepgram_fallback_api_key": SecretStr("eu-key")})
    assert own.deepgram_fallback_key == SecretStr("eu-key")
    assert list(addresses(Settings(_env_file=None))) == ["primary"]  # type: ignore[call-arg]


def test_the_failover_bound_must_be_below_the_outage_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bound at or past DEEPGRAM_OUTAGE_S would spool a track before it could fail over: start-up says so;
    without a fallback the bound is not used, and not checked."""
    monkeypatch.setenv("DEEPGRAM_OUTAGE_S", "5")
    monkeypatch.setenv("DEEPGRAM_FAILOVER_AFTER_S", "5")
    assert Settings(_env_file=None).deepgram_failover_after_s == 5  # type: ignore[call-arg]
    monkeypatch.setenv("DEEPGRAM_FALLBACK_URL", "https://api.eu.deepgram.com")
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert "DEEPGRAM_FAILOVER_AFTER_S (5) must be below DEEPGRAM_OUTAGE_S (5)" in describe_error(caught.value)


def test_live_options_carry_the_settings_and_twilio_audio_format() -> None:
    """The SDK's connect() kwargs: mu-law 8 kHz mono plus every configured option."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        deepgram_keyterms="Acme,Zed",
        deepgram_endpointing_ms=0,
        deepgram_options="diarize=true&redact=pci&redact=ssn&encoding=linear16&model=x",
    )
    options = live_options(settings)
    assert options["encoding"] == "mulaw"
    assert options["sample_rate"] == 8000
    assert options["channels"] == 1
    assert options["endpointing"] is False
    assert options["utterance_end_ms"] == 1000
    assert options["keyterm"] == ["Acme", "Zed"]
    assert options["request_options"] == {
        "additional_query_parameters": {"diarize": "true", "redact": ["pci", "ssn"], "mip_opt_out": "true"}
    }, "DEEPGRAM_MIP_OPT_OUT's default, on"
    assert ignored_options(settings) == [
        ("encoding", "callscribe sets it itself"),
        ("model", "callscribe sets it itself"),
    ]


def test_utterance_end_is_left_out_without_interim_results() -> None:
    """Deepgram needs interim results for UtteranceEnd, so it is not asked for without them."""
    settings = Settings(_env_file=None, deepgram_interim_results=False)  # type: ignore[call-arg]
    assert "utterance_end_ms" not in live_options(settings)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:s3cret@dg.example.com", "https://***@dg.example.com"),
        ("https://t0ken@dg.example.com:8443/base", "https://***@dg.example.com:8443/base"),  # a user alone too
        ("postgresql://callscribe:pw@db.internal:5432/calls", "postgresql://***@db.internal:5432/calls"),
        ("rediss://:pw@redis.example.com:6379/0", "rediss://***@redis.example.com:6379/0"),
        ("https://u:p@[::1]:8080/x", "https://***@[::1]:8080/x"),
        ("https://u:p@ss@host/x", "https://***@host/x"),  # an unencoded @ in the password: the last @ ends it
        ("https://u:pa/ss@host", "https://***"),  # an unencoded / in the password: nothing but the scheme
        ("https://u:1234/ss@host", "https://***"),  # the same, where what follows the : looks like a port
        ("http://[::1", "http://***"),  # not a URL to take apart
        ("https://hooks.example.com/in?token=abc&v=2", "https://hooks.example.com/in?token=***&v=***"),
        ("https://hooks.example.com/in?s3cret", "https://hooks.example.com/in?***"),  # no key: all of it
        ("https://hooks.example.com/in#s3cret", "https://hooks.example.com/in#***"),
        ("sqlite:///data/calls.sqlite3", "sqlite:///data/calls.sqlite3"),
        ("https://api.deepgram.com", "https://api.deepgram.com"),
        ("s3://bucket/prefix", "s3://bucket/prefix"),
        ("nova-3", "nova-3"),
    ],
)
def test_a_url_is_shown_without_its_credentials(url: str, shown: str) -> None:
    """masked_url hides userinfo, query values and fragments, keeping what names the place: scheme, host, path."""
    assert masked_url(url) == shown


@pytest.mark.parametrize(
    ("value", "features"),
    [
        ("", ()),
        ("off", ()),
        ("on", ("summary", "topics", "intents", "sentiment")),
        ("ON", ("summary", "topics", "intents", "sentiment")),
        ("sentiment, summary,sentiment", ("summary", "sentiment")),
        ("topics", ("topics",)),
    ],
)
def test_analysis_takes_on_off_or_a_list_of_features(value: str, features: tuple[str, ...]) -> None:
    assert Settings(_env_file=None, analysis=value).analysis == features  # type: ignore[call-arg]


def test_an_unknown_analysis_stops_start_up_naming_the_value(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from service.web.asgi import create; create()"],
        cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "ANALYSIS": "summary,mood"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "ANALYSIS: Value error, unknown analysis 'mood': use on, off, or any of summary, topics" in result.stderr
